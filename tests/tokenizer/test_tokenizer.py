"""The tokenizer: GPT-2 parity with tiktoken and HF tokenizers, round trips, streaming, errors.

The fixtures give each test the reference ``Tokenizer`` and the ``FastTokenizer`` in turn."""

import io
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.data import cache_dir
from lmcore.tokenizer import GPT2_PATTERN, FastTokenizer, Tokenizer, train_bpe, write_vocab_merges

EOT = "<|endoftext|>"


def _cached(filename):
    path = cache_dir() / filename
    if not path.exists():
        pytest.skip(f"{filename} not in the data cache {cache_dir()}")
    return path


CLASSES = pytest.mark.parametrize("cls", [Tokenizer, FastTokenizer], ids=["reference", "fast"])


@pytest.fixture(scope="module", params=[Tokenizer, FastTokenizer], ids=["reference", "fast"])
def gpt2(request):
    return request.param.from_files(_cached("gpt2-vocab.json"), _cached("gpt2-merges.txt"), [EOT])


@pytest.fixture(scope="module")
def stories():
    text = _cached("tinystories-v1-train-first-2mib.txt").read_text(encoding="utf-8")
    return text[:400_000]


@pytest.fixture(scope="module", params=[Tokenizer, FastTokenizer], ids=["reference", "fast"])
def small(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "c.txt"
    path.write_text(("the cat sat on the mat. ćevapi 针 🐶 naïve café!\n" * 20 + EOT) * 5, encoding="utf-8")
    vocab, merges = train_bpe(path, 320, [EOT, "<|pad|>"])
    return request.param(vocab, merges, [EOT, "<|pad|>", EOT + EOT])


def test_gpt2_equals_tiktoken(gpt2, stories):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {t: i for i, t in gpt2.vocab.items() if i != 50256}
    enc = tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
    ours = gpt2.encode(stories)
    assert ours == enc.encode(stories, allowed_special={EOT})
    valid = _cached("tinystories-v1-valid-sample.txt").read_text(encoding="utf-8")[:200_000]
    assert gpt2.encode(valid) == enc.encode(valid, allowed_special={EOT})
    assert ours.count(50256) == stories.count(EOT) > 0


def test_gpt2_equals_hf_tokenizers(gpt2, stories):
    tk = pytest.importorskip("tokenizers")
    hf = tk.Tokenizer(tk.models.BPE.from_file(str(_cached("gpt2-vocab.json")), str(_cached("gpt2-merges.txt"))))
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tk.decoders.ByteLevel()
    hf.add_special_tokens([EOT])
    sample = stories[:100_000] + " ćevapi 针 🐶 naïve"
    assert gpt2.encode(sample) == hf.encode(sample).ids


def test_gpt2_file_with_version_line(tmp_path, gpt2):
    merges = _cached("gpt2-merges.txt").read_text(encoding="utf-8")
    (tmp_path / "m.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    again = type(gpt2).from_files(_cached("gpt2-vocab.json"), tmp_path / "m.txt", [EOT])
    assert again.merges == gpt2.merges and len(gpt2.merges) == 50_000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from([EOT, "<|pad|>", EOT + EOT, "<|endof"])), max_size=8))
def test_round_trip(small, parts):
    text = "".join(parts)
    assert small.decode(small.encode(text)) == text


def test_specials_longest_match(small):
    ids = small.encode(f"a{EOT}{EOT}b{EOT}")
    assert ids[1] == small.special_ids[EOT + EOT] and ids[-1] == small.special_ids[EOT]
    assert small.encode(EOT * 3) == [small.special_ids[EOT + EOT], small.special_ids[EOT]]


def test_decode_replaces_invalid_utf8(small):
    ids = small.encode("ć")
    assert small.decode(ids) == "ć"
    assert small.decode([0xC4]) == "\ufffd"  # ids 0-255 are the bytes


@pytest.mark.parametrize("chunks", [1, 3, 17, 64])
def test_encode_iterable_equals_encode(small, stories, chunks):
    text = stories[:20_000] + "  \n\n ab" + EOT + " x" + EOT + EOT + "\n"
    pieces = [text[i : i + chunks] for i in range(0, len(text), chunks)]
    assert list(small.encode_iterable(pieces, buffer_chars=500)) == small.encode(text)
    assert list(small.encode_iterable(io.StringIO(text))) == small.encode(text)


