"""GPT-2's printable byte alphabet, used by its published files and by ours.

GPT-2 stores tokens as text, so each of the 256 bytes is given a printable Unicode character:
printable Latin-1 bytes stand for themselves and the rest (space, control bytes) are shifted
to code points from 256 upward. A space becomes 'Ġ', a newline 'Ċ'.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

__all__ = ["bytes_to_unicode", "read_vocab_merges", "write_vocab_merges"]


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table GPT-2's ``vocab.json`` and ``merges.txt`` are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@lru_cache(maxsize=1)
def _decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


@lru_cache(maxsize=1)
def _to_latin1() -> dict[int, str]:
    """A ``str.translate`` table: alphabet character -> the Latin-1 character of its byte, any other
    character below 324 -> U+FFFF, which Latin-1 cannot encode (so it is caught)."""
    decoder = _decoder()
    return {c: chr(decoder[chr(c)]) if chr(c) in decoder else "\uffff" for c in range(324)}


def to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def from_text(text: str, where: str) -> bytes:
    """The bytes a token string of GPT-2's alphabet stands for; ``ValueError`` names a stray character."""
    try:
        return text.translate(_to_latin1()).encode("latin-1")
    except UnicodeEncodeError:
        bad = next(c for c in text if c not in _decoder())
        raise ValueError(f"{where}: {text!r} has character {bad!r}, not in GPT-2's byte alphabet") from None


def read_vocab_merges(
    vocab_path: str | os.PathLike, merges_path: str | os.PathLike
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Read GPT-2-style ``vocab.json`` and ``merges.txt`` (with or without a ``#version`` line)."""
    try:
        with open(vocab_path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{vocab_path}: not a JSON vocabulary ({e})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
        raise ValueError(f"{vocab_path}: expected a JSON object mapping token strings to integer ids")
    vocab = {i: from_text(t, str(vocab_path)) for t, i in raw.items()}
    merges = []
    with open(merges_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{merges_path}:{n}: expected two tokens separated by one space, got {line!r}")
            merges.append((from_text(parts[0], f"{merges_path}:{n}"), from_text(parts[1], f"{merges_path}:{n}")))
    return vocab, merges


def write_vocab_merges(
    vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], vocab_path: str | os.PathLike, merges_path: str | os.PathLike
) -> None:
    """Write the GPT-2 file pair, so other tools (tiktoken, HF tokenizers) can read our tokenizer."""
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump({to_text(t): i for i, t in sorted(vocab.items())}, f, ensure_ascii=False)
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{to_text(a)} {to_text(b)}\n")
