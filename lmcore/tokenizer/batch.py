"""BPE on many pre-tokens at once: the same rule as ``Tokenizer._bpe``, one NumPy pass a step.

Encoding caches each distinct pre-token, so what costs time on new text is BPE on pre-tokens
never seen before: tens of thousands of them in a book or in source code, each a short Python
loop of a few microseconds a merge. Here all of them advance together. The pre-tokens' bytes lie
end to end in one array; each step finds, in every pre-token at once, its lowest-ranked pair and
merges it everywhere in that pre-token, exactly as the one-at-a-time loop does. Only the pairs
next to a merge change rank, so only those are looked up again. A pre-token with no pair left
to merge is finished and leaves the arrays.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import chain

import numpy as np

__all__ = ["PairRanks", "bpe_many"]


class PairRanks:
    """The merge table as sorted arrays: pair ``(a, b)`` is key ``a * n + b`` (``n`` = vocab size)."""

    def __init__(self, rank_of: dict[tuple[int, int], int], made: list[int], byte_ids: list[int], vocab_size: int) -> None:
        """``rank_of``: pair of ids -> its merge's rank; ``made[rank]``: the id that merge makes."""
        self.n = vocab_size
        self.none = len(made)  # the rank of "no merge": above every real rank
        pairs = np.fromiter(chain.from_iterable(rank_of), dtype=np.int64, count=2 * len(rank_of)).reshape(-1, 2)
        rank = np.fromiter(rank_of.values(), dtype=np.int64, count=len(rank_of))
        made = np.asarray(made, dtype=np.int64)
        rank_new = np.stack([rank, made[rank]], axis=1)  # per pair: its rank, the id it makes
        keys = pairs[:, 0] * self.n + pairs[:, 1]
        order = np.argsort(keys)
        # a key that matches nothing lands past the end: the sentinel -1 never equals a key
        self.keys = np.append(keys[order], -1)
        self.rank = np.append(rank_new[order, 0], self.none)
        self.merged = np.append(made, 0)  # rank -> id of the merged token (none: a placeholder)
        self.byte_ids = np.array(byte_ids, dtype=np.int64)
        # the first step looks up pairs of raw bytes: a 256 x 256 table answers those directly
        self.byte_pair_rank = self.lookup(self.byte_ids[:, None], self.byte_ids[None, :])
        self.whole = self._whole_tokens(pairs, rank_new)

    def _whole_tokens(self, pairs: np.ndarray, rank_new: np.ndarray) -> np.ndarray:
        """``whole[t]``: BPE on token ``t``'s own bytes gives ``[t]``, proved from the merge tree.

        Most new pre-tokens of natural text are one token of the vocabulary (" the", " because");
        for those this answers without running BPE. The proof needs every merge to come after
        all merges that make its parts (true of a trained list; otherwise nothing is claimed):
        then BPE applies merges in rising rank. Say ``t`` is made by the merge ``(a, b)`` of rank
        ``r``. BPE on ``t``'s bytes builds ``a`` and ``b`` side by side, as it would each alone,
        until a pair across the boundary gets merged first. That pair is the last token on
        ``a``'s side with the first on ``b``'s side: ``x`` of ``a``'s right spine (``a``, its right
        part, that one's right part, ... down to a byte) and ``y`` of ``b``'s left spine. ``x``
        is the last token from the rank that makes it until the rank that makes its parent on the
        spine; so the pair ``(x, y)`` of rank ``q`` cuts ``t`` when ``q < r`` and both ``x`` and
        ``y`` are there at rank ``q``. One tie: at the rank that merges ``x x``, BPE takes the
        leftmost pair of a run, so a ``y`` that its own side merges at rank ``q`` still counts as
        there, while an ``x`` merged at ``q`` does not. ``t`` is whole when no spine pair cuts it
        and ``a`` and ``b`` are whole. A token made by two merges, or by none (a special token),
        is not claimed.
        """
        whole = np.zeros(self.n, dtype=bool)
        whole[self.byte_ids] = True
        last_made = np.full(self.n, -1, dtype=np.int64)  # the highest rank that makes each token
        np.maximum.at(last_made, rank_new[:, 1], rank_new[:, 0])
        if (np.maximum(last_made[pairs[:, 0]], last_made[pairs[:, 1]]) >= rank_new[:, 0]).any():
            return whole  # a merge before one that makes its part: ranks need not rise, claim nothing
        once = np.bincount(rank_new[:, 1], minlength=self.n) == 1
        order = np.flatnonzero(once[rank_new[:, 1]])
        token = rank_new[order, 1]
        rank = last_made                                  # the rank that makes each token; -1 for the rest
        left = np.full(self.n, -1, dtype=np.int64)
        right = np.full(self.n, -1, dtype=np.int64)
        left[token], right[token] = pairs[order, 0], pairs[order, 1]
        a, b = left[token], right[token]

        def spine(start: np.ndarray, child: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            """(token, rank that takes it up the spine) from ``start`` down to a byte; -1 past the end."""
            out, x, up = [], start, rank[token]
            while (x >= 0).any():
                out.append((x, up))
                x, up = np.where(x >= 0, child[x], -1), rank[x]
            return out

        ok = np.ones(len(token), dtype=bool)
        for x, x_up in spine(a, right):
            for y, y_up in spine(b, left):
                at = np.flatnonzero((x >= 0) & (y >= 0))
                q = self.lookup(x[at], y[at])
                cut = (q < rank[token[at]]) & (rank[x[at]] < q) & (q < x_up[at]) & (rank[y[at]] < q) & (q <= y_up[at])
                ok[at[cut]] = False
        while True:  # whole when its own check holds and both parts are whole: up the tree, level by level
            grown = ok & whole[a] & whole[b]
            if (whole[token] == grown).all():
                return whole
            whole[token] = grown

    def lookup(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Rank of each pair ``(left[i], right[i])``, or ``self.none``."""
        key = left * self.n + right
        if key.size > 512:  # sorted queries walk the table in order: about 3x faster than random ones
            order = np.argsort(key, axis=None)
            at = np.empty(key.shape, dtype=np.intp)
            at.flat[order] = np.searchsorted(self.keys[:-1], key.flat[order])
        else:
            at = np.searchsorted(self.keys[:-1], key)
        return np.where(self.keys[at] == key, self.rank[at], self.none)


def bpe_many(pretokens: Collection[str], table: PairRanks) -> dict[str, list[int]]:
    """``{p: tokenizer._bpe(p) for p in pretokens}``, computed for all of them together.

    Each step works on every unfinished pre-token: its lowest rank (``minimum.reduceat`` over the
    pre-token's positions), the positions holding that rank (the same pair), merged left to right
    (in ``x x x`` with pair ``x x`` only the first two).
    """
    pretokens = list(pretokens)
    data = [p.encode("utf-8") for p in pretokens]
    lengths = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
    raw = np.frombuffer(b"".join(data), dtype=np.uint8)
    ids = table.byte_ids[raw]                                          # token ids, pre-tokens end to end
    word = np.repeat(np.arange(len(data), dtype=np.int32), lengths)   # which pre-token each position is in
    last = np.append(word[1:] != word[:-1], True)                     # a pre-token's last position starts no pair
    rank = np.where(last, table.none, table.byte_pair_rank[raw, np.append(raw[1:], 0)])
    done_ids, done_word = [], []
    while len(ids):
        # every pre-token's lowest rank, spread over its positions; a pre-token with none left is finished
        start = np.flatnonzero(np.append(True, last[:-1]))
        best = np.repeat(np.minimum.reduceat(rank, start), np.diff(np.append(start, len(ids))))
        finished = best == table.none
        take = (rank == best) & ~finished
        if (take[1:] & take[:-1]).any():  # a run of hits (only a pair x x makes one): merge the 1st, 3rd, ...
            at = np.arange(len(ids))
            run_start = np.maximum.accumulate(np.where(take & ~np.append(False, take[:-1]), at, 0))
            take &= (at - run_start) % 2 == 0
        at = np.flatnonzero(take)
        ids[at] = table.merged[rank[at]]
        last[at] = last[at + 1]  # the merged token ends its pre-token if its right part did
        keep = ~finished
        keep[at + 1] = False     # each merged pair's right part goes
        if finished.any():
            done_ids.append(ids[finished])
            done_word.append(word[finished])
        ids, word, rank, last = ids[keep], word[keep], rank[keep], last[keep]
        # new ranks only where a pair changed: merged token + right neighbour, left neighbour + merged token
        at = np.flatnonzero(take[keep])
        rank[at] = table.none
        left = at[at > 0] - 1
        changed = np.concatenate([at[~last[at]], left[~last[left]]])
        rank[changed] = table.lookup(ids[changed], ids[changed + 1])
    if not done_ids:
        return {}
    # read back in pre-token order: pre-token w's ids are flat[ends[w - 1]:ends[w]]
    word = np.concatenate(done_word)
    flat = np.concatenate(done_ids)[np.argsort(word, kind="stable")].tolist()
    ends = np.cumsum(np.bincount(word, minlength=len(pretokens))).tolist()
    return dict(zip(pretokens, map(flat.__getitem__, map(slice, [0, *ends[:-1]], ends))))
