"""Run safety: a training run that stops is never silently wrong and loses nothing.

- Ctrl-C and SIGTERM (a time limit, Slurm, ``docker stop``) only raise a flag (:class:`StopSignals`);
  the loop finishes the step it is in, saves a checkpoint at that step boundary and stops with
  :class:`TrainingInterrupted`, so a resumed run equals one that was never interrupted. A second
  Ctrl-C stops at once, keeping the last checkpoint.
- A non-finite loss stops the run with :class:`TrainingDiverged`; a checkpoint is written only when
  its weights are finite and give a finite loss (:func:`is_sound`), so the one kept always resumes.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TrainingDiverged", "TrainingInterrupted", "StopSignals", "is_sound"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. ``history`` holds the log records up to that step."""

    def __init__(self, message: str, history: list[dict]) -> None:
        super().__init__(message)
        self.history = history


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run at a step boundary, after a checkpoint was saved there.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it. ``signum`` is the signal,
    ``step`` the last completed step (the checkpoint's iteration).
    """

    def __init__(self, message: str, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum, self.step = signum, step


class StopSignals:
    """While active, SIGINT and SIGTERM only record that a stop was asked for.

    The loop looks at ``signum`` between steps, so a checkpoint never holds half a step. A
    second SIGINT raises ``KeyboardInterrupt`` at once (the last checkpoint stays as it was).
    Outside the main thread signals cannot be caught and nothing changes.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@torch.no_grad()
def is_sound(model: torch.nn.Module, last_loss: Callable[[], torch.Tensor] | None) -> bool:
    """Weights finite, and ``last_loss()`` (the loss on the last batch, recomputed) finite: a
    checkpoint worth resuming from."""
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        return False
    return last_loss is None or math.isfinite(last_loss().item())
