"""Each fast path against its reference: the same pre-tokens, merges, vocab and ids.

The reference functions are the book's (``pretokenize``, ``merge_pretokens``, ``Tokenizer``); the
fast layer (``lmcore.tokenizer.fast``) is what the library's defaults run.
"""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmcore.tokenizer.fast as fast
from lmcore.data import cache_dir
from lmcore.texts import KINDS, out_of_domain_text
from lmcore.tokenizer import (
    GPT2_PATTERN,
    FastTokenizer,
    Tokenizer,
    count_pretokens,
    fast_merge_pretokens,
    fast_pretokenize,
    load_gpt2,
    merge_pretokens,
    pretokenize,
    train_bpe,
)
from lmcore.tokenizer.pretokenize import PRETOKEN_RE

EOT = "<|endoftext|>"


def _text(kind: str, n: int) -> str:
    if kind == "tinystories":
        return (cache_dir() / "tinystories-v1-train-first-2mib.txt").read_text(encoding="utf-8")[:n]  # stories between EOTs
    return out_of_domain_text(kind, n)


@pytest.fixture(scope="module")
def enc(gpt2):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {t: i for i, t in gpt2.vocab.items() if i != 50256}
    return tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


# -- the pre-tokenizer: fast_pretokenize against pretokenize -------------------------------------------
def test_pretokenize_is_gpt2s_pattern():
    assert pretokenize("Hi, it's 42!") == ["Hi", ",", " it", "'s", " 42", "!"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(
    ["é", "ć", "中文", "🐶", "\u00a0", "\u3000", "\u2028", "\x85", "½", "٣", " é", "é ", "\n\né", "’s", "\x1c", "\x0b",
     "“", "” ", " —", "…\n", "€5", "«é»"])),
    max_size=6))
def test_fast_pretokenize_equals_pretokenize(inserts):
    """The ASCII fast path and its cuts around non-ASCII stretches change no pre-token."""
    base = ("Once upon a time, Tim's dog didn't run.\n\n  It's 42 o'clock!!  \t\r\n" * 80)
    text = base
    for at, piece in sorted(inserts, reverse=True):
        text = text[:at] + piece + text[at:]
    assert fast_pretokenize(text) == pretokenize(text)


def test_the_fast_pattern_reads_every_non_ascii_symbol_alike():
    """Every non-ASCII code point that is not a letter, number or space (about 950,000 with the unassigned)
    goes to the ASCII pattern, and it cuts them exactly as GPT-2's Unicode pattern does."""
    symbols = [c for c in map(chr, range(0x80, 0x110000)) if not fast._MISREAD.match(c)]
    assert len(symbols) > 10_000 and "“" in symbols and "é" not in symbols and "\u00a0" not in symbols
    text = "".join(f"a{c}b {c}{c}1 'd{c}s  {c}\n" for c in symbols)
    assert fast_pretokenize(text) == pretokenize(text)


@pytest.mark.parametrize("kind", ["tinystories", *KINDS])
def test_fast_pretokenize_equals_pretokenize_on_every_kind(kind):
    text = _text(kind, 300_000)
    assert fast_pretokenize(text) == pretokenize(text) == PRETOKEN_RE.findall(text)


# -- the trainer: fast_merge_pretokens (heap) against merge_pretokens (max) ------------------------------
@pytest.mark.parametrize("kind", ["tinystories", "code"])
def test_heap_trainer_equals_reference_on_real_text(kind):
    counts = Counter(t for piece in _text(kind, 100_000).split(EOT) for t in pretokenize(piece))
    merge_counts: list[int] = []
    assert fast_merge_pretokens(counts, 700, [EOT], merge_counts=merge_counts) == merge_pretokens(counts, 700, [EOT])
    assert len(merge_counts) == 700 - 257


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcé🐶 ", min_size=1, max_size=9), st.integers(1, 5), max_size=25),
       st.integers(256, 330))
def test_heap_trainer_equals_reference_on_ties(counts, vocab_size):
    """Small counts over few symbols: many ties, prefixes of each other, pairs of equal tokens."""
    assert fast_merge_pretokens(counts, vocab_size) == merge_pretokens(counts, vocab_size)


def test_train_bpe_defaults_to_the_fast_layer(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(("the cat sat on the mat. ćevapi 针 🐶" + EOT) * 50, encoding="utf-8")
    calls = []
    for name in ("fast_pretokenize", "fast_merge_pretokens"):
        real = getattr(fast, name)
        monkeypatch.setattr(fast, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    default = train_bpe(path, 300, [EOT], num_workers=1)
    assert "fast_pretokenize" in calls and "fast_merge_pretokens" in calls
    calls.clear()
    assert train_bpe(path, 300, [EOT], num_workers=1, fast=False) == default and calls == []
    monkeypatch.undo()  # the workers below pickle fast_pretokenize by name
    assert count_pretokens(path, [EOT], split=fast_pretokenize) == count_pretokens(path, [EOT])


# -- encoding: FastTokenizer against Tokenizer ---------------------------------------------------------
def test_the_defaults_encode_with_the_fast_layer(tmp_path):
    import importlib

    module = importlib.import_module("lmcore.tokenizer.pretokenize")  # the attribute is the function

    if not (cache_dir() / "gpt2-vocab.json").exists():
        pytest.skip("GPT-2's files not in the data cache")
    assert type(load_gpt2()) is FastTokenizer and type(load_gpt2(fast=False)) is Tokenizer
    reference = Tokenizer({i: bytes([i]) for i in range(256)}, [])
    (tmp_path / "in.txt").write_text("the cat", encoding="utf-8")
    assert reference.encode_file(tmp_path / "in.txt", tmp_path / "out.uint16") == 7
    assert type(module._WORK.args[0]) is FastTokenizer  # what encode_file's workers run


@pytest.mark.parametrize("kind", ["tinystories", *KINDS])
def test_fast_encode_equals_reference_and_tiktoken(gpt2, enc, kind):
    """The ids equal the reference's and tiktoken's (with GPT-2's own pattern), cold and warm."""
    text = _text(kind, 100_000)
    fresh = FastTokenizer(gpt2.vocab, gpt2.merges, [EOT])
    ids = fresh.encode(text)
    assert ids == Tokenizer(gpt2.vocab, gpt2.merges, [EOT]).encode(text) == enc.encode(text, allowed_special={EOT})
    assert fresh.encode(text) == ids  # again, from a warm cache


def test_a_small_cache_still_encodes_right(gpt2):
    """When the cache passes ``cache_size`` it starts afresh; the ids must not change."""
    text = EOT.join(out_of_domain_text("code", 100_000).split("\n\n"))
    bounded = FastTokenizer(gpt2.vocab, gpt2.merges, [EOT], cache_size=500)
    ids = bounded.encode(text)
    assert len(bounded._cache) < 500 < len(set(pretokenize(text)))
    assert ids == Tokenizer(gpt2.vocab, gpt2.merges, [EOT]).encode(text)
