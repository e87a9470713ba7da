"""Checkers for chapter 5's pieces: the loss, the optimiser, its schedule and gradient clipping,
held against :func:`lmcore.nn.cross_entropy` and :mod:`lmcore.optim` (AdamW also against
``torch.optim.AdamW``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .. import nn as ref_nn
from .. import optim as ref
from .nn import _ids, _randn
from .report import Checker, Mistake, Report, compare, register

__all__ = ["cross_entropy", "adamw", "cosine_lr", "clip_grad_norm"]


@contextmanager
def _explained(zero_division: str = "") -> Iterator[None]:
    """Turn errors a reader's code often raises into a line that says what to do (``zero_division``:
    what a ZeroDivisionError means here)."""
    try:
        yield
    except (AttributeError, TypeError) as e:
        if "NoneType" not in str(e):
            raise
        raise ValueError(f"{e}: skip parameters whose .grad is None") from None
    except RuntimeError as e:
        if "leaf Variable" not in str(e):
            raise
        raise RuntimeError("a parameter was changed in place while autograd watched: "
                           "decorate step with @torch.no_grad()") from None
    except ZeroDivisionError as e:
        if not zero_division:
            raise
        raise ValueError(f"{e}: {zero_division}") from None


def _finite(x: Tensor) -> Tensor:
    """``x``, or an error when it is NaN or inf: a mistake whose answer is not finite names nothing
    (any NaN would match it)."""
    if not torch.isfinite(x).all():
        raise ValueError("not finite")
    return x


# --- cross-entropy -------------------------------------------------------------------------------


def _any_float(expected: Tensor, got: object) -> tuple[bool, str]:
    """:func:`compare`, letting a float64 input give a float64 loss (the reference's is float32)."""
    if isinstance(got, Tensor) and got.dtype == torch.float64:
        ok, detail = compare(expected, got.float())
        return ok, detail.replace("float32", "float64 (held to the float32 reference)", 1)
    return compare(expected, got)


def _grad_of(f: Callable, logits: Tensor, targets: Tensor) -> Tensor:
    """The gradient of ``f(logits, targets)`` with respect to the logits."""
    x = logits.clone().requires_grad_()
    loss = f(x, targets)
    if not isinstance(loss, Tensor) or not loss.requires_grad:
        raise ValueError("the loss does not depend on the logits through autograd "
                         "(did it go through .item(), numpy or .detach()?)")
    loss.backward()
    return x.grad


@register("cross_entropy")
def cross_entropy(fn: Callable, show: bool = True) -> Report:
    """``cross_entropy(logits, targets)``: random logits, logits of +-1000 and 1e4, extra batch dims,
    float64, and the gradient (p - y) / N."""
    c = Checker("cross_entropy", fn, "function", ("logits", "targets"))

    def picked(x: Tensor, t: Tensor) -> Tensor:
        return x.gather(-1, t.unsqueeze(-1)).squeeze(-1)

    summed = "summed over the positions: the loss is the mean over every position (divide by the number of targets)"
    not_probs = ("`logits` are unnormalised scores, not probabilities (the log of a negative logit is NaN): "
                 "-log softmax(o)_y = logsumexp(o) - o_y")
    softmax_first = ("softmax was applied before the loss: the loss takes the logits themselves, "
                     "-log softmax(o)_y = logsumexp(o) - o_y")
    indexing = ("the target's logit is picked wrongly: for each position i take logits[i, targets[i]] "
                "(logits.gather(-1, targets.unsqueeze(-1))), not logits[:, targets]")
    overflow = ("exp overflows: subtract the max logit of each position before exponentiating "
                "(log-sum-exp is unchanged by a shift)")

    def mistakes(x: Tensor, t: Tensor) -> list[Mistake]:
        return [
            Mistake(summed, lambda: ref_nn.cross_entropy(x, t) * t.numel()),
            Mistake(softmax_first, lambda: ref_nn.cross_entropy(torch.softmax(x.float(), -1), t)),
            Mistake(not_probs, lambda: _finite(-picked(x.float(), t).log().mean())),
            # logits[:, targets] is (N, N): every position scored against every target
            Mistake(indexing, lambda: torch.logsumexp(x.float(), -1).mean() - x.float()[:, t].mean()),
        ]

    cases = [
        ("random (4, 7)", _randn(4, 7, seed=1, scale=2.0), _ids(4, vocab=7, seed=1)),
        ("logits of +-1000", torch.tensor([[1000.0, 999.0, -1000.0], [-1000.0, -1000.0, -999.0]]), torch.tensor([1, 2])),
        ("logits of 1e4", torch.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]), torch.tensor([0, 2])),
        ("extra batch dims (2, 3, 5)", _randn(2, 3, 5, seed=2, scale=3.0), _ids(2, 3, vocab=5, seed=2)),
        ("float64", _randn(3, 6, seed=3, dtype=torch.float64), _ids(3, vocab=6, seed=3)),
    ]
    a_tensor = (lambda g: not isinstance(g, Tensor), "return a tensor, not a Python number: training calls .backward() on it")
    one_number = (lambda g: g.shape != (), "return one number (shape ()): the mean over every position")
    for name, logits, targets in cases:
        large = logits.abs().max() >= 1000
        c.case(
            name, lambda f, x=logits, t=targets: f(x.clone(), t.clone()), ref_nn.cross_entropy(logits, targets),
            mistakes=mistakes(logits, targets),
            rules=[a_tensor, one_number, (lambda g: not torch.isfinite(g).all(), overflow if large else not_probs)],
            same=_any_float,
        )
        if not c.ok:
            return c.done(show)

    logits, targets = _randn(3, 5, seed=4, dtype=torch.float64), _ids(3, vocab=5, seed=4)
    c.case(
        "gradient (p - y) / N", lambda f: _grad_of(f, logits, targets), _grad_of(ref_nn.cross_entropy, logits, targets),
        mistakes=[Mistake(summed, lambda: _grad_of(ref_nn.cross_entropy, logits, targets) * targets.numel())],
    )
    return c.done(show)


