"""Training data: token ids on disk, and random windows of them as batches.

A corpus is tokenized once into a flat ``uint16`` array (two bytes a token, described by a small
JSON file beside it: :mod:`lmcore.tokenfile`) and memory-mapped, so a 2 GB corpus costs no RAM.
A batch is ``batch_size`` random windows of ``context_length + 1`` consecutive ids: the first
``context_length`` are the input, the last ``context_length`` the targets (each position
predicts the next id).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from .tokenfile import open_tokens, save_tokens
from .tokenizer.pretokenize import ENDOFTEXT

__all__ = [
    "get_batch", "batch_from_starts", "split_stories", "prepare_dataset", "prepare_corpus", "load_tokens", "unigram_entropy",
]


def batch_from_starts(
    tokens: np.ndarray, starts: torch.Tensor, context_length: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows beginning at ``starts``: inputs and next-token targets, each ``(len(starts), context_length)`` int64."""
    idx = starts.numpy()[:, None] + np.arange(context_length + 1)
    window = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    x, y = window[:, :-1], window[:, 1:]
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def get_batch(
    tokens: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows from ``tokens`` (a ``np.memmap`` of ids, say).

    Returns ``(x, y)``, both ``(batch_size, context_length)`` int64 on ``device``, with
    ``y[:, i] == x[:, i + 1]`` inside each window.
    """
    if len(tokens) < context_length + 1:
        raise ValueError(f"{len(tokens)} tokens cannot fill a window of context_length + 1 = {context_length + 1}")
    starts = torch.randint(0, len(tokens) - context_length, (batch_size,), generator=generator)
    return batch_from_starts(tokens, starts, context_length, device)


def split_stories(text: str, separator: str = ENDOFTEXT, complete_only: bool = True) -> list[str]:
    """Stories of a file joined by ``separator``, stripped, empties dropped.

    With ``complete_only`` the text after the last separator is dropped: a byte-range sample
    (such as the 2 MiB TinyStories one) ends in the middle of a story.
    """
    parts = text.split(separator)
    if complete_only and len(parts) > 1:
        parts = parts[:-1]
    return [p.strip() for p in parts if p.strip()]


def prepare_dataset(
    tokenizer,
    text_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    valid_fraction: float = 0.1,
    separator: str = ENDOFTEXT,
) -> dict[str, Path]:
    """Tokenize a file of stories into ``train.uint16`` and ``valid.uint16`` in ``out_dir``.

    The last ``valid_fraction`` of the (complete) stories are held out whole, so no story is
    split between training and validation. Each story is followed by the separator token, so the
    model learns where stories end.
    """
    stories = split_stories(Path(text_path).read_text(encoding="utf-8"), separator)
    n_valid = max(1, round(len(stories) * valid_fraction)) if valid_fraction > 0 else 0
    splits = {"train": stories[: len(stories) - n_valid], "valid": stories[len(stories) - n_valid :]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, part in splits.items():
        ids = tokenizer.encode("".join(s + separator for s in part))
        paths[name] = save_tokens(out / f"{name}.uint16", ids, tokenizer.vocab_size)
    return paths


def load_tokens(path: str | os.PathLike, vocab_size: int | None = None, context_length: int | None = None) -> np.memmap:
    """Memory-map a ``uint16`` id file after :func:`lmcore.tokenfile.open_tokens` checked it: with
    ``vocab_size``, ids the model has no embedding for are refused; with ``context_length``, a
    file too short for one window of ``context_length + 1`` ids."""
    return open_tokens(path, vocab_size, min_tokens=1 if context_length is None else context_length + 1)


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the ids' frequency distribution: the loss of the best model that ignores context."""
    counts = np.bincount(np.asarray(tokens), minlength=1).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def prepare_corpus(
    out_dir: str | os.PathLike,
    train_name: str = "tinystories-train",
    valid_name: str = "tinystories-valid",
    vocab_size: int = 10_000,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """The full-scale recipe's data: fetch train and validation text by name (:mod:`lmcore.data`),
    train a BPE tokenizer on the training text, and encode both files to ``uint16``.

    Writes ``tokenizer.json``, ``train.uint16`` and ``valid.uint16`` into ``out_dir``.
    """
    from .data import fetch
    from .tokenizer import Tokenizer, train_bpe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_text, valid_text = fetch(train_name, progress=progress), fetch(valid_name, progress=progress)
    specials = [ENDOFTEXT]
    vocab, merges = train_bpe(train_text, vocab_size, specials, num_workers=num_workers, progress=progress)
    tokenizer = Tokenizer(vocab, merges, specials)
    tokenizer.save(out / "tokenizer.json")
    workers = num_workers or os.cpu_count() or 1
    paths = {"tokenizer": out / "tokenizer.json"}
    for name, text in (("train", train_text), ("valid", valid_text)):
        paths[name] = out / f"{name}.uint16"
        tokenizer.encode_file(text, paths[name], num_workers=workers, progress=progress)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m lmcore.dataset OUT_DIR [--vocab-size N]``: prepare TinyStories V2 for training."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmcore.dataset", description=main.__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--train", default="tinystories-train", help="registry name of the training text")
    parser.add_argument("--valid", default="tinystories-valid", help="registry name of the validation text")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    from .data import DataError

    try:
        paths = prepare_corpus(args.out_dir, args.train, args.valid, args.vocab_size, args.workers)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