def test_encode_iterable_memory_is_flat(small, stories):
    block = stories[:50_000]

    def peak(repeats):
        tracemalloc.start()
        n = sum(1 for _ in small.encode_iterable(block for _ in range(repeats)))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return n, top

    n1, p1 = peak(2)
    n8, p8 = peak(16)
    assert n8 == 8 * n1
    assert p8 < 1.5 * p1, (p1, p8)  # 8x the input, about the same peak


def test_bad_inputs(small, tmp_path):
    with pytest.raises(ValueError, match="unknown token id 99999"):
        small.decode([1, 99999])
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not an lmcore tokenizer file"):
        Tokenizer.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(ValueError, match="not an lmcore tokenizer file"):
        Tokenizer.load(tmp_path / "y.json")
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="vocab and merges disagree"):
        Tokenizer(vocab, [(b"a", b"b")])
    with pytest.raises(ValueError, match="256 single bytes"):
        Tokenizer({0: b"a"}, [])
    (tmp_path / "v.json").write_text(json.dumps({"a": 0}))
    (tmp_path / "m.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="m.txt:1: expected two tokens"):
        Tokenizer.from_files(tmp_path / "v.json", tmp_path / "m.txt")


def test_save_load_and_gpt2_format(small, tmp_path):
    small.save(tmp_path / "tok.json")
    again = type(small).load(tmp_path / "tok.json")
    assert type(again) is type(small)
    assert again.vocab == small.vocab and again.merges == small.merges and again.special_ids == small.special_ids
    write_vocab_merges(small.vocab, small.merges, tmp_path / "v.json", tmp_path / "m.txt")
    other = type(small).from_files(tmp_path / "v.json", tmp_path / "m.txt", small.special_tokens)
    text = "the cat ćevapi 针" + EOT
    assert other.encode(text) == small.encode(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_encode_file(small, stories, tmp_path, workers):
    path = tmp_path / "in.txt"
    text = stories[:100_000]
    path.write_text(text, encoding="utf-8")
    n = small.encode_file(path, tmp_path / "out.bin", num_workers=workers, chunk_bytes=10_000)
    ids = np.fromfile(tmp_path / "out.bin", dtype=np.uint16)
    assert n == ids.size and ids.tolist() == small.encode(text)
    assert not (tmp_path / "out.bin.part").exists()


# -- bad input, and chunking that cannot change the ids (issue 12) ------------------------------------


def test_special_tokens_must_be_a_list_of_non_empty_strings(small, tmp_path):
    with pytest.raises(ValueError, match=r"must be a list of strings, got the string '<\|endoftext\|>'"):
        Tokenizer(small.vocab, small.merges, EOT)
    with pytest.raises(ValueError, match="the empty string cannot be a special token"):
        Tokenizer(small.vocab, small.merges, [EOT, ""])
    path = tmp_path / "c.txt"
    path.write_text("a b c")
    with pytest.raises(ValueError, match="must be a list of strings"):
        train_bpe(path, 300, EOT)
    with pytest.raises(ValueError, match="empty string"):
        train_bpe(path, 300, [""])


@pytest.mark.parametrize("workers", [1, 2])
def test_non_utf8_training_input_is_refused_with_the_offset(tmp_path, workers):
    path = tmp_path / "latin1.txt"
    good = ("the cat sat on the mat. " * 400).encode()
    path.write_bytes(good + "café".encode("latin-1") + good)
    offset = len(good) + 3
    with pytest.raises(ValueError, match=rf"latin1.txt: not UTF-8 at byte offset {offset:,} \(b'\\xe9"):
        train_bpe(path, 300, [EOT], num_workers=workers)
    vocab, _ = train_bpe(path, 300, [EOT], num_workers=workers, errors="replace")  # asked for explicitly
    assert any(b"\xef\xbf" in t for t in vocab.values())  # U+FFFD's bytes were counted and merged


def test_encode_file_refuses_non_utf8(small, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"the cat \xff sat")
    with pytest.raises(ValueError, match=r"bad.txt: not UTF-8 at byte offset 8 "):
        small.encode_file(path, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.bin.part").exists()
    assert small.encode_file(path, tmp_path / "out.bin", errors="replace") == len(small.encode("the cat \ufffd sat"))


def test_decode_refuses_non_integer_ids(small):
    with pytest.raises(ValueError, match=r"token ids must be integers, got 1.7"):
        small.decode([1.7])
    with pytest.raises(ValueError, match="token ids must be integers"):
        small.decode(["1"])
    import torch

    ids = small.encode("the cat")
    assert small.decode(np.array(ids)) == small.decode(torch.tensor(ids)) == "the cat"


@CLASSES
@pytest.mark.parametrize("specials", [[], [EOT]])
@pytest.mark.parametrize("chunk_bytes", [7, 50, 333])
def test_encode_file_equals_encode_whatever_the_chunks(tmp_path, specials, chunk_bytes, cls):
    """Chunk cuts inside "\\n\\n\\n" (one pre-token) or inside a special token would change the ids.
    ``encode_file`` encodes with the fast layer whatever the class: the reference's ``encode`` checks it."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(("once upon\n\n\na time  there\n\nwas" + EOT + "a cat \u3000 \t\n") * 40, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 300, specials or [EOT])
    tok = cls(vocab, merges, specials)
    text = ("the end.\n\n\n\nThe start" + EOT + "x\n\n\ny 针 🐶\u3000\u3000z  \n") * 300
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8")
    for workers in (1, 2):
        n = tok.encode_file(path, tmp_path / "out.uint16", num_workers=workers, chunk_bytes=chunk_bytes)
        ids = np.fromfile(tmp_path / "out.uint16", dtype=np.uint16).tolist()
        assert n == len(ids) and ids == tok.encode(text)
    meta = json.loads((tmp_path / "out.uint16.json").read_text())
    assert meta == {"dtype": "uint16", "vocab_size": tok.vocab_size, "num_tokens": n}


def test_chunked_training_equals_one_piece(tmp_path):
    """Pre-token counts from many small chunks equal those of the whole file, with and without specials."""
    from collections import Counter

    import regex

    from lmcore.tokenizer import count_pretokens

    path = tmp_path / "c.txt"
    text = ("a\n\n\nb  c" + EOT + "d \u3000e\n\n") * 200
    path.write_text(text, encoding="utf-8")
    assert count_pretokens(path, [], num_workers=2, chunk_bytes=13) == Counter(regex.findall(GPT2_PATTERN, text))
    pieces = text.split(EOT)
    expected = Counter(t for p in pieces for t in regex.findall(GPT2_PATTERN, p))
    assert count_pretokens(path, [EOT], num_workers=2, chunk_bytes=13) == expected


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("vocab"), r"field 'vocab' must be a JSON object, it is missing"),
        (lambda d: d.update(merges="a b"), r"field 'merges' must be a JSON array, it is a str"),
        (lambda d: d.update(special_tokens=EOT), r"field 'special_tokens' must be a JSON array"),
        (lambda d: d["merges"].append("a b c"), r"merges\[\d+\] must be two tokens separated by one space"),
        (lambda d: d["vocab"].update({"zz": "7"}), r"field 'vocab' must map token strings to non-negative integer ids"),
        (lambda d: d.update(special_tokens=[""]), r"the empty string cannot be a special token"),
    ],
)
def test_load_names_the_bad_field(small, tmp_path, change, message):
    small.save(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    change(data)
    (tmp_path / "t.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.json: " + message):
        Tokenizer.load(tmp_path / "t.json")


def test_encode_speed_measures_a_copy(small, stories):
    from lmcore.tokenizer import encode_speed

    small._cache.clear()
    cold, warm = encode_speed(small, stories[:100_000], repeats=2)
    assert len(small._cache) == 0  # measured on a copy
    assert cold > 0 and warm > 0


def test_a_dropped_tokenizer_is_freed_at_once(small, stories):
    """No reference cycle (the pre-token cache holds BPE's tables, not the tokenizer): a benchmark
    that builds tokenizer after tokenizer must not keep them all until a full garbage collection."""
    import gc
    import weakref

    tok = type(small)(small.vocab, small.merges, small.special_tokens)
    tok.encode(stories[:20_000])
    gone = weakref.ref(tok)
    gc.disable()
    try:
        del tok
        assert gone() is None
    finally:
        gc.enable()
