"""The batched BPE (``bpe_many``) against the one-at-a-time loop it replaces for new pre-tokens."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.data import cache_dir
from lmcore.texts import KINDS, out_of_domain_text
from lmcore.tokenizer import GPT2_PATTERN, Tokenizer, apply_merge, train_bpe
from lmcore.tokenizer.batch import bpe_many
from lmcore.tokenizer.pretokenize import PRETOKEN_RE

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2():
    vocab, merges = cache_dir() / "gpt2-vocab.json", cache_dir() / "gpt2-merges.txt"
    if not (vocab.exists() and merges.exists()):
        pytest.skip(f"GPT-2's files not in the data cache {cache_dir()}")
    return Tokenizer.from_files(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny vocabulary with repeated-symbol merges (``aa``, ``aaaa``), where overlaps matter."""
    path = tmp_path_factory.mktemp("batch") / "c.txt"
    path.write_text("aaaaaaa aaa aa a ababab xxxyyy low lower lowest newest widest 🐶🐶 " * 30, encoding="utf-8")
    vocab, merges = train_bpe(path, 300, [EOT])
    return Tokenizer(vocab, merges, [EOT])


@pytest.mark.parametrize("kind", list(KINDS))
def test_batch_equals_loop_on_text_of_every_kind(gpt2, kind):
    pretokens = sorted(set(PRETOKEN_RE.findall(out_of_domain_text(kind, 60_000))))
    assert len(pretokens) > 1000
    assert bpe_many(pretokens, gpt2._pair_ranks) == {p: gpt2._bpe(p) for p in pretokens}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="ab xy🐶lowerst", min_size=1, max_size=40), max_size=30))
def test_batch_equals_loop_on_runs_and_overlaps(small, words):
    assert bpe_many(words, small._pair_ranks) == {w: small._bpe(w) for w in words}


def test_batch_edge_cases(gpt2):
    words = ["", "a", " " * 1000, "!" * 999, "aaaa", "\n\n\n", "🐶" * 50]
    assert bpe_many(words[1:], gpt2._pair_ranks) == {w: gpt2._bpe(w) for w in words[1:]}
    assert bpe_many([], gpt2._pair_ranks) == {}


@pytest.mark.parametrize("kind", list(KINDS))
def test_encode_equals_tiktoken_on_out_of_domain_text(gpt2, kind):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {t: i for i, t in gpt2.vocab.items() if i != 50256}
    enc = tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
    text = out_of_domain_text(kind, 200_000)
    fresh = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    assert fresh.encode(text) == enc.encode(text)
    assert fresh.encode(text) == enc.encode(text)  # again, from a warm cache



def _bpe_by_definition(tok: Tokenizer):
    """BPE as defined, on byte strings: find the lowest-ranked pair, merge it everywhere, repeat."""
    ranks = {}
    for rank, pair in enumerate(tok.merges):
        ranks[pair] = rank  # a pair listed twice keeps its later rank, as the tokenizer does
    ids = {t: i for i, t in sorted(tok.vocab.items(), reverse=True)}  # the lowest id of a token listed twice

    def bpe(pretoken: str) -> list[int]:
        parts = [bytes([b]) for b in pretoken.encode("utf-8")]
        while (found := [ranks[p] for p in zip(parts, parts[1:]) if p in ranks]):
            a, b = tok.merges[min(found)]
            parts = apply_merge(parts, a, b, a + b)
        return [ids[p] for p in parts]

    return bpe


@pytest.mark.parametrize("kind", ["tinystories", *KINDS])
def test_bpe_equals_the_definition_on_text_of_every_kind(gpt2, kind):
    if kind == "tinystories":
        text = (cache_dir() / "tinystories-v1-valid-sample.txt").read_text(encoding="utf-8")[:100_000]
    else:
        text = out_of_domain_text(kind, 60_000)
    pretokens = sorted(set(PRETOKEN_RE.findall(text)))
    assert len(pretokens) > 1000
    assert [gpt2._bpe(p) for p in pretokens] == list(map(_bpe_by_definition(gpt2), pretokens))


