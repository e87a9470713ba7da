"""Training runs sized by a time budget instead of a step count.

A chapter that trains on "the GPU the reader has" cannot fix its number of steps: 2,000 steps of
the 17M shape take a couple of minutes on an H100 and the better part of an hour on a T4 in float32.
So it times a few steps on the reader's device (:func:`seconds_per_step`) and asks
:func:`fit_to_budget` for the longest run, up to the config's own ``max_steps``, that fits the budget,
evaluation included. Warm-up, logging and evaluation are scaled with the run, and the cosine
schedule follows ``max_steps``, so the shorter run decays to ``min_lr`` at its own end.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass

from .config import TrainConfig, with_overrides
from .train import train

__all__ = ["Budget", "seconds_per_step", "fit_to_budget"]


def seconds_per_step(config: TrainConfig, steps: int = 5, warmup: int = 2) -> float:
    """Wall-clock seconds of one optimizer step of ``config``, timed over ``steps`` steps after ``warmup``
    (the first steps pay for compilation and allocator warm-up). Runs in a throwaway directory, without
    evaluation; ``config`` itself is not changed."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = with_overrides(config, {"max_steps": warmup + steps, "warmup_steps": 1, "log_every": 1,
                                        "eval_every": warmup + steps, "checkpoint_every": 0})
        probe = dataclasses.replace(probe, valid_path="", out_dir=tmp, resume=False, overwrite=True, progress=False)
        history = train(probe)
    return (history[-1]["wall_s"] - history[warmup - 1]["wall_s"]) / steps


@dataclass(frozen=True)
class Budget:
    """A run sized to ``seconds``: its ``config``, and the timing it was sized from."""

    seconds: float
    seconds_per_step: float
    config: TrainConfig
    capped: bool  # True when the config's own max_steps fits inside the budget

    def __str__(self) -> str:
        c = self.config
        why = "the config's own length, inside the budget" if self.capped else "what fits"
        return (f"budget {self.seconds / 60:.1f} min at {self.seconds_per_step * 1000:.0f} ms a step: {c.max_steps:,} steps "
                f"({why}), warm-up {c.warmup_steps}, evaluation every {c.eval_every}")


def fit_to_budget(config: TrainConfig, seconds: float, per_step: float | None = None, min_steps: int = 20) -> Budget:
    """``config`` with the most steps (at most its ``max_steps``) that train and evaluate in ``seconds``.

    ``per_step`` is the time of one step (measured with :func:`seconds_per_step` when not given). An
    evaluation runs ``eval_batches`` forward passes of one micro-batch, each about a third of a step's
    forward and backward over its ``grad_accum_steps`` micro-batches; the run keeps the config's number of
    evaluations and its warm-up and logging as fractions of the run. A budget too small for ``min_steps``
    steps raises ``ValueError``.
    """
    if per_step is None:
        per_step = seconds_per_step(config)
    evaluations = max(1, config.max_steps // config.eval_every) if config.valid_path else 0
    eval_seconds = config.eval_batches * per_step / (3 * config.grad_accum_steps)
    fits = math.floor((seconds - evaluations * eval_seconds) / per_step)
    if fits < min_steps:
        raise ValueError(f"a budget of {seconds:.0f} s fits {max(fits, 0)} steps at {per_step:.3f} s a step; "
                         f"give at least {min_steps * per_step + evaluations * eval_seconds:.0f} s or a smaller config")
    steps = min(fits, config.max_steps)
    scale = steps / config.max_steps
    sized = dataclasses.replace(
        config, max_steps=steps, warmup_steps=max(1, round(config.warmup_steps * scale)),
        log_every=max(1, round(config.log_every * scale)),
        eval_every=max(1, steps // evaluations) if evaluations else config.eval_every)
    return Budget(seconds=seconds, seconds_per_step=per_step, config=sized, capped=steps == config.max_steps)
