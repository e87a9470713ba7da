import pytest

from lmcore.unicode import SAMPLES, decode_utf8_bytes_wrong, encoding_costs, utf8_byte_rows, utf8_sequence_length


def test_encoding_costs_measure_bytes():
    (ascii_cost,) = encoding_costs({"a": "hello"})
    assert (ascii_cost.chars, ascii_cost.utf8, ascii_cost.utf16, ascii_cost.utf32) == (5, 5, 10, 20)
    (cjk,) = encoding_costs({"c": "针"})
    assert (cjk.utf8, cjk.utf16, cjk.utf32) == (3, 2, 4)
    (emoji,) = encoding_costs({"e": "🐶"})  # outside the BMP: a UTF-16 surrogate pair
    assert (emoji.utf8, emoji.utf16, emoji.utf32) == (4, 4, 4)
    assert emoji.per_char("utf-8") == 4.0


def test_wrong_decoder_works_on_ascii_fails_on_multibyte():
    assert decode_utf8_bytes_wrong("hello".encode()) == "hello"
    with pytest.raises(UnicodeDecodeError):
        decode_utf8_bytes_wrong("ć".encode())


@pytest.mark.parametrize("ch", ["A", "é", "ć", "针", "🐶", "\x00", "\U0010ffff"])
def test_lead_byte_announces_length(ch):
    data = ch.encode("utf-8")
    assert utf8_sequence_length(data[0]) == len(data)
    assert all(utf8_sequence_length(b) == 0 for b in data[1:])  # continuation bytes


def test_lead_byte_rejects_non_bytes_and_invalid_leads():
    with pytest.raises(ValueError):
        utf8_sequence_length(256)
    assert utf8_sequence_length(0b11111000) == 0


def test_rows_and_samples():
    (row,) = utf8_byte_rows("é")
    assert row == {"char": "é", "code point": "U+00E9", "bytes": 2, "bits": "11000011 10101001", "lead says": 2}
    assert "ć" in SAMPLES["Croatian"] and "đ" in SAMPLES["Croatian"]


def test_byte_patterns_classify_every_byte_of_real_text():
    from lmcore.unicode import byte_pattern, byte_pattern_counts

    assert [byte_pattern(b) for b in "é🐶".encode()] == ["110xxxxx", "10xxxxxx", "11110xxx", "10xxxxxx", "10xxxxxx", "10xxxxxx"]
    assert byte_pattern(0xFF) == "invalid"
    counts = byte_pattern_counts("aé针".encode())
    assert counts == {"0xxxxxxx": 1, "10xxxxxx": 3, "110xxxxx": 1, "1110xxxx": 1, "11110xxx": 0}
