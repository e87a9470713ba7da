"""Resource accounting: parameters, FLOPs, memory and time, as formulas of a ``ModelConfig``.

Every formula here is checked against a measurement in ``tests/test_accounting.py``: parameter
counts against ``TransformerLM``, FLOPs against ``torch.utils.flop_counter.FlopCounterMode``,
activation memory against the tensors autograd saves for the backward pass.

Conventions. A matrix product of ``(m, k)`` by ``(k, n)`` costs ``2 m n k`` FLOPs (one multiply
and one add per term). Only matrix products are counted as forward FLOPs; norms, softmax and
activations are a few FLOPs per element, under 1% here. Attention is counted in full, as the
math path computes it (the causal mask discards half, but the products are still done).
"""

from __future__ import annotations

import torch

from .model import ModelConfig, TransformerLM

__all__ = [
    "GPT2_CONFIGS",
    "PEAK_FLOPS",
    "peak_flops",
    "parameter_counts",
    "forward_flops",
    "training_flops",
    "flop_proportions",
    "attention_overtakes_ffn",
    "six_nd_ratio",
    "training_flops_per_token",
    "adamw_step_flops",
    "activation_elements",
    "BYTES_PER_VALUE",
    "memory_bytes",
    "largest_batch",
    "training_seconds",
    "mfu",
    "saved_activation_bytes",
]

#: GPT-2's four sizes as TransformerLM configs (SwiGLU feed-forward with d_ff = 4 d_model).
GPT2_CONFIGS: dict[str, ModelConfig] = {
    name: ModelConfig(vocab_size=50_257, context_length=1_024, d_model=d, num_layers=n, num_heads=h, d_ff=4 * d)
    for name, (n, d, h) in {
        "small": (12, 768, 12),
        "medium": (24, 1_024, 16),
        "large": (36, 1_280, 20),
        "XL": (48, 1_600, 25),
    }.items()
}

#: Dense peak FLOP/s (no sparsity) by accelerator and dtype, from NVIDIA's datasheets; fp32 is
#: without tensor cores, and fp16 tensor cores run at the bf16 rate where a card has both. Keys are
#: matched against ``torch.cuda.get_device_name()`` in this order, so the more specific names come
#: first ("H100 PCIe" before "H100", "L40S" before "L4"). A card without bf16 tensor cores (T4) has
#: no bf16 entry: MFU is not defined for it there (it trains in fp16).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIE": {"fp32": 51e12, "bf16": 756e12, "fp16": 756e12},
    "H100 NVL": {"fp32": 60e12, "bf16": 835e12, "fp16": 835e12},
    "H200": {"fp32": 67e12, "bf16": 989e12, "fp16": 989e12},
    "H100": {"fp32": 67e12, "bf16": 989e12, "fp16": 989e12},  # SXM
    "A100": {"fp32": 19.5e12, "bf16": 312e12, "fp16": 312e12},
    "L40S": {"fp32": 91.6e12, "bf16": 362e12, "fp16": 362e12},
    "L4": {"fp32": 30.3e12, "bf16": 121e12, "fp16": 121e12},
    "T4": {"fp32": 8.1e12, "fp16": 65e12},
}


