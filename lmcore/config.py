"""A training run's configuration: ``TrainConfig``, read from YAML, JSON and ``key=value``.

One ``TrainConfig`` (a dataclass) says everything about a run. Every value is read by its
field's type, so ``resume=False`` is False and ``lr=abc`` is refused naming the key, before
anything else happens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .model import ModelConfig

__all__ = ["TrainConfig", "PRECISIONS", "KERNELS", "load_config", "with_overrides"]

#: The ``precision`` settings: "auto" chooses by device (:func:`lmcore.device.autocast_dtype`).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")

#: The ``kernels`` settings: "fused" (:mod:`lmcore.kernels`, PyTorch's fused AdamW) or "math" (the teaching code).
KERNELS = ("fused", "math")


@dataclass
class TrainConfig:
    """A training run. Paths are relative to the working directory.

    ``kernels`` is the one switch between the teaching code and the fast layer: "fused" (the
    default) trains on :mod:`lmcore.kernels` and PyTorch's fused AdamW, "math" on the code the
    chapters print. The tests hold the two to the same losses.
    """

    train_path: str = ""
    valid_path: str = ""
    out_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 32  # sequences per optimizer step, over all processes and micro-batches
    grad_accum_steps: int = 1
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 10
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (and on Ctrl-C or SIGTERM)
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    precision: str = "auto"  # "auto" (bf16 or fp16 by card on CUDA, fp32 elsewhere), "bf16", "fp16" or "fp32"
    kernels: Literal["fused", "math"] = "fused"
    resume: bool = False  # continue the run in out_dir from its checkpoint
    overwrite: bool = False  # start afresh in an out_dir that holds an earlier run, deleting it
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        self.betas = tuple(self.betas)
        if self.batch_size < 1 or self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size {self.batch_size} must be a positive multiple of grad_accum_steps {self.grad_accum_steps}"
            )
        if self.max_steps < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ValueError("max_steps, eval_every and log_every must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other; choose one")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- reading configs: every value by its field's type ------------------------------------------------

_FALSE, _TRUE = ("false", "0", "no", "off"), ("true", "1", "yes", "on")


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """``value`` (text from the command line, or a YAML/JSON value) as ``kind``, else ``ValueError``.

    ``resume=False`` is False, not the non-empty string 'False'; ``model.d_ff=64.5`` and
    ``lr=abc`` are refused naming the key and the type it needs.
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)

    def refuse(expected: str) -> ValueError:
        return ValueError(f"config key {key!r} needs {expected}, got {value!r}")

    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is typing.Literal:
        if value not in args:
            raise refuse("one of " + ", ".join(repr(a) for a in args))
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _FALSE + _TRUE:
            return value.strip().lower() in _TRUE
        raise refuse("true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise refuse("an integer")
    if kind is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise refuse("a number") from None
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise refuse("a finite number")
        return float(number)
    if kind is str:
        if isinstance(value, str):
            return value
        raise refuse("a string")
    if origin is tuple:
        items = value
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
        if not isinstance(items, list | tuple) or len(items) != len(args):
            raise refuse(f"{len(args)} values, as [a, b]")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(items, args)))
    raise refuse(str(kind))


def _apply(data: dict, key: str, value: Any) -> None:
    """Set ``a.b=value`` in nested dicts, read by the field's type; unknown keys are refused."""
    fields, model_fields = typing.get_type_hints(TrainConfig), typing.get_type_hints(ModelConfig)
    head, _, rest = key.partition(".")
    if head == "bf16":
        raise ValueError("config key 'bf16' is now 'precision': auto, bf16 (was on), fp16 or fp32 (was off)")
    if key == "model.kernels":  # where configs written before the switch moved to the run kept it
        key, head, rest = "kernels", "kernels", ""
    if head not in fields:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(fields))}")
    if rest:
        if head != "model" or rest not in model_fields:
            raise ValueError(f"unknown config key {key!r}; model keys: {', '.join(sorted(model_fields))}")
        data.setdefault("model", {})[rest] = _coerce(key, value, model_fields[rest])
    elif head == "model":
        if not isinstance(value, dict):
            raise ValueError(f"config key 'model' needs a mapping of model keys, got {value!r}")
        for k, v in value.items():
            _apply(data, f"model.{k}", v)
    else:
        data[head] = _coerce(key, value, fields[head])


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A ``TrainConfig`` from a YAML or JSON file plus ``key=value`` overrides (``model.d_model=256``).

    Unknown keys and values of the wrong type raise ``ValueError`` before anything else happens.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of config keys")
        for key, value in raw.items():
            _apply(data, str(key), value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        _apply(data, key.strip(), value.strip())
    return TrainConfig(**data)


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``{"lr": 1e-2, "model.norm": "post"}`` applied (typed and checked)."""
    data: dict[str, Any] = {}
    for key, value in overrides.items():
        _apply(data, key, value)
    model = data.pop("model", {})
    return dataclasses.replace(config, **data, model=dataclasses.replace(config.model, **model))
