"""Where code runs and how it is made repeatable.

Chapters call :func:`set_determinism` first so that a CPU re-run prints exactly the committed
outputs (nbval checks this), and :func:`pick_device` so that the same notebook uses a GPU when
the reader has one. :func:`check_device` trains a tiny model a few steps on an accelerator and on
the CPU and says, in one line, whether the two agree (some backends, Apple's MPS among them, have
returned silently wrong numbers for some operations). :func:`matmul_flops_per_second` measures
what the device's matrix products reach, the yardstick for a training step's FLOP/s where there is
no datasheet peak (a CPU). :func:`autocast_dtype` chooses the precision a device trains in.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .model import ModelConfig, TransformerLM
from .nn import cross_entropy
from .optim import AdamW

__all__ = ["pick_device", "set_determinism", "DeviceCheck", "check_device", "matmul_flops_per_second", "autocast_dtype",
           "autocast"]


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


@dataclass
class DeviceCheck:
    """What :func:`check_device` found; truthy when the device agreed with the CPU."""

    device: str
    steps: int
    largest_difference: float
    tolerance: float

    @property
    def agreed(self) -> bool:
        return math.isfinite(self.largest_difference) and self.largest_difference <= self.tolerance

    def __bool__(self) -> bool:
        return self.agreed

    def __str__(self) -> str:
        if self.agreed:
            return (f"{self.device}: agrees with the CPU to {self.tolerance:g} over {self.steps} training steps "
                    f"of a tiny model (largest difference {self.largest_difference:.1e})")
        return (f"WARNING: {self.device} gives different numbers from the CPU (largest difference "
                f"{self.largest_difference:.2g} over {self.steps} training steps of a tiny model, tolerance "
                f"{self.tolerance:g}): results on it may be silently wrong; to use the CPU instead, set "
                f'device = torch.device("cpu")')


def _tiny_training(device: torch.device, steps: int) -> list[torch.Tensor]:
    """The losses and final weights (on the CPU) of a seeded tiny model after ``steps`` AdamW steps on ``device``."""
    config = ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)
    with torch.random.fork_rng(devices=[]):  # the same weights on every device, and the caller's RNG untouched
        torch.manual_seed(0)
        model = TransformerLM(config).to(device)
    shape = (steps, 4, config.context_length + 1)
    batches = torch.randint(0, config.vocab_size, shape, generator=torch.Generator().manual_seed(0))
    optimizer = AdamW(model.parameters(), lr=1e-2)
    losses = []
    for ids in batches.to(device):
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])  # forward, loss
        optimizer.zero_grad()
        loss.backward()  # backward
        optimizer.step()  # and an update, which uses every gradient
        losses.append(loss.detach().reshape(1).cpu())
    return [*losses, *(p.detach().cpu() for p in model.parameters())]


def check_device(device: torch.device | str, tolerance: float = 1e-3, steps: int = 3, verbose: bool = True) -> DeviceCheck:
    """Train a tiny model ``steps`` steps on ``device`` and on the CPU, from the same weights and
    batches, and compare every loss and final weight; print one line saying whether they agree.

    A few seconds before a long run tell whether to trust the device: a backend that computes an
    operation wrongly shows here as a difference far above float rounding (or as NaN).
    """
    device = torch.device(device)
    here, cpu = _tiny_training(device, steps), _tiny_training(torch.device("cpu"), steps)
    # a NaN anywhere counts as infinitely far (max() would skip it, since NaN compares False)
    largest = max(float(d) if torch.isfinite(d) else math.inf for d in ((a - b).abs().max() for a, b in zip(here, cpu)))
    result = DeviceCheck(str(device), steps, largest, tolerance)
    if verbose:
        print(result)
    return result


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


def autocast_dtype(precision: str, device_type: str, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """The dtype ``precision`` computes the products in on a device, or None for float32 throughout.

    "auto" is bf16 on CUDA cards with bf16 tensor cores (compute capability 8.0 and up: A100, L4,
    H100), fp16 on older CUDA cards (T4, V100: fp16 tensor cores, bf16 only emulated) and float32
    elsewhere (CPU, Apple MPS). ``capability`` is the CUDA card's, read from the device if not given.
    """
    if precision == "auto":
        if device_type != "cuda":
            return None
        return torch.bfloat16 if (capability or torch.cuda.get_device_capability()) >= (8, 0) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(device: torch.device, amp: torch.dtype | None):
    """Autocast to ``amp`` on ``device``, or nothing when ``amp`` is None."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
