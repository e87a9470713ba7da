"""The Transformer language model: one config dataclass, one module.

``ModelConfig`` says everything about the shape of a model and checks itself; ``TransformerLM``
builds token embeddings, ``num_layers`` blocks, a final norm and the LM head from it. The
state-dict keys (``token_embeddings.weight``, ``layers.{i}.attn.q_proj.weight``, ...) follow the
layout most course code uses, so checkpoints move between implementations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .nn import (
    Embedding,
    LayerCache,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFeedForward,
    SwiGLU,
    default_d_ff,
)

__all__ = ["ModelConfig", "TransformerBlock", "TransformerLM"]


@dataclass
class ModelConfig:
    """The shape of a model, and the switches the ablations of chapter 7 flip.

    ``d_ff=None`` picks the usual size: about 8/3 ``d_model`` (a multiple of 64) for SwiGLU and
    4 ``d_model`` for the plain SiLU feed-forward, so both have about the same parameters.
    """

    vocab_size: int = 10_000
    context_length: int = 256
    d_model: int = 512
    num_layers: int = 4
    num_heads: int = 16
    d_ff: int | None = 1_344
    rope_theta: float = 10_000.0
    norm: Literal["pre", "post", "none"] = "pre"
    position: Literal["rope", "none"] = "rope"
    ffn: Literal["swiglu", "silu"] = "swiglu"
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.position == "rope" and (self.d_model // self.num_heads) % 2:
            raise ValueError(f"RoPE needs an even head dimension, got d_model/num_heads = {self.d_model // self.num_heads}")
        choices = {"norm": ("pre", "post", "none"), "position": ("rope", "none"), "ffn": ("swiglu", "silu")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.d_ff is None:
            self.d_ff = default_d_ff(self.d_model) if self.ffn == "swiglu" else 4 * self.d_model
        if not isinstance(self.d_ff, int) or isinstance(self.d_ff, bool) or self.d_ff < 1:
            raise ValueError(f"d_ff must be a positive integer, got {self.d_ff!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(c: ModelConfig, device=None, dtype=None) -> nn.Module:
    """RMSNorm over ``d_model``, or nothing for the no-norm ablation."""
    return nn.Identity() if c.norm == "none" else RMSNorm(c.d_model, c.norm_eps, device, dtype)


class TransformerBlock(nn.Module):
    """Attention then feed-forward, each in a residual branch.

    Pre-norm (the default) normalises the input of each branch: ``x + attn(ln1(x))``. Post-norm,
    the original Transformer's, normalises after the sum: ``ln1(x + attn(x))``. ``norm="none"``
    drops both.
    """

    def __init__(self, config: ModelConfig, rope: RotaryPositionalEmbedding | None, device=None, dtype=None) -> None:
        super().__init__()
        c = config
        self.norm = c.norm
        self.ln1 = _norm(c, device, dtype)
        self.attn = MultiHeadSelfAttention(c.d_model, c.num_heads, rope, device, dtype)
        self.ln2 = _norm(c, device, dtype)
        self.ffn = (SwiGLU if c.ffn == "swiglu" else SiLUFeedForward)(c.d_model, c.d_ff, device, dtype)

    def forward(self, x: Tensor, token_positions: Tensor | None = None, cache: LayerCache | None = None) -> Tensor:
        """``(batch, seq, d_model) -> (batch, seq, d_model)``."""
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, cache))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), token_positions, cache)
        return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    """Token ids in, next-token logits out: embeddings, blocks, final norm, LM head."""

    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        self.config = c = config
        self.token_embeddings = Embedding(c.vocab_size, c.d_model, device, dtype)
        d_head = c.d_model // c.num_heads
        rope = RotaryPositionalEmbedding(c.rope_theta, d_head, c.context_length, device) if c.position == "rope" else None
        self.layers = nn.ModuleList(TransformerBlock(c, rope, device, dtype) for _ in range(c.num_layers))
        self.ln_final = _norm(c, device, dtype)
        self.lm_head = Linear(c.d_model, c.vocab_size, device, dtype)
        self.check_ids = True  # see check_input

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out the token embeddings and the LM head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.token_embeddings.weight.numel() + self.lm_head.weight.numel()
        return n

    def new_cache(self) -> list[LayerCache]:
        """An empty key/value cache, one entry a layer, for :meth:`forward` during generation."""
        return [LayerCache() for _ in self.layers]

    def check_input(self, token_ids: Tensor, past: int = 0) -> None:
        """Raise a clear ``ValueError`` for sequences longer than the context or ids outside the vocabulary."""
        if token_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"token ids must be an integer tensor, got {token_ids.dtype}")
        seq = past + token_ids.shape[-1]
        if seq > self.config.context_length:
            raise ValueError(f"sequence of {seq} tokens is longer than the model's context_length {self.config.context_length}")
        if token_ids.device.type == "meta":  # shapes only (accounting): there are no values to check
            return
        # The value check reads the ids back to the host: a wait for the GPU, and a break in a
        # compiled graph. Training checks its token files once when it opens them and turns it off.
        if not self.check_ids or torch.compiler.is_compiling():
            return
        if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}), got min {int(token_ids.min())}, "
                f"max {int(token_ids.max())}: does the tokenizer match the model's vocab_size?"
            )

    def forward(self, token_ids: Tensor, token_positions: Tensor | None = None, cache: list[LayerCache] | None = None) -> Tensor:
        """``(batch, seq)`` ids -> ``(batch, seq, vocab_size)`` logits.

        With a ``cache`` (from :meth:`new_cache`), ``token_ids`` continue the cached positions.
        """
        past = len(cache[0]) if cache else 0
        self.check_input(token_ids, past)
        if cache is not None and token_positions is None:
            token_positions = torch.arange(past, past + token_ids.shape[-1], device=token_ids.device)
        x = self.token_embeddings(token_ids.long())
        for i, layer in enumerate(self.layers):
            x = layer(x, token_positions, None if cache is None else cache[i])
        return self.lm_head(self.ln_final(x))