def peak_flops(device_name: str, dtype: str = "bf16") -> float:
    """The dense peak FLOP/s of the accelerator named in ``device_name`` (``"NVIDIA H100 PCIe"``)."""
    for key, peaks in PEAK_FLOPS.items():
        if key in device_name.upper():
            if dtype not in peaks:
                raise ValueError(f"{device_name} has no {dtype} peak (known: {', '.join(peaks)}); MFU is not defined for it")
            return peaks[dtype]
    raise ValueError(f"no peak FLOP/s known for {device_name!r}; MFU is only defined against a known accelerator")


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters by component; ``total`` equals ``TransformerLM(config).num_parameters()``."""
    c = config
    norms_per_layer = 0 if c.norm == "none" else 2 * c.d_model
    ffn_mats = 3 if c.ffn == "swiglu" else 2
    counts = {
        "token embeddings": c.vocab_size * c.d_model,
        "attention": c.num_layers * 4 * c.d_model * c.d_model,
        "feed-forward": c.num_layers * ffn_mats * c.d_model * c.d_ff,
        "norms": c.num_layers * norms_per_layer + (0 if c.norm == "none" else c.d_model),
        "LM head": c.d_model * c.vocab_size,
    }
    counts["total"] = sum(counts.values())
    return counts


def forward_flops(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, int]:
    """Matrix-multiply FLOPs of one forward pass, by component, summed over layers, plus ``total``."""
    c = config
    t = seq_len or c.context_length
    bt = batch_size * t
    ffn_mats = 3 if c.ffn == "swiglu" else 2
    flops = {
        "q/k/v projections": c.num_layers * 3 * 2 * bt * c.d_model * c.d_model,
        "attention scores (QK^T)": c.num_layers * 2 * batch_size * t * t * c.d_model,
        "attention-weighted values": c.num_layers * 2 * batch_size * t * t * c.d_model,
        "output projection": c.num_layers * 2 * bt * c.d_model * c.d_model,
        "feed-forward": c.num_layers * ffn_mats * 2 * bt * c.d_model * c.d_ff,
        "LM head": 2 * bt * c.d_model * c.vocab_size,
    }
    flops["total"] = sum(flops.values())
    return flops


def flop_proportions(config: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Each component's share of the forward FLOPs (batch size cancels)."""
    flops = forward_flops(config, 1, seq_len)
    total = flops.pop("total")
    return {k: v / total for k, v in flops.items()}


def attention_overtakes_ffn(config: ModelConfig) -> float:
    """The context length above which QK^T and the weighted values cost more than the feed-forward.

    Attention's two products cost 4 T^2 d a layer, the feed-forward 2 m T d d_ff with m matrices,
    so they are equal at T = m d_ff / 2.
    """
    mats = 3 if config.ffn == "swiglu" else 2
    return mats * config.d_ff / 2


def six_nd_ratio(config: ModelConfig, seq_len: int | None = None) -> float:
    """Our training FLOPs over the 6 N D rule (N: parameters of the matrix products, i.e. without
    the embedding table; D: tokens). Above 1 by the attention terms the rule leaves out."""
    t = seq_len or config.context_length
    counts = parameter_counts(config)
    n = counts["total"] - counts["token embeddings"] - counts["norms"]
    return training_flops(config, 1, t) / (6 * n * t)


