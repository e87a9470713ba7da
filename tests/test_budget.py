"""Runs sized to a time budget: the arithmetic exactly, and the timing on a real (tiny) run."""

import pytest

from lmcore.budget import fit_to_budget, seconds_per_step
from lmcore.optim import cosine_lr
from lmcore.train import TrainConfig

MODEL = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}


def config(data, **over):
    base = dict(train_path=str(data / "train.uint16"), valid_path=str(data / "valid.uint16"), out_dir=str(data / "run"),
                model=MODEL, batch_size=8, max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, eval_every=250,
                eval_batches=12, log_every=50, device="cpu", progress=False)
    return TrainConfig(**{**base, **over})


def test_fits_the_steps_and_evaluations_into_the_budget(data):
    c = config(data)
    # 8 evaluations of 12 forward passes at a third of 0.3 s each: 9.6 s; the other 290.4 s are 968 steps
    b = fit_to_budget(c, 300, per_step=0.3)
    assert b.config.max_steps == 968 and not b.capped
    assert b.config.warmup_steps == round(100 * 968 / 2000) and b.config.log_every == 24
    assert b.config.max_steps // b.config.eval_every == 8  # as many evaluations as the config asked for
    assert 968 * 0.3 + 8 * 12 * 0.3 / 3 <= 300
    # the schedule is the sized run's: it reaches min_lr at its own last step
    s = b.config
    assert cosine_lr(s.max_steps, s.lr, s.min_lr, s.warmup_steps, s.max_steps) == pytest.approx(s.min_lr)
    assert "968 steps" in str(b) and "300 ms a step" in str(b)


def test_a_fast_device_keeps_the_configs_length(data):
    b = fit_to_budget(config(data), 300, per_step=0.01)
    assert b.capped and b.config.max_steps == 2000 and b.config.warmup_steps == 100 and b.config.eval_every == 250


def test_a_budget_too_small_is_refused_in_one_line(data):
    with pytest.raises(ValueError, match=r"^a budget of 11 s fits 4 steps at 0.300 s a step; give at least 16 s"):
        fit_to_budget(config(data), 11, per_step=0.3)


def test_seconds_per_step_times_a_real_run_and_leaves_nothing_behind(data):
    c = config(data, max_steps=12, out_dir=str(data / "never"))
    t = seconds_per_step(c, steps=3, warmup=1)
    assert 0 < t < 10
    assert not (data / "never").exists()
    b = fit_to_budget(c, 1000 * t + 10)  # times the steps itself
    assert b.capped and b.config.max_steps == 12
