"""Each accounting formula against a measurement, never against itself."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmcore import accounting as acc
from lmcore.measure import adamw_state_bytes, saved_activation_bytes
from lmcore.model import ModelConfig, TransformerLM
from lmcore.optim import AdamW

CONFIGS = [
    ModelConfig(vocab_size=300, context_length=32, d_model=64, num_layers=2, num_heads=4, d_ff=None),
    ModelConfig(vocab_size=1000, context_length=64, d_model=128, num_layers=3, num_heads=8, d_ff=256, ffn="silu"),
    ModelConfig(vocab_size=500, context_length=16, d_model=96, num_layers=1, num_heads=3, d_ff=200, norm="none"),
    ModelConfig(vocab_size=257, context_length=24, d_model=32, num_layers=4, num_heads=2, d_ff=64, norm="post", position="none"),
]
IDS = ["swiglu", "silu", "no-norm", "post-norm-nope"]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_parameters_equal_the_model(config):
    model = TransformerLM(config)
    counts = acc.parameter_counts(config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["LM head"] == model.lm_head.weight.numel()
    assert counts["attention"] == sum(p.numel() for layer in model.layers for p in layer.attn.parameters())
    assert counts["feed-forward"] == sum(p.numel() for layer in model.layers for p in layer.ffn.parameters())


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("batch, seq", [(1, None), (3, 7)])
def test_forward_flops_equal_flop_counter(config, batch, seq):
    """FlopCounterMode counts aten.mm/bmm/matmul at 2mnk; our formula counts exactly the matrix
    products (projections, QK^T, weights x V, feed-forward, LM head). Neither counts elementwise work."""
    model = TransformerLM(config)
    t = seq or config.context_length
    x = torch.randint(0, config.vocab_size, (batch, t))
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == acc.forward_flops(config, batch, t)["total"]


def test_training_flops_are_three_forwards_as_measured():
    config = CONFIGS[0]
    model = TransformerLM(config)
    x = torch.randint(0, config.vocab_size, (2, config.context_length))
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    # Backward does two products per forward product (dX and dW); the embedding lookup's backward
    # is a scatter, not a product, so it adds nothing to the count.
    assert counter.get_total_flops() == acc.training_flops(config, 2)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=IDS[:2])
def test_activation_memory_against_saved_tensors(config):
    """Autograd saves more than the formula's one tensor per component: RMSNorm keeps its input and
    its normalised output, the math-path softmax keeps exp and its sum, SiLU keeps its input and the
    sigmoid, RoPE keeps its rotations. The formula must be a lower bound within 30-40% of the measurement."""
    model = TransformerLM(config)
    x = torch.randint(0, config.vocab_size, (2, config.context_length + 1))
    measured = saved_activation_bytes(model, x)
    formula = 4 * acc.activation_elements(config, 2)["total"]
    limit = 1.3 if config.ffn == "swiglu" else 1.4  # SwiGLU was 1.33x before its gate product was counted
    assert formula <= measured <= limit * formula, (formula, measured)


def test_adamw_state_matches_optimizer():
    config = CONFIGS[0]
    model = TransformerLM(config)
    opt = AdamW(model.parameters())
    x = torch.randint(0, config.vocab_size, (1, 8))
    model(x).sum().backward()
    opt.step()
    assert adamw_state_bytes(opt) == acc.memory_bytes(config, 1)["AdamW state"]


def test_largest_batch_fits_and_next_does_not():
    config = acc.GPT2_CONFIGS["small"]
    budget = 24e9
    b = acc.largest_batch(config, budget)
    assert acc.memory_bytes(config, b)["total"] <= budget < acc.memory_bytes(config, b + 1)["total"]


def test_memory_by_precision():
    """Mixed precision halves the activations but not the fixed part: bf16 weights and gradients
    (2 + 2 bytes) plus float32 master weights (4) and moments (8) are 16 bytes a parameter, as in fp32."""
    xl = acc.GPT2_CONFIGS["XL"]
    n = acc.parameter_counts(xl)["total"]
    fp32, mixed, bf16 = (acc.memory_bytes(xl, 1, p) for p in ("fp32", "mixed", "bf16"))
    assert fp32["total"] - fp32["activations"] == mixed["total"] - mixed["activations"] == 16 * n
    assert bf16["total"] - bf16["activations"] == 8 * n
    assert 2 * mixed["activations"] == fp32["activations"] == 2 * bf16["activations"]
    assert mixed["master weights"] == 4 * n and fp32["master weights"] == 0
    assert acc.largest_batch(xl, 80e9) < acc.largest_batch(xl, 80e9, "mixed") < acc.largest_batch(xl, 80e9, "bf16")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        acc.memory_bytes(xl, 1, "fp8")


def test_gpt2_xl_parameters_and_time():
    xl = acc.GPT2_CONFIGS["XL"]
    n = acc.parameter_counts(xl)["total"]
    assert 2.1e9 < n < 2.2e9  # SwiGLU with d_ff = 4 d: three 1,600 x 6,400 matrices a layer
    days = acc.training_seconds(xl, 1024, 400_000, mfu=0.5, accelerator="A100", dtype="fp32") / 86_400
    assert days == pytest.approx(acc.training_flops(xl, 1024) * 400_000 / (0.5 * 19.5e12) / 86_400, rel=1e-3)
    with pytest.raises(ValueError, match="no peak"):
        acc.mfu(1e12, "Apple M2")
    with pytest.raises(ValueError, match="A100 has no fp64 peak"):
        acc.training_seconds(xl, 1, 1, mfu=0.5, accelerator="A100", dtype="fp64")


def test_crossover_and_6nd_against_the_flop_counts():
    config = CONFIGS[0]  # SwiGLU, d_ff 192
    t = int(acc.attention_overtakes_ffn(config))
    below, at = acc.forward_flops(config, 1, t - 8), acc.forward_flops(config, 1, t)
    attn = ("attention scores (QK^T)", "attention-weighted values")
    assert sum(below[k] for k in attn) < below["feed-forward"]
    assert sum(at[k] for k in attn) == at["feed-forward"]
    shares = acc.flop_proportions(config)
    assert sum(shares.values()) == pytest.approx(1.0)
    # without attention the rule is exact
    counts = acc.parameter_counts(config)
    n = counts["total"] - counts["token embeddings"] - counts["norms"]
    extra = 3 * 4 * config.num_layers * config.context_length * config.d_model  # per token, training
    assert acc.six_nd_ratio(config) == pytest.approx((6 * n + extra) / (6 * n))


def test_meta_device_model_counts_flops_without_memory():
    xl = acc.GPT2_CONFIGS["XL"]
    model = TransformerLM(xl, device="meta")
    assert model.num_parameters() == acc.parameter_counts(xl)["total"]
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1024, dtype=torch.long, device="meta"))
    assert counter.get_total_flops() == acc.forward_flops(xl, 1)["total"]


@pytest.mark.parametrize(
    "name, dtype, peak",
    [("NVIDIA H100 80GB HBM3", "bf16", 989e12), ("NVIDIA H100 PCIe", "bf16", 756e12), ("NVIDIA H100 NVL", "bf16", 835e12),
     ("NVIDIA H200", "bf16", 989e12), ("NVIDIA A100-SXM4-80GB", "bf16", 312e12), ("NVIDIA L4", "bf16", 121e12),
     ("NVIDIA L40S", "bf16", 362e12), ("Tesla T4", "fp32", 8.1e12)],
)
def test_peaks_by_device_name(name, dtype, peak):
    assert acc.peak_flops(name, dtype) == peak
    assert acc.mfu(peak / 2, name, dtype) == 0.5


def test_t4_has_no_bf16_mfu():
    with pytest.raises(ValueError, match="Tesla T4 has no bf16 peak"):
        acc.mfu(1e12, "Tesla T4")