def training_flops(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> int:
    """Forward plus backward: the backward pass costs twice the forward (a gradient for the
    input and one for the weights, each a matrix product of the forward's size)."""
    return 3 * forward_flops(config, batch_size, seq_len)["total"]


def training_flops_per_token(config: ModelConfig) -> float:
    """Training FLOPs per token at full context: about 6 N, plus attention's 12 L T d."""
    return training_flops(config) / config.context_length


#: FLOPs AdamW spends per parameter: weight decay 2 (multiply, subtract), m 3, v 4
#: (square, two scalings, add), denominator 3 (sqrt, bias correction, +eps), update 3.
ADAMW_FLOPS_PER_PARAMETER = 15


def adamw_step_flops(config: ModelConfig) -> int:
    """FLOPs of one AdamW step: elementwise, so linear in the parameters (15 each)."""
    return ADAMW_FLOPS_PER_PARAMETER * parameter_counts(config)["total"]


def activation_elements(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, int]:
    """Elements of the activations kept for the backward pass, by component (all layers).

    Per layer: the inputs of the two RMSNorms, q, k and v, the score matrix QK^T and the softmax
    output (each ``heads x T x T``), the weighted values, the output projection's result, the
    feed-forward's hidden activations (W1, its SiLU, and for SwiGLU W3's output and the gate
    product SiLU(W1 x) * W3 x, which is W2's input) and W2's result; then the final norm, the
    logits and the cross-entropy's softmax.
    """
    c = config
    t = seq_len or c.context_length
    bt = batch_size * t
    scores = batch_size * c.num_heads * t * t
    norms = 0 if c.norm == "none" else 2 * bt * c.d_model
    hidden = (3 if c.ffn == "swiglu" else 2) * bt * c.d_ff
    per = {
        "RMSNorms": c.num_layers * norms,
        "q/k/v projections": c.num_layers * 3 * bt * c.d_model,
        "QK^T": c.num_layers * scores,
        "softmax": c.num_layers * scores,
        "weighted values": c.num_layers * bt * c.d_model,
        "output projection": c.num_layers * bt * c.d_model,
        "W1, SiLU (and W3)": c.num_layers * hidden,
        "gate product (SwiGLU)": c.num_layers * bt * c.d_ff if c.ffn == "swiglu" else 0,
        "W2": c.num_layers * bt * c.d_model,
        "final norm": 0 if c.norm == "none" else bt * c.d_model,
        "output embedding (logits)": bt * c.vocab_size,
        "cross-entropy": bt * c.vocab_size,
    }
    per["total"] = sum(per.values())
    return per


#: Bytes per value of each part of training memory. ``fp32``: everything in float32. ``mixed``, the
#: usual mixed-precision recipe: bf16 copies of the weights and bf16 gradients for the products,
#: float32 master weights that AdamW updates, float32 moments, bf16 activations. ``bf16``: every
#: tensor in bf16, no master weights (smaller, but small updates round away: chapter 4, exercise 1).
BYTES_PER_VALUE: dict[str, dict[str, int]] = {
    "fp32": {"parameters": 4, "gradients": 4, "master weights": 0, "AdamW state": 2 * 4, "activations": 4},
    "mixed": {"parameters": 2, "gradients": 2, "master weights": 4, "AdamW state": 2 * 4, "activations": 2},
    "bf16": {"parameters": 2, "gradients": 2, "master weights": 0, "AdamW state": 2 * 2, "activations": 2},
}


def memory_bytes(config: ModelConfig, batch_size: int = 1, precision: str = "fp32") -> dict[str, int]:
    """Peak training memory with AdamW, by part, in ``precision`` (a key of :data:`BYTES_PER_VALUE`).

    Parameters, gradients, master weights and AdamW's two moments cost bytes per parameter, fixed;
    activations cost bytes per :func:`activation_elements` element, so they grow with the batch.
    """
    if precision not in BYTES_PER_VALUE:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(BYTES_PER_VALUE)}")
    n = parameter_counts(config)["total"]
    width = BYTES_PER_VALUE[precision]
    parts = {part: n * size for part, size in width.items() if part != "activations"}
    parts["activations"] = activation_elements(config, batch_size)["total"] * width["activations"]
    parts["total"] = sum(parts.values())
    return parts


def largest_batch(config: ModelConfig, budget_bytes: float, precision: str = "fp32") -> int:
    """The largest batch whose :func:`memory_bytes` fits ``budget_bytes`` (memory is ``a * batch + b``)."""
    b = memory_bytes(config, 0, precision)["total"]
    a = memory_bytes(config, 1, precision)["total"] - b
    if budget_bytes < b + a:
        return 0
    return int((budget_bytes - b) // a)


def training_seconds(
    config: ModelConfig, batch_size: int, steps: int, mfu: float, accelerator: str = "A100", dtype: str = "fp32"
) -> float:
    """Seconds for ``steps`` training steps (forward, backward, AdamW) at a fraction ``mfu`` of the peak."""
    peak = peak_flops(accelerator, dtype)
    per_step = training_flops(config, batch_size) + adamw_step_flops(config)
    return steps * per_step / (mfu * peak)


def mfu(achieved_flops_per_second: float, device_name: str, dtype: str = "bf16") -> float:
    """Model FLOPs utilisation: achieved over the peak of the accelerator named in ``device_name``."""
    return achieved_flops_per_second / peak_flops(device_name, dtype)


def saved_activation_bytes(model: TransformerLM, token_ids: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one forward + cross-entropy (measured).

    Parameters (saved by matrix products, but they are memory already counted) are left out, and a
    tensor saved twice counts once.
    """
    from .nn import cross_entropy

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(token_ids[:, :-1])
        cross_entropy(logits, token_ids[:, 1:])
    return sum(seen.values())

