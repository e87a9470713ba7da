"""Where code runs and how it is made repeatable.

Chapters call :func:`set_determinism` first so that a CPU re-run prints exactly the committed
outputs (nbval checks this), and :func:`pick_device` so that the same notebook uses a GPU when
the reader has one.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["pick_device", "set_determinism"]


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA if available, then Apple's MPS, then CPU; ``prefer`` overrides ("cpu", "cuda:1", ...)."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_determinism(seed: int = 0, threads: int | None = 2) -> None:
    """Seed Python, NumPy and torch, and fix torch's CPU thread count.

    Floating-point sums come out differently when split over a different number of threads,
    so a fixed count (2, what CI has) makes CPU results repeat bit for bit.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
