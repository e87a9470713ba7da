"""Pre-tokenization: cutting text into the pieces inside which BPE merges.

BPE never merges across a pre-token boundary, so " dog" and " dog!" share the token " dog"
instead of growing one token per punctuation variant. GPT-2's regular expression does the
cutting. Special tokens such as ``<|endoftext|>`` are split out before that, so no pre-token
(and therefore no merge) ever spans a document boundary.

Counting pre-tokens is the expensive part of training, and it parallelises cleanly: the file
is cut into chunks, each worker process counts its chunks, and the counts are summed. Memory
grows with the number of distinct pre-tokens, not with the file. Encoding a file in parallel
cuts it the same way. A cut is only made where it cannot change the result (see
``first_safe_cut``), so chunked training and encoding equal their one-piece versions.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import regex
from tqdm import tqdm

__all__ = [
    "ENDOFTEXT", "GPT2_PATTERN", "PRETOKEN_RE", "pretokenize", "check_special_tokens", "special_token_re",
    "split_special", "first_safe_cut", "last_safe_cut", "find_chunk_boundaries", "read_utf8", "map_chunks", "count_pretokens"
]

#: The document separator of GPT-2 and TinyStories, the default special token everywhere.
ENDOFTEXT = "<|endoftext|>"

#: GPT-2's pre-tokenizer: contractions, letters, numbers and other symbols each with an optional
#: leading space, and runs of whitespace (the last space of a run stays with the next word).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)

_CUT = regex.compile(r"\S(?=\s)")
_LAST_CUT = regex.compile(r"(?r)\S(?=\s)")


def check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    """The special tokens as a list without repeats, or ``ValueError`` for what cannot be one.

    A bare string is refused rather than read as a list of one-character tokens, and so is the
    empty string, which would match between every two characters.
    """
    if special_tokens is None:
        return []
    if isinstance(special_tokens, (str, bytes)):
        raise ValueError(f"special_tokens must be a list of strings, got the string {special_tokens!r}; "
                         f"write [{special_tokens!r}]")
    tokens = list(special_tokens)
    for t in tokens:
        if not isinstance(t, str):
            raise ValueError(f"special tokens must be strings, got {t!r} ({type(t).__name__})")
        if not t:
            raise ValueError("the empty string cannot be a special token")
    return list(dict.fromkeys(tokens))


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


def _special_across(text: str, cut: int, special_re: regex.Pattern | None, longest: int):
    """The special token of ``text`` that spans offset ``cut``, if any."""
    if special_re is None:
        return None
    hits = special_re.finditer(text, max(0, cut - longest), cut + longest)
    return next((m for m in hits if m.start() < cut < m.end()), None)


def first_safe_cut(text: str, start: int, special_re: regex.Pattern | None, longest: int) -> int | None:
    """The first offset at or after ``start`` where ``text`` can be cut without changing how it
    pre-tokenizes or encodes, or None.

    A cut between a non-space and a whitespace character is a pre-token boundary whatever comes
    before or after: no branch of GPT-2's pattern matches a non-space followed by a space (a
    run of newlines such as ``"\n\n\n"`` is one pre-token, so a cut inside it is not safe). The
    cut must also not fall inside a special token, nor within ``longest`` characters of either
    end of ``text``, where a special token may be only partly visible.
    """
    pos = max(start, longest)
    while (m := _CUT.search(text, pos, len(text) - longest)) is not None:
        cut = m.end()  # the search's end bound keeps the cut longest characters from the end
        inside = _special_across(text, cut, special_re, longest)
        if inside is None:
            return cut
        pos = inside.end()
    return None


def last_safe_cut(text: str, special_re: regex.Pattern | None, longest: int) -> int:
    """The last offset where ``text`` can be cut by the rule of ``first_safe_cut`` (0: none).

    Streaming encoding uses it: what follows the cut may still be arriving, so the cut keeps
    ``longest`` characters before the end.
    """
    limit = len(text) - longest
    while limit > 0:
        m = _LAST_CUT.search(text, 0, limit + 1)
        if m is None:
            return 0
        inside = _special_across(text, m.end(), special_re, longest)
        if inside is None:
            return m.end()
        limit = inside.start() - 1
    return 0


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokens of ``text`` (a piece without special tokens), in order.

    One regular expression does it all: each match is a pre-token, and BPE later merges only
    inside a match. ``pretokenize("Hi, it's 42!")`` is ``['Hi', ',', ' it', "'s", ' 42', '!']``.
    (``lmcore.tokenizer.fast.fast_pretokenize`` gives the same list faster on ASCII text.)
    """
    return PRETOKEN_RE.findall(text)


