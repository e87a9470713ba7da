"""Resource accounting: parameters, FLOPs, memory and time, as formulas of a ``ModelConfig``.

Each formula is checked against a measurement in ``tests/test_accounting.py`` and in chapter 4:
parameter counts against ``TransformerLM``, FLOPs against ``torch.utils.flop_counter.FlopCounterMode``,
activation memory against the tensors autograd saves for the backward pass.

Conventions. A matrix product of ``(m, k)`` by ``(k, n)`` costs ``2 m n k`` FLOPs (one multiply
and one add per term). Only matrix products are counted as forward FLOPs; norms, softmax and
activations are a few FLOPs per element, under 1% here. Attention is counted in full, as the
math path computes it (the causal mask discards half, but the products are still done).
"""

from __future__ import annotations

from .model import ModelConfig

__all__ = [
    "GPT2_CONFIGS", "PEAK_FLOPS", "peak_flops", "parameter_counts", "forward_flops", "training_flops",
    "flop_proportions", "attention_overtakes_ffn", "six_nd_ratio", "training_flops_per_token",
    "adamw_step_flops", "activation_elements", "BYTES_PER_VALUE", "memory_bytes", "largest_batch",
    "training_seconds", "mfu",
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
    """Parameters of ``TransformerLM(config)`` by component, and their ``total``.

    No layer has a bias, so every count is a matrix's rows times its columns (or a norm's gain
    vector): the size follows from vocabulary, width, depth and d_ff (heads and context add nothing).
    """
    c = config
    # SwiGLU's feed-forward has three d_model x d_ff matrices (W1, W2, W3); the plain one two
    ffn_matrices = 3 if c.ffn == "swiglu" else 2
    # an RMSNorm is one gain of d_model values: two a layer (one per branch) and a final one
    norms = 0 if c.norm == "none" else (2 * c.num_layers + 1) * c.d_model
    counts = {
        "token embeddings": c.vocab_size * c.d_model,  # one row of d_model per token id
        "attention": c.num_layers * 4 * c.d_model * c.d_model,  # W_q, W_k, W_v, W_o, each d x d
        "feed-forward": c.num_layers * ffn_matrices * c.d_model * c.d_ff,
        "norms": norms,
        "LM head": c.d_model * c.vocab_size,  # untied: its own matrix, not the embedding table
    }
    counts["total"] = sum(counts.values())  # RoPE adds nothing: its rotations are fixed, not learned
    return counts


def forward_flops(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, int]:
    """Matrix-multiply FLOPs of one forward pass, by component and summed over layers, and ``total``.

    ``batch_size`` sequences of ``seq_len`` tokens (default: the context length). Each product of
    ``(m, k)`` by ``(k, n)`` is ``2 m n k``. The projections have one row per token, so they grow as
    B T; attention's two products compare every token with every token, so they grow as B T^2.
    """
    c = config
    t = seq_len or c.context_length
    tokens = batch_size * t  # the rows of every projection's input
    ffn_matrices = 3 if c.ffn == "swiglu" else 2
    per_layer = {
        # x (tokens, d) times each of W_q, W_k, W_v (d, d)
        "q/k/v projections": 3 * 2 * tokens * c.d_model * c.d_model,
        # per head Q (T, d_head) times K^T (d_head, T); the heads' d_head add up to d_model
        "attention scores (QK^T)": 2 * batch_size * t * t * c.d_model,
        # per head the weights (T, T) times V (T, d_head)
        "attention-weighted values": 2 * batch_size * t * t * c.d_model,
        # the heads side by side (tokens, d) times W_o (d, d)
        "output projection": 2 * tokens * c.d_model * c.d_model,
        # each matrix maps d to d_ff (or back): tokens x d x d_ff terms either way
        "feed-forward": ffn_matrices * 2 * tokens * c.d_model * c.d_ff,
    }
    flops = {name: c.num_layers * f for name, f in per_layer.items()}
    # once, after the last layer: (tokens, d) times the LM head (d, vocab) gives the logits
    flops["LM head"] = 2 * tokens * c.d_model * c.vocab_size
    flops["total"] = sum(flops.values())
    return flops


def flop_proportions(config: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Each component's share of the forward FLOPs (the batch size cancels out)."""
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
    # the embedding lookup and the norms' gains multiply no matrix: they spend no product FLOPs
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
    """Elements of the activations kept for the backward pass, by component (all layers), and ``total``.

    Backward needs what the forward computed: a product's weight gradient needs its input, a
    softmax's gradient its output. So the forward pass keeps them, here one tensor per component
    (autograd keeps a little more; the tests measure how much). Unlike the weights, they grow with the batch.
    """
    c = config
    t = seq_len or c.context_length
    tokens = batch_size * t
    scores = batch_size * c.num_heads * t * t  # one (T, T) matrix per head and sequence
    swiglu = c.ffn == "swiglu"
    per_layer = {
        "RMSNorms": 0 if c.norm == "none" else 2 * tokens * c.d_model,  # the inputs of the two norms
        "q/k/v projections": 3 * tokens * c.d_model,  # q, k and v, inputs of QK^T and the weighting
        "QK^T": scores,  # the scores, input of the softmax
        "softmax": scores,  # the attention weights, input of weights x V
        "weighted values": tokens * c.d_model,  # the heads' output, input of W_o
        "output projection": tokens * c.d_model,  # W_o's result, added to the residual stream
        # W1's output and its SiLU (and W3's output, for SwiGLU): d_ff wide each
        "W1, SiLU (and W3)": (3 if swiglu else 2) * tokens * c.d_ff,
        "gate product (SwiGLU)": tokens * c.d_ff if swiglu else 0,  # SiLU(W1 x) * W3 x, input of W2
        "W2": tokens * c.d_model,  # the feed-forward's result
    }
    elements = {name: c.num_layers * n for name, n in per_layer.items()}
    # once, after the last layer: the final norm's input, the logits and the loss's softmax
    elements["final norm"] = 0 if c.norm == "none" else tokens * c.d_model
    elements["output embedding (logits)"] = tokens * c.vocab_size
    elements["cross-entropy"] = tokens * c.vocab_size
    elements["total"] = sum(elements.values())
    return elements


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

    Memory is ``a * batch_size + b``: the parameters, their gradients, the master weights and
    AdamW's two moments are a fixed number of bytes per parameter (``b``), the activations a number
    of bytes per :func:`activation_elements` element, which grow with the batch (``a``).
    """
    if precision not in BYTES_PER_VALUE:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(BYTES_PER_VALUE)}")
    n = parameter_counts(config)["total"]
    width = BYTES_PER_VALUE[precision]
    # the fixed part: one value per parameter for each (AdamW's width counts its two moments, m and v)
    parts = {part: n * width[part] for part in ("parameters", "gradients", "master weights", "AdamW state")}
    # the part that grows with the batch
    parts["activations"] = activation_elements(config, batch_size)["total"] * width["activations"]
    parts["total"] = sum(parts.values())
    return parts


def largest_batch(config: ModelConfig, budget_bytes: float, precision: str = "fp32") -> int:
    """The largest batch whose :func:`memory_bytes` fits ``budget_bytes`` (0 if not even one does)."""
    b = memory_bytes(config, 0, precision)["total"]  # batch 0: the fixed part alone
    a = memory_bytes(config, 1, precision)["total"] - b  # what each sequence adds
    # solve a * batch + b <= budget for the largest whole batch
    return max(0, int((budget_bytes - b) // a))


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
