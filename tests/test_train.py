"""The training loop: learning, logs, exact resume, divergence, bad input, and DDP on CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lmcore import train as train_mod
from lmcore.checkpoint import CheckpointError, load_checkpoint
from lmcore.train import TrainingDiverged, load_config, train

MODEL = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}


@pytest.fixture()
def data(tmp_path):
    """A learnable sequence: a repeating pattern with some noise."""
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(0, 60, 3), 400).astype(np.uint16)
    noise = rng.random(ids.size) < 0.05
    ids[noise] = rng.integers(0, 64, noise.sum())
    ids[:6000].tofile(tmp_path / "train.uint16")
    ids[6000:].tofile(tmp_path / "valid.uint16")
    return tmp_path


def config(data, **over):
    base = dict(train_path=str(data / "train.uint16"), valid_path=str(data / "valid.uint16"), out_dir=str(data / "run"),
                model=MODEL, batch_size=8, max_steps=12, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=6, eval_batches=2,
                log_every=1, device="cpu", progress=False)
    return train_mod.TrainConfig(**{**base, **over})


def test_learns_and_logs(data):
    history = train(config(data, max_steps=30))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    lines = [json.loads(line) for line in (data / "run" / "log.jsonl").read_text().splitlines()]
    assert lines == history and [r["step"] for r in lines] == list(range(1, 31))
    assert {"step", "tokens", "wall_s", "lr", "train_loss"} <= set(lines[0]) and "valid_loss" in lines[5]
    assert load_checkpoint(data / "run" / "checkpoint.pt")["iteration"] == 30


def test_resume_reproduces_the_uninterrupted_losses(data, monkeypatch):
    straight = train(config(data, out_dir=str(data / "a"), grad_accum_steps=2))
    calls = {"n": 0}
    real = train_mod.clip_grad_norm

    def interrupt_at_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "clip_grad_norm", interrupt_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(config(data, out_dir=str(data / "b"), grad_accum_steps=2))
    assert load_checkpoint(data / "b" / "checkpoint.pt")["iteration"] == 6
    monkeypatch.setattr(train_mod, "clip_grad_norm", real)
    resumed = train(config(data, out_dir=str(data / "b"), grad_accum_steps=2, resume=True))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
    assert [r.get("valid_loss") for r in resumed] == [r.get("valid_loss") for r in straight]


def test_nan_stops_with_a_clear_error_and_keeps_the_last_checkpoint(data, monkeypatch):
    real = train_mod.cross_entropy
    calls = {"n": 0}

    def nan_from_step_5(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] > 4 + 2 else loss  # two eval batches run after step 4

    monkeypatch.setattr(train_mod, "cross_entropy", nan_from_step_5)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 5.*last good checkpoint") as err:
        train(config(data, checkpoint_every=4, eval_every=4))
    assert len(err.value.history) == 5 - 1
    assert load_checkpoint(data / "run" / "checkpoint.pt")["iteration"] == 4


def test_bad_input_fails_before_compute(data):
    with pytest.raises(ValueError, match="unknown config key 'max_step'"):
        load_config(None, ["max_step=3"])
    with pytest.raises(ValueError, match="unknown config key 'model.width'"):
        load_config(None, ["model.width=3"])
    with pytest.raises(ValueError, match="vocab_size is 32"):
        train(config(data, model={**MODEL, "vocab_size": 32}))
    train(config(data, max_steps=2))
    other = config(data, model={**MODEL, "d_model": 64}, resume=True)
    with pytest.raises(CheckpointError, match="d_model: checkpoint 32 vs model 64"):
        train(other)


def test_config_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 50\nmodel:\n  d_model: 128\n  num_heads: 4\nbetas: [0.9, 0.99]\n")
    cfg = load_config(tmp_path / "c.yaml", ["max_steps=7", "model.num_layers=2", "out_dir=runs/x"])
    assert (cfg.max_steps, cfg.model.d_model, cfg.model.num_layers, cfg.out_dir, cfg.betas) == (7, 128, 2, "runs/x", (0.9, 0.99))
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.01}))
    assert load_config(tmp_path / "c.json").lr == 0.01


def test_command_line(data):
    run = subprocess.run([sys.executable, "-m", "lmcore.train", f"train_path={data / 'train.uint16'}",
                          f"valid_path={data / 'valid.uint16'}", f"out_dir={data / 'cli'}", "max_steps=3", "batch_size=4",
                          "eval_every=3", "eval_batches=1", "progress=false", *[f"model.{k}={v}" for k, v in MODEL.items()]],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["step"] == 3
    bad = subprocess.run([sys.executable, "-m", "lmcore.train", "nope=1"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown config key 'nope'" in bad.stderr


def test_ddp_two_processes_equal_one(data):
    """torchrun with 2 CPU processes (gloo) and one process, same global batch: same losses."""
    common = [f"train_path={data / 'train.uint16'}", f"valid_path={data / 'valid.uint16'}", "max_steps=4", "batch_size=8",
              "eval_every=4", "eval_batches=1", "log_every=1", "progress=false", "device=cpu",
              *[f"model.{k}={v}" for k, v in MODEL.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "lmcore.train", f"out_dir={data / 'one'}", *common],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lmcore.train", f"out_dir={data / 'two'}", *common], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = [json.loads(x) for x in (data / "one" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (data / "two" / "log.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-5)
        assert rb["tokens"] == ra["tokens"]
    assert b[-1]["valid_loss"] == pytest.approx(a[-1]["valid_loss"], abs=1e-5)
    torch.testing.assert_close(load_checkpoint(data / "two" / "checkpoint.pt")["model"]["lm_head.weight"],
                               load_checkpoint(data / "one" / "checkpoint.pt")["model"]["lm_head.weight"], atol=1e-5, rtol=0)


def test_shipped_configs_load():
    from pathlib import Path

    for path in Path(__file__).resolve().parent.parent.glob("configs/*.yaml"):
        cfg = load_config(path)
        assert cfg.batch_size * cfg.max_steps * cfg.model.context_length > 0, path
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tinystories-17m.yaml")
    assert cfg.batch_size * cfg.max_steps * cfg.model.context_length == 327_680_000


def test_sweep_runs_variants_and_records_divergence(data, monkeypatch):
    from lmcore.train import sweep

    real = train_mod.cross_entropy

    def nan_when_lr_is_huge(logits, targets):
        loss = real(logits, targets)
        return loss * float("nan") if logits.abs().max() > 1e3 else loss

    monkeypatch.setattr(train_mod, "cross_entropy", nan_when_lr_is_huge)
    results = sweep(config(data, max_steps=6, eval_every=3), {"base": {}, "post": {"model.norm": "post"}, "huge": {"lr": 50.0}})
    assert [r["step"] for r in results["base"]] == list(range(1, 7))
    assert results["post"][-1]["train_loss"] != results["base"][-1]["train_loss"]
    assert results["huge"][-1]["diverged"] and results["huge"][-1]["train_loss"] == float("inf")
    assert (data / "run" / "post" / "log.jsonl").exists()
