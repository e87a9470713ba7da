"""Memory measured, to hold chapter 4's formulas against: what autograd saves, what AdamW keeps.

These count bytes of real tensors, where :mod:`lmcore.accounting` computes them from a config.
"""

from __future__ import annotations

import torch

from .nn import cross_entropy

__all__ = ["saved_activation_bytes", "adamw_state_bytes"]


def saved_activation_bytes(model: torch.nn.Module, token_ids: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one forward pass + cross-entropy.

    ``token_ids (batch, seq + 1)``: the model reads the first ``seq`` and predicts the rest.
    Parameters (saved by matrix products, but memory already counted) are left out, and a tensor
    saved twice counts once.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:  # called on each tensor autograd saves: note its storage
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cross_entropy(model(token_ids[:, :-1]), token_ids[:, 1:])
    return sum(saved.values())


def adamw_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimiser's state tensors."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
