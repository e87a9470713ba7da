"""Training byte-level BPE, the reference way.

Start from the 256 byte values; repeatedly merge the most frequent adjacent pair of tokens,
counted inside pre-tokens and weighted by how often each pre-token occurs; ties go to the
lexicographically greater pair of byte strings. The pair counts are kept, with an index from
each pair to the words that contain it, so a merge touches only those words.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

from .pretokenize import ENDOFTEXT, check_special_tokens, count_pretokens, pretokenize

__all__ = ["apply_merge", "train_bpe", "merge_pretokens", "initial_vocab"]

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]
Pair = tuple[int, int]


def apply_merge(ids: list, a, b, new) -> list:
    """Replace every adjacent ``a, b`` in ``ids`` by ``new``, left to right (``a a a`` with pair ``a a``
    gives ``new a``): the one operation BPE is made of, in training and in encoding alike."""
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            merged.append(new)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def initial_vocab(special_tokens: Sequence[str], vocab_size: int) -> Vocab:
    """Ids 0-255 are the bytes, then the special tokens in the order given; merges add the rest."""
    vocab: Vocab = {i: bytes([i]) for i in range(256)}
    for s in check_special_tokens(special_tokens):
        vocab[len(vocab)] = s.encode("utf-8")
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(vocab) - 256} special tokens")
    return vocab


def count_pairs(words: list[list[int]], freqs: list[int]) -> tuple[dict[Pair, int], dict[Pair, set[int]]]:
    """Every adjacent pair's count (weighted by its word's count), and the words it occurs in."""
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for i, (word, n) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += n
            where[pair].add(i)
    return counts, where


def merge_pair(words, freqs, counts, where, pair: Pair, new: int) -> dict[Pair, int]:
    """Merge ``pair`` into token ``new`` in every word that holds it, updating ``counts`` and ``where``.

    Only the words holding the pair change: their old pairs come out of the counts, their new
    pairs go in. The merged pair drops to zero and leaves. Returns each touched pair's change.
    """
    change: dict[Pair, int] = defaultdict(int)
    for i in where.pop(pair):
        old, merged = words[i], apply_merge(words[i], *pair, new)
        old_pairs, new_pairs = list(zip(old, old[1:])), list(zip(merged, merged[1:]))
        for p in old_pairs:
            change[p] -= freqs[i]
        for p in new_pairs:
            change[p] += freqs[i]
            where[p].add(i)
        for p in set(old_pairs).difference(new_pairs):
            where[p].discard(i)  # no longer in this word
        words[i] = merged
    for p, d in change.items():
        counts[p] += d
        if counts[p] == 0:  # in no word now
            del counts[p], where[p]
    return change


def merge_pretokens(
    pretoken_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    steps: list[dict] | None = None,
) -> tuple[Vocab, Merges]:
    """Learn merges from counted pre-tokens: ``(vocab, merges)``, ``len(vocab) <= vocab_size``.

    If ``steps`` is a list, one record per merge is appended to it, to follow by hand: ``counts``
    (pair of byte strings -> its count before the merge, in the order BPE prefers), ``pair`` (the
    pair merged) and ``words`` (pre-token -> its tokens after the merge).
    """
    vocab = initial_vocab(special_tokens, vocab_size)
    words = [list(w.encode("utf-8")) for w in pretoken_counts]  # each pre-token as byte ids
    freqs = list(pretoken_counts.values())
    counts, where = count_pairs(words, freqs)
    merges: Merges = []
    while len(vocab) < vocab_size and counts:
        # the most frequent pair; a tie goes to the greater pair of byte strings
        a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        if steps is not None:
            ranked = sorted(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]), reverse=True)
            steps.append({"counts": {(vocab[x], vocab[y]): counts[x, y] for x, y in ranked}, "pair": (vocab[a], vocab[b])})
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        merge_pair(words, freqs, counts, where, (a, b), new)
        if steps is not None:
            steps[-1]["words"] = {w: [vocab[i] for i in ids] for w, ids in zip(pretoken_counts, words)}
    return vocab, merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    *,
    num_workers: int | None = None,
    progress: bool = False,
    errors: str = "strict",
    fast: bool = True,
) -> tuple[Vocab, Merges]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Pre-tokens are counted in ``num_workers`` processes (default: all cores), then merged.
    Returns ``vocab`` (id -> bytes) and ``merges`` (in the order they were learned). Bytes that
    are not UTF-8 raise ``ValueError`` naming the file and offset; ``errors="replace"`` trains
    on U+FFFD in their place instead. ``fast=False`` runs this module's reference functions
    (:func:`~lmcore.tokenizer.pretokenize`, :func:`merge_pretokens`); the default runs :mod:`lmcore.tokenizer.fast`'s,
    tested equal to them.
    """
    from . import fast as speed  # here, not at the top: the fast layer builds on this module

    initial_vocab(special_tokens, vocab_size)  # refuse a bad size before reading the file
    split = speed.fast_pretokenize if fast else pretokenize
    counts = count_pretokens(input_path, special_tokens, num_workers=num_workers, progress=progress, errors=errors,
                             split=split)
    if fast:
        return speed.fast_merge_pretokens(counts, vocab_size, special_tokens, progress=progress)
    return merge_pretokens(counts, vocab_size, special_tokens)
