"""The fast layer's BPE against the reference rank loop (``Tokenizer.bpe``) and BPE as defined:
``bpe_pretoken``, and tiktoken where ``tiktoken_can_encode`` says it gives the merges' ids."""

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore.data import cache_dir
from lmcore.texts import KINDS, out_of_domain_text
from lmcore.tokenizer import FastTokenizer, Tokenizer, apply_merge, merge_pretokens, tiktoken_can_encode, train_bpe
from lmcore.tokenizer.fast import bpe_pretoken
from lmcore.tokenizer.pretokenize import PRETOKEN_RE

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny vocabulary with repeated-symbol merges (``aa``, ``aaaa``), where overlaps matter."""
    path = tmp_path_factory.mktemp("bpe") / "c.txt"
    path.write_text("aaaaaaa aaa aa a ababab xxxyyy low lower lowest newest widest 🐶🐶 " * 30, encoding="utf-8")
    vocab, merges = train_bpe(path, 300, [EOT])
    return FastTokenizer(vocab, merges, [EOT])


def _loop(tok: Tokenizer, pretoken: str | bytes) -> list[int]:
    return bpe_pretoken(pretoken, tok._byte_ids, tok._rank_of, tok._made)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_fast_bpe_equals_the_reference_on_text_of_every_kind(gpt2, kind):
    pretokens = sorted(set(PRETOKEN_RE.findall(out_of_domain_text(kind, 60_000))))
    assert len(pretokens) > 1000
    reference = [Tokenizer.bpe(gpt2, p) for p in pretokens]
    assert [gpt2.bpe(p) for p in pretokens] == [_loop(gpt2, p) for p in pretokens] == reference


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet="ab xy🐶lowerst", min_size=1, max_size=40), max_size=30))
def test_the_fast_bpe_equals_the_reference_on_runs_and_overlaps(small, words):
    reference = [Tokenizer.bpe(small, w) for w in words]
    assert [small.bpe(w) for w in words] == [_loop(small, w.encode("utf-8")) for w in words] == reference


def test_edge_cases(gpt2):
    for w in ["a", " " * 1000, "!" * 999, "aaaa", "\n\n\n", "🐶" * 50]:
        assert gpt2.bpe(w) == _loop(gpt2, w) == Tokenizer.bpe(gpt2, w)
    assert _loop(gpt2, b"") == [] and _loop(gpt2, b"\xff\xfe") == [gpt2._byte_ids[0xFF], gpt2._byte_ids[0xFE]]


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
    assert tok.encode("aaaa") == [256, 256]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=40),
       st.booleans(), st.randoms(),
       st.lists(st.text(alphabet="abc", min_size=1, max_size=12) | st.sampled_from(["aaaa", "aaaaaaa", "ababab", "bbcccc"]),
                max_size=10))
def test_bpe_equals_the_definition_on_random_merges(picks, shuffle, rnd, words):
    """Merge lists over ``a b c`` with pairs listed twice and tokens made twice, in made order or
    shuffled (so a merge may come before the merges that make its parts): whichever BPE the fast
    tokenizer runs (tiktoken or ``bpe_pretoken``), its ids are the definition's."""
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
        assert tok.bpe(w) == Tokenizer.bpe(tok, w) == definition(w) == tok.encode(w), (w, merges)


def _random_merges(picks, rnd, shuffle: bool, renumber: bool = False) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Merges over ``a b c``, each pair once and each token made once, in the order of the picks
    (parts before what they make) or, with ``shuffle``, in any order. Ids follow the picks, or with
    ``renumber`` the list as shuffled: then they rise with the merges, while a merge may still come
    before the merge that makes one of its parts."""
    tokens, merges = [b"a", b"b", b"c"], []
    for i, j in picks:
        a, b = tokens[i % len(tokens)], tokens[j % len(tokens)]
        if a + b not in tokens:
            merges.append((a, b))
            tokens.append(a + b)
    if shuffle:
        rnd.shuffle(merges)
    made = [a + b for a, b in merges] if renumber else tokens[3:]
    return {i: bytes([i]) for i in range(256)} | {256 + k: t for k, t in enumerate(made)}, merges


def test_gpt2_and_trained_vocabularies_are_tiktokens(gpt2, tmp_path):
    """GPT-2's merges, and those the trainer learns, pass the check, so the defaults encode with tiktoken."""
    assert tiktoken_can_encode(gpt2) and isinstance(gpt2._bpe.__self__, tiktoken.Encoding)
    path = tmp_path / "c.txt"
    path.write_text((cache_dir() / "tinystories-v1-train-first-2mib.txt").read_text(encoding="utf-8")[:400_000], encoding="utf-8")
    assert tiktoken_can_encode(FastTokenizer(*train_bpe(path, 2_000, [EOT]), [EOT]))


