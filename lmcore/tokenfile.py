"""Token id files: a flat array of ``uint16`` ids on disk, with a small JSON file beside it.

The ids alone cannot say how they were written: int32 ids read as ``uint16`` are valid-looking
ids (every other one 0), and training on them learns garbage without an error. So whatever
writes ids here also writes ``<file>.json`` with the dtype, the vocabulary size and the number
of ids (nanoGPT keeps a ``meta.pkl`` for the same reason), and :func:`open_tokens` checks them
before anything trains. A file is written under a temporary name and renamed when complete, so
an interrupted run never leaves a short file that looks finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["DTYPE", "TokenWriter", "meta_path", "save_tokens", "open_tokens"]

DTYPE = np.dtype(np.uint16)  # two bytes a token: ids below 65,536


def meta_path(path: str | os.PathLike) -> Path:
    """The JSON file that describes the ids in ``path`` (``train.uint16`` -> ``train.uint16.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


class TokenWriter:
    """Append ids to ``path`` in order; on a clean exit write the JSON description and rename the
    file into place. On an error nothing is left behind.

        with TokenWriter("train.uint16", vocab_size=10_000) as out:
            out.write(ids)
    """

    def __init__(self, path: str | os.PathLike, vocab_size: int) -> None:
        if not 0 < vocab_size <= np.iinfo(DTYPE).max + 1:
            raise ValueError(f"a vocabulary of {vocab_size} ids does not fit {DTYPE.name}")
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.count = 0
        self._tmp = self.path.with_name(self.path.name + ".part")

    def __enter__(self) -> TokenWriter:
        self._file = open(self._tmp, "wb")
        return self

    def write(self, ids) -> None:
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"{self.path}: id {int(arr.max() if arr.max() >= self.vocab_size else arr.min())} "
                             f"is outside the vocabulary 0..{self.vocab_size - 1}")
        self._file.write(arr.astype(DTYPE, copy=False).tobytes())
        self.count += arr.size

    def __exit__(self, kind, value, tb) -> None:
        self._file.close()
        if kind is not None:
            self._tmp.unlink(missing_ok=True)
            return
        meta = {"dtype": DTYPE.name, "vocab_size": self.vocab_size, "num_tokens": self.count}
        meta_path(self.path).write_text(json.dumps(meta) + "\n")
        os.replace(self._tmp, self.path)


def save_tokens(path: str | os.PathLike, ids, vocab_size: int) -> Path:
    """Write ``ids`` to ``path`` with their description; returns ``path``."""
    with TokenWriter(path, vocab_size) as out:
        out.write(ids)
    return Path(path)


def open_tokens(path: str | os.PathLike, vocab_size: int | None = None, min_tokens: int = 1) -> np.memmap:
    """Memory-map a token file after checking it; ``ValueError`` names the file and the problem.

    Checked: the file exists, is not empty, holds a whole number of ``uint16`` ids and at least
    ``min_tokens`` of them; its JSON description (when present) agrees on dtype and count, and its
    vocabulary fits ``vocab_size``; no id is ``>= vocab_size``. A file without a description is
    refused when it looks like 32- or 64-bit ids (every other ``uint16`` zero).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such token file")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: the token file is empty")
    if size % DTYPE.itemsize:
        raise ValueError(f"{path}: {size:,} bytes is not a whole number of {DTYPE.name} ids; truncated, or not a token file")
    n = size // DTYPE.itemsize
    meta = _read_meta(path)
    if meta is not None:
        if meta.get("dtype") != DTYPE.name:
            raise ValueError(f"{path}: holds {meta.get('dtype')} ids (says {meta_path(path).name}); lmcore reads {DTYPE.name}")
        if meta.get("num_tokens") != n:
            raise ValueError(f"{path}: has {n:,} ids but {meta_path(path).name} says {meta.get('num_tokens')}; "
                             "the file was cut short or overwritten: prepare it again")
        if vocab_size is not None and isinstance(meta.get("vocab_size"), int) and meta["vocab_size"] > vocab_size:
            raise ValueError(f"{path}: was made with a vocabulary of {meta['vocab_size']:,} ids but the model's vocab_size "
                             f"is {vocab_size:,}; was it tokenized with another tokenizer?")
    tokens = np.memmap(path, dtype=DTYPE, mode="r")
    if meta is None and n >= 64 and not tokens[1::2].any() and tokens[0::2].any():
        raise ValueError(f"{path}: every other {DTYPE.name} is 0, as in 32- or 64-bit ids; write the ids as {DTYPE.name} "
                         "(lmcore.tokenfile.save_tokens)")
    if n < min_tokens:
        raise ValueError(f"{path}: holds {n:,} ids, fewer than the {min_tokens:,} one window needs "
                         "(context_length + 1); use more data or a shorter context")
    if vocab_size is not None and int(tokens.max()) >= vocab_size:
        raise ValueError(
            f"{path}: holds id {int(tokens.max())} but the model's vocab_size is {vocab_size}; "
            "was it tokenized with another tokenizer?"
        )
    return tokens


def _read_meta(path: Path) -> dict | None:
    meta = meta_path(path)
    if not meta.exists():
        return None
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta}: not a token file description ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{meta}: not a token file description (expected a JSON object)")
    return data
