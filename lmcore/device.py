"""Where code runs and how it is made repeatable.

Chapters call :func:`set_determinism` first so that a CPU re-run prints exactly the committed
outputs (nbval checks this), and :func:`pick_device` so that the same notebook uses a GPU when
the reader has one. :func:`matmul_flops_per_second` measures what the device's matrix products
reach, the yardstick for a training step's FLOP/s where there is no datasheet peak (a CPU).
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

__all__ = ["pick_device", "set_determinism", "matmul_flops_per_second"]


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


def matmul_flops_per_second(device: torch.device | str = "cpu", n: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of ``(n, n) @ (n, n)`` float32 products on ``device``, timed for about ``seconds``.

    Each product is ``2 n^3`` FLOPs. A square product this size runs near the best a CPU's BLAS
    reaches, so a training step's model FLOP/s over this rate says how much of the step is not
    spent in products at that speed. A timing: it varies with the machine and its load.
    """
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up: thread pools, kernel choice
    sync()
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count * 2 * n**3 / elapsed