def test_a_token_cut_on_the_way_is_not_tiktokens():
    """``abc`` made as ``ab + c``, but ``b c`` merges first: BPE gives ``a, bc``, tiktoken ``abc``.
    The check refuses this vocabulary, so the fast tokenizer keeps ``bpe_pretoken``."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"bc", 257: b"ab", 258: b"abc"}
    merges = [(b"b", b"c"), (b"a", b"b"), (b"ab", b"c")]
    tok = FastTokenizer(vocab, merges)
    ranks = {t: i for i, t in vocab.items()}
    assert tiktoken.Encoding("abc", pat_str=r"(?s).+", mergeable_ranks=ranks, special_tokens={}).encode_ordinary("abc") == [258]
    assert not tiktoken_can_encode(tok) and tok.bpe("abc") == Tokenizer.bpe(tok, "abc") == [ord("a"), 256]
    assert tok.encode("abc abc") == [ord("a"), 256, ord(" "), ord("a"), 256]


def test_a_merge_of_a_later_token_is_not_tiktokens():
    """``ca c`` ranked before ``c a``, which makes ``ca``: BPE joins ``c a`` everywhere in ``caca``
    (``ca, ca``); tiktoken joins the first ``c a``, and then ``ca c`` outranks the second (``cac, a``).
    Every token is made once, ids rise, and BPE gives each token back, so only the condition that a
    merge joins tokens made before it refuses this vocabulary."""
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"cac", 257: b"ca"}
    merges = [(b"ca", b"c"), (b"c", b"a")]
    tok = FastTokenizer(vocab, merges)
    enc = tiktoken.Encoding("ca", pat_str=r"(?s).+", mergeable_ranks={t: i for i, t in vocab.items()}, special_tokens={})
    assert enc.encode_ordinary("caca") == [256, 97]
    assert [_loop(tok, vocab[t]) for t in (256, 257)] == [[256], [257]]
    assert not tiktoken_can_encode(tok) and tok.encode("caca") == Tokenizer(vocab, merges).encode("caca") == [257, 257]


def test_an_id_tiktoken_cannot_rank_is_not_tiktokens():
    """tiktoken's ranks are unsigned 32-bit, the largest meaning "no merge": a token with that id, or
    a larger or negative one, is encoded by ``bpe_pretoken``, with the reference's ids."""
    for big in (2**32 - 1, 2**32, 2**40, -5):
        vocab = {i: bytes([i]) for i in range(256)} | {big: b"ab"}
        tok = FastTokenizer(vocab, [(b"a", b"b")])
        assert not tiktoken_can_encode(tok) and tok.encode("abc") == Tokenizer(vocab, [(b"a", b"b")]).encode("abc") == [big, 99]


def test_a_token_made_twice_or_out_of_order_is_not_tiktokens():
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab", 257: b"abc"}
    assert tiktoken_can_encode(Tokenizer(vocab, [(b"a", b"b"), (b"ab", b"c")]))
    assert not tiktoken_can_encode(Tokenizer(vocab, [(b"a", b"b"), (b"a", b"b"), (b"ab", b"c")]))  # ab made twice
    assert not tiktoken_can_encode(Tokenizer(vocab | {256: b"abc", 257: b"ab"}, [(b"a", b"b"), (b"ab", b"c")]))  # ids fall


