"""The training loop, its config, and its command line.

    python -m lmcore.train --config configs/tinystories-17m.yaml max_steps=100 model.d_model=256
    torchrun --nproc_per_node 2 -m lmcore.train --config ...      # DistributedDataParallel

One ``TrainConfig`` (a dataclass, loadable from YAML or JSON, overridable with ``key=value``,
each value read by its field's type) says everything about a run. The loop samples random
windows from memory-mapped ``uint16`` ids, runs AdamW with a cosine schedule and gradient
clipping, accumulates gradients over micro-batches, evaluates on validation data every
``eval_every`` steps, and logs one JSON line per logged step.

Nothing is lost and nothing is silently wrong:

- A run refuses an ``out_dir`` that holds an earlier run unless told ``resume=true`` (continue
  it exactly) or ``overwrite=true``.
- Ctrl-C and SIGTERM (a time limit, Slurm, ``docker stop``) only raise a flag; the loop finishes
  the step it is in, logs it, saves a checkpoint at that step boundary and stops with
  :class:`TrainingInterrupted`, so a resumed run equals one that was never interrupted. A
  second Ctrl-C stops at once, keeping the last checkpoint.
- A non-finite loss stops the run with :class:`TrainingDiverged`; a checkpoint is written only
  when its weights are finite and give a finite loss, so the one kept always resumes.

On a GPU it computes in mixed precision (``precision="auto"``: bf16 autocast on cards with bf16
tensor cores, fp16 autocast with a gradient scaler on older ones) and, if asked, ``torch.compile``.
Under ``torchrun`` each process takes its slice of every global batch, so the losses equal one
process's with the same global batch.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import signal
import sys
import threading
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .accounting import peak_flops, training_flops_per_token
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .dataset import batch_from_starts, load_tokens
from .device import pick_device
from .model import ModelConfig, TransformerLM
from .nn import cross_entropy
from .optim import AdamW, clip_grad_norm, cosine_lr

__all__ = [
    "TrainConfig", "TrainingDiverged", "TrainingInterrupted", "PRECISIONS", "autocast_dtype", "load_config", "with_overrides",
    "train", "evaluate", "main",
]


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


#: The ``precision`` settings: "auto" chooses by device (:func:`autocast_dtype`).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class TrainConfig:
    """A training run. Paths are relative to the working directory.

    ``model`` given as a dict (or from a file) runs the fast kernels unless it says
    ``kernels="math"``: training wants speed, and the tests show both paths agree.
    """

    train_path: str = ""
    valid_path: str = ""
    out_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(kernels="fused"))  # a dict: kernels default "fused"
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
    resume: bool = False  # continue the run in out_dir from its checkpoint
    overwrite: bool = False  # start afresh in an out_dir that holds an earlier run, deleting it
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # training takes the fast path unless told kernels="math"
            self.model = ModelConfig(**{"kernels": "fused", **self.model})
        self.betas = tuple(self.betas)
        if self.batch_size < 1 or self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size {self.batch_size} must be a positive multiple of grad_accum_steps {self.grad_accum_steps}"
            )
        if self.max_steps < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ValueError("max_steps, eval_every and log_every must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other; choose one")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- reading configs: every value by its field's type ------------------------------------------------

_FALSE, _TRUE = ("false", "0", "no", "off"), ("true", "1", "yes", "on")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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
    fields = _field_types(TrainConfig)
    model_fields = _field_types(ModelConfig)
    head, _, rest = key.partition(".")
    if head == "bf16":
        raise ValueError("config key 'bf16' is now 'precision': auto, bf16 (was on), fp16 or fp32 (was off)")
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


# -- the loop ------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, tokens, config: TrainConfig, device: torch.device, amp: torch.dtype | None = None
) -> float:
    """Mean loss on ``eval_batches`` fixed batches of validation windows (the same ones every call),
    computed under autocast to ``amp`` (bf16 or fp16) when given."""
    model.eval()
    gen = torch.Generator().manual_seed(config.seed + 1)
    losses = []
    per = max(1, config.batch_size // config.grad_accum_steps)
    for _ in range(config.eval_batches):
        starts = torch.randint(0, len(tokens) - config.model.context_length, (per,), generator=gen)
        x, y = batch_from_starts(tokens, starts, config.model.context_length, device)
        with _autocast(device, amp):
            losses.append(cross_entropy(model(x), y, fused=config.model.kernels == "fused", reuse_logits=True).item())
    model.train()
    return sum(losses) / len(losses)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # DDP imports torch.distributed.nn, whose functions take ``group=group.WORLD`` as a default
        # argument. Imported after the group exists, they hold it for good: destroy_process_group
        # then cannot free it, and gloo's threads live on into interpreter shutdown, where a CI run
        # aborted ("terminate called without an active exception"). Imported first, the default is
        # None and destroy_process_group frees the group.
        import torch.distributed.nn  # noqa: F401

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def autocast_dtype(precision: str, device_type: str, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """The dtype ``precision`` computes the products in on a device, or None for float32 throughout.

    "auto" is bf16 on CUDA cards with bf16 tensor cores (compute capability 8.0 and up: A100, L4,
    H100), fp16 on older CUDA cards (T4, V100: fp16 tensor cores, bf16 only emulated) and float32
    elsewhere (CPU, Apple MPS). ``capability`` is the CUDA card's, read from the device if not given.
    """
    if precision == "auto":
        if device_type != "cuda":
            return None
        return torch.bfloat16 if (capability or torch.cuda.get_device_capability()) >= (8, 0) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _autocast(device: torch.device, amp: torch.dtype | None):
    """Autocast to ``amp`` on ``device``, or nothing when ``amp`` is None."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


