"""The fast layer: the reference functions' results, sooner (appendix "Making it fast").

Each function here has a reference in the core modules and a test that holds the two equal
(``tests/tokenizer/test_fast.py``). The defaults use this layer: :func:`~lmcore.tokenizer.train_bpe`
(:func:`fast_pretokenize`, :func:`fast_merge_pretokens`), :func:`~lmcore.tokenizer.load_gpt2` and
``encode_file`` (:class:`FastTokenizer`: tiktoken where :func:`tiktoken_can_encode`, else :func:`bpe_pretoken`).
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from itertools import chain

import regex
import tiktoken
from tqdm import tqdm

from .pretokenize import PRETOKEN_RE, split_special
from .tokenizer import Tokenizer
from .train import Merges, Vocab, count_pairs, initial_vocab, merge_pair

__all__ = [
    "ASCII_PRETOKEN_RE", "FastTokenizer", "bpe_pretoken", "fast_merge_pretokens", "fast_pretokenize", "tiktoken_can_encode"
]

# -- pre-tokenizing -------------------------------------------------------------------------------
#: GPT-2's pattern for ASCII text, in Python's built-in ``re``, which runs it about twice as fast
#: as ``regex`` runs the Unicode one. On ASCII input the two match alike: ASCII's letters
#: (``\p{L}``) are ``A-Za-z``, its digits (``\p{N}``) ``0-9``, and its Unicode white space (``\s``)
#: the six characters of ``_WS`` (not ``\x1c-\x1f``, which ``re``'s own ``\s`` would add).
_WS = "\t\n\x0b\x0c\r "
ASCII_PRETOKEN_RE = re.compile(
    rf"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
_NON_ASCII = regex.compile(r"[^\x00-\x7f]+")
#: A non-ASCII letter, number or white space: the characters the ASCII pattern would misread.
#: Any other character (curly quotes, dashes, symbols) it reads as GPT-2's pattern does, as
#: neither letter, number nor space.
_MISREAD = regex.compile(r"(?V1)[[\p{L}\p{N}\s]--[\x00-\x7f]]")


def fast_pretokenize(text: str) -> list[str]:
    """:func:`~lmcore.tokenizer.pretokenize`, about twice as fast on ASCII text.

    ASCII text goes to ``ASCII_PRETOKEN_RE``, and so does text whose other characters are
    all punctuation or symbols (a story with curly quotes: 188 of the 2,317 stories of the
    TinyStories sample), which that pattern reads alike. Text with a non-ASCII letter, number or
    space goes to ``PRETOKEN_RE``. (Cutting such text around each non-ASCII stretch, to send the
    rest to the fast pattern, won nothing measurable on ``benchmarks/bench_bpe.py``'s texts.)
    """
    if text.isascii() or not any(_MISREAD.search(run.group()) for run in _NON_ASCII.finditer(text)):
        return ASCII_PRETOKEN_RE.findall(text)
    return PRETOKEN_RE.findall(text)


# -- training -------------------------------------------------------------------------------------
def _descending_key(token: bytes) -> bytes:
    """A key whose ascending order is the descending order of ``token`` (a heap pops its smallest
    entry; a tie in count goes to the greater pair). Each byte b becomes (1, 255 - b) and the
    string ends in 2, so a prefix sorts after its extensions, exactly reversing bytes' order."""
    return bytes(x for b in token for x in (1, 255 - b)) + b"\x02"


def fast_merge_pretokens(
    pretoken_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    progress: bool = False,
    merge_counts: list[int] | None = None,
) -> tuple[Vocab, Merges]:
    """:func:`~lmcore.tokenizer.merge_pretokens` with a heap of candidate pairs.

    The reference finds each merge's pair by a ``max`` over every pair count: thousands of merges
    over tens of thousands of pairs. Here the counts sit in a heap keyed by (count, pair); an entry
    whose count has changed since it was pushed is skipped when it surfaces ("lazy
    invalidation"), and each changed count is pushed anew. On chapter 2's sample (a 10,000-token
    vocabulary from its 2 MiB's distinct pre-tokens) the reference took 11-22 s, this 0.45-0.7 s: about 25-30x.
    If ``merge_counts`` is a list, the count of each merged pair is appended to it, in merge order.
    """
    vocab = initial_vocab(special_tokens, vocab_size)
    keys = [_descending_key(vocab[i]) for i in range(len(vocab))]
    words = [list(w.encode("utf-8")) for w in pretoken_counts]
    freqs = list(pretoken_counts.values())
    counts, where = count_pairs(words, freqs)
    heap = [(-n, keys[a], keys[b], a, b) for (a, b), n in counts.items()]
    heapq.heapify(heap)
    merges: Merges = []
    bar = tqdm(total=vocab_size - len(vocab), desc="merge", unit="merge", disable=not progress)
    while len(vocab) < vocab_size and heap:
        n, _, _, a, b = heapq.heappop(heap)
        if counts.get((a, b)) != -n:
            continue  # stale: this pair's count changed after the entry was pushed
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        keys.append(_descending_key(vocab[new]))
        merges.append((vocab[a], vocab[b]))
        if merge_counts is not None:
            merge_counts.append(-n)
        bar.update()
        for p, change in merge_pair(words, freqs, counts, where, (a, b), new).items():
            if change and p in counts:  # a new count: push it (the old entry goes stale)
                heapq.heappush(heap, (-counts[p], keys[p[0]], keys[p[1]], *p))
    bar.close()
    return vocab, merges


# -- encoding -------------------------------------------------------------------------------------
def bpe_pretoken(pretoken: str | bytes, byte_ids: list[int], rank_of: dict[tuple[int, int], int], made: list[int]) -> list[int]:
    """``Tokenizer.bpe`` (of text, or of raw bytes) with less work a step: ``pair_rank[i]`` is the
    rank of ``ids[i], ids[i + 1]``, so a step's pair is one ``min`` and a merge looks up only the two
    pairs it changed (the reference ranks every pair again and rebuilds the list): 1.8-5x faster on
    the distinct pre-tokens of the texts timed in ``benchmarks/bench_bpe.py`` and the appendix (the
    ratio varies with the text and the run). :func:`tiktoken_can_encode` runs
    it on every token, and a tokenizer whose merges tiktoken cannot replay encodes with it."""
    ids = [byte_ids[b] for b in (pretoken.encode("utf-8") if isinstance(pretoken, str) else pretoken)]
    none = len(made)  # above every rank: "no merge"
    pair_rank = [rank_of.get(pair, none) for pair in zip(ids, ids[1:])]
    while pair_rank and (best := min(pair_rank)) != none:
        i = -1
        while best in pair_rank:  # left to right: the two pairs a merge makes are never this pair
            i = pair_rank.index(best, i + 1)
            ids[i : i + 2] = (made[best],)
            del pair_rank[i]
            if i > 0:
                pair_rank[i - 1] = rank_of.get((ids[i - 1], ids[i]), none)
            if i < len(pair_rank):
                pair_rank[i] = rank_of.get((ids[i], ids[i + 1]), none)
    return ids


def tiktoken_can_encode(tokenizer: Tokenizer) -> bool:
    """Whether tiktoken, given this vocabulary, gives BPE's ids on every input.

    tiktoken reads ranks, not merges. A pre-token that is itself a token comes back as that token;
    otherwise tiktoken joins, one place at a time, the two neighbours whose concatenation is the
    lowest-ranked token, whether or not a merge joins those two. BPE joins the pair of the
    lowest-ranked merge at every place, left to right. The two agree when

    1. each token is made by one merge, and ids rise with the merges' order (tiktoken's ranks are
       ids, 32-bit, the largest meaning "none");
    2. each merge joins tokens made before it (or single bytes);
    3. BPE on each token's own bytes gives that token back.

    Why that is enough. By 2, a merge using a token made at rank r has a rank above r, so the ranks
    of the merges BPE applies rise; and as no merge crosses a boundary that survives, BPE on the
    bytes of any stretch of its tokens passes through the same states. So if BPE ever had neighbours
    u, v spelling a token t that no merge makes from them, BPE on t's bytes would stop at [u, v],
    against 3. Hence every pair tiktoken could join is a merge; by 1 the lowest id is the
    lowest-ranked merge, BPE's pair, and tiktoken takes its places leftmost first, as BPE does.
    Meanwhile no new neighbours spell a token of lower rank: BPE on that token's bytes would reach
    them only after its rank, and as its ranks rise it could not then end at it, against 3. So step
    by step tiktoken stays in BPE's states. A pre-token that is a token comes back whole, as 3 says
    BPE gives. Checking costs one BPE run per merge.

    Fails 3: ``b c``, ``a b``, ``ab c`` (on ``abc`` BPE gives ``a, bc``, tiktoken ``abc``). Fails 2:
    ``ca c``, then ``c a`` (on ``caca`` BPE gives ``ca, ca``, tiktoken ``cac, a``).
    """
    made = tokenizer._made
    if any(a >= b for a, b in zip(made, made[1:])) or not all(0 <= i < 2**32 - 1 for i in tokenizer._byte_ids + made):
        return False  # a token made twice, ids out of the merges' order, or an id tiktoken cannot rank
    made_at = {t: rank for rank, t in enumerate(made)}
    if any(made_at.get(part, -1) >= rank for pair, rank in tokenizer._rank_of.items() for part in pair):
        return False  # a merge joins a token that only a later merge makes
    return all(bpe_pretoken(tokenizer.vocab[t], tokenizer._byte_ids, tokenizer._rank_of, made) == [t] for t in made)


class FastTokenizer(Tokenizer):
    """:class:`~lmcore.tokenizer.Tokenizer` with a faster :meth:`encode`, tested to give the same ids.

    Pre-tokens come from :func:`fast_pretokenize`; a pre-token not in the cache is encoded by
    tiktoken (BPE in Rust, 5-10x faster than :func:`bpe_pretoken` on a new pre-token in the
    appendix's timings) when :func:`tiktoken_can_encode` says it gives the same ids (GPT-2's and
    trained vocabularies do), else by :func:`bpe_pretoken`. Special tokens and pre-tokenizing stay
    this library's, so the ids never depend on tiktoken's own pattern engine.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if tiktoken_can_encode(self):
            tokens = [bytes([b]) for b in range(256)] + [self.vocab[t] for t in self._made]
            ids = self._byte_ids + self._made
            # one piece per call: the pattern takes the whole pre-token, which tiktoken then merges
            encoding = tiktoken.Encoding("lmcore", pat_str=r"(?s).+", mergeable_ranks=dict(zip(tokens, ids)), special_tokens={})
            self._bpe = encoding.encode_ordinary
        else:
            self._bpe = functools.partial(bpe_pretoken, byte_ids=self._byte_ids, rank_of=self._rank_of, made=self._made)
        self._cache = _Cache(self._bpe, self._cache_size)

    def bpe(self, pretoken: str) -> list[int]:
        pretoken.encode("utf-8")  # a lone surrogate raises, as in the reference (tiktoken would replace it)
        return self._bpe(pretoken)

    def encode(self, text: str) -> list[int]:
        """``Tokenizer.encode``, with the ids read from the cache in one loop that stays in C
        (``map``, ``chain``); the cache works out a pre-token it lacks."""
        out: list[int] = []
        for piece, is_special in split_special(text, self._special_re):
            if is_special:
                out.append(self.special_ids[piece])
            else:
                out.extend(chain.from_iterable(map(self._cache.__getitem__, fast_pretokenize(piece))))
        return out


class _Cache(dict):
    """Pre-token -> ids. A pre-token it lacks is encoded when a lookup meets it (``__missing__``,
    which ``dict``'s own lookup calls). Past ``size`` entries it starts afresh, so memory stays bounded."""

    def __init__(self, bpe: Callable[[str], list[int]], size: int) -> None:
        super().__init__()
        self.bpe, self.size = bpe, size  # the tokenizer's BPE, not the tokenizer: no reference cycle

    def __missing__(self, pretoken: str) -> list[int]:
        pretoken.encode("utf-8")  # a lone surrogate raises here, as in the reference (tiktoken would replace it)
        ids = self.bpe(pretoken)
        if len(self) >= self.size:
            self.clear()
        self[pretoken] = ids
        return ids
