"""The fast layer: the reference functions' results, sooner (appendix "Making it fast").

Each function here has a reference in the core modules and a test that holds the two equal
(``tests/tokenizer/test_fast.py``). The defaults use this layer: :func:`~lmcore.tokenizer.train_bpe`
(:func:`fast_pretokenize`, :func:`fast_merge_pretokens`), :func:`~lmcore.tokenizer.load_gpt2` and
``encode_file`` (:class:`FastTokenizer`: whole tokens, :func:`bpe_pretoken`, batched ``bpe_many``).
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Mapping, Sequence
from itertools import chain, filterfalse

import numpy as np
import regex
from tqdm import tqdm

from .batch import PairRanks, bpe_many
from .pretokenize import PRETOKEN_RE, split_special
from .tokenizer import Tokenizer
from .train import Merges, Vocab, count_pairs, initial_vocab, merge_pair

__all__ = ["ASCII_PRETOKEN_RE", "FastTokenizer", "bpe_pretoken", "fast_merge_pretokens", "fast_pretokenize"]

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
def bpe_pretoken(pretoken: str, byte_ids: list[int], rank_of: dict[tuple[int, int], int], made: list[int]) -> list[int]:
    """``Tokenizer.bpe(pretoken)`` with less work a step: ``pair_rank[i]`` is the rank of ``ids[i],
    ids[i + 1]``, so a step's pair is one ``min`` and a merge looks up only the two pairs it changed
    (the reference ranks every pair again and rebuilds the list). On the distinct non-whole
    pre-tokens of ``benchmarks/bench_bpe.py``'s four texts: 6.5-32 us each against the reference's
    16-160 us, 2.4-5x faster (``bpe_many``, 3-9 us each, wins from about 64 at once)."""
    ids = [byte_ids[b] for b in pretoken.encode("utf-8")]
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


class FastTokenizer(Tokenizer):
    """:class:`~lmcore.tokenizer.Tokenizer` with a faster :meth:`encode`, tested to give the same ids.
    A piece (between special tokens) of ``batch_chars`` characters or more has its new pre-tokens
    worked out together first (``_learn``); in a shorter one, each where the lookup meets it."""

    batch_chars = 1 << 14  # a story is one piece of about 1,000 characters; a source file with no special token, one piece
    batch_min = 64  # fewer new pre-tokens than this do not pay for the set-up of a NumPy pass

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pair_ranks = PairRanks(self._rank_of, self._made, self._byte_ids, self.vocab_size)  # the merges as arrays
        self.__setstate__({})

    def __getstate__(self) -> dict:
        # sent to encode_file's workers: the whole-token table is rebuilt there, faster than pickled
        return {k: v for k, v in self.__dict__.items() if k not in ("_whole", "_cache")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._whole = {}  # pre-token -> [id], for each whole token that is text (a piece of a character never is)
        for i in self.whole_token_ids.tolist():
            try:
                self._whole[self.vocab[i].decode("utf-8")] = [i]
            except UnicodeDecodeError:
                pass
        self._cache = _Cache(self)

    @property
    def whole_token_ids(self) -> np.ndarray:
        """Ids of the tokens that BPE on their own bytes leaves whole, proved from the merges alone
        (``PairRanks._whole_tokens`` in ``lmcore.tokenizer.batch`` has the proof): a new pre-token
        spelling one of them is encoded without running BPE."""
        return np.flatnonzero(self._pair_ranks.whole)

    def bpe(self, pretoken: str) -> list[int]:
        return bpe_pretoken(pretoken, self._byte_ids, self._rank_of, self._made)

    def _learn(self, new: set[str]) -> None:
        """Put new pre-tokens that are not whole tokens in the cache, by BPE on all of them together."""
        rest = list(filterfalse(self._whole.__contains__, new))  # whole tokens: the cache looks them up
        if len(rest) >= self.batch_min:
            if len(self._cache) + len(rest) > self._cache_size:  # bounded memory: start afresh
                self._cache.clear()
            self._cache.update(bpe_many(rest, self._pair_ranks))

    def encode(self, text: str) -> list[int]:
        """``Tokenizer.encode``, with the ids read from the cache in one loop that stays in C
        (``map``, ``chain``): a long piece's new pre-tokens are worked out before it."""
        out: list[int] = []
        for piece, is_special in split_special(text, self._special_re):
            if is_special:
                out.append(self.special_ids[piece])
                continue
            pretokens = fast_pretokenize(piece)
            # a long piece may bring thousands of new pre-tokens (code, a new language): if one in 16 of
            # its pre-tokens, sampled, holds a few new ones, work all of its new ones out together
            if len(piece) >= self.batch_chars and len(set(pretokens[::16]).difference(self._cache)) >= 4:
                self._learn(set(pretokens).difference(self._cache))
            out.extend(chain.from_iterable(map(self._cache.__getitem__, pretokens)))
        return out


class _Cache(dict):
    """Pre-token -> ids. A pre-token it lacks is worked out when a lookup meets it (``__missing__``,
    which ``dict``'s own lookup calls): a whole token at once, another by :func:`bpe_pretoken`.
    Past the tokenizer's ``cache_size`` entries it starts afresh, so memory stays bounded."""

    def __init__(self, tokenizer: FastTokenizer) -> None:
        super().__init__()
        self.whole, self.size = tokenizer._whole, tokenizer._cache_size
        # BPE with the tokenizer's tables, not its bound method: no reference cycle, so a
        # tokenizer is freed as soon as it is dropped, not at the next full garbage collection
        self.bpe = functools.partial(bpe_pretoken, byte_ids=tokenizer._byte_ids, rank_of=tokenizer._rank_of,
                                     made=tokenizer._made)

    def __missing__(self, pretoken: str) -> list[int]:
        ids = self.whole.get(pretoken) or self.bpe(pretoken)
        if len(self) >= self.size:
            self.clear()
        self[pretoken] = ids
        return ids

