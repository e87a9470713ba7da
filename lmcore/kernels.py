"""The model's fast layer: the same computations as :mod:`lmcore.nn`, in fewer, fused kernels.

The teaching modules write every operation out; here each is replaced by a PyTorch kernel that
computes the same thing in fewer passes over memory. Every class subclasses the module it
replaces and overrides ``forward`` only, so parameters, buffers and state-dict keys are the same:
:func:`use_fused_kernels` switches a built model over in place, and a checkpoint moves freely
between the two. Training switches by default (``TrainConfig.kernels = "fused"``); the tests hold
each one equal to its reference (``tests/test_kernels.py``), and the appendix "Making it fast"
measures what each buys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import LayerCache, MultiHeadSelfAttention, RotaryPositionalEmbedding, SiLUFeedForward, SwiGLU, causal_mask

__all__ = [
    "FusedSelfAttention", "ComplexRoPE", "FusedSwiGLU", "FusedSiLUFeedForward", "use_fused_kernels", "fused_cross_entropy",
]


class FusedSelfAttention(MultiHeadSelfAttention):
    """Attention through ``F.scaled_dot_product_attention``: one kernel that never writes the
    ``(seq, seq)`` weights out, and with ``is_causal`` skips the masked half instead of computing it."""

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        q, k, v = self._qkv(x, token_positions)
        if cache is not None:
            k, v = cache.extend(k, v)
        n, m = q.shape[-2], k.shape[-2]
        if n == m:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # queries after a cached past: is_causal would align them with the first keys
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(n, m, x.device))
        return self.output_proj(self._join(out))


class ComplexRoPE(RotaryPositionalEmbedding):
    """RoPE as the multiplication of complex numbers ``x_2k + i x_2k+1`` by ``cos + i sin``: one
    kernel forward and one backward, where slicing evens and odds and stacking them back is four.

    Inductor generates no code for complex numbers, so under ``torch.compile`` this computes the
    reference's real arithmetic, which the compiler fuses itself.
    """

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return super().forward(x, token_positions)
        cos, sin = self.cos[token_positions], self.sin[token_positions]
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)


class FusedSwiGLU(SwiGLU):
    """SwiGLU with ``F.silu``: one kernel for ``x * sigmoid(x)`` forward and one backward, not three."""

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class FusedSiLUFeedForward(SiLUFeedForward):
    """The ungated feed-forward with ``F.silu``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)))


#: each teaching module -> its fast version
FUSED = {
    MultiHeadSelfAttention: FusedSelfAttention,
    RotaryPositionalEmbedding: ComplexRoPE,
    SwiGLU: FusedSwiGLU,
    SiLUFeedForward: FusedSiLUFeedForward,
}


def use_fused_kernels(model: nn.Module) -> nn.Module:
    """Switch every teaching module of ``model`` to its fast version, in place; returns ``model``.

    Only the class changes (each fast class adds no state), so the weights, the state dict and
    every reference to the modules stay as they were.
    """
    for module in model.modules():
        fast = FUSED.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return model


def fused_cross_entropy(logits: Tensor, targets: Tensor, reuse_logits: bool = False) -> Tensor:
    """:func:`lmcore.nn.cross_entropy` in PyTorch's ``log_softmax`` kernel, with a backward that
    writes the gradient in that kernel's output (``_FusedCrossEntropy``).

    ``logits (..., vocab)``, ``targets (...)`` int64 -> the mean loss. ``reuse_logits=True`` also
    writes the log-probabilities over float32 logits, for a caller that never reads them again
    (the eager training step). On this project's 2-core CPU a whole training step is 1.34x faster
    at chapter 6's shape (7,289 -> 9,779 tokens/s) and 1.08x at the 17M shape than with
    ``F.cross_entropy`` (``benchmarks/results/train-cpu.md``).
    """
    logits = logits.float()
    return _FusedCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reuse_logits)


class _FusedCrossEntropy(torch.autograd.Function):
    """``logits (n, vocab)`` float32, ``targets (n,)`` -> mean of ``-log_softmax(logits)[target]``.

    The gradient with respect to the logits is ``(softmax - onehot) / n``. Forward keeps
    ``log_softmax``'s output for it, as ``F.cross_entropy`` does; backward turns that tensor into
    the gradient in place (``exp_``, subtract 1 at the targets, scale). ``F.cross_entropy``'s
    backward instead fills a new logits-sized tensor with zeros, scatters into it, and writes a
    third one: at a 10,000-word vocabulary those are the largest tensors of a small model's step.
    With ``reuse`` the log-probabilities are written over the logits themselves, one such tensor
    fewer again.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, reuse: bool) -> Tensor:
        logp = torch.log_softmax(logits, dim=-1, out=logits) if reuse else torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, targets)
        return -logp.gather(-1, targets.unsqueeze(-1)).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None, None]:
        logp, targets = ctx.saved_tensors
        grad = logp.exp_()  # softmax, in log_softmax's memory: nothing else reads it
        rows = torch.arange(len(targets), device=grad.device)
        grad.index_put_((rows, targets), torch.tensor(-1.0, dtype=grad.dtype, device=grad.device), accumulate=True)
        return grad.mul_(grad_loss / len(targets)), None, None
