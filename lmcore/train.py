"""Training: the plain loop a chapter reads, and the robust run built on it.

    python -m lmcore.train --config configs/tinystories-17m.yaml max_steps=100 model.d_model=256
    torchrun --nproc_per_node 2 -m lmcore.train --config ...      # DistributedDataParallel

:func:`train_loop` is the whole algorithm and nothing else: sample a batch, forward, loss,
backward, clip, step, schedule, evaluate, checkpoint. :func:`train` is that loop plus what a real
run needs, each in a named piece, and gives the same losses (a test holds them equal):

- **resume** (``_Run.resume_or_start``): continue a run from its checkpoint exactly, batches
  included, or refuse to overwrite an earlier run unless told ``overwrite=true``;
- **run safety** (:mod:`lmcore.safety`): Ctrl-C and SIGTERM stop at a step boundary after a
  checkpoint; a non-finite loss stops the run; only sound checkpoints are written;
- **mixed precision** (:func:`lmcore.device.autocast_dtype`): bf16 or fp16 autocast on a GPU, with
  a gradient scaler for fp16, and gradient accumulation over micro-batches;
- **DDP**: under ``torchrun`` each process takes its slice of every global batch;
- **compile**: ``torch.compile`` of model and loss together;
- **logging**: one JSON line per logged step, a progress bar, and MFU on a GPU.

Both take their model, optimiser, loss and clipping from :func:`build`, where the one switch
between the teaching code and the fast layer (``TrainConfig.kernels``) is read.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .accounting import mfu, training_flops_per_token
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig, load_config
from .dataset import batch_from_starts, get_batch, load_tokens
from .device import autocast, autocast_dtype, pick_device
from .kernels import fused_cross_entropy, use_fused_kernels
from .model import TransformerLM
from .nn import cross_entropy
from .optim import AdamW, clip_grad_norm, cosine_lr
from .safety import StopSignals, TrainingDiverged, TrainingInterrupted, is_sound

__all__ = ["Parts", "build", "evaluate", "train_loop", "train", "main"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Parts:
    """What a run trains with: the model, its optimiser, the loss ``(logits, targets) -> mean``
    and the gradient clipping ``(parameters, max_norm) -> norm before clipping``."""

    model: TransformerLM
    optimizer: torch.optim.Optimizer
    loss: Loss
    clip: Callable[..., torch.Tensor]


def build(config: TrainConfig, device: torch.device) -> Parts:
    """The model (seeded with ``config.seed``), optimiser, loss and clipping of a run.

    ``kernels="math"``: the teaching code the chapters print. ``kernels="fused"`` (the default):
    the same model with :func:`lmcore.kernels.use_fused_kernels`, the fused cross-entropy,
    PyTorch's fused AdamW and its foreach clipping, which compute the same numbers faster.
    """
    c = config
    torch.manual_seed(c.seed)
    model = TransformerLM(c.model, device=device)
    hyper = {"lr": c.lr, "betas": c.betas, "eps": c.eps, "weight_decay": c.weight_decay}
    if c.kernels == "math":
        return Parts(model, AdamW(model.parameters(), **hyper), cross_entropy, clip_grad_norm)
    use_fused_kernels(model)
    # eager, the loss may write its log-probabilities over the logits, which nothing reads again;
    # compiled, the compiler plans memory itself (that mutation made a compiled DDP run drift)
    loss = fused_cross_entropy if c.compile else functools.partial(fused_cross_entropy, reuse_logits=True)
    optimizer = torch.optim.AdamW(model.parameters(), **hyper, fused=device.type in ("cuda", "cpu", "mps"))
    return Parts(model, optimizer, loss, torch.nn.utils.clip_grad_norm_)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: np.ndarray, config: TrainConfig, device: torch.device,
             loss: Loss = cross_entropy, amp: torch.dtype | None = None) -> float:
    """Mean loss on ``eval_batches`` fixed batches of validation windows (the same ones every
    call), under autocast to ``amp`` (bf16 or fp16) when given."""
    model.eval()
    gen = torch.Generator().manual_seed(config.seed + 1)
    per = max(1, config.batch_size // config.grad_accum_steps)
    losses = []
    for _ in range(config.eval_batches):
        x, y = get_batch(tokens, per, config.model.context_length, device, gen)
        with autocast(device, amp):
            losses.append(loss(model(x), y).item())
    model.train()
    return sum(losses) / len(losses)


def train_loop(config: TrainConfig) -> list[dict]:
    """The training loop and nothing else: one process, float32, no resume, no signals.

    Returns one record per logged step (``step``, ``lr``, ``train_loss``, ``grad_norm``, and
    ``valid_loss`` every ``eval_every`` steps); saves ``out_dir/checkpoint.pt`` at the end.
    """
    c, ctx = config, config.model.context_length
    device = pick_device(None if c.device == "auto" else c.device)
    train_tokens = load_tokens(c.train_path, c.model.vocab_size, ctx)
    valid_tokens = load_tokens(c.valid_path, c.model.vocab_size, ctx) if c.valid_path else None
    run = build(c, device)
    gen = torch.Generator().manual_seed(c.seed)  # the batches' own random numbers: a rerun draws the same ones
    history = []
    for step in range(c.max_steps):
        lr = cosine_lr(step, c.lr, c.min_lr, c.warmup_steps, c.max_steps)  # warm up, then cosine decay
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, c.batch_size, ctx, device, gen)  # random windows, y shifted by one
        loss = run.loss(run.model(x), y)
        loss.backward()
        grad_norm = run.clip(run.model.parameters(), c.grad_clip)  # one bad batch cannot throw the weights far
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % c.log_every == 0 or done % c.eval_every == 0 or done == c.max_steps:
            record = {"step": done, "lr": lr, "train_loss": loss.item(), "grad_norm": float(grad_norm)}
            if valid_tokens is not None and (done % c.eval_every == 0 or done == c.max_steps):
                record["valid_loss"] = evaluate(run.model, valid_tokens, c, device, run.loss)
            history.append(record)
    save_checkpoint(Path(c.out_dir) / "checkpoint.pt", run.model, run.optimizer, c.max_steps, model_config=c.model.to_dict())
    return history


# -- the robust run --------------------------------------------------------------------------------


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


class _Objective(torch.nn.Module):
    """Model and loss as one module: what a step differentiates, and what ``torch.compile`` compiles
    (so the compiled graph includes the loss, and DDP's all-reduce overlaps its backward)."""

    def __init__(self, net: torch.nn.Module, loss: Loss) -> None:
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y`` ``(batch, seq)`` ids -> the mean next-token loss."""
        return self.loss(self.net(x), y)


class _Run:
    """One robust run: :func:`train_loop`'s steps, with resume, precision, DDP, compile and safety."""

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
        self.device = _process_device(c, self.rank, self.world)
        self.amp, self.scaler = _precision(c, self.device)
        self.parts = build(c, self.device)
        self.model, self.optimizer = self.parts.model, self.parts.optimizer
        self.model.check_ids = False  # load_tokens has checked every id of both files against vocab_size
        self.mfu = _mfu_meter(c, self.device, self.amp)
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
        # DDP wraps the model, and compilation wraps DDP and the loss together
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.objective: torch.nn.Module = _Objective(self.net, self.parts.loss)
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
            with self.net.no_sync() if (self.world > 1 and not sync) else nullcontext():
                with autocast(self.device, self.amp):
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
        grad_norm = self.parts.clip(self.model.parameters(), c.grad_clip)
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
        if self.mfu is not None:  # on a GPU: model FLOPs utilisation since the last record (evaluation left out)
            last = self.history[-1] if self.history else {"tokens": 0, "wall_s": 0.0}
            seconds = record["wall_s"] - last.get("train_end_s", last["wall_s"])
            if seconds > 0 and record["tokens"] > last["tokens"]:
                record["mfu"] = round(self.mfu((record["tokens"] - last["tokens"]) / seconds), 4)
        if self.valid_tokens is not None and (done % c.eval_every == 0 or final):
            record["valid_loss"] = evaluate(self.model, self.valid_tokens, c, self.device, self.parts.loss, self.amp)
            if self.mfu is not None:
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
    def _last_loss(self) -> torch.Tensor:
        x, y = self.last_batch
        with torch.no_grad(), autocast(self.device, self.amp):
            return self.parts.loss(self.model(x), y)

    def checkpoint(self) -> None:
        """Save the state after step ``completed``, if it is sound; else stop as diverged."""
        if self.completed == self.saved:
            return
        if not is_sound(self.model, self._last_loss if self.last_batch is not None else None):
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

    def stop_requested(self, signals: StopSignals) -> int | None:
        """The signal that asked to stop, agreed by all processes (so all stop at the same step)."""
        if self.world == 1:
            return signals.signum
        flag = torch.tensor(float(signals.signum or 0), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def _process_device(config: TrainConfig, rank: int, world: int) -> torch.device:
    """This process's device: the config's (or the best there is), one GPU per process under DDP."""
    device = pick_device(None if config.device == "auto" else config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    return device


def _precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """The autocast dtype (None: float32) and the gradient scaler, enabled for fp16 only."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    amp = autocast_dtype(config.precision, device.type, capability)
    if device.type == "cuda":  # fp32 matrix products on tensor cores (TF32), as PyTorch advises for training
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # fp16's range is narrow: the loss is scaled up so small gradients do not flush to zero, and a
    # step whose gradients overflow is skipped and the scale lowered (bf16 has float32's range)
    return amp, torch.amp.GradScaler(device.type, enabled=amp == torch.float16)


def _mfu_meter(config: TrainConfig, device: torch.device, amp: torch.dtype | None) -> Callable[[float], float] | None:
    """tokens/s -> model FLOPs utilisation (:func:`lmcore.accounting.mfu`), on a GPU whose peak is
    known; None elsewhere (a CPU has no datasheet peak to measure against)."""
    if device.type != "cuda":
        return None
    name, dtype = torch.cuda.get_device_name(device), {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
    per_token = training_flops_per_token(config.model)
    try:
        mfu(1.0, name, dtype)
    except ValueError:
        return None
    return lambda tokens_per_second: mfu(tokens_per_second * per_token, name, dtype)


def train(config: TrainConfig) -> list[dict]:
    """Run training; return the log records (also written to ``out_dir/log.jsonl``)."""
    run = _Run(config)
    run.resume_or_start()
    c = config
    bar = tqdm(total=c.max_steps, initial=run.completed, desc="train", unit="step", disable=not (c.progress and run.rank == 0))
    with StopSignals() as signals, bar:
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
