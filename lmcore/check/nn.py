"""Checkers for chapter 3's modules and functions, held against :mod:`lmcore.nn` and :mod:`lmcore.model`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import nn as ref
from .report import Checker, Mistake, Report, register

__all__ = ["softmax"]


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Seeded by a generator of its own, so a check leaves the global random state alone."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


@register("softmax")
def softmax(fn: Callable, show: bool = True) -> Report:
    """``softmax(x, dim)``: random inputs, each dim, logits of +-1000, bf16 and float64, a non-contiguous view."""
    c = Checker("softmax", fn, "function", ("x", "dim"))

    def naive(x: torch.Tensor, dim: int) -> torch.Tensor:
        e = x.exp()
        return e / e.sum(dim, keepdim=True)

    x = _randn(4, 7, seed=1)
    big = torch.tensor([[1000.0, 999.0, -1000.0], [-1000.0, -1000.0, -999.0]])
    wrong_axis = "normalised along the wrong dimension: sum over `dim`, with keepdim=True so it broadcasts"
    cases = [
        ("random (4, 7), dim=-1", x, -1),
        ("random (4, 7), dim=0", x, 0),
        ("logits of +-1000", big, -1),
        ("extra batch dims (2, 3, 5)", _randn(2, 3, 5, seed=2, scale=3.0), -1),
        ("non-contiguous (transposed)", _randn(6, 4, seed=3).T, -1),
        ("float64", _randn(3, 5, seed=4, dtype=torch.float64), -1),
        ("bfloat16", _randn(3, 5, seed=5, dtype=torch.bfloat16), -1),
    ]
    for name, inp, dim in cases:
        tol = 1e-2 if inp.dtype == torch.bfloat16 else 1e-5
        other = 0 if dim != 0 else -1
        c.case(
            name, lambda f, inp=inp, dim=dim: f(inp.clone(), dim), ref.softmax(inp, dim),
            mistakes=[
                Mistake("exp overflows: subtract the max along `dim` before exponentiating (softmax is unchanged by a shift)",
                        lambda inp=inp, dim=dim: naive(inp, dim)),
                Mistake(wrong_axis, lambda inp=inp, other=other: ref.softmax(inp, other)),
            ],
            rules=[(lambda g, inp=inp: g.dtype != inp.dtype, f"return the input's dtype ({inp.dtype})")],
            atol=tol, rtol=tol,
        )
        if not c.ok:
            break
    return c.done(show)