# --- AdamW ---------------------------------------------------------------------------------------

#: the hyper-parameters of the cases: weight decay large enough that applying it wrongly shows, a rate
#: small enough that decaying before or after the Adam step (both right) agree to the tolerance
HYPER = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.2}
FROM_ONE = "t counts steps from 1 (the bias corrections 1 - beta^t are 0 at t = 0)"


def _problem(seed: int, scale: float = 1.0) -> tuple[list[Tensor], list[list[Tensor | None]]]:
    """Three parameters of different shapes, and five steps' gradients (the last parameter gets none)."""
    shapes = [(3, 4), (5,), (2, 2, 3)]
    params = [_randn(*s, seed=seed + i) for i, s in enumerate(shapes)]
    grads = [[_randn(*s, seed=100 * seed + 10 * t + i, scale=scale) if i < 2 else None for i, s in enumerate(shapes)]
             for t in range(5)]
    return params, grads


def _run_optimizer(cls: Callable, params: list[Tensor], grads: list[list[Tensor | None]], **hyper) -> list[Tensor]:
    """Parameters after ``cls(params, **hyper)`` steps once per entry of ``grads``."""
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = cls(ps, **hyper)
    for step_grads in grads:
        for p, g in zip(ps, step_grads):
            p.grad = None if g is None else g.clone()
        with _explained(zero_division=FROM_ONE):
            opt.step()
    return [p.detach() for p in ps]


