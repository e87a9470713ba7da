"""Checkers for chapter 3's modules and functions, held against :mod:`lmcore.nn` and :mod:`lmcore.model`.

A module's check builds the reader's class with the stub's signature, gives it the reference's
weights (so both compute with the same numbers) and compares outputs case by case. Modules draw
their first weights from torch's global generator, so every check runs inside :func:`~lmcore.check.report.seeded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .. import nn as ref
from ..model import ModelConfig, TransformerBlock, TransformerLM
from .report import Checker, Mistake, Report, register, seeded

__all__ = ["linear", "embedding", "rmsnorm", "silu", "swiglu", "softmax", "scaled_dot_product_attention", "rope",
           "multihead_self_attention", "transformer_block", "transformer_lm"]


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Seeded by a generator of its own, so a check leaves the global random state alone."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _ids(*shape: int, vocab: int, seed: int = 0) -> Tensor:
    """Random token ids, seeded like :func:`_randn`."""
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _tol(dtype: torch.dtype) -> dict[str, float]:
    """bf16 keeps 8 bits of mantissa, about 3 significant digits; float32 and float64 are held to compare's default."""
    return {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _keeps_dtype(x: Tensor) -> tuple[Callable[[Tensor], bool], str]:
    return (lambda g: g.dtype != x.dtype, f"return the input's dtype ({_name(x.dtype)})")


def _params(module: torch.nn.Module) -> dict[str, str]:
    return {n: f"{tuple(p.shape)} {_name(p.dtype)}" for n, p in module.named_parameters()}


def _same_params(expected: dict[str, str], got: dict[str, str]) -> tuple[bool, str]:
    """Whether the reader's parameters have the reference's names, shapes and dtypes; else which differ."""
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    wrong = [f"{n} is {got[n]}, expected {expected[n]}" for n in expected if n in got and got[n] != expected[n]]
    if not (missing or extra or wrong):
        if not expected:
            return True, "no parameters, as the reference"
        return True, f"{len(expected)} parameter{'s' if len(expected) > 1 else ''}, named and shaped as the reference's"
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
    return False, "; ".join(parts + wrong)[:300]


def _vary_gains(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Norm gains start at 1, where a forgotten gain (or ln1 swapped with ln2) changes nothing: move them off 1."""
    with torch.no_grad():
        for i, p in enumerate(p for p in module.parameters() if p.dim() == 1):
            p.add_(_randn(*p.shape, seed=seed + i, dtype=p.dtype, scale=0.5))
    return module


def _shown(args: tuple, kwargs: dict) -> str:
    """The constructor call, as the report names it: ``Linear(5, 3, dtype=float64)``."""
    def one(a: object) -> str:
        if isinstance(a, torch.dtype):
            return _name(a)
        if isinstance(a, float):
            return f"{a:g}"
        if a is None:
            return "None"
        return str(a) if isinstance(a, int) else {ModelConfig: "config"}.get(type(a), "rope")
    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


Layout = tuple[tuple, dict, list]  # the constructor's args and kwargs, and the inputs to run the module built so on


def _built(c: Checker, piece: str, reference: Callable[..., torch.nn.Module], layouts: list[Layout],
           names: str) -> Iterator[tuple[torch.nn.Module, torch.nn.Module, list]]:
    """For each layout: the reader's module and the reference, built alike, and the layout's inputs.

    Building is one case: the reader's parameters must have the reference's names and shapes (``names``
    says which, as the hint), then they get the reference's values, so later cases compare two
    computations on the same weights. Norm gains are moved off 1 first. Stops at the first module that
    cannot be built, or once the reader's code is not written yet.
    """
    for args, kwargs, inputs in layouts:
        r = _vary_gains(reference(*args, **kwargs), seed=10)
        made = []

        def run(cls: type, args: tuple = args, kwargs: dict = kwargs, made: list = made) -> dict[str, str]:
            made.append(cls(*args, **kwargs))
            return _params(made[-1])

        if not c.case(f"{piece}({_shown(args, kwargs)}): parameters", run, _params(r), rules=[(lambda g: True, names)],
                      same=_same_params):
            return
        made[0].load_state_dict(r.state_dict(), strict=False)  # strict=False: the reader may keep extra buffers
        yield made[0], r, inputs
        if not c.ok:
            return


_TRANSPOSE = "y = x W^T: the weight is stored (out_features, in_features), so multiply by W.T, not W"


@register("Linear")
def linear(cls: type, show: bool = True) -> Report:
    """``Linear(in_features, out_features)``: a square layer first (where x W and x W^T differ in value, not just
    shape), then 5 -> 3 on a matrix, extra batch dims and a non-contiguous input, then float64 and bf16 weights."""
    c = Checker("Linear", cls, "class", ("in_features", "out_features", "device", "dtype"))
    layouts = [
        ((8, 8), {"dtype": torch.float32}, [("square 8 -> 8, x (4, 8)", _randn(4, 8, seed=1))]),
        ((5, 3), {"dtype": torch.float32}, [("5 -> 3, x (4, 5)", _randn(4, 5, seed=2)),
                                            ("extra batch dims, x (2, 3, 5)", _randn(2, 3, 5, seed=3)),
                                            ("non-contiguous x (transposed)", _randn(5, 4, seed=4).T)]),
        ((5, 3), {"dtype": torch.float64}, [("float64", _randn(4, 5, seed=5, dtype=torch.float64))]),
        ((5, 3), {"dtype": torch.bfloat16}, [("bfloat16", _randn(4, 5, seed=6, dtype=torch.bfloat16))]),
    ]
    names = "one parameter, weight, shaped (out_features, in_features), no bias; pass dtype to torch.empty"
    with seeded():
        for m, r, inputs in _built(c, "Linear", ref.Linear, layouts, names):
            for name, x in inputs:
                c.case(name, lambda _, m=m, x=x: m(x.clone()), r(x),
                       mistakes=[Mistake(_TRANSPOSE, lambda r=r, x=x: x @ r.weight)], rules=[_keeps_dtype(x)], **_tol(x.dtype))
    return c.done(show)


@register("Embedding")
def embedding(cls: type, show: bool = True) -> Report:
    """``Embedding(num_embeddings, embedding_dim)``: ids of shapes (2, 5), (7,), (2, 3, 4) and (1, 1), non-contiguous
    ids, a float64 table."""
    c = Checker("Embedding", cls, "class", ("num_embeddings", "embedding_dim", "device", "dtype"))
    keep_shape = "keep the ids' shape: ids (...) -> vectors (..., embedding_dim); index with the ids as given, weight[ids]"
    layouts = [
        ((10, 4), {"dtype": torch.float32}, [("ids (2, 5)", _ids(2, 5, vocab=10, seed=1)),
                                             ("ids (7,)", _ids(7, vocab=10, seed=2)),
                                             ("extra batch dims, ids (2, 3, 4)", _ids(2, 3, 4, vocab=10, seed=3)),
                                             ("one id, ids (1, 1)", torch.tensor([[9]])),
                                             ("non-contiguous ids (transposed)", _ids(5, 2, vocab=10, seed=4).T)]),
        ((10, 4), {"dtype": torch.float64}, [("float64 table", _ids(2, 5, vocab=10, seed=5))]),
    ]
    names = "one parameter, weight, shaped (num_embeddings, embedding_dim): row i is token i's vector"
    with seeded():
        for m, r, inputs in _built(c, "Embedding", ref.Embedding, layouts, names):
            dtype = r.weight.dtype
            for name, ids in inputs:
                c.case(name, lambda _, m=m, ids=ids: m(ids.clone()), r(ids),
                       rules=[(lambda g, ids=ids: ids.dim() != 1 and g.shape == (ids.numel(), 4), keep_shape),
                              (lambda g, dtype=dtype: g.dtype != dtype, f"return the table's dtype ({_name(dtype)})")])
    return c.done(show)


_AXIS = ("the mean of the squares runs over the wrong axis: average over the last dimension (d_model) with "
         "keepdim=True, so each vector is divided by its own rms")
_NO_EPS = ("add eps inside the square root, x / sqrt(mean(x^2) + eps): without it an input whose rms is tiny "
           "(or zero) is blown up (or 0/0)")


def _rmsnorm_mistakes(x: Tensor, r: ref.RMSNorm) -> list[Mistake]:
    """The usual RMSNorm slips on ``x``, with the reference ``r``'s gain and eps."""
    xf, g, sq = x.float(), r.weight.float(), x.float().pow(2)
    ms = sq.mean(-1, keepdim=True)

    def out(y: Tensor) -> Tensor:
        return y.to(x.dtype)

    return [
        Mistake(_AXIS, lambda: out(xf * torch.rsqrt(sq.mean(0, keepdim=True) + r.eps) * g)),
        Mistake(_AXIS, lambda: out(xf * torch.rsqrt(sq.mean(-1) + r.eps) * g)),  # no keepdim: divides columns
        Mistake(_AXIS, lambda: out(xf * torch.rsqrt(sq.mean() + r.eps) * g)),
        Mistake("the mean of the squares, not their sum: x / sqrt(mean(x^2) + eps)",
                lambda: out(xf * torch.rsqrt(sq.sum(-1, keepdim=True) + r.eps) * g)),
        Mistake(_NO_EPS, lambda: out(xf / ms.sqrt() * g)),
        Mistake("eps goes inside the square root: sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps",
                lambda: out(xf / (ms.sqrt() + r.eps) * g)),
        Mistake("use the eps the constructor was given (store it), not a constant",
                lambda: out(xf * torch.rsqrt(ms + 1e-5) * g)),
        Mistake("multiply by the learned gain, self.weight (one per feature)", lambda: out(xf * torch.rsqrt(ms + r.eps))),
    ]


@register("RMSNorm")
def rmsnorm(cls: type, show: bool = True) -> Report:
    """``RMSNorm(d_model, eps)``: random (8, 8) (square, so a mean over the wrong axis still broadcasts), extra batch
    dims, sequence length 1, inputs of rms 1e-4 and 0 (where eps matters), eps=1e-3, non-contiguous, float64, bf16."""
    c = Checker("RMSNorm", cls, "class", ("d_model", "eps", "device", "dtype"))
    layouts = [
        ((8, 1e-5), {"dtype": torch.float32}, [("random (8, 8)", _randn(8, 8, seed=1)),
                                               ("extra batch dims (2, 3, 8)", _randn(2, 3, 8, seed=2, scale=3.0)),
                                               ("sequence length 1 (1, 1, 8)", _randn(1, 1, 8, seed=3)),
                                               ("tiny input (rms 1e-4)", _randn(4, 8, seed=4, scale=1e-4)),
                                               ("all zeros", torch.zeros(2, 8)),
                                               ("non-contiguous (transposed)", _randn(8, 4, seed=5).T)]),
        ((8, 1e-3), {"dtype": torch.float32}, [("eps=1e-3, input of rms 1e-2", _randn(4, 8, seed=6, scale=1e-2))]),
        ((8, 1e-5), {"dtype": torch.float64}, [("float64", _randn(4, 8, seed=7, dtype=torch.float64))]),
        ((8, 1e-5), {"dtype": torch.bfloat16}, [("bfloat16", _randn(4, 8, seed=8, dtype=torch.bfloat16))]),
    ]
    with seeded():
        for m, r, inputs in _built(c, "RMSNorm", ref.RMSNorm, layouts, "one parameter, weight (the gain), shaped (d_model,)"):
            for name, x in inputs:
                c.case(name, lambda _, m=m, x=x: m(x.clone()), r(x), mistakes=_rmsnorm_mistakes(x, r),
                       rules=[_keeps_dtype(x)], **_tol(x.dtype))
    return c.done(show)


@register("silu")
def silu(fn: Callable, show: bool = True) -> Report:
    """``silu(x)``: random inputs, |x| up to 100, extra batch dims, non-contiguous, float64, bf16."""
    c = Checker("silu", fn, "function", ("x",))
    cases = [
        ("random (4, 7)", _randn(4, 7, seed=1, scale=3.0)),
        ("large |x| (-100 to 100)", torch.linspace(-100, 100, 9)),
        ("extra batch dims (2, 3, 5)", _randn(2, 3, 5, seed=2)),
        ("non-contiguous (transposed)", _randn(6, 4, seed=3).T),
        ("float64", _randn(3, 5, seed=4, dtype=torch.float64)),
        ("bfloat16", _randn(3, 5, seed=5, dtype=torch.bfloat16)),
    ]
    for name, x in cases:
        c.case(name, lambda f, x=x: f(x.clone()), ref.silu(x),
               mistakes=[Mistake("silu(x) = x * sigmoid(x): multiply the sigmoid by x", lambda x=x: torch.sigmoid(x)),
                         Mistake("sigmoid(x) = 1 / (1 + exp(-x)): mind the sign", lambda x=x: x * torch.sigmoid(-x))],
               rules=[_keeps_dtype(x)], **_tol(x.dtype))
        if not c.ok:
            break
    return c.done(show)


def _swiglu_mistakes(x: Tensor, r: ref.SwiGLU) -> list[Mistake]:
    return [
        Mistake("the gate is w1's branch: w2(silu(w1 x) * w3 x), silu on w1 x, not on w3 x",
                lambda: r.w2(r.w1(x) * ref.silu(r.w3(x)))),
        Mistake("multiply by w3 x: SwiGLU gates silu(w1 x) with the value w3 x", lambda: r.w2(ref.silu(r.w1(x)))),
        Mistake("silu applies to w1 x alone, before the product with w3 x", lambda: r.w2(ref.silu(r.w1(x) * r.w3(x)))),
    ]


@register("SwiGLU")
def swiglu(cls: type, show: bool = True) -> Report:
    """``SwiGLU(d_model, d_ff)`` with ``w1``, ``w2``, ``w3``: random inputs, extra batch dims, sequence length 1,
    non-contiguous, float64."""
    c = Checker("SwiGLU", cls, "class", ("d_model", "d_ff", "device", "dtype"))
    layouts = [
        ((8, 12), {"dtype": torch.float32}, [("random (4, 8)", _randn(4, 8, seed=1)),
                                             ("extra batch dims (2, 3, 8)", _randn(2, 3, 8, seed=2)),
                                             ("sequence length 1 (1, 1, 8)", _randn(1, 1, 8, seed=3)),
                                             ("non-contiguous (transposed)", _randn(8, 4, seed=4).T)]),
        ((8, 12), {"dtype": torch.float64}, [("float64", _randn(4, 8, seed=5, dtype=torch.float64))]),
    ]
    names = "three Linear layers: w1 and w3 map d_model -> d_ff, w2 maps d_ff -> d_model"
    with seeded():
        for m, r, inputs in _built(c, "SwiGLU", ref.SwiGLU, layouts, names):
            for name, x in inputs:
                c.case(name, lambda _, m=m, x=x: m(x.clone()), r(x), mistakes=_swiglu_mistakes(x, r), rules=[_keeps_dtype(x)])
    return c.done(show)


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
            rules=[(lambda g, inp=inp: g.dtype != inp.dtype, f"return the input's dtype ({_name(inp.dtype)})")],
            atol=tol, rtol=tol,
        )
        if not c.ok:
            break
    return c.done(show)


_NO_MASK = "apply the mask: scores where the mask is False get -inf before the softmax (no query sees a later key)"
_INVERTED = "the mask is True where a query may attend, so fill the scores where it is False: masked_fill(~mask, -inf)"


def _scores(q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def _attention_mistakes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> list[Mistake]:
    """The usual attention slips, mostly as the reference run on changed inputs (a scale folded into q, another mask)."""
    sdpa, d_k, d_v = ref.scaled_dot_product_attention, q.shape[-1], v.shape[-1]
    n, m = q.shape[-2], k.shape[-2]
    masked = _scores(q, k) if mask is None else _scores(q, k).masked_fill(~mask, float("-inf"))
    found = [
        Mistake("scale the scores by 1 / sqrt(d_k): without it they spread as sqrt(d_k) and the softmax saturates",
                lambda: sdpa(q * math.sqrt(d_k), k, v, mask)),
        Mistake("divide by sqrt(d_k), not d_k", lambda: sdpa(q / math.sqrt(d_k), k, v, mask)),
        Mistake("scale by sqrt(d_k), the last dimension of q and k, not of v",
                lambda: sdpa(q * math.sqrt(d_k / d_v), k, v, mask)),
        Mistake("take the softmax over the keys (the last dimension), not over the queries",
                lambda: ref.softmax(masked, -2) @ v),
        Mistake("exp overflows: subtract each row's max before exponentiating (or use your softmax from above)",
                lambda: (masked.exp() / masked.exp().sum(-1, keepdim=True)) @ v),
    ]
    if mask is not None:
        own = torch.ones(n, m, dtype=torch.bool).tril()
        found += [
            Mistake(_NO_MASK, lambda: sdpa(q, k, v)),
            Mistake(_INVERTED, lambda: sdpa(q, k, v, ~mask)),
            Mistake("set masked scores to -inf, not 0: a score of 0 still gets weight after the softmax",
                    lambda: ref.softmax(_scores(q, k).masked_fill(~mask, 0.0), -1) @ v),
            Mistake("use the mask you are given, not a causal one built inside", lambda: sdpa(q, k, v, own)),
        ]
    return found


@register("scaled_dot_product_attention")
def scaled_dot_product_attention(fn: Callable, show: bool = True) -> Report:
    """``scaled_dot_product_attention(q, k, v, mask=None)``, mask True where a query may attend: no mask, a causal
    mask, fewer queries than keys, a random mask with batch dims, d_v != d_k, extra batch dims, sequence length 1,
    large scores, a non-contiguous k, float64, bf16."""
    c = Checker("scaled_dot_product_attention", fn, "function", ("q", "k", "v", "mask"))

    def qkv(*lead: int, n: int = 5, m: int | None = None, d_k: int = 4, d_v: int = 4, seed: int = 0,
            dtype: torch.dtype = torch.float32, scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        m = m or n
        return (_randn(*lead, n, d_k, seed=seed, dtype=dtype, scale=scale),
                _randn(*lead, m, d_k, seed=seed + 1, dtype=dtype, scale=scale), _randn(*lead, m, d_v, seed=seed + 2, dtype=dtype))

    diagonal = torch.eye(5, dtype=torch.bool)  # a random mask with each query allowed itself, so no row is empty
    random_mask = (_randn(2, 5, 5, seed=40) > 0) | diagonal
    plain = qkv(seed=50)
    cases = [
        ("q, k, v (5, 4), no mask", qkv(seed=1), None),
        ("causal mask (5, 5)", qkv(seed=4), ref.causal_mask(5, 5)),
        ("2 queries, 6 keys, causal_mask(2, 6)", qkv(n=2, m=6, seed=7), ref.causal_mask(2, 6)),
        ("random mask with batch dims (2, 5, 5)", qkv(2, seed=10), random_mask),
        ("d_v != d_k: q, k (5, 8), v (5, 3)", qkv(d_k=8, d_v=3, seed=13), ref.causal_mask(5, 5)),
        ("extra batch dims (2, 3, 5, 4)", qkv(2, 3, seed=16), ref.causal_mask(5, 5)),
        ("sequence length 1", qkv(2, n=1, seed=19), ref.causal_mask(1, 1)),
        ("large scores (q, k of scale 30)", qkv(seed=22, scale=30.0), ref.causal_mask(5, 5)),
        ("non-contiguous k (a transposed view)", (plain[0], _randn(4, 5, seed=25).T, plain[2]), ref.causal_mask(5, 5)),
        ("float64", qkv(seed=28, dtype=torch.float64), ref.causal_mask(5, 5)),
        ("bfloat16", qkv(seed=31, dtype=torch.bfloat16), ref.causal_mask(5, 5)),
    ]
    for name, (q, k, v), mask in cases:
        c.case(name, lambda f, q=q, k=k, v=v, mask=mask: f(q.clone(), k.clone(), v.clone(), mask),
               ref.scaled_dot_product_attention(q, k, v, mask), mistakes=_attention_mistakes(q, k, v, mask),
               rules=[_keeps_dtype(q)], **_tol(q.dtype))
        if not c.ok:
            break
    return c.done(show)


_HALVES = "RoPE pairs neighbouring dimensions (2k, 2k+1): x[..., 0::2] with x[..., 1::2], not the first half with the second"


def _rope_mistakes(x: Tensor, pos: Tensor, r: ref.RotaryPositionalEmbedding) -> list[Mistake]:
    """The usual RoPE slips, as the reference run on permuted or sign-flipped inputs, or with another theta."""
    d = x.shape[-1]
    halves = torch.arange(d).view(2, d // 2).T.reshape(-1)  # puts dims k and k + d/2 side by side, as pair k
    flip = torch.tensor([1.0, -1.0]).repeat(d // 2).to(x.dtype)  # negating the odd member turns the rotation around

    def rope_with(theta: float) -> Tensor:
        return ref.RotaryPositionalEmbedding(theta, d, r.max_seq_len)(x, pos)

    frequency = "pair k turns by pos * theta^(-2k/d_k), for k = 0 .. d_k/2 - 1"
    return [
        Mistake(_HALVES, lambda: r(x[..., halves], pos)[..., halves.argsort()]),
        Mistake("the rotation goes the wrong way: (x_2k cos - x_2k+1 sin, x_2k sin + x_2k+1 cos)",
                lambda: r(x * flip, pos) * flip),
        Mistake(frequency, lambda: rope_with(math.sqrt(r.theta))),
        Mistake(frequency, lambda: rope_with(r.theta**2)),
        Mistake("put each rotated pair back side by side (stack on a new last axis, then flatten), not evens then odds",
                lambda: torch.cat((r(x, pos)[..., 0::2], r(x, pos)[..., 1::2]), -1)),
        Mistake("rotate by the token_positions given, not by 0 .. seq-1", lambda: r(x, torch.arange(x.shape[-2]))),
    ]


@register("RotaryPositionalEmbedding")
def rope(cls: type, show: bool = True) -> Report:
    """``RotaryPositionalEmbedding(theta, d_k, max_seq_len)``, ``forward(x, token_positions)``: positions from 0 and
    from 5, per batch row, heads as extra batch dims, sequence length 1 at the last position, non-contiguous,
    float64, bf16."""
    c = Checker("RotaryPositionalEmbedding", cls, "class", ("theta", "d_k", "max_seq_len", "device"))
    cases = [
        ("x (3, 8), positions 0, 1, 2", _randn(3, 8, seed=1), torch.arange(3)),
        ("positions 5, 6, 7 (not from 0)", _randn(3, 8, seed=2), torch.arange(5, 8)),
        ("positions per batch row: x (2, 4, 8), positions (2, 4)", _randn(2, 4, 8, seed=3),
         torch.tensor([[0, 1, 2, 3], [9, 10, 11, 12]])),
        ("heads as extra batch dims: x (2, 3, 4, 8), positions (4,)", _randn(2, 3, 4, 8, seed=4), torch.arange(2, 6)),
        ("sequence length 1, at position 15 (the last)", _randn(1, 1, 8, seed=5), torch.tensor([15])),
        ("non-contiguous x (transposed)", _randn(8, 3, seed=6).T, torch.arange(3)),
        ("float64", _randn(3, 8, seed=7, dtype=torch.float64), torch.arange(4, 7)),
        ("bfloat16", _randn(3, 8, seed=8, dtype=torch.bfloat16), torch.arange(4, 7)),
    ]
    names = "RoPE learns nothing: keep cos and sin as buffers (register_buffer(..., persistent=False)), not parameters"
    with seeded():
        layouts = [((10_000.0, 8, 16), {}, cases)]
        for m, r, inputs in _built(c, "RotaryPositionalEmbedding", ref.RotaryPositionalEmbedding, layouts, names):
            for name, x, pos in inputs:
                c.case(name, lambda _, m=m, x=x, pos=pos: m(x.clone(), pos.clone()), r(x, pos),
                       mistakes=_rope_mistakes(x, pos, r), rules=[_keeps_dtype(x)], **_tol(x.dtype))
    return c.done(show)


def _with_positions(m: torch.nn.Module, x: Tensor, pos: Tensor | None) -> Tensor:
    """``m(x)``, or ``m(x, token_positions=pos)``: a forward whose positions default is called without them too."""
    return m(x.clone()) if pos is None else m(x.clone(), token_positions=pos.clone())


def _mhsa_mistakes(x: Tensor, pos: Tensor | None, r: ref.MultiHeadSelfAttention) -> list[Mistake]:
    """The usual multi-head slips, from the reference's own projections, heads and attention."""
    n, d_model = x.shape[-2], x.shape[-1]
    causal = ref.causal_mask(n, n)
    sdpa = ref.scaled_dot_product_attention

    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = causal) -> Tensor:
        return r.output_proj(r._join(sdpa(q, k, v, mask)))

    def unrotated() -> tuple[Tensor, Tensor, Tensor]:
        return r._heads(r.q_proj(x)), r._heads(r.k_proj(x)), r._heads(r.v_proj(x))

    def values_rotated_too() -> Tensor:
        q, k, _ = r._qkv(x, pos)
        p = torch.arange(n) if pos is None else pos
        return attend(q, k, r.rope(unrotated()[2], p.unsqueeze(-2) if p.dim() > 1 else p))

    found = [
        Mistake("make it causal: pass causal_mask(seq, seq) to the attention, so no position sees a later one",
                lambda: attend(*r._qkv(x, pos), mask=None)),
        Mistake(_INVERTED, lambda: attend(*r._qkv(x, pos), mask=~causal)),
        Mistake("scale by sqrt(d_head) = sqrt(d_model / num_heads), the width of one head, not sqrt(d_model)",
                lambda: attend(r._qkv(x, pos)[0] * math.sqrt(r.d_head / d_model), *r._qkv(x, pos)[1:])),
    ]
    if r.rope is not None:
        found += [
            Mistake("RoPE rotates queries and keys only: leave the values as they are", values_rotated_too),
            Mistake("apply the RoPE module you were given to each head's queries and keys", lambda: attend(*unrotated())),
            Mistake("rotate by the token_positions given, not by 0 .. seq-1", lambda: attend(*r._qkv(x, None))),
        ]
    return found


@register("MultiHeadSelfAttention")
def multihead_self_attention(cls: type, show: bool = True) -> Report:
    """``MultiHeadSelfAttention(d_model, num_heads, rope=None)``, causal, ``forward(x, token_positions=None)``:
    without RoPE on a batch, sequence length 1, extra batch dims and a non-contiguous input; with RoPE from 0, with
    gaps (attention sees only differences of positions, so a shift alone would not show them ignored) and per batch
    row; float64."""
    c = Checker("MultiHeadSelfAttention", cls, "class", ("d_model", "num_heads", "rope", "device", "dtype"))
    rot = ref.RotaryPositionalEmbedding(10_000.0, 4, 16)
    without_rope = [
        ("no RoPE, x (2, 5, 16)", _randn(2, 5, 16, seed=1), None),
        ("sequence length 1", _randn(2, 1, 16, seed=2), None),
        ("extra batch dims (2, 2, 3, 16)", _randn(2, 2, 3, 16, seed=3), None),
        ("non-contiguous x (transposed)", _randn(2, 16, 5, seed=4).transpose(-2, -1), None),
    ]
    with_rope = [
        ("RoPE, x (2, 5, 16), positions 0..4", _randn(2, 5, 16, seed=5), None),
        # attention sees only differences of positions: with gaps, ignoring the positions shows
        ("RoPE, token_positions with gaps (3, 4, 6, 9, 10)", _randn(2, 5, 16, seed=6), torch.tensor([3, 4, 6, 9, 10])),
        ("RoPE, token_positions per batch row (2, 5)", _randn(2, 5, 16, seed=7),
         torch.tensor([[0, 1, 2, 3, 4], [2, 5, 6, 7, 11]])),
    ]
    float64 = [("float64 with RoPE", _randn(2, 5, 16, seed=8, dtype=torch.float64), torch.arange(2, 7))]
    layouts = [((16, 4, None), {"dtype": torch.float32}, without_rope), ((16, 4, rot), {"dtype": torch.float32}, with_rope),
               ((16, 4, rot), {"dtype": torch.float64}, float64)]
    names = "four (d_model, d_model) Linear layers: q_proj, k_proj, v_proj, output_proj"
    with seeded():
        for m, r, inputs in _built(c, "MultiHeadSelfAttention", ref.MultiHeadSelfAttention, layouts, names):
            for name, x, pos in inputs:
                c.case(name, lambda _, m=m, x=x, pos=pos: _with_positions(m, x, pos), r(x, pos),
                       mistakes=_mhsa_mistakes(x, pos, r), rules=[_keeps_dtype(x)])
    return c.done(show)


def _block_mistakes(x: Tensor, pos: Tensor | None, r: TransformerBlock) -> list[Mistake]:
    """The usual block slips, from the reference's own norms, attention and feed-forward."""
    def attn(h: Tensor) -> Tensor:
        return r.attn(h, pos)

    def post_norm() -> Tensor:
        h = r.ln1(x + attn(x))
        return r.ln2(h + r.ffn(h))

    def residual_from_normed() -> Tensor:
        h = r.ln1(x)
        h = h + attn(h)
        return r.ln2(h) + r.ffn(r.ln2(h))

    def residuals(attn_kept: bool, ffn_kept: bool, ln_attn: torch.nn.Module = r.ln1, ln_ffn: torch.nn.Module = r.ln2,
                  positions: Tensor | None = pos) -> Tensor:
        """The pre-norm block with either residual connection dropped, or the norms or positions changed."""
        h = r.attn(ln_attn(x), positions) + (x if attn_kept else 0)
        return r.ffn(ln_ffn(h)) + (h if ffn_kept else 0)

    residual = "keep the residual connections: x = x + attn(ln1(x)), then x = x + ffn(ln2(x))"
    return [
        Mistake("pre-norm: normalise each branch's input, x + attn(ln1(x)), and leave the residual sum unnormalised",
                post_norm),
        Mistake(residual, lambda: residuals(False, True)),
        Mistake(residual, lambda: residuals(True, False)),
        Mistake(residual, lambda: residuals(False, False)),
        Mistake("add each branch to x itself, not to its normalised copy", residual_from_normed),
        Mistake("ln1 goes before the attention, ln2 before the feed-forward", lambda: residuals(True, True, r.ln2, r.ln1)),
        Mistake("pass token_positions on to the attention", lambda: residuals(True, True, positions=None)),
    ]


@register("TransformerBlock")
def transformer_block(cls: type, show: bool = True) -> Report:
    """``TransformerBlock(config, rope)``, pre-norm, ``forward(x, token_positions=None)``: a batch, positions with gaps,
    sequence length 1, a non-contiguous input. The norm gains are moved off 1, so ln1 and ln2 are told apart."""
    c = Checker("TransformerBlock", cls, "class", ("config", "rope"))
    config = ModelConfig(vocab_size=32, context_length=16, d_model=16, num_layers=1, num_heads=4, d_ff=24)
    cases = [
        ("x (2, 6, 16)", _randn(2, 6, 16, seed=1), None),
        ("token_positions with gaps (4, 5, 7, 8, 12, 15)", _randn(2, 6, 16, seed=2), torch.tensor([4, 5, 7, 8, 12, 15])),
        ("sequence length 1", _randn(2, 1, 16, seed=3), None),
        ("non-contiguous x (transposed)", _randn(2, 16, 6, seed=4).transpose(-2, -1), None),
    ]
    rot = ref.RotaryPositionalEmbedding(config.rope_theta, 4, config.context_length)
    names = "ln1 and ln2 (RMSNorm), attn (MultiHeadSelfAttention: q_proj, k_proj, v_proj, output_proj), ffn (SwiGLU: w1, w2, w3)"
    with seeded():
        for m, r, inputs in _built(c, "TransformerBlock", TransformerBlock, [((config, rot), {}, cases)], names):
            for name, x, pos in inputs:
                c.case(name, lambda _, m=m, x=x, pos=pos: _with_positions(m, x, pos), r(x, pos),
                       mistakes=_block_mistakes(x, pos, r))
    return c.done(show)


def _lm_mistakes(ids: Tensor, r: TransformerLM) -> list[Mistake]:
    def blocks() -> Tensor:
        x = r.token_embeddings(ids)
        for layer in r.layers:
            x = layer(x)
        return x

    return [
        Mistake("apply the final norm (ln_final) to the last block's output, before the LM head",
                lambda: r.lm_head(blocks())),
        Mistake("return the logits, not probabilities: no softmax at the end (the loss applies it)",
                lambda: ref.softmax(r(ids), -1)),
        Mistake("run every block in turn, each on the previous one's output",
                lambda: r.lm_head(r.ln_final(r.layers[-1](r.token_embeddings(ids))))),
    ]


@register("TransformerLM")
def transformer_lm(cls: type, show: bool = True) -> Report:
    """``TransformerLM(config)``: ids (2, 6) through two layers, sequence length 1, the full context, non-contiguous ids."""
    c = Checker("TransformerLM", cls, "class", ("config",))
    config = ModelConfig(vocab_size=32, context_length=8, d_model=16, num_layers=2, num_heads=4, d_ff=24)
    cases = [
        ("ids (2, 6)", _ids(2, 6, vocab=32, seed=1)),
        ("sequence length 1", _ids(2, 1, vocab=32, seed=2)),
        ("the full context (8)", _ids(1, 8, vocab=32, seed=3)),
        ("non-contiguous ids (transposed)", _ids(6, 2, vocab=32, seed=4).T),
    ]
    names = "token_embeddings, layers.{i} (ln1, attn, ln2, ffn), ln_final, lm_head: the reference's names"
    with seeded():
        for m, r, inputs in _built(c, "TransformerLM", TransformerLM, [((config,), {}, cases)], names):
            for name, ids in inputs:
                c.case(name, lambda _, m=m, ids=ids: m(ids.clone()), r(ids), mistakes=_lm_mistakes(ids, r))
    return c.done(show)
