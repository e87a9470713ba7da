"""Unicode and UTF-8: the measurements chapter 1 makes.

Text reaches a language model as bytes. These helpers measure what each encoding costs,
show how UTF-8 announces the length of a character in its first byte, and keep a decoder
that gets this wrong, so the chapter can show exactly where it breaks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = [
    "SAMPLES", "EncodingCost", "encoding_costs", "decode_utf8_bytes_wrong", "utf8_sequence_length",
    "utf8_byte_rows", "BYTE_PATTERNS", "byte_pattern", "byte_pattern_counts",
]

#: Short real sentences in several scripts (the English one comes from TinyStories at run time).
SAMPLES: dict[str, str] = {
    "German": "Über den Bächen blühen früh die Gänseblümchen, und Jürgen grüßt die Nachbarn.",
    "Croatian": "Šćućureni ježić čeka đaka pokraj žute kuće; ćaćin čamac plovi niz rijeku.",
    "Chinese": "从前有一个小女孩，她在房间里找到了一根针，她想把它给妈妈看。",
    "Emoji": "🐶🐱🌈🎉🚀❤️👍🏽👨‍👩‍👧",
}


@dataclass(frozen=True)
class EncodingCost:
    """Bytes a text takes in each encoding, and per character (code point)."""

    name: str
    chars: int
    utf8: int
    utf16: int
    utf32: int

    def per_char(self, encoding: str) -> float:
        return getattr(self, encoding.replace("-", "")) / self.chars


def encoding_costs(texts: dict[str, str]) -> list[EncodingCost]:
    """Measure each text in UTF-8, UTF-16 and UTF-32 (little-endian, so no byte-order mark)."""
    return [
        EncodingCost(
            name,
            len(text),
            len(text.encode("utf-8")),
            len(text.encode("utf-16-le")),
            len(text.encode("utf-32-le")),
        )
        for name, text in texts.items()
    ]


def decode_utf8_bytes_wrong(bytestring: bytes) -> str:
    """A broken decoder: decodes each byte on its own.

    It works for ASCII, where one byte is one character, and raises on any character that
    UTF-8 spreads over several bytes, because a lone lead or continuation byte is not valid.
    """
    return "".join(bytes([b]).decode("utf-8") for b in bytestring)


def _leading_ones(b: int) -> int:
    if not 0 <= b <= 0xFF:
        raise ValueError(f"a byte is 0..255, got {b}")
    return 8 - len(f"{b:08b}".lstrip("1"))


def utf8_sequence_length(lead: int) -> int:
    """How many bytes the UTF-8 sequence starting with byte ``lead`` has (0: not a lead byte).

    The count of leading 1 bits says it: 0xxxxxxx is 1 byte, 110xxxxx 2, 1110xxxx 3,
    11110xxx 4; 10xxxxxx continues a sequence and cannot start one.
    """
    ones = _leading_ones(lead)
    if ones == 0:
        return 1
    if ones == 1 or ones > 4:
        return 0
    return ones


def utf8_byte_rows(chars: str) -> list[dict[str, object]]:
    """For each character: its code point, UTF-8 bytes in binary, and the length its lead byte announces."""
    rows = []
    for ch in chars:
        data = ch.encode("utf-8")
        rows.append(
            {
                "char": ch,
                "code point": f"U+{ord(ch):04X}",
                "bytes": len(data),
                "bits": " ".join(f"{b:08b}" for b in data),
                "lead says": utf8_sequence_length(data[0]),
            }
        )
    return rows


#: The five shapes a UTF-8 byte can have, with what each one means.
BYTE_PATTERNS: dict[str, str] = {
    "0xxxxxxx": "1-byte character (ASCII)",
    "10xxxxxx": "continuation byte",
    "110xxxxx": "lead of a 2-byte character",
    "1110xxxx": "lead of a 3-byte character",
    "11110xxx": "lead of a 4-byte character",
}


def byte_pattern(b: int) -> str:
    """The UTF-8 shape of one byte: its leading 1 bits, the 0 that ends them, then payload bits."""
    ones = _leading_ones(b)
    return "invalid" if ones > 4 else "1" * ones + "0" + "x" * (7 - ones)


def byte_pattern_counts(data: bytes) -> dict[str, int]:
    """How many bytes of ``data`` have each UTF-8 shape (keys of :data:`BYTE_PATTERNS`, plus 'invalid')."""
    counts = dict.fromkeys(BYTE_PATTERNS, 0)  # every shape, in order, even one that does not occur
    counts.update(Counter(map(byte_pattern, data)))
    return counts
