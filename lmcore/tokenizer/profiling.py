"""Measuring the tokenizer for the book's tables: encoding speed (of the tokenizer given) and the
cost of training with the library's default (fast) functions, phase by phase."""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence

from .fast import fast_merge_pretokens, fast_pretokenize
from .pretokenize import ENDOFTEXT, count_pretokens
from .tokenizer import Tokenizer

__all__ = ["encode_speed", "profile_training"]


def encode_speed(tokenizer: Tokenizer, text: str, repeats: int = 3) -> tuple[float, float]:
    """MB/s of ``tokenizer.encode(text)``, ``(cold, warm)``, the best of ``repeats`` each.

    Cold: a copy of the tokenizer (of the same class) with an empty pre-token cache, so every
    distinct pre-token is worked out once; warm: the same copy again, every pre-token a cache hit.
    """
    mb = len(text.encode("utf-8")) / 1e6
    cold = warm = float("inf")
    for _ in range(repeats):
        fresh = type(tokenizer)(tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens)
        start = time.perf_counter()
        fresh.encode(text)
        middle = time.perf_counter()
        fresh.encode(text)
        cold, warm = min(cold, middle - start), min(warm, time.perf_counter() - middle)
    return mb / cold, mb / warm


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
        counts = count_pretokens(path, special_tokens, num_workers=1, split=fast_pretokenize)
        t1 = time.perf_counter()
        fast_merge_pretokens(counts, vocab_size, special_tokens)
        t2 = time.perf_counter()
    return {"bytes": size, "distinct": len(counts), "pretokenize_s": t1 - t0, "merge_s": t2 - t1,
            "peak_mib": _max_rss_mib(), "start_mib": start_mib}
