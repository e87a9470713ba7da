"""The Transformer's building blocks, written from torch primitives.

Each module holds its parameters and a ``reset_parameters`` that initialises them, the way
PyTorch's own modules do; ``forward`` documents its shapes. None of them uses ``nn.Linear``,
``nn.Embedding``, ``nn.RMSNorm`` or a fused attention kernel on the teaching path, so every
operation is visible. ``scaled_dot_product_attention(..., fused=True)`` switches to PyTorch's
fused kernel, tested to agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Linear",
    "Embedding",
    "RMSNorm",
    "silu",
    "SwiGLU",
    "SiLUFeedForward",
    "RotaryPositionalEmbedding",
    "softmax",
    "cross_entropy",
    "attention_probs",
    "scaled_dot_product_attention",
    "MultiHeadSelfAttention",
    "LayerCache",
]


class Linear(nn.Module):
    """``y = x W^T`` without bias; ``W`` is ``(d_out, d_in)``.

    Initialised from a normal with variance 2 / (d_in + d_out), truncated at 3 standard deviations,
    so activations keep their scale through the layer in both directions.
    """

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_in) -> (..., d_out)``."""
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"d_in={self.in_features}, d_out={self.out_features}"


class Embedding(nn.Module):
    """A lookup table ``(num_embeddings, embedding_dim)``: row ``i`` is token ``i``'s vector.

    Initialised from a standard normal truncated at 3.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Tensor) -> Tensor:
        """``(...) int64 -> (..., embedding_dim)``."""
        return self.weight.index_select(0, token_ids.reshape(-1)).view(*token_ids.shape, self.embedding_dim)


class RMSNorm(nn.Module):
    """Divide each vector by its root mean square, then scale per feature (Zhang and Sennrich, 2019).

    Computed in float32 (squares of bf16 values lose precision) and cast back to the input dtype.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(d_model, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_model) -> (..., d_model)``."""
        dtype = x.dtype
        x = x.float()
        inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x * inv_rms * self.weight.float()).to(dtype)


def silu(x: Tensor, fused: bool = False) -> Tensor:
    """``x * sigmoid(x)``: smooth, nearly ReLU for large ``|x|``, slightly negative below 0.

    ``fused=True`` calls PyTorch's one-kernel SiLU (the same numbers, a third of the passes over
    memory forward and backward), for the fast path.
    """
    return F.silu(x) if fused else x * torch.sigmoid(x)


def default_d_ff(d_model: int, multiple: int = 64) -> int:
    """About 8/3 d_model rounded up to a multiple of 64: SwiGLU's three matrices then hold as many
    parameters as a 4 d_model two-matrix feed-forward."""
    return multiple * math.ceil(8 * d_model / 3 / multiple)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: a gated feed-forward (Shazeer, 2020)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None, fused: bool = False) -> None:
        super().__init__()
        d_ff = d_ff or default_d_ff(d_model)
        self.fused = fused
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)
        self.w3 = Linear(d_model, d_ff, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_model) -> (..., d_model)``."""
        return self.w2(silu(self.w1(x), self.fused) * self.w3(x))


class SiLUFeedForward(nn.Module):
    """``w2(silu(w1 x))``: the ungated feed-forward the SwiGLU ablation compares against."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None, fused: bool = False) -> None:
        super().__init__()
        self.fused = fused
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_model) -> (..., d_model)``."""
        return self.w2(silu(self.w1(x), self.fused))


