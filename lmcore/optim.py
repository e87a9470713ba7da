"""Optimisers and the learning-rate schedule.

``SGD`` is the toy of chapter 5 (its step size decays as lr / sqrt(t + 1)); ``AdamW`` is the
optimiser the model trains with (Loshchilov and Hutter, 2019): Adam's per-parameter step sizes
from running moments of the gradient, with weight decay applied to the weights directly rather
than mixed into the gradient. Both are ``torch.optim.Optimizer`` subclasses, so parameter
groups, ``state_dict`` and ``load_state_dict`` work as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = ["SGD", "AdamW", "adamw_by_hand", "cosine_lr", "clip_grad_norm", "sgd_toy"]


class SGD(torch.optim.Optimizer):
    """``p -= lr / sqrt(t + 1) * grad``, with ``t`` the step count of each parameter."""

    def __init__(self, params: Iterable, lr: float = 1e-3) -> None:
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0)
                p.add_(p.grad, alpha=-group["lr"] / math.sqrt(t + 1))
                state["t"] = t + 1
        return loss


class AdamW(torch.optim.Optimizer):
    """AdamW: for each parameter, with gradient g at step t (from 1),

    p -= lr wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).

    ``eps`` is added to the bias-corrected sqrt(v), as ``torch.optim.AdamW`` does (some texts add it
    before the correction, which makes the effective eps larger in early steps).

    The state is two tensors the size of the parameter (``exp_avg``, ``exp_avg_sq``) and a step
    count, the 2x-parameters memory that chapter 4 counts. Training runs PyTorch's fused AdamW
    (``TrainConfig.kernels="fused"``), which the tests hold to this one.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # first step: both moments start at zero
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                g, t, m, v = p.grad, state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)  # running mean of the gradient
                v.mul_(b2).addcmul_(g, g, value=1 - b2)  # running mean of its square
                p.mul_(1 - lr * wd)  # weight decay on the weights themselves, not through the gradient
                # both moments started at 0, so early on they are too small: divide by 1 - b^t
                denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
        return loss


def adamw_by_hand(
    theta: float,
    grad: Callable[[float], float],
    steps: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> list[dict[str, float]]:
    """AdamW on one number in plain Python floats, step by step, to follow by hand.

    ``grad(theta)`` is the gradient at ``theta``. One record per step: ``t``, ``g``, the moments
    ``m`` and ``v``, their bias-corrected ``m_hat`` and ``v_hat``, the two changes added to theta,
    ``decay = -lr * weight_decay * theta`` and ``adam = -lr * m_hat / (sqrt(v_hat) + eps)``, and
    ``theta`` after the step: the arithmetic of :class:`AdamW` (the tests hold the two equal).
    """
    b1, b2 = betas
    m = v = 0.0
    rows = []
    for t in range(1, steps + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        decay = -lr * weight_decay * theta
        adam = -lr * m_hat / (math.sqrt(v_hat) + eps)
        theta = theta + decay + adam
        rows.append({"t": t, "g": g, "m": m, "v": v, "m_hat": m_hat, "v_hat": v_hat,
                     "decay": decay, "adam": adam, "theta": theta})
    return rows


def cosine_lr(it: int, max_lr: float, min_lr: float, warmup_iters: int, cosine_cycle_iters: int) -> float:
    """Linear warm-up to ``max_lr`` over ``warmup_iters``, cosine decay to ``min_lr`` at
    ``cosine_cycle_iters``, then ``min_lr``."""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it <= cosine_cycle_iters:
        progress = (it - warmup_iters) / max(1, cosine_cycle_iters - warmup_iters)
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return min_lr


@torch.no_grad()
def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_l2_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale all gradients together so their joint L2 norm is at most ``max_l2_norm``.

    Returns the norm before clipping. Parameters without a gradient are skipped.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.sqrt(sum(g.float().pow(2).sum() for g in grads))  # all gradients as one long vector
    # min(1, max / norm), kept a tensor: no wait for the device, and gradients under the threshold
    # are multiplied by exactly 1
    scale = (max_l2_norm / (total + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def sgd_toy(lr: float, steps: int = 10, seed: int = 0) -> list[float]:
    """Chapter 5's toy: minimise mean(W^2) for a random 10x10 ``W`` (std 5) with :class:`SGD`.

    Returns the loss before each step. The gradient is W / 50, so a step multiplies W by
    1 - lr / (50 sqrt(t + 1)): it shrinks for small lr and flips sign and grows once that exceeds 2.
    """
    gen = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(5 * torch.randn(10, 10, generator=gen))
    opt = SGD([w], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (w**2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses
