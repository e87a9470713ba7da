"""Checkpoints: everything needed to resume training exactly, in one file written atomically.

The file holds the model and optimizer states, the iteration, both configs and the random
number generator states. It is written to a temporary file in the same folder and renamed over
the old one, so a crash while saving leaves the previous checkpoint intact, never half a file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]

FORMAT = "lmcore-checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, or for another model."""


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    *,
    model_config: dict,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically. ``extra`` holds more state (train config, RNG states)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "version": 1,
        "iteration": iteration,
        "model_config": model_config,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already when the rename succeeded


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    model_config: dict | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint, check it, and load it into ``model`` and ``optimizer`` when given.

    ``model_config`` (the config of ``model``) must equal the checkpoint's, else
    ``CheckpointError`` names the fields that differ. Returns the whole checkpoint dict.
    """
    state = _read(Path(path), map_location)  # tensors and plain data only: nothing in the file runs
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an lmcore checkpoint")
    if model_config is not None and (saved := state["model_config"]) != model_config:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs model {model_config.get(k)!r}"
                            for k in sorted(set(saved) | set(model_config)) if saved.get(k) != model_config.get(k))
        raise CheckpointError(f"{path}: checkpoint is for another model config ({details})")
    if model is not None:
        _unwrap(model).load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def _read(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` with ``weights_only``, each failure turned into a one-line ``CheckpointError``."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # PyTorch's own message suggests weights_only=False, which would run whatever code the
        # file carries: never repeat that advice, only the detail
        text = str(e)
        if "global" in text.lower():
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than tensors and plain data, which lmcore never "
                "unpickles (loading them could run code from the file). Use a checkpoint written by lmcore.save_checkpoint"
            ) from None
        details = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next((d for d in details if "weights_only" not in d and "torch.load" not in d), "not a pickle")
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({detail}); delete it or use another") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({reason}); delete it or use another") from None
