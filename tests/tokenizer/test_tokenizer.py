"""The tokenizer: GPT-2 parity with tiktoken and HF tokenizers, round trips, streaming, errors."""

import io
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.data import cache_dir
from lmcore.tokenizer import GPT2_PATTERN, Tokenizer, train_bpe, write_vocab_merges

EOT = "<|endoftext|>"


def _cached(filename):
    path = cache_dir() / filename
    if not path.exists():
        pytest.skip(f"{filename} not in the data cache {cache_dir()}")
    return path


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_files(_cached("gpt2-vocab.json"), _cached("gpt2-merges.txt"), [EOT])


@pytest.fixture(scope="module")
def stories():
    text = _cached("tinystories-v1-train-first-2mib.txt").read_text(encoding="utf-8")
    return text[:400_000]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "c.txt"
    path.write_text(("the cat sat on the mat. ćevapi 针 🐶 naïve café!\n" * 20 + EOT) * 5, encoding="utf-8")
    vocab, merges = train_bpe(path, 320, [EOT, "<|pad|>"])
    return Tokenizer(vocab, merges, [EOT, "<|pad|>", EOT + EOT])


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
    again = Tokenizer.from_files(_cached("gpt2-vocab.json"), tmp_path / "m.txt", [EOT])
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
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.vocab == small.vocab and again.merges == small.merges and again.special_ids == small.special_ids
    write_vocab_merges(small.vocab, small.merges, tmp_path / "v.json", tmp_path / "m.txt")
    other = Tokenizer.from_files(tmp_path / "v.json", tmp_path / "m.txt", small.special_tokens)
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
