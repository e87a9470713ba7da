"""Training byte-level BPE.

Start from the 256 byte values; repeatedly merge the most frequent adjacent pair of tokens,
counted inside pre-tokens and weighted by how often each pre-token occurs. Ties go to the
lexicographically greater pair of byte strings, which makes the result deterministic.

A naive trainer recounts every pair after every merge. This one keeps the pair counts, an
index from each pair to the words that contain it, and a heap of candidate pairs. A merge
touches only the words that contain the merged pair; heap entries whose count has since
changed are skipped when they surface ("lazy invalidation").
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from tqdm import tqdm

from .merge import apply_merge
from .pretokenize import ENDOFTEXT, check_special_tokens, count_pretokens

__all__ = ["train_bpe", "merge_pretokens", "profile_training", "trace_bpe"]

Vocab = dict[int, bytes]
Merges = list[tuple[bytes, bytes]]


def _descending_key(token: bytes) -> bytes:
    """A key whose ascending order is the descending order of ``token``.

    Each byte b becomes (1, 255 - b) and the string ends in 2, so a prefix sorts after its
    extensions, exactly reversing bytes' own order. Heaps pop their smallest entry, and a
    tie in count must go to the greater pair.
    """
    return bytes(x for b in token for x in (1, 255 - b)) + b"\x02"


def merge_pretokens(
    pretoken_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    *,
    progress: bool = False,
    merge_counts: list[int] | None = None,
) -> tuple[Vocab, Merges]:
    """Learn merges from counted pre-tokens.

    Ids: 0-255 are the bytes, then the special tokens in the order given, then one id per merge.
    Returns ``(vocab, merges)``; ``len(vocab) <= vocab_size`` (fewer when no pair is left to merge).
    If ``merge_counts`` is a list, the count of each merged pair is appended to it, in merge order.
    """
    specials = check_special_tokens(special_tokens)
    vocab: Vocab = {i: bytes([i]) for i in range(256)}
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(specials)} special tokens")
    keys = [_descending_key(vocab[i]) for i in range(len(vocab))]

    words: list[list[int]] = []
    freqs: list[int] = []
    for word, n in pretoken_counts.items():
        ids = list(word.encode("utf-8"))
        if len(ids) > 1:
            words.append(ids)
            freqs.append(n)

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for i, (w, n) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += n
            where[pair].add(i)
    heap = [(-n, keys[a], keys[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)

    merges: Merges = []
    n_merges = vocab_size - len(vocab)
    bar = tqdm(total=n_merges, desc="merge", unit="merge", disable=not progress)
    while len(merges) < n_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b), 0) != -neg:
            continue  # stale: this pair's count changed after the entry was pushed
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        keys.append(_descending_key(vocab[new]))
        merges.append((vocab[a], vocab[b]))
        if merge_counts is not None:
            merge_counts.append(-neg)
        bar.update()

        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop((a, b)):
            w, n = words[i], freqs[i]
            merged = apply_merge(w, a, b, new)
            old_pairs = list(zip(w, w[1:]))
            new_pairs = list(zip(merged, merged[1:]))
            for p in old_pairs:
                delta[p] -= n
            for p in new_pairs:
                delta[p] += n
            for p in set(old_pairs).difference(new_pairs):
                if p != (a, b):
                    where[p].discard(i)
            for p in new_pairs:
                where[p].add(i)
            words[i] = merged
        del pair_counts[(a, b)]
        delta.pop((a, b), None)
        for p, d in delta.items():
            if d == 0:
                continue
            count = pair_counts[p] + d
            if count > 0:
                pair_counts[p] = count
                heapq.heappush(heap, (-count, keys[p[0]], keys[p[1]], p[0], p[1]))
            else:
                del pair_counts[p]
                where.pop(p, None)
    bar.close()
    return vocab, merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    *,
    num_workers: int | None = None,
    progress: bool = False,
    errors: str = "strict",
) -> tuple[Vocab, Merges]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Pre-tokens are counted in ``num_workers`` processes (default: all cores), then merged.
    Returns ``vocab`` (id -> bytes) and ``merges`` (in the order they were learned). Bytes that
    are not UTF-8 raise ``ValueError`` naming the file and offset; ``errors="replace"`` trains
    on U+FFFD in their place instead.
    """
    special_tokens = check_special_tokens(special_tokens)
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size {vocab_size} cannot hold the 256 bytes and the special tokens")
    counts = count_pretokens(input_path, special_tokens, num_workers=num_workers, progress=progress, errors=errors)
    return merge_pretokens(counts, vocab_size, special_tokens, progress=progress)