def test_a_step_merges_its_pair_everywhere_before_the_next_rank():
    """``aaaa`` with merges ``(aa, a)`` then ``(a, a)``: the step of ``(a, a)`` merges both pairs,
    giving ``aa aa``; merging one pair at a time would let ``(aa, a)`` in first: ``aaa a``."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"aa", 257: b"aaa"}
    tok = Tokenizer(vocab, [(b"aa", b"a"), (b"a", b"a")])
    assert tok._bpe("aaaa") == _bpe_by_definition(tok)("aaaa") == [256, 256]
    assert bpe_many(["aaaa"], tok._pair_ranks) == {"aaaa": [256, 256]}
    assert tok.encode("aaaa") == [256, 256]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=40),
       st.booleans(), st.randoms(),
       st.lists(st.text(alphabet="abc", min_size=1, max_size=12) | st.sampled_from(["aaaa", "aaaaaaa", "ababab", "bbcccc"]),
                max_size=10))
def test_bpe_equals_the_definition_on_random_merges(picks, shuffle, rnd, words):
    """Merge lists over ``a b c`` with pairs listed twice and tokens made twice, in made order or
    shuffled (so a merge may come before the merges that make its parts)."""
    tokens, merges = [b"a", b"b", b"c"], []
    for i, j in picks:
        a, b = tokens[i % len(tokens)], tokens[j % len(tokens)]
        merges.append((a, b))
        if a + b not in tokens:
            tokens.append(a + b)
    if shuffle:
        rnd.shuffle(merges)
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256 + k: t for k, t in enumerate(tokens[3:])})
    tok = Tokenizer(vocab, merges)
    definition = _bpe_by_definition(tok)
    for w in words:
        assert tok._bpe(w) == definition(w), (w, merges)
    assert bpe_many(words, tok._pair_ranks) == {w: tok._bpe(w) for w in words}


def _whole_by_bpe(tok: Tokenizer) -> dict[int, bool]:
    """For every merged token whose bytes are text: does BPE on those bytes give just that token?"""
    out = {}
    for i, b in tok.vocab.items():
        if len(b) > 1 and i not in tok.special_ids.values():
            try:
                out[i] = tok._bpe(b.decode("utf-8")) == [i]
            except UnicodeDecodeError:
                pass
    return out


def test_whole_tokens_are_exactly_gpt2s_tokens(gpt2):
    """The proof from the merge tree claims only tokens BPE leaves whole, and on GPT-2 all of them."""
    truth = _whole_by_bpe(gpt2)
    claimed = {i for i in truth if gpt2._pair_ranks.whole[i]}
    assert {i for i, whole in truth.items() if whole} == claimed
    assert len(claimed) > 49_000
    assert not gpt2._pair_ranks.whole[gpt2.special_ids[EOT]]


def test_a_token_cut_on_the_way_is_not_whole():
    """``abc`` made as ``ab + c``, but ``b c`` merges first: BPE gives ``a, bc``, so ``abc`` is not whole."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")]
    vocab.update({256: b"bc", 257: b"ab", 258: b"abc"})
    tok = Tokenizer(vocab, merges)
    assert tok._bpe("abc") == [ord("a"), 256]
    assert list(tok._pair_ranks.whole[256:259]) == [True, True, False]
    assert tok.encode("abc abc") == [ord("a"), 256, ord(" "), ord("a"), 256]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=40),
       st.booleans(), st.randoms())
def test_whole_is_never_claimed_wrongly_on_random_merges(picks, unique, rnd):
    """Random merge lists over ``a b c``: in made order, with a token made twice, or shuffled."""
    tokens, merges, seen = [b"a", b"b", b"c"], [], set()
    for i, j in picks:
        a, b = tokens[i % len(tokens)], tokens[j % len(tokens)]
        if (a, b) not in seen and not (unique and a + b in tokens):
            seen.add((a, b))
            merges.append((a, b))
            if a + b not in tokens:
                tokens.append(a + b)
    if not unique and rnd.random() < 0.3:
        rnd.shuffle(merges)
    vocab = {i: bytes([i]) for i in range(256)}
    vocab.update({256 + k: t for k, t in enumerate(tokens[3:])})
    tok = Tokenizer(vocab, merges)
    for i, whole in _whole_by_bpe(tok).items():
        if tok._pair_ranks.whole[i]:
            assert whole, (vocab[i], merges)


