"""Checkers for chapter 4's formulas, held against what PyTorch measures, not only against lmcore's formulas.

Parameters are counted on ``TransformerLM`` built on the meta device, FLOPs by ``FlopCounterMode``,
memory from the tensors a real training step holds (:mod:`lmcore.measure`). Where a model is too
big to measure here (GPT-2 XL), the case says it is held against :mod:`lmcore.accounting` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .. import accounting as acc
from ..measure import adamw_state_bytes, saved_activation_bytes
from ..model import ModelConfig, TransformerLM
from ..nn import cross_entropy
from ..optim import AdamW
from .report import Checker, Mistake, Report, register, seeded

__all__ = ["parameter_count", "forward_flops", "training_memory"]

#: Small enough to build and run on the CPU in milliseconds; d_ff is not 4 d_model, so a formula
#: that assumes it shows, and the vocabulary is large enough for the LM head to matter.
TINY = ModelConfig(vocab_size=256, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)
WIDE_FFN = ModelConfig(vocab_size=100, context_length=8, d_model=48, num_layers=3, num_heads=2, d_ff=160)


def _gpt2(name: str) -> ModelConfig | None:
    return getattr(acc, "GPT2_CONFIGS", {}).get(name)


def _configs() -> list[tuple[str, ModelConfig]]:
    named = [("tiny", TINY), ("tiny, d_ff 160", WIDE_FFN)]
    return named + [(f"GPT-2 {n}", cfg) for n in ("small", "XL") if (cfg := _gpt2(n)) is not None]


@register("parameter_count")
def parameter_count(fn: Callable, show: bool = True) -> Report:
    """``parameter_count(config) -> int``: tiny configs and GPT-2 small and XL, against the parameters
    of ``TransformerLM(config, device="meta")`` (shapes only, no memory)."""
    c = Checker("parameter_count", fn, "function", ("config",))
    for name, cfg in _configs():
        measured = sum(p.numel() for p in TransformerLM(cfg, device="meta").parameters())
        d, L = cfg.d_model, cfg.num_layers
        c.case(
            f"{name}: TransformerLM on the meta device", lambda f, cfg=cfg: f(cfg), measured,
            mistakes=[
                Mistake("the LM head is missing: it is its own d_model x vocab_size matrix here, not tied to the token "
                        "embeddings, so count both", lambda m=measured, cfg=cfg: m - cfg.vocab_size * cfg.d_model),
                Mistake("the RMSNorm gains are missing: two per layer (before attention and before the feed-forward) "
                        "and a final one, d_model values each", lambda m=measured, L=L, d=d: m - (2 * L + 1) * d),
                Mistake("the final RMSNorm (after the last layer) is missing: d_model more gains",
                        lambda m=measured, d=d: m - d),
                Mistake("SwiGLU has three d_model x d_ff matrices (W1, W2 and W3), not two",
                        lambda m=measured, cfg=cfg: m - cfg.num_layers * cfg.d_model * cfg.d_ff),
            ],
        )
        if not c.ok:
            break
    return c.done(show)


def _measured_flops(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """FLOPs of the products ``FlopCounterMode`` sees in one forward pass, on the meta device (no arithmetic done)."""
    model = TransformerLM(cfg, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta"))
    return counter.get_total_flops()


@register("forward_flops")
def forward_flops(fn: Callable, show: bool = True) -> Report:
    """``forward_flops(config, batch_size, seq_len) -> int``: the tiny model's FLOPs counted by
    ``FlopCounterMode`` (full context, a shorter one, one token), and GPT-2 XL against the formula."""
    c = Checker("forward_flops", fn, "function", ("config", "batch_size", "seq_len"))
    cases = [("tiny, batch 1, full context 16", TINY, 1, 16), ("tiny, batch 3, seq_len 8", TINY, 3, 8),
             ("tiny, batch 2, sequence length 1", TINY, 2, 1), ("d_ff 160, batch 2, seq_len 8", WIDE_FFN, 2, 8)]
    xl = _gpt2("XL")
    if xl is not None:
        cases.append(("GPT-2 XL, batch 1, 1,024 tokens, vs lmcore.accounting.forward_flops", xl, 1, 1024))
    for name, cfg, b, t in cases:
        expected = acc.forward_flops(cfg, b, t)["total"] if cfg is xl else _measured_flops(cfg, b, t)

        def parts(cfg=cfg, b=b, t=t) -> dict[str, int]:
            return acc.forward_flops(cfg, b, t)

        c.case(
            f"{name}" + ("" if cfg is xl else ": FlopCounterMode"), lambda f, cfg=cfg, b=b, t=t: f(cfg, b, t), expected,
            mistakes=[
                Mistake("half the answer: a multiply-add is two FLOPs, so an (m, k) by (k, n) product costs 2 m n k",
                        lambda e=expected: e // 2),
                Mistake("attention's two T x T products are missing: QK^T and the weights times V cost "
                        "2 B T^2 d_model each, per layer", lambda p=parts: p()["total"] - p()["attention scores (QK^T)"]
                        - p()["attention-weighted values"]),
                Mistake("attention's T x T products are counted for one head: the heads' d_head add up to d_model, "
                        "so they cost 2 B T^2 d_model each", lambda p=parts, cfg=cfg: p()["total"] - (1 - 1 / cfg.num_heads)
                        * (p()["attention scores (QK^T)"] + p()["attention-weighted values"])),
                Mistake("the LM head is missing: the last product, (B T, d_model) by (d_model, vocab_size), "
                        "is 2 B T d_model vocab_size", lambda p=parts: p()["total"] - p()["LM head"]),
                Mistake("the context length was used instead of seq_len: count the tokens actually passed",
                        lambda cfg=cfg, b=b, t=t: acc.forward_flops(cfg, b, None)["total"] if t != cfg.context_length else None),
            ],
        )
        if not c.ok:
            break
    return c.done(show)


@dataclass
class _Between:
    """An answer that may lie anywhere in ``[low, high]`` (activations: formulas count them differently)."""

    low: float
    high: float
    source: str


def _judge(expected: object, got: object) -> tuple[bool, str]:
    """Activations are held to a range; a usual mistake's answer to within 2% of it."""
    if not isinstance(got, int | float) or isinstance(got, bool):
        return False, f"expected a number of bytes, got {type(got).__name__}"
    if isinstance(expected, _Between):
        ok = expected.low <= got <= expected.high
        return ok, f"{got:,.0f} bytes, expected {expected.low:,.0f} to {expected.high:,.0f} ({expected.source})"
    return abs(got - expected) <= 0.02 * abs(expected), ""


