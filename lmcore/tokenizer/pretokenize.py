"""Pre-tokenization: cutting text into the pieces inside which BPE merges.

BPE never merges across a pre-token boundary, so " dog" and " dog!" share the token " dog"
instead of growing one token per punctuation variant. GPT-2's regular expression does the
cutting. Special tokens such as ``<|endoftext|>`` are split out before that, so no pre-token
(and therefore no merge) ever spans a document boundary.

Counting pre-tokens is the expensive part of training, and it parallelises cleanly: the file
is cut into chunks whose boundaries fall on a special token, each worker process counts its
chunks, and the counts are summed. Memory grows with the number of distinct pre-tokens, not
with the file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import regex
from tqdm import tqdm

__all__ = [
    "GPT2_PATTERN",
    "PRETOKEN_RE",
    "special_token_re",
    "split_special",
    "find_chunk_boundaries",
    "count_pretokens",
    "worker_pool",
]

#: GPT-2's pre-tokenizer: contractions, letters, numbers and other symbols each with an optional
#: leading space, and runs of whitespace (the last space of a run stays with the next word).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)


def special_token_re(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A pattern that finds any special token, longest first (so overlapping ones resolve to the longest)."""
    tokens = sorted(set(special_tokens), key=len, reverse=True)
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(t) for t in tokens))


def split_special(text: str, special_re: regex.Pattern | None) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, is_special)`` in order; empty ordinary pieces are dropped."""
    if special_re is None:
        if text:
            yield text, False
        return
    start = 0
    for m in special_re.finditer(text):
        if m.start() > start:
            yield text[start : m.start()], False
        yield m.group(), True
        start = m.end()
    if start < len(text):
        yield text[start:], False


def find_chunk_boundaries(path: str | os.PathLike, n_chunks: int, split_token: bytes) -> list[int]:
    """Byte offsets ``[0, ..., size]`` that cut the file into about ``n_chunks`` pieces.

    Each inner offset is moved forward to the next occurrence of ``split_token``, so no chunk
    cuts a document (or a UTF-8 character) in half. Fewer chunks come back when the token is rare.
    """
    if n_chunks < 1:
        raise ValueError("n_chunks must be at least 1")
    size = os.path.getsize(path)
    guesses = [size * i // n_chunks for i in range(n_chunks + 1)]
    step = 1 << 16
    with open(path, "rb") as f:
        for i in range(1, n_chunks):
            pos = guesses[i]
            f.seek(pos)
            carry = b""
            while True:
                block = f.read(step)
                if not block:
                    guesses[i] = size
                    break
                found = (carry + block).find(split_token)
                if found != -1:
                    guesses[i] = pos - len(carry) + found
                    break
                keep = len(split_token) - 1
                carry = (carry + block)[-keep:] if keep else b""
                pos += len(block)
    return sorted(set(guesses))


def worker_pool(num_workers: int, initializer=None, initargs: tuple = ()) -> mp.pool.Pool:
    """A process pool: forked on Linux (cheap, inherits loaded data), spawned elsewhere."""
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    return ctx.Pool(num_workers, initializer=initializer, initargs=initargs)


def _count_chunk(args: tuple[str, int, int, tuple[str, ...]]) -> Counter[str]:
    path, start, end, special_tokens = args
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode("utf-8", errors="replace")
    counts: Counter[str] = Counter()
    special_re = special_token_re(special_tokens)
    for piece, is_special in split_special(text, special_re):
        if not is_special:
            counts.update(PRETOKEN_RE.findall(piece))
    return counts


def count_pretokens(
    path: str | os.PathLike,
    special_tokens: Sequence[str] = (),
    *,
    num_workers: int | None = None,
    chunk_bytes: int = 1 << 22,
    progress: bool = False,
) -> Counter[str]:
    """Count every pre-token of a UTF-8 text file, in parallel worker processes.

    Chunks of about ``chunk_bytes`` are cut at the first special token (or, without special
    tokens, at a newline) and handed to ``num_workers`` processes (default: all cores).
    """
    path = os.fspath(path)
    num_workers = num_workers or os.cpu_count() or 1
    size = os.path.getsize(path)
    n_chunks = max(num_workers, -(-size // chunk_bytes))
    split = special_tokens[0].encode("utf-8") if special_tokens else b"\n"
    bounds = find_chunk_boundaries(path, n_chunks, split)
    jobs = [(path, a, b, tuple(special_tokens)) for a, b in zip(bounds, bounds[1:])]
    total: Counter[str] = Counter()
    with tqdm(total=size, unit="B", unit_scale=True, desc="pre-tokenize", disable=not progress) as bar:
        if num_workers == 1 or len(jobs) == 1:
            results: Iterable[Counter[str]] = map(_count_chunk, jobs)
            for (_, a, b, _), counts in zip(jobs, results):
                total.update(counts)
                bar.update(b - a)
        else:
            with worker_pool(num_workers) as pool:
                for (_, a, b, _), counts in zip(jobs, pool.imap(_count_chunk, jobs)):
                    total.update(counts)
                    bar.update(b - a)
    return total
