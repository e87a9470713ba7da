"""The model's fast layer (lmcore.kernels) against the teaching code it replaces."""

import pytest
import torch
import torch.nn.functional as F

from lmcore.kernels import (
    ComplexRoPE,
    FusedSelfAttention,
    FusedSiLUFeedForward,
    FusedSwiGLU,
    fused_cross_entropy,
    use_fused_kernels,
)
from lmcore.model import ModelConfig, TransformerLM
from lmcore.nn import MultiHeadSelfAttention, RotaryPositionalEmbedding, cross_entropy

SMALL = dict(vocab_size=97, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=None)


def _pair(config: ModelConfig) -> tuple[TransformerLM, TransformerLM]:
    """The teaching model and a copy switched to the fast layer, with the same weights."""
    torch.manual_seed(0)
    reference = TransformerLM(config)
    fast = TransformerLM(config)
    fast.load_state_dict(reference.state_dict())
    return reference, use_fused_kernels(fast)


def test_switching_changes_classes_not_state():
    reference, fast = _pair(ModelConfig(**SMALL))
    kinds = {type(m) for m in fast.modules()}
    assert {FusedSelfAttention, ComplexRoPE, FusedSwiGLU} <= kinds and MultiHeadSelfAttention not in kinds
    assert fast.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), reference.state_dict().values()))
    _, silu_model = _pair(ModelConfig(**SMALL, ffn="silu"))
    assert any(isinstance(m, FusedSiLUFeedForward) for m in silu_model.modules())


@pytest.mark.parametrize("switch", [{}, {"ffn": "silu"}, {"position": "none"}, {"norm": "post"}])
def test_fast_model_gives_the_teaching_loss_and_gradients(switch):
    """Fused attention, complex RoPE, F.silu and the fused loss against the teaching code, same weights."""
    reference, fast = _pair(ModelConfig(**SMALL, **switch))
    x = torch.randint(0, SMALL["vocab_size"], (3, SMALL["context_length"]))
    ref_loss = cross_entropy(reference(x)[:, :-1], x[:, 1:])
    fast_loss = fused_cross_entropy(fast(x)[:, :-1], x[:, 1:])
    ref_loss.backward()
    fast_loss.backward()
    torch.testing.assert_close(fast_loss, ref_loss, atol=1e-6, rtol=0)
    for (name, a), b in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_fast_attention_with_a_cache_equals_the_whole_sequence():
    reference, fast = _pair(ModelConfig(**SMALL))
    x = torch.randint(0, SMALL["vocab_size"], (1, 10))
    for model in (reference, fast):
        cache = model.new_cache()
        model(x[:, :6], cache=cache)
        torch.testing.assert_close(model(x[:, 6:], cache=cache), reference(x)[:, 6:], atol=1e-5, rtol=1e-5)


def test_complex_rope_equals_the_real_rotation():
    rope = RotaryPositionalEmbedding(10_000.0, 8, 32)
    x, pos = torch.randn(2, 3, 12, 8), torch.arange(12)
    expected, expected_bf16 = rope(x, pos), rope(x.bfloat16(), pos)
    rope.__class__ = ComplexRoPE
    torch.testing.assert_close(rope(x, pos), expected)
    torch.testing.assert_close(rope(x.bfloat16(), pos), expected_bf16)


@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("reuse", [False, True])
def test_fused_cross_entropy_gives_the_loss_and_gradients_of_the_teaching_one(scale, reuse):
    """The fused loss (log_softmax forward, gradient written in its output's memory) against the formula."""
    torch.manual_seed(0)
    h = torch.randn(2, 5, 8, requires_grad=True)
    w = (torch.randn(50, 8) * scale).requires_grad_()
    targets = torch.randint(0, 50, (2, 5))
    results = []
    for fused in (False, True):
        logits = h @ w.T
        loss = fused_cross_entropy(logits, targets, reuse_logits=reuse) if fused else cross_entropy(logits, targets)
        results.append((loss, *torch.autograd.grad(loss, (h, w))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(results[1][0], F.cross_entropy((h @ w.T).view(-1, 50), targets.view(-1)))
    gradient = (torch.softmax(h.detach() @ w.detach().T, -1) - F.one_hot(targets, 50)) / 10
    if reuse:  # the logits' memory ends up holding their gradient
        torch.testing.assert_close(logits.detach(), gradient, rtol=1e-5, atol=1e-6)
    else:      # the caller's logits are left as they were
        assert torch.equal(logits, h @ w.T)


def test_fused_cross_entropy_from_bf16_logits():
    logits = torch.randn(4, 30).bfloat16().requires_grad_()
    targets = torch.randint(0, 30, (4,))
    fused_cross_entropy(logits, targets).backward()
    expected = (torch.softmax(logits.detach().float(), -1) - F.one_hot(targets, 30)) / 4
    torch.testing.assert_close(logits.grad.float(), expected, atol=1e-2, rtol=0)
