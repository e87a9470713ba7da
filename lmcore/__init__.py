"""lmcore: the library behind the book "a small language model from scratch".

One module a concept, in the order the book meets them:

- :mod:`lmcore.data`: named data files, downloaded once and checked.
- :mod:`lmcore.unicode`: what encodings cost, and how UTF-8 marks character lengths.
- :mod:`lmcore.tokenizer`: byte-level BPE training and the tokenizer.
- :mod:`lmcore.texts`: text that is not TinyStories, on every machine (docs, source, many scripts).
- :mod:`lmcore.nn`: Linear, Embedding, RMSNorm, SwiGLU, RoPE, softmax, attention (the teaching code).
- :mod:`lmcore.model`: ``ModelConfig`` and ``TransformerLM``.
- :mod:`lmcore.kernels`: the model's fast layer, the same computations in fused kernels.
- :mod:`lmcore.interop`: weights to and from Hugging Face's Llama.
- :mod:`lmcore.accounting`: parameters, FLOPs, memory and time as formulas.
- :mod:`lmcore.measure`: memory measured, to hold those formulas against.
- :mod:`lmcore.optim`: SGD toy, AdamW, cosine schedule, gradient clipping.
- :mod:`lmcore.tokenfile`: token id files on disk, with the JSON that describes them.
- :mod:`lmcore.dataset`: training data as memory-mapped ids, and batches of windows.
- :mod:`lmcore.checkpoint`: checkpoints written atomically and loaded safely.
- :mod:`lmcore.config`: ``TrainConfig``, read from YAML, JSON and ``key=value``.
- :mod:`lmcore.safety`: stopping on a signal or a divergence without losing or corrupting a run.
- :mod:`lmcore.train`: the plain training loop, and the robust run built on it.
- :mod:`lmcore.budget`: a run's length chosen to fit a time budget on the reader's device.
- :mod:`lmcore.experiments`: chapter 7's plan of runs, sweeps, and their results file.
- :mod:`lmcore.generate`: sampling with temperature, top-p and a key/value cache.
- :mod:`lmcore.plotting`: loss curves.
- :mod:`lmcore.stepview`: step-through views that work in the published page, no kernel needed.
- :mod:`lmcore.device`: device choice and repeatable runs.
- :mod:`lmcore.check`: checks of the reader's own code for each piece, naming the usual mistakes.

Names are imported on first use, so ``import lmcore.tokenizer`` does not load PyTorch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: the oldest torch the unit tests pass on (``python3 tasks.py torch-range``): 2.3 lacks fused AdamW on
#: the CPU, and on 2.4 the tests cannot compare with Hugging Face's Llama (transformers needs 2.6)
MIN_TORCH = (2, 6)


def _check_torch() -> None:
    """Refuse, in one line, a torch older than :data:`MIN_TORCH` (read from its metadata: torch is not imported)."""
    try:
        found = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return  # the parts that need no torch (lmcore.tokenizer) still work; the rest fails on import torch
    release = tuple(int(p) for p in found.split("+")[0].split(".")[:2] if p.isdigit())
    if release < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise ImportError(f"lmcore needs torch>={need}, the oldest release its tests pass on; this is torch {found}: "
                          f"pip install 'torch>={need}'")


_check_torch()

#: module -> the public names lmcore re-exports from it
_FROM = {
    "data": ["DataError", "fetch"],
    "device": ["pick_device", "set_determinism", "matmul_flops_per_second", "check_device"],
    "tokenizer": ["Tokenizer", "FastTokenizer", "load_gpt2", "train_bpe"],
    "model": ["ModelConfig", "TransformerLM"],
    "nn": ["cross_entropy"],
    "config": ["TrainConfig"],
    "train": ["train_loop"],
    "kernels": ["use_fused_kernels"],
    "optim": ["AdamW", "cosine_lr", "clip_grad_norm"],
}
_EXPORTS = {name: module for module, names in _FROM.items() for name in names}  # public name -> its module
_MODULES = [
    "accounting", "budget", "check", "checkpoint", "config", "data", "dataset", "device", "experiments", "generate", "interop",
    "kernels", "measure", "model", "nn", "optim", "plotting", "safety", "stepview", "texts", "tokenfile", "tokenizer", "train",
    "unicode",
]
__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'lmcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from . import (  # noqa: F401
        accounting,
        budget,
        check,
        checkpoint,
        config,
        data,
        dataset,
        device,
        experiments,
        generate,
        interop,
        kernels,
        measure,
        model,
        nn,
        optim,
        plotting,
        safety,
        stepview,
        texts,
        tokenfile,
        tokenizer,
        train,
        unicode,
    )
    from .config import TrainConfig  # noqa: F401
    from .data import DataError, fetch  # noqa: F401
    from .device import check_device, matmul_flops_per_second, pick_device, set_determinism  # noqa: F401
    from .kernels import use_fused_kernels  # noqa: F401
    from .model import ModelConfig, TransformerLM  # noqa: F401
    from .nn import cross_entropy  # noqa: F401
    from .optim import AdamW, clip_grad_norm, cosine_lr  # noqa: F401
    from .tokenizer import FastTokenizer, Tokenizer, load_gpt2, train_bpe  # noqa: F401
    from .train import train_loop  # noqa: F401