#: GB is 1e9 bytes and GiB 2**30: an answer off by exactly this ratio mixed them up.
_GIB = 2**30 / 1e9
_UNIT = "GB (1e9 bytes) and GiB (2**30 bytes) are mixed up: return plain bytes, with no unit conversion"


def _off_by_gib(got: float, expected: float) -> bool:
    return any(abs(got / expected - r) < 1e-3 for r in (_GIB, 1 / _GIB))


def _factor_rules(expected: float) -> list[tuple[Callable[[object], bool], str]]:
    return [(lambda g: _off_by_gib(g, expected), _UNIT)]


def _fixed_measured(cfg: ModelConfig) -> int:
    """Bytes of the weights, their gradients and AdamW's state after one real step of ``cfg``'s model."""
    with seeded(0):  # the model's initialisation and the batch draw from the global generator: put it back
        model = TransformerLM(cfg)
        ids = torch.randint(0, cfg.vocab_size, (1, cfg.context_length + 1))
    opt = AdamW(model.parameters())
    cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
    opt.step()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    return weights + grads + adamw_state_bytes(opt)


def _activations_measured(cfg: ModelConfig, batch_size: int) -> int:
    with seeded(1):
        model = TransformerLM(cfg)
        ids = torch.randint(0, cfg.vocab_size, (batch_size, cfg.context_length + 1))
    return saved_activation_bytes(model, ids)


