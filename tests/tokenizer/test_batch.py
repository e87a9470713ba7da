"""The fast layer's BPE: the batched ``bpe_many`` and the one-at-a-time ``bpe_pretoken`` (``FastTokenizer.bpe``)
against the reference rank loop (``Tokenizer.bpe``) and BPE as defined; the whole-token proof."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.data import cache_dir
from lmcore.texts import KINDS, out_of_domain_text
from lmcore.tokenizer import FastTokenizer, Tokenizer, apply_merge, train_bpe
from lmcore.tokenizer.batch import bpe_many
from lmcore.tokenizer.pretokenize import PRETOKEN_RE

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny vocabulary with repeated-symbol merges (``aa``, ``aaaa``), where overlaps matter."""
    path = tmp_path_factory.mktemp("batch") / "c.txt"
    path.write_text("aaaaaaa aaa aa a ababab xxxyyy low lower lowest newest widest 🐶🐶 " * 30, encoding="utf-8")
    vocab, merges = train_bpe(path, 300, [EOT])
    return FastTokenizer(vocab, merges, [EOT])


@pytest.mark.parametrize("kind", list(KINDS))
def test_batch_equals_loop_on_text_of_every_kind(gpt2, kind):
    pretokens = sorted(set(PRETOKEN_RE.findall(out_of_domain_text(kind, 60_000))))
    assert len(pretokens) > 1000
    assert bpe_many(pretokens, gpt2._pair_ranks) == {p: gpt2.bpe(p) for p in pretokens}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="ab xy🐶lowerst", min_size=1, max_size=40), max_size=30))
def test_batch_equals_loop_on_runs_and_overlaps(small, words):
    assert bpe_many(words, small._pair_ranks) == {w: small.bpe(w) for w in words}


def test_batch_edge_cases(gpt2):
    words = ["", "a", " " * 1000, "!" * 999, "aaaa", "\n\n\n", "🐶" * 50]
    assert bpe_many(words[1:], gpt2._pair_ranks) == {w: gpt2.bpe(w) for w in words[1:]}
    assert bpe_many([], gpt2._pair_ranks) == {}


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
    fast = [gpt2.bpe(p) for p in pretokens]
    assert fast == [Tokenizer.bpe(gpt2, p) for p in pretokens]  # the reference rank loop
    assert fast == list(map(_bpe_by_definition(gpt2), pretokens))


def test_a_step_merges_its_pair_everywhere_before_the_next_rank():
    """``aaaa`` with merges ``(aa, a)`` then ``(a, a)``: the step of ``(a, a)`` merges both pairs,
    giving ``aa aa``; merging one pair at a time would let ``(aa, a)`` in first: ``aaa a``."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"aa", 257: b"aaa"}
    tok = FastTokenizer(vocab, [(b"aa", b"a"), (b"a", b"a")])
    assert tok.bpe("aaaa") == Tokenizer.bpe(tok, "aaaa") == _bpe_by_definition(tok)("aaaa") == [256, 256]
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
    tok = FastTokenizer(vocab, merges)
    definition = _bpe_by_definition(tok)
    for w in words:
        assert tok.bpe(w) == Tokenizer.bpe(tok, w) == definition(w), (w, merges)
    assert bpe_many(words, tok._pair_ranks) == {w: tok.bpe(w) for w in words}


def _whole_by_bpe(tok: Tokenizer) -> dict[int, bool]:
    """For every merged token whose bytes are text: does BPE on those bytes give just that token?"""
    out = {}
    for i, b in tok.vocab.items():
        if len(b) > 1 and i not in tok.special_ids.values():
            try:
                out[i] = tok.bpe(b.decode("utf-8")) == [i]
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
    tok = FastTokenizer(vocab, merges)
    assert tok.bpe("abc") == [ord("a"), 256]
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
    tok = FastTokenizer(vocab, merges)
    for i, whole in _whole_by_bpe(tok).items():
        if tok._pair_ranks.whole[i]:
            assert whole, (vocab[i], merges)
