"""The Transformer's building blocks, written from torch primitives.

Each module holds its parameters and a ``reset_parameters`` that initialises them, the way
PyTorch's own modules do; ``forward`` documents its shapes. This is the teaching core: none of
it uses ``nn.Linear``, ``nn.Embedding``, ``nn.RMSNorm`` or a fused kernel, so every operation is
visible, and none of it has a fast-path branch. The fast versions that training runs live in
:mod:`lmcore.kernels`, each tested equal to the code here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "Linear", "Embedding", "RMSNorm", "silu", "SwiGLU", "SiLUFeedForward", "RotaryPositionalEmbedding",
    "softmax", "cross_entropy", "causal_mask", "scaled_dot_product_attention", "MultiHeadSelfAttention", "LayerCache",
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


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``: smooth, nearly ReLU for large ``|x|``, slightly negative below 0."""
    return x * torch.sigmoid(x)


def default_d_ff(d_model: int, multiple: int = 64) -> int:
    """About 8/3 d_model rounded up to a multiple of 64: SwiGLU's three matrices then hold as many
    parameters as a 4 d_model two-matrix feed-forward."""
    return multiple * math.ceil(8 * d_model / 3 / multiple)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: a gated feed-forward (Shazeer, 2020)."""

    def __init__(self, d_model: int, d_ff: int | None = None, device=None, dtype=None) -> None:
        super().__init__()
        d_ff = d_ff or default_d_ff(d_model)
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)
        self.w3 = Linear(d_model, d_ff, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_model) -> (..., d_model)``."""
        return self.w2(silu(self.w1(x)) * self.w3(x))  # w1's branch is the gate, w3's the value


class SiLUFeedForward(nn.Module):
    """``w2(silu(w1 x))``: the ungated feed-forward the SwiGLU ablation compares against."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None) -> None:
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device, dtype)
        self.w2 = Linear(d_ff, d_model, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_model) -> (..., d_model)``."""
        return self.w2(silu(self.w1(x)))


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

        Pair (x_2k, x_2k+1) becomes (x_2k cos - x_2k+1 sin, x_2k sin + x_2k+1 cos): a 2-D rotation
        by the angle of position and pair. Computed in float32, as the angles are.
        """
        cos, sin = self.cos[token_positions], self.sin[token_positions]  # (..., seq, d_k / 2)
        even, odd = x[..., 0::2].float(), x[..., 1::2].float()  # the two members of every pair
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (..., seq, d_k / 2, 2)
        return rotated.flatten(-2).to(x.dtype)  # pairs back side by side: (..., seq, d_k)


def softmax(x: Tensor, dim: int) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``, after subtracting the max so exp cannot overflow."""
    x = x - x.amax(dim=dim, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of ``-log softmax(logits)[target]`` over all leading dimensions.

    ``logits (..., vocab)``, ``targets (...)`` int64. ``-log softmax(z)[t] = logsumexp(z) - z_t``,
    and log-sum-exp is computed with the max subtracted, so logits of 1e4 neither overflow nor
    lose the answer. The max is a constant shift (it cancels between the two terms), so it needs
    no gradient: detaching it spares backward a pass over the ``(..., vocab)`` logits.
    """
    logits = logits.float()
    m = logits.amax(dim=-1, keepdim=True).detach()
    logsumexp = (logits - m).exp().sum(dim=-1).log() + m.squeeze(-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # the target's logit at each position
    return (logsumexp - picked).mean()


def causal_mask(n: int, m: int, device=None) -> Tensor:
    """``(n, m)`` boolean, True where query ``i`` may attend to key ``j``: keys up to its own position.

    The ``n`` queries are the last ``n`` of ``m`` positions (``n < m`` when earlier keys come from a
    cache), so query ``i`` sits at position ``m - n + i``.
    """
    return torch.ones(n, m, dtype=torch.bool, device=device).tril(m - n)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d_k)) v`` (Vaswani et al., 2017).

    ``q (..., n, d_k)``, ``k (..., m, d_k)``, ``v (..., m, d_v)``; ``mask (n, m)`` boolean, True where
    a query may attend to a key. Returns ``(..., n, d_v)``. Dividing by sqrt(d_k) keeps the scores'
    spread independent of d_k, so softmax does not saturate in wide heads.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., n, m)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight on a masked key
    return softmax(scores, dim=-1) @ v


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
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads, self.d_head = num_heads, d_model // num_heads
        self.q_proj = Linear(d_model, d_model, device, dtype)
        self.k_proj = Linear(d_model, d_model, device, dtype)
        self.v_proj = Linear(d_model, d_model, device, dtype)
        self.output_proj = Linear(d_model, d_model, device, dtype)
        self.rope = rope

    def _heads(self, x: Tensor) -> Tensor:
        """``(..., seq, d_model) -> (..., heads, seq, d_head)``: head h is features h*d_head to (h+1)*d_head."""
        *lead, seq, _ = x.shape
        return x.view(*lead, seq, self.num_heads, self.d_head).transpose(-3, -2)

    def _join(self, x: Tensor) -> Tensor:
        """``(..., heads, seq, d_head) -> (..., seq, d_model)``: the heads side by side again."""
        x = x.transpose(-3, -2)
        return x.reshape(*x.shape[:-2], -1)

    def _qkv(self, x: Tensor, token_positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head ``(..., heads, seq, d_head)`` queries and keys (rotated) and values."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(x.shape[-2], device=x.device)
            pos = token_positions.unsqueeze(-2) if token_positions.dim() > 1 else token_positions
            q, k = self.rope(q, pos), self.rope(k, pos)
        return q, k, v

    def attention_weights(self, x: Tensor) -> Tensor:
        """The causal attention matrix of every head, ``(..., heads, seq, seq)``; rows sum to 1."""
        return self.trace(x)["weights"]

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
        masked = scores.masked_fill(~causal_mask(n, n, x.device), float("-inf"))
        weights = softmax(masked, dim=-1)
        mixed = weights @ v
        output = self.output_proj(self._join(mixed))
        return {"q": q, "k": k, "v": v, "q_rope": q_rope, "k_rope": k_rope, "scores": scores, "masked": masked,
                "weights": weights, "mixed": mixed, "output": output}

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        """``(..., seq, d_model) -> (..., seq, d_model)``; positions default to ``0..seq-1``.

        With a ``cache``, ``x`` holds the positions after those cached (give their
        ``token_positions``); their keys and values are appended to the cache.
        """
        q, k, v = self._qkv(x, token_positions)  # (..., heads, seq, d_head) each
        if cache is not None:
            k, v = cache.extend(k, v)  # the keys and values of the earlier positions come first
        mask = causal_mask(q.shape[-2], k.shape[-2], x.device)  # no query sees a later key
        out = scaled_dot_product_attention(q, k, v, mask)
        return self.output_proj(self._join(out))