class RotaryPositionalEmbedding(nn.Module):
    """RoPE (Su et al., 2021): rotate each pair of dimensions (2k, 2k+1) by angle ``pos * theta^(-2k/d)``.

    A query at position m and a key at position n then have a dot product that depends on
    m - n only. ``cos`` and ``sin`` are precomputed for ``max_seq_len`` positions as
    non-persistent buffers (they are derived, so they stay out of checkpoints).
    """

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None) -> None:
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions, so d_k must be even, got {d_k}")
        self.theta, self.d_k, self.max_seq_len = theta, d_k, max_seq_len
        self.register_buffer("cos", torch.empty(max_seq_len, d_k // 2, device=device), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, d_k // 2, device=device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        freqs = self.theta ** (-torch.arange(0, self.d_k, 2, dtype=torch.float64, device=self.cos.device) / self.d_k)
        angles = torch.arange(self.max_seq_len, dtype=torch.float64, device=self.cos.device)[:, None] * freqs
        self.cos.copy_(angles.cos())
        self.sin.copy_(angles.sin())

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        """``x (..., seq, d_k)``, ``token_positions (..., seq)`` -> rotated ``x``, same shape.

        Pair (x_2k, x_2k+1) becomes (x_2k cos - x_2k+1 sin, x_2k sin + x_2k+1 cos): the rotation
        of the complex number x_2k + i x_2k+1 by the angle, which is how it is computed (a complex
        multiply is one fused kernel, forward and backward, where slicing evens and odds is four).
        """
        cos, sin = self.cos[token_positions], self.sin[token_positions]
        if torch.compiler.is_compiling():  # inductor generates no code for complex numbers: the same rotation in reals
            pairs = x.unflatten(-1, (-1, 2))
            even, odd = pairs[..., 0].float(), pairs[..., 1].float()
            return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(x.dtype)
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).to(x.dtype)


def softmax(x: Tensor, dim: int) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``, after subtracting the max so exp cannot overflow."""
    x = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def cross_entropy(logits: Tensor, targets: Tensor, fused: bool = False, *, reuse_logits: bool = False) -> Tensor:
    """Mean of ``-log softmax(logits)[target]`` over all leading dimensions.

    ``logits (..., vocab)``, ``targets (...)`` int64. Uses log-sum-exp with the max subtracted, so
    logits of 1e4 neither overflow nor lose the answer. The max is a constant shift (it cancels
    between the two terms), so it needs no gradient: detaching it spares backward a pass over
    the ``(..., vocab)`` logits. ``fused=True`` is the fast path with the same result: PyTorch's
    ``log_softmax`` kernel forward, and a backward that computes the gradient in that output's
    memory (``_FusedCrossEntropy``; faster than ``F.cross_entropy``, see
    ``benchmarks/bench_train.py``). ``reuse_logits=True`` (with ``fused``) also writes the
    log-probabilities over float32 logits, for a caller that never reads them again: the
    training loop.
    """
    logits = logits.float()
    if fused:
        return _FusedCrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reuse_logits)
    m = logits.amax(dim=-1, keepdim=True).detach()
    logsumexp = (logits - m).exp().sum(dim=-1).log() + m.squeeze(-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logsumexp - picked).mean()


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


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None = None, *, causal: bool = False) -> Tensor:
    """``softmax(q k^T / sqrt(d_k))`` with masked scores set to -inf: ``(..., n, m)``, rows sum to 1.

    ``mask (n, m)`` is True where a query may attend to a key; ``causal=True`` builds the causal one,
    with the queries as the last n of m positions (n < m when earlier keys come from a cache).
    """
    n, m = q.shape[-2], k.shape[-2]
    if causal:
        mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1)


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, fused: bool = False, causal: bool = False
) -> Tensor:
    """``softmax(q k^T / sqrt(d_k)) v`` (Vaswani et al., 2017).

    ``q (..., n, d_k)``, ``k (..., m, d_k)``, ``v (..., m, d_v)``; ``mask (n, m)`` boolean, True where
    a query may attend to a key. Returns ``(..., n, d_v)``. ``fused=True`` calls PyTorch's kernel;
    ``causal=True`` (instead of a mask) lets it skip the masked half rather than compute and discard it.
    """
    if fused:
        n, m = q.shape[-2], k.shape[-2]
        if causal and n == m:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if causal:
            mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention_probs(q, k, mask, causal=causal) @ v


class LayerCache:
    """One layer's keys and values of the positions seen so far, ``(..., heads, past, d_head)``.

    Generation appends one position at a time, so each new token attends to the cached past
    instead of recomputing it: one position of work per token instead of the whole prefix.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with RoPE on queries and keys of each head.

    ``q_proj``, ``k_proj``, ``v_proj``, ``output_proj`` are ``(d_model, d_model)``; heads are slices
    of ``d_model / num_heads`` features.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        fused: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads, self.d_head, self.fused = num_heads, d_model // num_heads, fused
        self.q_proj = Linear(d_model, d_model, device, dtype)
        self.k_proj = Linear(d_model, d_model, device, dtype)
        self.v_proj = Linear(d_model, d_model, device, dtype)
        self.output_proj = Linear(d_model, d_model, device, dtype)
        self.rope = rope

    def _heads(self, x: Tensor) -> Tensor:
        *lead, seq, _ = x.shape
        return x.view(*lead, seq, self.num_heads, self.d_head).transpose(-3, -2)

    def _qkv(self, x: Tensor, token_positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head ``(..., heads, seq, d_head)`` queries and keys (rotated) and values."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(x.shape[-2], device=x.device)
            pos = token_positions.unsqueeze(-2) if token_positions.dim() > 1 else token_positions
            q, k = self.rope(q, pos), self.rope(k, pos)
        return q, k, v

    def attention_weights(self, x: Tensor, token_positions: Tensor | None = None) -> Tensor:
        """The causal attention matrix of every head, ``(..., heads, seq, seq)``; rows sum to 1."""
        q, k, _ = self._qkv(x, token_positions)
        return attention_probs(q, k, causal=True)

    def trace(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage of causal attention on ``x (seq, d_model)``, for reading; positions ``0..seq-1``.

        Per head ``(heads, seq, d_head)``: ``q``, ``k``, ``v`` (projections), ``q_rope``, ``k_rope``
        (after RoPE); ``(heads, seq, seq)``: ``scores`` (q k^T / sqrt(d_head)), ``masked`` (future
        keys at -inf), ``weights`` (softmax of each row); ``mixed`` (weights @ v, per head) and
        ``output`` (heads joined and projected, ``(seq, d_model)``), which equals ``forward(x)``.
        """
        n = x.shape[-2]
        positions = torch.arange(n, device=x.device)
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        q_rope, k_rope = (self.rope(q, positions), self.rope(k, positions)) if self.rope is not None else (q, k)
        scores = q_rope @ k_rope.transpose(-2, -1) / math.sqrt(self.d_head)
        masked = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=x.device).tril(), float("-inf"))
        weights = softmax(masked, dim=-1)
        mixed = weights @ v
        output = self.output_proj(mixed.transpose(-3, -2).reshape(x.shape))
        return {"q": q, "k": k, "v": v, "q_rope": q_rope, "k_rope": k_rope, "scores": scores, "masked": masked,
                "weights": weights, "mixed": mixed, "output": output}

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        """``(..., seq, d_model) -> (..., seq, d_model)``; positions default to ``0..seq-1``.

        With a ``cache``, ``x`` holds the positions after those cached (give their
        ``token_positions``); their keys and values are appended to the cache.
        """
        q, k, v = self._qkv(x, token_positions)
        if cache is not None:
            k, v = cache.extend(k, v)
        out = scaled_dot_product_attention(q, k, v, fused=self.fused, causal=True)
        return self.output_proj(out.transpose(-3, -2).reshape(x.shape))