def _activation_mistakes(cfg: ModelConfig, batch_size: int, fn: Callable) -> list[Mistake]:
    """Activation formulas that leave out a usual term (float32: 4 bytes an element), or scale by a unit."""
    e = acc.activation_elements(cfg, batch_size)

    def without(*parts: str) -> Callable[[], int]:
        return lambda: 4 * (e["total"] - sum(e[p] for p in parts))

    def unit_mixed() -> float | None:
        # a unit factor runs through the whole answer: the reader's fixed part, exact, shows it (the
        # activations alone cannot: 7% is also what leaving out one d_ff-wide tensor gives)
        fixed = acc.memory_bytes(cfg, 0)["total"]
        got = fn(cfg, 0)
        return 4 * e["total"] * got / fixed if _off_by_gib(got, fixed) else None

    return [
        Mistake(_UNIT, unit_mixed),
        Mistake("the attention matrices are missing: per layer the scores QK^T and the softmax weights are "
                "batch x heads x T x T each, saved for backward", without("QK^T", "softmax")),
        Mistake("the logits and the cross-entropy's softmax are missing: batch x T x vocab_size each",
                without("output embedding (logits)", "cross-entropy")),
        Mistake("the feed-forward's d_ff-wide activations are short: W1's output, its SiLU, W3's output and their "
                "product (the input of W2) are each batch x T x d_ff", without("gate product (SwiGLU)")),
    ]


@register("training_memory")
def training_memory(fn: Callable, show: bool = True) -> Report:
    """``training_memory(config, batch_size) -> int``, bytes for float32 AdamW training at full context:
    the fixed part (``batch_size=0``) against the real weights, gradients and AdamW state; the
    activations (``training_memory(config, B) - training_memory(config, 0)``) against the bytes autograd saves."""
    c = Checker("training_memory", fn, "function", ("config", "batch_size"))
    low_hint = ("far too few activation bytes: count every tensor a layer saves for backward (the norms' inputs, "
                "q, k, v, the T x T scores and weights, the feed-forward's d_ff-wide tensors), the logits, "
                "and all layers, not only the residual stream")
    fixed = _fixed_measured(TINY)
    n = sum(p.numel() for p in TransformerLM(TINY, device="meta").parameters())
    missing = ("12 bytes a parameter instead of 16: float32 training keeps the weight (4), its gradient (4) "
               "and AdamW's two moments m and v (4 each): one of the gradients or the moments is missing")
    c.case("tiny, fixed part (batch_size 0) vs the weights, gradients and AdamW state of a real step",
           lambda f: f(TINY, 0), fixed,
           mistakes=[Mistake(missing, lambda: 12 * n),
                     Mistake("only the weights are counted: add their gradients and AdamW's two moments (16 bytes a "
                             "parameter in all)", lambda: 4 * n)],
           rules=_factor_rules(fixed))
    measured = _activations_measured(TINY, 2)
    formula = 4 * acc.activation_elements(TINY, 2)["total"]
    c.case("tiny, batch 2: activations vs lmcore.measure.saved_activation_bytes",
           lambda f: f(TINY, 2) - f(TINY, 0),
           # from a little under the one-tensor-per-component count to what autograd actually saves
           _Between(0.95 * formula, 1.05 * measured, f"autograd saves {measured:,}; one tensor per component is {formula:,}"),
           mistakes=_activation_mistakes(TINY, 2, fn), rules=[(lambda g: g < 0.5 * formula, low_hint)], same=_judge)
    xl = _gpt2("XL")
    if xl is not None:
        parts = acc.memory_bytes(xl, 0)
        c.case("GPT-2 XL, fixed part (batch_size 0) vs lmcore.accounting.memory_bytes (too big to measure)",
               lambda f: f(xl, 0), parts["total"], rules=_factor_rules(parts["total"]),
               mistakes=[Mistake(missing, lambda: 3 * parts["parameters"])])  # 12 N bytes: the parameters are 4 N
        act = acc.memory_bytes(xl, 2)["activations"]
        c.case("GPT-2 XL, batch 2: activations vs lmcore.accounting.memory_bytes (too big to measure)",
               lambda f: f(xl, 2) - f(xl, 0), _Between(0.95 * act, 1.3 * act, f"lmcore's formula gives {act:,}"),
               mistakes=_activation_mistakes(xl, 2, fn), rules=[(lambda g: g < 0.5 * act, low_hint)], same=_judge)
    return c.done(show)