def find_chunk_boundaries(path: str | os.PathLike, n_chunks: int, special_tokens: Sequence[str] = ()) -> list[int]:
    """Byte offsets ``[0, ..., size]`` that cut a UTF-8 file into about ``n_chunks`` pieces.

    Each inner offset is moved forward to the next safe cut (``first_safe_cut``), so every
    chunk pre-tokenizes and encodes exactly as it does inside the whole file. Fewer chunks come
    back when the text has few safe cuts. Training and ``Tokenizer.encode_file`` both use it.
    """
    if n_chunks < 1:
        raise ValueError("n_chunks must be at least 1")
    special_re = special_token_re(special_tokens)
    longest = max((len(s.encode("utf-8")) for s in special_tokens), default=0)
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f:
        for i in range(1, n_chunks):
            guess = max(size * i // n_chunks, bounds[-1])
            cut = _next_cut(f, guess, size, special_re, longest)
            if cut >= size:
                break
            if cut > bounds[-1]:
                bounds.append(cut)
    return [*bounds, size]


def _next_cut(f, guess: int, size: int, special_re, longest: int) -> int:
    """Byte offset of the first safe cut at or after ``guess`` (``size`` when there is none)."""
    span = 1 << 16
    while True:
        begin = max(0, guess - longest - 3)
        f.seek(begin)
        block = f.read(guess - begin + span)
        while begin and block[:1] and 0x80 <= block[0] < 0xC0:  # start on a whole character
            begin, block = begin + 1, block[1:]
        # surrogateescape keeps one character per undecodable byte, so offsets map back exactly
        text = block.decode("utf-8", errors="surrogateescape")
        head = len(block[: guess - begin].decode("utf-8", errors="surrogateescape"))
        cut = first_safe_cut(text, head + 1, special_re, longest)
        if cut is not None:
            return begin + len(text[:cut].encode("utf-8", errors="surrogateescape"))
        if begin + len(block) >= size:
            return size
        span *= 2


def read_utf8(path: str | os.PathLike, start: int, end: int, errors: str = "strict") -> str:
    """Bytes ``start:end`` of a file as text. Bytes that are not UTF-8 raise ``ValueError`` naming
    the file and the byte offset, unless ``errors="replace"`` asks for U+FFFD instead."""
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 4]
        raise ValueError(
            f"{os.fspath(path)}: not UTF-8 at byte offset {start + e.start:,} ({bad!r}); convert the file to UTF-8, "
            "or pass errors='replace' to read such bytes as U+FFFD"
        ) from None


def map_chunks(path: str | os.PathLike, work: Callable[[str], Any], special_tokens: Sequence[str], num_workers: int,
               chunk_bytes: int, *, errors: str = "strict", desc: str = "", progress: bool = False) -> Iterator[Any]:
    """``work(text)`` of each chunk of a UTF-8 file, in file order, computed in ``num_workers`` processes.

    Chunks of about ``chunk_bytes`` are cut by :func:`find_chunk_boundaries`, so each pre-tokenizes
    and encodes as it does inside the whole file; a progress bar counts the bytes. Each worker
    receives ``work`` once, when it starts (forked on Linux, so inherited, not copied; spawned
    elsewhere). Counting pre-tokens and ``Tokenizer.encode_file`` both run on it.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    bounds = find_chunk_boundaries(path, max(num_workers, -(-size // chunk_bytes)), special_tokens)
    jobs = [(path, a, b, errors) for a, b in zip(bounds, bounds[1:])]
    one = num_workers == 1 or len(jobs) == 1
    if one:
        _set_work(work)
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with tqdm(total=size, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar, \
            (contextlib.nullcontext() if one else context.Pool(num_workers, _set_work, (work,))) as pool:
        for (_, a, b, _), result in zip(jobs, map(_run_chunk, jobs) if one else pool.imap(_run_chunk, jobs)):
            bar.update(b - a)
            yield result


_WORK: Callable[[str], Any] | None = None  # what map_chunks runs on each chunk, in this process


def _set_work(work: Callable[[str], Any]) -> None:
    global _WORK
    _WORK = work


def _run_chunk(job: tuple[str, int, int, str]) -> Any:
    return _WORK(read_utf8(*job))


def _count_text(special_tokens: tuple[str, ...], split: Callable[[str], list[str]], text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for piece, is_special in split_special(text, special_token_re(special_tokens)):
        if not is_special:
            counts.update(split(piece))
    return counts


def count_pretokens(
    path: str | os.PathLike,
    special_tokens: Sequence[str] = (),
    *,
    num_workers: int | None = None,
    chunk_bytes: int = 1 << 22,
    progress: bool = False,
    errors: str = "strict",
    split: Callable[[str], list[str]] = pretokenize,
) -> Counter[str]:
    """Count every pre-token of a UTF-8 text file, in parallel worker processes.

    Chunks of about ``chunk_bytes`` (cut by :func:`find_chunk_boundaries`) are handed to
    ``num_workers`` processes (default: all cores). Bytes that are not UTF-8 raise
    ``ValueError`` naming the file and offset, unless ``errors="replace"``. ``split`` cuts a
    piece into pre-tokens (:func:`~lmcore.tokenizer.pretokenize`, or the fast layer's equal one).
    """
    specials = tuple(check_special_tokens(special_tokens))
    total: Counter[str] = Counter()
    for counts in map_chunks(path, functools.partial(_count_text, specials, split), specials, num_workers or os.cpu_count() or 1,
                             chunk_bytes, errors=errors, desc="pre-tokenize", progress=progress):
        total.update(counts)
    return total