@pytest.mark.parametrize("inline_bpe", [0, 16, 10**9])
@pytest.mark.parametrize("kind", ["tinystories", "code"])
def test_new_pretokens_on_the_spot_or_batched_give_the_same_ids(gpt2, monkeypatch, kind, inline_bpe):
    """A piece's first ``inline_bpe`` new pre-tokens run BPE on the spot, more go to ``bpe_many``:
    the ids equal tiktoken's whichever path runs, and each path does run where it should."""
    import lmcore.tokenizer.tokenizer as module

    tiktoken = pytest.importorskip("tiktoken")
    ranks = {t: i for i, t in gpt2.vocab.items() if i != 50256}
    enc = tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
    if kind == "tinystories":  # many short pieces with a few new words each
        text = (cache_dir() / "tinystories-v1-valid-sample.txt").read_text(encoding="utf-8")[:100_000]
    else:                      # one piece with thousands of new pre-tokens
        text = out_of_domain_text(kind, 100_000)
    batches = []
    monkeypatch.setattr(module, "bpe_many", lambda p, t: batches.append(len(p)) or bpe_many(p, t))
    fresh = Tokenizer(gpt2.vocab, gpt2.merges, [EOT])
    fresh.inline_bpe = inline_bpe
    assert fresh.encode(text) == enc.encode(text, allowed_special={EOT})
    assert (batches == []) == (inline_bpe == 10**9)


def test_a_small_cache_still_encodes_right(gpt2):
    """When the cache passes ``cache_size`` it starts afresh; the ids must not change."""
    text = out_of_domain_text("code", 100_000)
    bounded = Tokenizer(gpt2.vocab, gpt2.merges, [EOT], cache_size=500)
    bounded.lookahead = 5_000
    ids = bounded.encode(text)
    assert len(bounded._cache) <= len(set(PRETOKEN_RE.findall(text)))
    assert ids == gpt2.encode(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(
    ["é", "ć", "中文", "🐶", "\u00a0", "\u3000", "\u2028", "\x85", "½", "٣", " é", "é ", "\n\né", "’s", "\x1c", "\x0b",
     "“", "” ", " —", "…\n", "€5", "«é»"])),
    max_size=6))
def test_pretokenize_equals_the_unicode_pattern(inserts):
    """The ASCII fast path and its cuts around non-ASCII stretches change no pre-token."""
    from lmcore.tokenizer.pretokenize import pretokenize

    base = ("Once upon a time, Tim's dog didn't run.\n\n  It's 42 o'clock!!  \t\r\n" * 80)
    text = base
    for at, piece in sorted(inserts, reverse=True):
        text = text[:at] + piece + text[at:]
    assert pretokenize(text) == PRETOKEN_RE.findall(text)


def test_the_fast_pattern_reads_every_non_ascii_symbol_alike():
    """Every non-ASCII code point that is not a letter, number or space (about 950,000 with the unassigned)
    goes to the ASCII pattern, and it cuts them exactly as GPT-2's Unicode pattern does."""
    from lmcore.tokenizer.pretokenize import _MISREAD, pretokenize

    symbols = [c for c in map(chr, range(0x80, 0x110000)) if not _MISREAD.match(c)]
    assert len(symbols) > 10_000 and "“" in symbols and "é" not in symbols and "\u00a0" not in symbols
    text = "".join(f"a{c}b {c}{c}1 'd{c}s  {c}\n" for c in symbols)
    assert pretokenize(text) == PRETOKEN_RE.findall(text)


@pytest.mark.parametrize("kind", list(KINDS))
def test_pretokenize_equals_the_unicode_pattern_on_every_kind(kind):
    from lmcore.tokenizer.pretokenize import pretokenize

    text = out_of_domain_text(kind, 300_000)
    assert pretokenize(text) == PRETOKEN_RE.findall(text)
