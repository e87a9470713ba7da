"""Sampling text from a trained model: temperature, top-p, a key/value cache.

Each step turns the last position's logits into probabilities (divided by the temperature
first: below 1 sharpens, above 1 flattens), keeps the smallest set of tokens whose probability
reaches ``top_p`` (nucleus sampling), and draws one. With the cache, a step runs the model on
the new token only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .model import TransformerLM
from .nn import softmax

__all__ = ["sample_next", "generate"]


def sample_next(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """One id per row of ``logits (batch, vocab)``; ``temperature=0`` takes the most likely."""
    _check_sampling(temperature, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(dim=-1) - sorted_p  # probability of the tokens ranked above
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_sampling(temperature: float, top_p: float) -> None:
    """Refuse what would sample nonsense: NaN compares False with everything, so check finiteness first."""
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")


def _prompt_ids(prompt: list[int] | Tensor, device: torch.device) -> Tensor:
    """The prompt as a ``(1, seq)`` long tensor; a 2-D batch or non-integer ids are refused, not reshaped or truncated."""
    ids = prompt if isinstance(prompt, Tensor) else torch.as_tensor(list(prompt))
    if ids.dim() != 1:
        raise ValueError(f"the prompt must be one sequence of ids (1-D), got shape {tuple(ids.shape)}")
    if ids.numel() and (ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool):
        raise ValueError(f"prompt ids must be integers, got {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError("the prompt needs at least one token")
    return ids.to(device=device, dtype=torch.long).view(1, -1)


@torch.no_grad()
def generate(
    model: TransformerLM,
    prompt: list[int] | Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Continue ``prompt`` by up to ``max_new_tokens`` ids, stopping after ``stop_id``.

    Returns the new ids (the stop id included when reached). Without the cache, each step
    reruns the whole sequence; the tests check that both give the same ids.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    _check_sampling(temperature, top_p)
    ids = _prompt_ids(prompt, next(model.parameters()).device)
    room = model.config.context_length - ids.shape[1]
    if room < 1:
        raise ValueError(f"a prompt of {ids.shape[1]} tokens leaves no room in context_length {model.config.context_length}")
    was_training = model.training
    model.eval()
    cache = model.new_cache() if use_cache else None
    out: list[int] = []
    step_input = ids
    try:
        for _ in range(min(max_new_tokens, room)):
            logits = model(step_input, cache=cache)[:, -1]
            nxt = sample_next(logits, temperature, top_p, generator)
            out.append(int(nxt))
            if stop_id is not None and out[-1] == stop_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            step_input = nxt.view(1, 1) if use_cache else ids
    finally:  # interrupted or not, the model goes back to the mode it was in
        model.train(was_training)
    return out