class _Objective(torch.nn.Module):
    """Model and loss as one module: what a step differentiates, and what ``torch.compile`` compiles.

    Eager, the loss writes its log-probabilities over the logits (``reuse_logits``): nothing else
    reads them. Compiled, the compiler plans the memory itself; handing it that mutation made a
    DDP run drift from one process (a test holds the two equal), so it is left out there.
    """

    def __init__(self, model: torch.nn.Module, fused: bool, compiled: bool = False) -> None:
        super().__init__()
        self.model, self.fused, self.reuse = model, fused, fused and not compiled

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y`` ``(batch, seq)`` ids -> the mean next-token loss."""
        return cross_entropy(self.model(x), y, fused=self.fused, reuse_logits=self.reuse)


class _StopSignals:
    """While active, SIGINT and SIGTERM only record that a stop was asked for.

    The loop looks at :attr:`signum` between steps, so a checkpoint never holds half a step. A
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

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class _Run:
    """The state of one training run, and the steps ``train`` reads top to bottom."""

    # -- set-up ------------------------------------------------------------------------------------
    def __init__(self, config: TrainConfig) -> None:
        self.config = c = config
        self.rank, self.world = _distributed()
        if c.batch_size % (self.world * c.grad_accum_steps):
            n = self.world * c.grad_accum_steps
            raise ValueError(f"batch_size {c.batch_size} must divide by processes x grad_accum_steps = {n}")
        self.micro = c.batch_size // (self.world * c.grad_accum_steps)
        m = c.model
        self.train_tokens = load_tokens(c.train_path, m.vocab_size, m.context_length)
        self.valid_tokens = load_tokens(c.valid_path, m.vocab_size, m.context_length) if c.valid_path else None
        self.device = pick_device(None if c.device == "auto" else c.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
            torch.cuda.set_device(self.device)
        capability = torch.cuda.get_device_capability(self.device) if self.device.type == "cuda" else None
        self.amp = autocast_dtype(c.precision, self.device.type, capability)
        # fp16's range is narrow: the loss is scaled up so small gradients do not flush to zero, and a
        # step whose gradients overflow is skipped and the scale lowered (bf16 has float32's range)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        if self.device.type == "cuda":  # fp32 matrix products on tensor cores (TF32), as PyTorch advises for training
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        torch.manual_seed(c.seed)
        self.model = TransformerLM(m, device=self.device)
        self.model.check_ids = False  # load_tokens has checked every id of both files against vocab_size
        # MFU means something against a GPU's peak only; on a CPU it is not logged
        self.flops_per_token = training_flops_per_token(m)
        self.peak = None
        if self.device.type == "cuda":
            try:
                dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, "fp32")
                self.peak = peak_flops(torch.cuda.get_device_name(self.device), dtype)
            except ValueError:
                pass
        self.fused = m.kernels == "fused"  # the fast path: fused loss and AdamW as well
        self.optimizer = AdamW(self.model.parameters(), lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay,
                               fused=self.fused)
        self.out = Path(c.out_dir)
        self.ckpt, self.log_path = self.out / "checkpoint.pt", self.out / "log.jsonl"
        self.gen = torch.Generator().manual_seed(c.seed)
        self.completed, self.history, self.tokens_seen = 0, [], 0
        self.saved: int | None = None  # iteration of the checkpoint on disk written by this run
        self.last_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.t0 = time.perf_counter()

    # -- resume, or refuse to clobber an earlier run -------------------------------------------------
    def resume_or_start(self) -> None:
        c = self.config
        if c.resume and self.ckpt.exists():
            state = load_checkpoint(self.ckpt, self.model, self.optimizer, model_config=c.model.to_dict())
            self.completed = self.saved = state["iteration"]
            self.gen.set_state(state["extra"]["batch_rng"])
            self.history = state["extra"]["history"]
            self.tokens_seen = state["extra"]["tokens_seen"]
            if "grad_scaler" in state["extra"]:
                self.scaler.load_state_dict(state["extra"]["grad_scaler"])
            if self.rank == 0:  # the log restarts from what the checkpoint knew
                self.log_path.write_text("".join(json.dumps(r) + "\n" for r in self.history))
        else:
            earlier = self.ckpt.exists() or (self.log_path.exists() and self.log_path.stat().st_size > 0)
            if earlier and not c.resume and not c.overwrite:
                raise ValueError(
                    f"{self.out} holds an earlier run (checkpoint.pt or log.jsonl); to keep it, continue it with "
                    "resume=true or choose a new out_dir; to delete it and start again, pass overwrite=true"
                )
            if self.rank == 0:
                self.out.mkdir(parents=True, exist_ok=True)
                self.ckpt.unlink(missing_ok=True)
                self.log_path.write_text("")
        # DDP wraps the model, and compilation wraps DDP and the loss together, so the compiled
        # graph includes the loss and DDP's all-reduce overlaps the compiled backward
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.objective: torch.nn.Module = _Objective(self.net, self.fused, compiled=c.compile)
        if c.compile:
            self.objective = torch.compile(self.objective)

    # -- one optimizer step ------------------------------------------------------------------------
    def step(self) -> dict:
        """Step ``completed + 1``: forward and backward over the micro-batches, clip, update.

        Returns the step's numbers; raises :class:`TrainingDiverged` before updating on a
        non-finite loss.
        """
        c, step = self.config, self.completed
        lr = cosine_lr(step, c.lr, c.min_lr, c.warmup_steps, c.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # one global batch of window starts, drawn identically in every process; each takes its slice
        starts = torch.randint(0, len(self.train_tokens) - c.model.context_length, (c.batch_size,), generator=self.gen)
        mine = starts.view(self.world, c.grad_accum_steps, self.micro)[self.rank]
        loss_sum = torch.zeros((), device=self.device)
        for i in range(c.grad_accum_steps):
            x, y = batch_from_starts(self.train_tokens, mine[i], c.model.context_length, self.device)
            sync = i == c.grad_accum_steps - 1 or self.world == 1
            ctx = self.net.no_sync() if (self.world > 1 and not sync) else nullcontext()
            with ctx:
                with _autocast(self.device, self.amp):
                    loss = self.objective(x, y) / c.grad_accum_steps
                self.scaler.scale(loss).backward()  # outside autocast: gradients take their parameters' dtype
            loss_sum += loss.detach()
        self.last_batch = (x, y)
        if self.world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= self.world
        train_loss = loss_sum.item()
        if not math.isfinite(train_loss):
            kept = f"The last good checkpoint is {self.ckpt} (step {self.saved})." if self.saved else "No checkpoint was written."
            raise TrainingDiverged(f"loss is {train_loss} at step {step + 1} (lr {lr:.3g}); stopped. {kept}", self.history)
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = clip_grad_norm(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)  # skipped when an fp16 gradient overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.completed = step + 1
        self.tokens_seen += c.batch_size * c.model.context_length
        return {"step": self.completed, "tokens": self.tokens_seen, "wall_s": round(time.perf_counter() - self.t0, 3),
                "lr": lr, "train_loss": train_loss, "grad_norm": float(grad_norm)}

    # -- evaluate and log --------------------------------------------------------------------------
    def evaluate_and_log(self, numbers: dict, bar: tqdm) -> None:
        c, done = self.config, self.completed
        final = done == c.max_steps
        if not (done % c.log_every == 0 or done % c.eval_every == 0 or final):
            return
        record = dict(numbers)
        if self.peak is not None:  # on a GPU: model FLOPs utilisation since the last record (evaluation left out)
            last = self.history[-1] if self.history else {"tokens": 0, "wall_s": 0.0}
            seconds = record["wall_s"] - last.get("train_end_s", last["wall_s"])
            if seconds > 0 and record["tokens"] > last["tokens"]:
                record["mfu"] = round((record["tokens"] - last["tokens"]) * self.flops_per_token / seconds / self.peak, 4)
        if self.valid_tokens is not None and (done % c.eval_every == 0 or final):
            record["valid_loss"] = evaluate(self.model, self.valid_tokens, c, self.device, self.amp)
            if self.peak is not None:
                record["train_end_s"] = round(time.perf_counter() - self.t0, 3)
        self.history.append(record)
        if self.rank == 0:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            shown = {"loss": f"{record['train_loss']:.3f}"}
            if "valid_loss" in record:
                shown["valid"] = f"{record['valid_loss']:.3f}"
            bar.set_postfix(shown)

    # -- checkpoint --------------------------------------------------------------------------------
    @torch.no_grad()
    def _sound(self) -> bool:
        """Weights finite, and a finite loss on the last batch: a checkpoint worth resuming from."""
        if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
            return False
        if self.last_batch is None:
            return True
        x, y = self.last_batch
        with _autocast(self.device, self.amp):
            return math.isfinite(cross_entropy(self.model(x), y, fused=self.fused, reuse_logits=True).item())

    def checkpoint(self) -> None:
        """Save the state after step ``completed``, if it is sound; else stop as diverged."""
        if self.completed == self.saved:
            return
        if not self._sound():
            kept = f"the last good checkpoint is {self.ckpt} (step {self.saved})" if self.saved else "no checkpoint was written"
            raise TrainingDiverged(
                f"after step {self.completed} (lr {self.history[-1]['lr'] if self.history else self.config.lr:.3g}) the weights "
                f"are not finite or give a non-finite loss; not saved, {kept}", self.history)
        if self.rank == 0:
            extra = {"train_config": json.loads(json.dumps(self.config.to_dict())), "batch_rng": self.gen.get_state(),
                     "history": self.history, "tokens_seen": self.tokens_seen, "grad_scaler": self.scaler.state_dict()}
            save_checkpoint(self.ckpt, self.model, self.optimizer, self.completed, model_config=self.config.model.to_dict(),
                            extra=extra)
        self.saved = self.completed

    def stop_requested(self, signals: _StopSignals) -> int | None:
        """The signal that asked to stop, agreed by all processes (so all stop at the same step)."""
        if self.world == 1:
            return signals.signum
        flag = torch.tensor(float(signals.signum or 0), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def train(config: TrainConfig) -> list[dict]:
    """Run training; return the log records (also written to ``out_dir/log.jsonl``)."""
    run = _Run(config)
    run.resume_or_start()
    c = config
    bar = tqdm(total=c.max_steps, initial=run.completed, desc="train", unit="step", disable=not (c.progress and run.rank == 0))
    with _StopSignals() as signals, bar:
        while run.completed < c.max_steps:
            numbers = run.step()
            run.evaluate_and_log(numbers, bar)
            bar.update()
            if c.checkpoint_every and run.completed % c.checkpoint_every == 0:
                run.checkpoint()
            signum = run.stop_requested(signals)
            if signum is not None and run.completed < c.max_steps:
                run.checkpoint()
                name = signal.Signals(signum).name
                message = f"{name}: checkpoint saved after step {run.completed} in {run.ckpt}; resume with resume=true"
                if run.rank == 0:
                    print(f"\n{message}", file=sys.stderr)
                raise TrainingInterrupted(message, signum, run.completed)
        run.checkpoint()
    return run.history


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmcore.train", description="Train a TransformerLM.")
    parser.add_argument("--config", help="YAML or JSON file with TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. max_steps=100 model.d_model=256")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        history = train(config)
    except (ValueError, CheckpointError, TrainingDiverged, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        return 128 + e.signum
    except KeyboardInterrupt:
        return 130
    finally:
        if dist.is_initialized():
            if "torch._dynamo" in sys.modules:  # compiled graphs keep DDP, and with it the group, alive (torch 2.15):
                torch._dynamo.reset()  # drop them, and collect the cycles that still hold the group, first
                gc.collect()
            dist.destroy_process_group()
    last = history[-1] if history else {}
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