def _mistaken_adamw(params: list[Tensor], grads: list[list[Tensor | None]], mistake: str, decay_first: bool,
                    lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> list[Tensor]:
    """Where the parameters end up under one usual mistake, or in the handout's form ("eps before
    correction", which is right too); what is right in torch's form comes from lmcore's AdamW.

    ``decay_first``: the weights decay before the Adam step (as torch does) or after it (as the
    CS336 handout writes it); right either way, but under a mistake the two part.
    """
    b1, b2 = betas
    ps = [p.clone() for p in params]
    ms, vs = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    for t, step_grads in enumerate(grads, start=1):
        for p, g, m, v in zip(ps, step_grads, ms, vs):
            if g is None:
                continue
            if mistake == "l2":  # Adam with L2: the decay goes through the gradient
                g = g + weight_decay * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            c1, c2 = (1.0, 1.0) if mistake == "no bias correction" else (1 - b1**t, 1 - b2**t)
            if mistake == "eps inside sqrt":
                denom = (v / c2 + eps).sqrt()
            elif mistake == "eps before correction":
                denom = (v.sqrt() + eps) / math.sqrt(c2)
            else:
                denom = (v / c2).sqrt() + eps
            decay = {"l2": 0.0, "decay without lr": weight_decay}.get(mistake, lr * weight_decay)
            if decay_first:
                p.mul_(1 - decay)
            p.sub_(lr / c1 * m / denom)
            if not decay_first:
                p.mul_(1 - decay)
    return ps


@register("AdamW")
def adamw(cls: type, show: bool = True) -> Report:
    """``AdamW(params, lr, betas, eps, weight_decay)``: one step, five steps on three parameters
    against ``torch.optim.AdamW``, a parameter without a gradient, and eps near the gradients' size
    (where torch's form and the CS336 handout's both pass)."""
    c = Checker("AdamW", cls, "class", ("params", "lr", "betas", "eps", "weight_decay"))
    hints = {
        "no bias correction": "no bias correction: divide m by 1 - beta1^t and v by 1 - beta2^t (t counts steps from 1)",
        "l2": "weight decay went into the gradient (that is Adam with L2): AdamW shrinks the weights directly, "
              "p -= lr * weight_decay * p, apart from the Adam step",
        "decay without lr": "the decay is not multiplied by the learning rate: p -= lr * weight_decay * p",
        "eps inside sqrt": "eps is inside the square root: the denominator is sqrt(v_hat) + eps",
    }

    def case(name: str, params: list[Tensor], grads: list, expected: list[Tensor], keep: slice, **hyper) -> bool:
        return c.case(
            name, lambda k: _run_optimizer(k, params, grads, **hyper)[keep], expected[keep],
            mistakes=[Mistake(h, lambda m=m, first=first: _mistaken_adamw(params, grads, m, first, **hyper)[keep])
                      for m, h in hints.items() for first in (True, False)],
            rules=[(lambda g: not all(torch.isfinite(p).all() for p in g), FROM_ONE)],
            atol=1e-6, rtol=1e-5,
        )

    params, grads = _problem(seed=1)
    one = [grads[0]]
    case("one step, weights (3, 4) and (5,)", params, one, _run_optimizer(ref.AdamW, params, one, **HYPER), slice(0, 2), **HYPER)
    if c.ok:
        case("five steps, three parameters, as torch.optim.AdamW", params, grads,
             _run_optimizer(torch.optim.AdamW, params, grads, **HYPER), slice(0, 2), **HYPER)
    if c.ok:
        c.case(
            "a parameter whose grad is None is left alone", lambda k: _run_optimizer(k, params, grads, **HYPER)[2], params[2],
            rules=[(lambda g: True, "skip a parameter whose .grad is None (no decay either): `if p.grad is None: continue`")],
        )
    if c.ok:
        # torch adds eps to sqrt(v_hat); the CS336 handout folds the corrections into the rate, which adds
        # eps before them. Both are AdamW: they part only when eps is near the gradients' size, as here
        small = {**HYPER, "eps": 1e-3}
        params, grads = _problem(seed=2, scale=1e-3)
        handout = [_mistaken_adamw(params, grads, "eps before correction", first, **small)[:2] for first in (True, False)]

        def torch_or_handout(expected: list[Tensor], got: list[Tensor]) -> tuple[bool, str]:
            ok, detail = compare(expected, got, atol=1e-6, rtol=1e-5)
            if not ok and any(compare(h, got, atol=1e-6, rtol=1e-5)[0] for h in handout):
                return True, "matches the handout's form (eps added before the bias correction)"
            return ok, detail

        c.case("eps near the gradients' size (eps 1e-3, gradients ~1e-3): torch's form or the handout's",
               lambda k: _run_optimizer(k, params, grads, **small)[:2], _run_optimizer(ref.AdamW, params, grads, **small)[:2],
               mistakes=[Mistake(h, lambda m=m, first=first: _mistaken_adamw(params, grads, m, first, **small)[:2])
                         for m, h in hints.items() for first in (True, False)],
               same=torch_or_handout)
    return c.done(show)


# --- the learning-rate schedule -------------------------------------------------------------------


@register("cosine_lr")
def cosine_lr(fn: Callable, show: bool = True) -> Report:
    """``cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters)``: the rate at the start,
    in and at the end of the warm-up, mid-cosine, at the end of the cycle, after it, and without warm-up."""
    c = Checker("cosine_lr", fn, "function", ("it", "max_lr", "min_lr", "warmup_iters", "cosine_cycle_iters"))
    hi, lo, warm, cycle = 1e-3, 1e-4, 100, 1000

    def mistaken(it: int, start: int = 0, late: int = 0, span: int = cycle - warm, floor: float = lo,
                 clamp: bool = True) -> float:
        """The schedule with one usual mistake (what is right comes from lmcore's ``cosine_lr``)."""
        if it < warm:
            return hi * (it + start) / warm
        if it > cycle and clamp:
            return lo
        progress = max(0, it - warm - late) / span
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (hi - floor)

    usual = [  # hint, the mistake
        ("off by one in the warm-up: the rate at iteration it is max_lr * it / warmup_iters "
         "(0 at it = 0, max_lr at it = warmup_iters)", {"start": 1}),
        ("the cosine starts one step late: it begins at it = warmup_iters, where its progress "
         "(it - warmup_iters) / (cosine_cycle_iters - warmup_iters) is 0", {"late": 1}),
        ("the cosine runs over the wrong span: progress is (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)",
         {"span": cycle}),
        ("the cosine decays to 0: it ends at min_lr, min_lr + (1 + cos(pi progress)) / 2 * (max_lr - min_lr)",
         {"floor": 0.0}),
        ("no floor after the cycle: from cosine_cycle_iters on the rate stays at min_lr", {"clamp": False}),
    ]
    cases = [(0, "the start"), (50, "mid-warm-up"), (100, "end of warm-up"), (550, "mid-cosine"),
             (1000, "end of the cycle"), (1200, "after the cycle")]
    for it, what in cases:
        c.case(
            f"it {it}, {what} (warm-up {warm}, cycle {cycle})", lambda f, it=it: f(it, hi, lo, warm, cycle),
            ref.cosine_lr(it, hi, lo, warm, cycle),
            mistakes=[Mistake(h, lambda it=it, wrong=wrong: mistaken(it, **wrong)) for h, wrong in usual],
            atol=1e-12, rtol=1e-6,
        )
        if not c.ok:
            return c.done(show)

    def no_warmup(f: Callable) -> float:
        with _explained(zero_division="warmup_iters = 0 means no warm-up, and must not be divided by"):
            return f(0, hi, lo, 0, cycle)

    c.case("no warm-up (warmup_iters 0), it 0", no_warmup, ref.cosine_lr(0, hi, lo, 0, cycle),
           atol=1e-12, rtol=1e-6)
    return c.done(show)


# --- gradient clipping ----------------------------------------------------------------------------


def _with_grads(scales: list[float | None]) -> list[torch.nn.Parameter]:
    """Parameters of different shapes whose gradients have the L2 norms ``scales`` (None: no gradient)."""
    params = []
    for i, s in enumerate(scales):
        p = torch.nn.Parameter(_randn(i + 2, 3, seed=i))
        if s is not None:
            g = _randn(i + 2, 3, seed=10 + i)
            p.grad = g * (s / g.norm())
        params.append(p)
    return params


def _clip(fn: Callable, scales: list[float | None], max_norm: float, generator: bool = False) -> list:
    """The gradients after ``fn(params, max_norm)``: a tensor each, ``None`` for a parameter that had none."""
    params = _with_grads(scales)
    with _explained():
        fn(iter(params) if generator else params, max_norm)
    return [p.grad for p in params]


def _same_grads(expected: list, got: list) -> tuple[bool, str]:
    """Gradients equal where they exist, and still None where there were none."""
    if [g is None for g in got] != [e is None for e in expected]:
        return False, "a gradient that was None is no longer None: leave parameters without a gradient alone"
    return compare([e for e in expected if e is not None], [g for g in got if g is not None])


@register("clip_grad_norm")
def clip_grad_norm(fn: Callable, show: bool = True) -> Report:
    """``clip_grad_norm(params, max_l2_norm)``: a joint norm above the limit, one below it, a parameter
    without a gradient, and the parameters given as a generator."""
    c = Checker("clip_grad_norm", fn, "function", ("params", "max_l2_norm"))

    def per_tensor(params, max_norm):
        for p in params:
            if p.grad is not None:
                p.grad.mul_(min(1.0, max_norm / p.grad.norm().item()))

    def always(params, max_norm):
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.cat([g.flatten() for g in grads]).norm()
        for g in grads:
            g.mul_(max_norm / total)

    unchanged = ("the gradients came back unchanged: scale each p.grad in place (p.grad.mul_(factor)); "
                 "`g = g * factor` only rebinds a local name")
    cases = [  # name, the gradients' norms (None: no gradient), the limit, given as a generator
        ("joint norm 5 over a limit of 1 (norms 3, 4 and 0.001)", [3.0, 4.0, 1e-3], 1.0, False),
        ("joint norm under the limit: left as they are", [0.3, 0.4, 0.1], 1.0, False),
        ("a parameter without a gradient", [3.0, None, 4.0], 2.0, False),
        ("params given as a generator (model.parameters())", [3.0, 4.0, 1e-3], 1.0, True),
    ]
    for name, scales, max_norm, generator in cases:
        hint = ("params may be a generator (model.parameters()), which runs out after one pass: make it a list first"
                if generator else unchanged)
        c.case(
            name, lambda f, s=scales, m=max_norm, gen=generator: _clip(f, s, m, generator=gen),
            _clip(ref.clip_grad_norm, scales, max_norm),
            mistakes=[
                Mistake("each tensor was clipped by its own norm: take one norm of all the gradients together "
                        "(the square root of the sum of every squared entry) and scale them all by the same factor",
                        lambda s=scales, m=max_norm: _clip(per_tensor, s, m)),
                Mistake("scaled although the norm is under the limit: the factor is min(1, max_l2_norm / norm)",
                        lambda s=scales, m=max_norm: _clip(always, s, m)),
                Mistake(hint, lambda s=scales: _clip(lambda p, m: None, s, 1.0)),
            ],
            same=_same_grads,
        )
        if not c.ok:
            break
    return c.done(show)