def profile_training(
    path: str | os.PathLike, vocab_size: int, special_tokens: Sequence[str] = (ENDOFTEXT,), *, max_bytes: int | None = None
) -> dict[str, float]:
    """Train once in a fresh process and report what it cost, phase by phase.

    Returns ``bytes`` (the input size), ``distinct`` (distinct pre-tokens), ``pretokenize_s``
    (counting pre-tokens, one worker), ``merge_s`` (learning the merges), ``peak_mib`` (the
    process's peak resident memory) and ``start_mib`` (the same
    before training began: Python and the imports). A fresh process, so the peak is this job's
    alone. ``max_bytes`` trains on the file's first bytes only, cut just before a special token
    (or at whitespace when none is found), so no document is split mid-word.
    """
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_profile, (os.fspath(path), vocab_size, list(special_tokens), max_bytes))
    finally:
        pool.close()  # not terminate(): let the worker exit and free its semaphores
        pool.join()


def _max_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux's ``VmHWM`` when there is one: ``getrusage`` keeps the peak across ``exec``, so a process
    started from a large parent (a notebook kernel holding PyTorch) would report the parent's.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration):
        import resource

        kib_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib_or_bytes / (2**20 if sys.platform == "darwin" else 2**10)  # macOS reports bytes, Linux KiB


def _profile(path: str, vocab_size: int, special_tokens: list[str], max_bytes: int | None) -> dict[str, float]:
    start_mib = _max_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        if max_bytes is not None:
            with open(path, "rb") as f:
                data = f.read(max_bytes)
            cuts = [data.rfind(s.encode("utf-8")) for s in special_tokens]
            cut = max(cuts, default=-1)
            if cut <= 0:
                cut = max(data.rfind(b" "), data.rfind(b"\n"))
            path = os.path.join(tmp, "prefix.txt")
            with open(path, "wb") as f:
                f.write(data[:cut] if cut > 0 else data)
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        counts = count_pretokens(path, special_tokens, num_workers=1)
        t1 = time.perf_counter()
        merge_pretokens(counts, vocab_size, special_tokens)
        t2 = time.perf_counter()
    return {"bytes": size, "distinct": len(counts), "pretokenize_s": t1 - t0, "merge_s": t2 - t1,
            "peak_mib": _max_rss_mib(), "start_mib": start_mib}


def trace_bpe(pretoken_counts: Mapping[str, int], num_merges: int) -> list[dict]:
    """BPE training the slow, visible way, for following by hand: recount every pair, every merge.

    Returns one record per merge: ``counts`` (pair of byte strings -> its count before the merge,
    highest first), ``pair`` (the merged pair: the highest count, a tie going to the
    lexicographically greater pair) and ``words`` (pre-token -> its tokens after the merge).
    :func:`merge_pretokens` learns the same merges incrementally (chapter 2 checks they agree).
    """
    words = {w: [bytes([b]) for b in w.encode("utf-8")] for w in pretoken_counts}
    steps = []
    for _ in range(num_merges):
        counts: Counter[tuple[bytes, bytes]] = Counter()
        for w, tokens in words.items():
            for pair in zip(tokens, tokens[1:]):
                counts[pair] += pretoken_counts[w]
        if not counts:
            break
        ranked = dict(sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True))  # in the order BPE prefers
        pair = next(iter(ranked))
        words = {w: apply_merge(tokens, *pair, pair[0] + pair[1]) for w, tokens in words.items()}
        steps.append({"counts": ranked, "pair": pair, "words": words})  # apply_merge made new lists: no copy needed
    return steps