def test_lone_surrogates_raise_as_in_the_reference(gpt2):
    """tiktoken would replace a lone surrogate with U+FFFD; the fast tokenizer raises, as the reference does."""
    for tok in (gpt2, Tokenizer(gpt2.vocab, gpt2.merges)):
        with pytest.raises(UnicodeEncodeError):
            tok.encode("a\ud800b")
        with pytest.raises(UnicodeEncodeError):
            tok.bpe("\udc80")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=12),
       st.booleans(), st.booleans(), st.randoms(),
       st.lists(st.text(alphabet="abc", min_size=1, max_size=14), min_size=1, max_size=12))
def test_where_the_check_passes_tiktoken_gives_the_merges_ids(picks, shuffle, renumber, rnd, words):
    """The argument of ``tiktoken_can_encode``, tried: on random merge lists that pass the check,
    tiktoken's ids equal BPE's on every word; on those that fail, the fast tokenizer does not use it."""
    vocab, merges = _random_merges(picks, rnd, shuffle, renumber)
    tok = FastTokenizer(vocab, merges)
    definition = _bpe_by_definition(tok)
    assert isinstance(getattr(tok._bpe, "__self__", None), tiktoken.Encoding) == tiktoken_can_encode(tok)
    for w in words:
        assert tok.bpe(w) == definition(w), (w, merges)
    if tiktoken_can_encode(tok):
        ranks = {t: i for i, t in vocab.items() if i < 256 or t in {a + b for a, b in merges}}
        enc = tiktoken.Encoding("random", pat_str=r"(?s).+", mergeable_ranks=ranks, special_tokens={})
        assert [enc.encode_ordinary(w) for w in words] == list(map(definition, words))


def test_the_check_passes_and_fails_on_random_merges():
    """Both answers occur on the lists the property test draws, so it tests both sides."""
    import random

    rnd = random.Random(0)
    verdicts = [tiktoken_can_encode(Tokenizer(*_random_merges([(rnd.randrange(99), rnd.randrange(99)) for _ in range(8)],
                                                              rnd, False))) for _ in range(200)]
    assert 40 < sum(verdicts) < 160


def test_on_shuffled_merge_lists_tiktoken_is_used_only_where_it_agrees_on_every_short_word():
    """Shuffled lists with ids in list order, where a merge often comes before the one that makes its
    part: of 1,500 (seeded), every list that passes the check gives BPE's ids through tiktoken on
    all 1,092 words of up to six letters, and some lists are refused by that condition alone."""
    import itertools
    import random

    rnd = random.Random(0)
    words = ["".join(w) for n in range(1, 7) for w in itertools.product("abc", repeat=n)]
    passed = refused_for_order_alone = 0
    for _ in range(1_500):
        picks = [(rnd.randrange(99), rnd.randrange(99)) for _ in range(rnd.randint(1, 7))]
        vocab, merges = _random_merges(picks, rnd, shuffle=True, renumber=True)
        tok = Tokenizer(vocab, merges)
        if tiktoken_can_encode(tok):
            passed += 1
            ranks = {t: i for i, t in vocab.items()}
            enc = tiktoken.Encoding("random", pat_str=r"(?s).+", mergeable_ranks=ranks, special_tokens={})
            assert [enc.encode_ordinary(w) for w in words] == [tok.bpe(w) for w in words], merges
        elif all(_loop(tok, vocab[t]) == [t] for t in tok._made):  # ids rise and each token comes back
            refused_for_order_alone += 1
    assert passed > 300 and refused_for_order_alone > 50, (passed, refused_for_order_alone)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=10), st.integers(1, 5), min_size=1, max_size=20),
       st.integers(257, 290), st.lists(st.text(alphabet="abc", min_size=1, max_size=14), min_size=1, max_size=12))
def test_trained_merges_pass_the_check_and_tiktoken_gives_their_ids(counts, vocab_size, words):
    tok = FastTokenizer(*merge_pretokens(counts, vocab_size))
    assert tiktoken_can_encode(tok)
    definition = _bpe_by_definition(tok)
    assert [tok.bpe(w) for w in words] == list(map(definition, words))
