"""The training loop, its config, and its command line.

    python -m lmcore.train --config configs/tinystories-17m.yaml max_steps=100 model.d_model=256
    torchrun --nproc_per_node 2 -m lmcore.train --config ...      # DistributedDataParallel

One ``TrainConfig`` (a dataclass, loadable from YAML or JSON, overridable with ``key=value``)
says everything about a run. The loop samples random windows from memory-mapped ``uint16`` ids,
runs AdamW with a cosine schedule and gradient clipping, accumulates gradients over micro-batches,
evaluates on validation data every ``eval_every`` steps, and logs one JSON line per logged step.
A non-finite loss stops the run with :class:`TrainingDiverged` and leaves the last good
checkpoint alone; Ctrl-C saves a checkpoint before exiting. On a GPU it uses bf16 autocast and,
if asked, ``torch.compile``. Under ``torchrun`` each process takes its slice of every global batch,
so the losses equal one process's with the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .dataset import batch_from_starts, load_tokens
from .device import pick_device
from .model import ModelConfig, TransformerLM
from .nn import cross_entropy
from .optim import AdamW, clip_grad_norm, cosine_lr

__all__ = ["TrainConfig", "TrainingDiverged", "load_config", "train", "evaluate", "sweep", "main"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. ``history`` holds the log records up to that step."""

    def __init__(self, message: str, history: list[dict]) -> None:
        super().__init__(message)
        self.history = history


@dataclass
class TrainConfig:
    """A training run. Paths are relative to the working directory."""

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
    checkpoint_every: int = 0  # 0: only at the end (and on Ctrl-C)
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    bf16: str = "auto"  # "auto": autocast to bf16 on CUDA; "on" or "off" to force
    resume: bool = False
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
        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"bf16 must be auto, on or off, got {self.bf16!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a path


