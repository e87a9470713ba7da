"""Building blocks against PyTorch's own implementations and their defining properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcore.nn import (
    Embedding,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    SwiGLU,
    causal_mask,
    cross_entropy,
    default_d_ff,
    scaled_dot_product_attention,
    silu,
    softmax,
)


def test_linear_shape_and_init():
    torch.manual_seed(0)
    layer = Linear(300, 500)
    assert layer.weight.shape == (500, 300)
    std = math.sqrt(2 / 800)
    assert abs(layer.weight.std().item() / std - 0.987) < 0.02  # truncating at 3 std shrinks the std by 1.3%
    assert layer.weight.abs().max() <= 3 * std
    x = torch.randn(4, 7, 300)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight))


def test_embedding_lookup_and_init():
    torch.manual_seed(0)
    emb = Embedding(1000, 64)
    assert emb.weight.abs().max() <= 3.0
    ids = torch.tensor([[0, 5, 999]])
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))


def test_rmsnorm_matches_torch_and_keeps_dtype():
    norm = RMSNorm(32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (32,), norm.weight, eps=1e-5))
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    unit = RMSNorm(32)(x * 100)
    torch.testing.assert_close(unit.pow(2).mean(-1).sqrt(), torch.ones(3, 5), atol=1e-4, rtol=0)


def test_silu_swiglu():
    x = torch.randn(100)
    torch.testing.assert_close(silu(x), F.silu(x))
    assert default_d_ff(512) == 1408 and default_d_ff(768) == 2048
    ff = SwiGLU(16, 48)
    y = torch.randn(2, 16)
    torch.testing.assert_close(ff(y), F.linear(F.silu(F.linear(y, ff.w1.weight)) * F.linear(y, ff.w3.weight), ff.w2.weight))


def test_softmax_stable_and_exact():
    x = torch.randn(4, 10)
    torch.testing.assert_close(softmax(x, -1), torch.softmax(x, -1))
    big = torch.tensor([[1e4, 1e4 - 1, 0.0]])
    out = softmax(big, -1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(big, -1))


def test_cross_entropy_matches_torch_even_for_huge_logits():
    logits = torch.randn(2, 3, 50)
    targets = torch.randint(0, 50, (2, 3))
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits.view(-1, 50), targets.view(-1)))
    huge = logits * 1e4
    torch.testing.assert_close(cross_entropy(huge, targets), F.cross_entropy(huge.view(-1, 50), targets.view(-1)))



def test_attention_matches_torch():
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 4)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, causal_mask(6, 6)), expected)
    # queries after a cached past: the last 2 of 6 positions
    expected = F.scaled_dot_product_attention(q[..., 4:, :], k, v, attn_mask=torch.ones(2, 6, dtype=torch.bool).tril(4))
    torch.testing.assert_close(scaled_dot_product_attention(q[..., 4:, :], k, v, causal_mask(2, 6)), expected)


def test_rope_rotates_pairs_and_depends_on_offset_only():
    rope = RotaryPositionalEmbedding(10_000.0, 8, 64)
    x = torch.randn(8)
    out = rope(x.expand(1, 8), torch.tensor([3]))[0]
    angle = 3 * 10_000 ** (-torch.arange(0, 8, 2) / 8)
    expected = torch.stack([x[0::2] * angle.cos() - x[1::2] * angle.sin(), x[0::2] * angle.sin() + x[1::2] * angle.cos()], -1)
    torch.testing.assert_close(out, expected.flatten())
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        return rope(q[None], torch.tensor([m]))[0] @ rope(k[None], torch.tensor([n]))[0]

    torch.testing.assert_close(score(5, 2), score(40, 37))
    with pytest.raises(ValueError, match="even"):
        RotaryPositionalEmbedding(10_000.0, 7, 8)
    assert "cos" not in rope.state_dict()


def test_attention_is_causal():
    attn = MultiHeadSelfAttention(16, 4, RotaryPositionalEmbedding(10_000.0, 4, 32))
    x = torch.randn(1, 10, 16)
    y = attn(x)
    x2 = x.clone()
    x2[:, 6:] += 1.0  # change the future
    torch.testing.assert_close(attn(x2)[:, :6], y[:, :6])
    assert not torch.allclose(attn(x2)[:, 6:], y[:, 6:])


def test_attention_weights_are_causal_rows_of_probabilities():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 4, RotaryPositionalEmbedding(10_000.0, 4, 32))
    x = torch.randn(2, 7, 16)
    w = attn.attention_weights(x)
    assert w.shape == (2, 4, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 7))
    assert (w.triu(1) == 0).all()
    v = attn._heads(attn.v_proj(x))
    out = attn.output_proj((w @ v).transpose(-3, -2).reshape(x.shape))
    torch.testing.assert_close(out, attn(x), atol=1e-6, rtol=1e-5)


def test_attention_trace_ends_in_forward_and_its_weights():
    import torch

    from lmcore.nn import MultiHeadSelfAttention, RotaryPositionalEmbedding

    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(8, 2, rope=RotaryPositionalEmbedding(10_000.0, 4, 16), dtype=torch.float64)
    x = torch.randn(5, 8, dtype=torch.float64)
    t = attn.trace(x)
    assert torch.allclose(t["output"], attn(x), atol=1e-6)
    torch.testing.assert_close(t["weights"], torch.softmax(t["masked"], dim=-1))
    assert t["scores"].shape == (2, 5, 5) and torch.isinf(t["masked"][:, 0, 1:]).all()
    assert not torch.equal(t["q"], t["q_rope"])  # RoPE moved every position but the first
    assert torch.allclose(t["q"][:, 0], t["q_rope"][:, 0], atol=1e-6)  # position 0: a rotation by angle 0