def _apply(data: dict, key: str, value: Any) -> None:
    """Set ``a.b=value`` in nested dicts, refusing keys the configs do not have."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    head, _, rest = key.partition(".")
    if head not in fields:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(fields))}")
    if rest:
        if head != "model" or rest not in model_fields:
            raise ValueError(f"unknown config key {key!r}; model keys: {', '.join(sorted(model_fields))}")
        data.setdefault("model", {})[rest] = value
    else:
        data[head] = value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A ``TrainConfig`` from a YAML or JSON file plus ``key=value`` overrides (``model.d_model=256``).

    Unknown keys raise ``ValueError`` before anything else happens.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
        for key, value in raw.items():
            if key == "model" and isinstance(value, dict):
                for k, v in value.items():
                    _apply(data, f"model.{k}", v)
            else:
                _apply(data, key, value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        _apply(data, key.strip(), _parse_value(value.strip()))
    return TrainConfig(**data)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens, config: TrainConfig, device: torch.device, autocast: bool) -> float:
    """Mean loss on ``eval_batches`` fixed batches of validation windows (the same ones every call)."""
    model.eval()
    gen = torch.Generator().manual_seed(config.seed + 1)
    losses = []
    per = max(1, config.batch_size // config.grad_accum_steps)
    for _ in range(config.eval_batches):
        starts = torch.randint(0, len(tokens) - config.model.context_length, (per,), generator=gen)
        x, y = batch_from_starts(tokens, starts, config.model.context_length, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            losses.append(cross_entropy(model(x), y).item())
    model.train()
    return sum(losses) / len(losses)


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(config: TrainConfig) -> list[dict]:
    """Run training; return the log records (also written to ``out_dir/log.jsonl``)."""
    rank, world = _distributed()
    if config.batch_size % (world * config.grad_accum_steps):
        n = world * config.grad_accum_steps
        raise ValueError(f"batch_size {config.batch_size} must divide by processes x grad_accum_steps = {n}")
    c = config.model
    train_tokens = load_tokens(config.train_path, c.vocab_size)
    valid_tokens = load_tokens(config.valid_path, c.vocab_size) if config.valid_path else None
    device = pick_device(None if config.device == "auto" else config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    autocast = config.bf16 == "on" or (config.bf16 == "auto" and device.type == "cuda")

    torch.manual_seed(config.seed)
    model = TransformerLM(c, device=device)
    optimizer = AdamW(model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)
    out = Path(config.out_dir)
    ckpt = out / "checkpoint.pt"
    log_path = out / "log.jsonl"
    gen = torch.Generator().manual_seed(config.seed)
    start, history, tokens_seen = 0, [], 0
    if config.resume and ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer, model_config=c.to_dict())
        start = state["iteration"]
        gen.set_state(state["extra"]["batch_rng"])
        history = state["extra"]["history"]
        tokens_seen = state["extra"]["tokens_seen"]
        if rank == 0:  # the log restarts from what the checkpoint knew
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")

    net: torch.nn.Module = model
    if config.compile:
        net = torch.compile(net)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    completed, batch_rng = start, gen.get_state()  # the last finished step, and the RNG state after it

    def checkpoint(iteration: int) -> None:
        gen.set_state(batch_rng)
        if rank == 0:
            extra = {"train_config": json.loads(json.dumps(config.to_dict())), "batch_rng": gen.get_state(),
                     "history": history, "tokens_seen": tokens_seen}
            save_checkpoint(ckpt, model, optimizer, iteration, model_config=c.to_dict(), extra=extra)

    micro = config.batch_size // (world * config.grad_accum_steps)
    t_ctx = c.context_length
    bar = tqdm(total=config.max_steps, initial=start, desc="train", unit="step", disable=not (config.progress and rank == 0))
    t0 = time.perf_counter()
    try:
        for step in range(start, config.max_steps):
            lr = cosine_lr(step, config.lr, config.min_lr, config.warmup_steps, config.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # one global batch of window starts, drawn identically in every process; each takes its slice
            starts = torch.randint(0, len(train_tokens) - t_ctx, (config.batch_size,), generator=gen)
            mine = starts.view(world, config.grad_accum_steps, micro)[rank]
            loss_sum = torch.zeros((), device=device)
            for i in range(config.grad_accum_steps):
                x, y = batch_from_starts(train_tokens, mine[i], t_ctx, device)
                sync = i == config.grad_accum_steps - 1 or world == 1
                ctx = net.no_sync() if (world > 1 and not sync) else nullcontext()
                with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = cross_entropy(net(x), y) / config.grad_accum_steps
                    loss.backward()
                loss_sum += loss.detach()
            if world > 1:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            train_loss = loss_sum.item()
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"loss is {train_loss} at step {step + 1} (lr {lr:.3g}); stopped. "
                    + (f"The last good checkpoint is {ckpt}." if ckpt.exists() else "No checkpoint was written."),
                    history,
                )
            grad_norm = clip_grad_norm(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            completed, batch_rng = step + 1, gen.get_state()
            tokens_seen += config.batch_size * t_ctx
            done = step + 1
            record = None
            if done % config.log_every == 0 or done % config.eval_every == 0 or done == config.max_steps:
                record = {"step": done, "tokens": tokens_seen, "wall_s": round(time.perf_counter() - t0, 3), "lr": lr,
                          "train_loss": train_loss, "grad_norm": float(grad_norm)}
            if valid_tokens is not None and (done % config.eval_every == 0 or done == config.max_steps):
                record["valid_loss"] = evaluate(net, valid_tokens, config, device, autocast)
            if record is not None:
                history.append(record)
                if rank == 0:
                    with open(log_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    shown = {"loss": f"{train_loss:.3f}"}
                    if "valid_loss" in record:
                        shown["valid"] = f"{record['valid_loss']:.3f}"
                    bar.set_postfix(shown)
            bar.update()
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                checkpoint(done)
        checkpoint(config.max_steps)
    except KeyboardInterrupt:
        checkpoint(completed)
        bar.close()
        print(f"\ninterrupted: checkpoint saved after step {completed} in {ckpt}; resume with resume=true", file=sys.stderr)
        raise
    finally:
        bar.close()
    return history


def sweep(
    base: TrainConfig, variants: dict[str, dict[str, Any]], out_root: str | os.PathLike | None = None
) -> dict[str, list[dict]]:
    """Train ``base`` once per variant (``{"label": {"lr": 1e-2, "model.norm": "post"}}``).

    Returns each run's log records. A run that diverges keeps its records up to the failure and
    ends with a record whose ``train_loss`` is ``inf`` and ``diverged`` is True, so plots show
    where it broke and the sweep goes on.
    """
    results = {}
    for label, overrides in variants.items():
        data = base.to_dict()
        data["model"] = dict(data["model"])
        for key, value in overrides.items():
            _apply(data, key, value)
        slug = "".join(ch if ch.isalnum() else "-" for ch in label)
        data["out_dir"] = str(Path(out_root or base.out_dir) / slug)
        try:
            results[label] = train(TrainConfig(**data))
        except TrainingDiverged as err:
            step = (err.history[-1]["step"] + 1) if err.history else 1
            results[label] = [*err.history, {"step": step, "train_loss": math.inf, "diverged": True}]
    return results


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
    except KeyboardInterrupt:
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    last = history[-1] if history else {}
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(last))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
