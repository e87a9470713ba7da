"""The training loop: learning, logs, exact resume, divergence, bad input, and DDP on CPU."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from lmcore import train as train_mod
from lmcore.checkpoint import CheckpointError, load_checkpoint
from lmcore.model import ModelConfig, TransformerLM
from lmcore.nn import default_d_ff
from lmcore.train import TrainingDiverged, TrainingInterrupted, autocast_dtype, load_config, train

MODEL = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}


def config(data, **over):
    base = dict(train_path=str(data / "train.uint16"), valid_path=str(data / "valid.uint16"), out_dir=str(data / "run"),
                model=MODEL, batch_size=8, max_steps=12, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=6, eval_batches=2,
                log_every=1, device="cpu", progress=False)
    return train_mod.TrainConfig(**{**base, **over})


@pytest.mark.parametrize("kernels", ["fused", "math"])
def test_the_plain_loop_and_train_give_the_same_losses(data, kernels):
    """train() is train_loop plus what a real run needs: on one process in float32 the same numbers."""
    from lmcore.train import train_loop

    plain = train_loop(config(data, out_dir=str(data / f"plain-{kernels}"), kernels=kernels))
    robust = train(config(data, out_dir=str(data / f"robust-{kernels}"), kernels=kernels))
    assert [r["step"] for r in plain] == [r["step"] for r in robust]
    for key in ("lr", "train_loss", "grad_norm", "valid_loss"):
        assert [r.get(key) for r in plain] == [r.get(key) for r in robust], key
    assert (data / f"plain-{kernels}" / "checkpoint.pt").exists()


def test_the_two_kernel_settings_train_alike(data):
    """The one switch: the fast layer (fused kernels, PyTorch's fused AdamW) follows the teaching code."""
    fused = train(config(data, out_dir=str(data / "k-fused"), kernels="fused"))
    math_ = train(config(data, out_dir=str(data / "k-math"), kernels="math"))
    assert [r["train_loss"] for r in fused] == pytest.approx([r["train_loss"] for r in math_], abs=1e-4)
    assert load_config(None, ["model.kernels=math"]).kernels == "math"  # where configs written before kept it


def test_learns_and_logs(data):
    history = train(config(data, max_steps=30))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    lines = [json.loads(line) for line in (data / "run" / "log.jsonl").read_text().splitlines()]
    assert lines == history and [r["step"] for r in lines] == list(range(1, 31))
    assert {"step", "tokens", "wall_s", "lr", "train_loss"} <= set(lines[0]) and "valid_loss" in lines[5]
    assert load_checkpoint(data / "run" / "checkpoint.pt")["iteration"] == 30


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


def test_shipped_configs_load():
    from pathlib import Path

    for path in Path(__file__).resolve().parent.parent.glob("configs/*.yaml"):
        cfg = load_config(path)
        assert cfg.batch_size * cfg.max_steps * cfg.model.context_length > 0, path
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tinystories-17m.yaml")
    assert cfg.batch_size * cfg.max_steps * cfg.model.context_length == 327_680_000


# -- nothing lost, nothing silently wrong (issue 12) -------------------------------------------------


def _weights(path):
    return load_checkpoint(path)["model"]


def _signal_after(delay: float, signum: int) -> threading.Thread:
    """Send a real signal to this process after ``delay`` seconds (the main thread receives it)."""
    thread = threading.Thread(target=lambda: (time.sleep(delay), os.kill(os.getpid(), signum)), daemon=True)
    thread.start()
    return thread


def test_signals_at_random_moments_resume_to_the_uninterrupted_weights(data):
    """Ctrl-C and SIGTERM at random moments (inside a step, inside evaluation, between steps):
    the checkpoint is taken at a step boundary, so resuming gives bit-identical weights and logs."""
    over = dict(max_steps=24, grad_accum_steps=2, eval_every=5, log_every=1)
    straight = train(config(data, out_dir=str(data / "straight"), **over))
    start = time.perf_counter()  # timed on a second run: the first pays one-time costs
    train(config(data, out_dir=str(data / "again"), **over))
    duration = time.perf_counter() - start
    want = _weights(data / "straight" / "checkpoint.pt")
    rng = random.Random(12)
    interrupted, late = 0, []
    # a signal that lands outside train() (before its handlers are in place, or after the run ended)
    # must not end pytest: note it here instead; train() puts its own handlers in place and back
    guard = {s: signal.signal(s, lambda signum, frame: late.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for k, signum in enumerate([signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM]):
            interrupted += _interrupt_and_resume(data, data / f"cut{k}", over, rng.uniform(0.2, 0.7) * duration, signum,
                                                 straight, want)
    finally:
        for s, handler in guard.items():
            signal.signal(s, handler)
    assert interrupted + len(late) == 4 and interrupted >= 2  # nearly all land inside the run


def _interrupt_and_resume(data, out, over, delay, signum, straight, want) -> int:
    """Train into ``out`` with a signal ``delay`` seconds in, then resume; check the result equals ``straight``."""
    thread = _signal_after(delay, signum)
    hit = 0
    try:
        train(config(data, out_dir=str(out), **over))
    except TrainingInterrupted as e:
        hit = 1
        assert e.signum == signum and load_checkpoint(out / "checkpoint.pt")["iteration"] == e.step < over["max_steps"]
        logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logged] == list(range(1, e.step + 1))
    thread.join()
    resumed = train(config(data, out_dir=str(out), resume=True, **over))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
    assert [r.get("valid_loss") for r in resumed] == [r.get("valid_loss") for r in straight]
    got = _weights(out / "checkpoint.pt")
    assert all(torch.equal(got[name], want[name]) for name in want)
    return hit


def test_interrupt_during_evaluation_keeps_that_steps_record(data, monkeypatch):
    real = train_mod.evaluate

    def evaluate_then_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the evaluation runs
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", evaluate_then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as err:
        train(config(data, eval_every=4, max_steps=12))
    assert err.value.step == 4
    logged = [json.loads(x) for x in (data / "run" / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 4 and "valid_loss" in logged[-1]
    assert load_checkpoint(data / "run" / "checkpoint.pt")["extra"]["history"] == logged


def test_sigterm_on_the_command_line_saves_and_resumes(data):
    """What a time limit, Slurm or docker stop does: SIGTERM, then the exit code 128 + 15."""
    args = [sys.executable, "-m", "lmcore.train", f"train_path={data / 'train.uint16'}", f"valid_path={data / 'valid.uint16'}",
            f"out_dir={data / 'cli'}", "batch_size=4", "eval_every=50", "eval_batches=1", "log_every=1", "progress=false",
            "device=cpu", *[f"model.{k}={v}" for k, v in MODEL.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "max_steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = data / "cli" / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    step = load_checkpoint(data / "cli" / "checkpoint.pt")["iteration"]
    assert step >= 3 and f"SIGTERM: checkpoint saved after step {step}" in err
    done = subprocess.run([*args, f"max_steps={step + 2}", "resume=true"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == step + 2


def test_second_run_in_the_same_out_dir_is_refused(data):
    train(config(data, max_steps=6))
    before = ((data / "run" / "log.jsonl").read_text(), load_checkpoint(data / "run" / "checkpoint.pt")["iteration"])
    with pytest.raises(ValueError, match=r"run holds an earlier run .*resume=true .*new out_dir.*overwrite=true"):
        train(config(data, max_steps=3))
    assert ((data / "run" / "log.jsonl").read_text(), load_checkpoint(data / "run" / "checkpoint.pt")["iteration"]) == before
    assert train(config(data, max_steps=3, overwrite=True))[-1]["step"] == 3
    assert load_checkpoint(data / "run" / "checkpoint.pt")["iteration"] == 3
    with pytest.raises(ValueError, match="contradict"):
        config(data, resume=True, overwrite=True)


def test_huge_learning_rate_keeps_only_a_sound_checkpoint(data):
    """lr=1e6 with a checkpoint every step: the kept checkpoint has finite weights and loss, and resumes."""
    with pytest.raises(TrainingDiverged, match=r"not finite .* last good checkpoint is .* \(step (\d+)\)") as err:
        train(config(data, lr=1e6, checkpoint_every=1, max_steps=30))
    state = load_checkpoint(data / "run" / "checkpoint.pt")
    assert all(bool(w.isfinite().all()) for w in state["model"].values())
    model = TransformerLM(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    x = torch.arange(16).view(1, 16) % 64
    assert bool(model(x).isfinite().all())
    assert f"(step {state['iteration']})" in str(err.value)
    # it resumes, and exactly: the same next step breaks the same way, and the checkpoint is left alone
    with pytest.raises(TrainingDiverged) as again:
        train(config(data, lr=1e6, checkpoint_every=1, max_steps=30, resume=True))
    assert str(again.value) == str(err.value)
    assert load_checkpoint(data / "run" / "checkpoint.pt")["iteration"] == state["iteration"]


def test_overrides_are_read_by_the_fields_type():
    cfg = load_config(None, ["resume=False", "compile=false", "progress=0", "lr=3e-4", "max_steps=1_000", "betas=0.9,0.99",
                             "model.d_ff=none", "model.norm=post", "out_dir=runs/x"])
    got = (cfg.resume, cfg.compile, cfg.progress, cfg.lr, cfg.max_steps, cfg.betas)
    assert got == (False, False, False, 3e-4, 1000, (0.9, 0.99))
    assert (cfg.model.norm, cfg.out_dir, cfg.model.d_ff) == ("post", "runs/x", default_d_ff(512))
    assert load_config(None, ["resume=true", "betas=[0.8, 0.9]"]).resume is True
    for item, message in [("lr=abc", "'lr' needs a number, got 'abc'"), ("model.d_ff=64.5", "'model.d_ff' needs an integer"),
                          ("resume=maybe", "'resume' needs true or false"), ("model.norm=side", "'model.norm' needs one of"),
                          ("lr=nan", "'lr' needs a finite number"), ("betas=0.9", "'betas' needs 2 values")]:
        with pytest.raises(ValueError, match=message):
            load_config(None, [item])


def test_yaml_values_of_the_wrong_type_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("max_steps: 1.5\n")
    with pytest.raises(ValueError, match="'max_steps' needs an integer, got 1.5"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("case", ["int32", "int64", "empty", "odd", "meta-count", "meta-dtype", "short-train", "short-valid"])
def test_bad_token_files_are_refused_naming_the_file(data, case):
    ids = np.fromfile(data / "train.uint16", dtype=np.uint16)
    bad = data / "bad.uint16"
    key, message = "train_path", None
    if case in ("int32", "int64"):
        ids.astype(case).tofile(bad)
        message = "every other uint16 is 0, as in 32- or 64-bit ids"
    elif case == "empty":
        bad.write_bytes(b"")
        message = "the token file is empty"
    elif case == "odd":
        bad.write_bytes(ids.tobytes() + b"\x01")
        message = "not a whole number of uint16 ids"
    elif case.startswith("meta"):
        from lmcore.tokenfile import meta_path, save_tokens

        save_tokens(bad, ids, 64)
        meta = json.loads(meta_path(bad).read_text())
        meta.update({"num_tokens": 7} if case == "meta-count" else {"dtype": "int32"})
        meta_path(bad).write_text(json.dumps(meta))
        message = "cut short or overwritten" if case == "meta-count" else "holds int32 ids"
    else:
        ids[:10].tofile(bad)
        key, message = ("train_path" if case == "short-train" else "valid_path"), "holds 10 ids, fewer than the 17"
    with pytest.raises(ValueError, match=rf"bad.uint16: .*{message}"):
        train(config(data, **{key: str(bad)}))
    assert not (data / "run" / "checkpoint.pt").exists()


def test_command_line_user_errors_are_one_line(data, capsys):
    """``python -m lmcore.train``'s main: a wrong key or value, or a missing file, is one line on stderr and exit 1
    (a whole run from the command line is test_sigterm_on_the_command_line_saves_and_resumes's)."""
    for args, message in [(["nope=1"], "unknown config key 'nope'"),
                          (["resume=perhaps"], "error: config key 'resume' needs true or false"),
                          ([f"train_path={data / 'nope.uint16'}"], "nope.uint16: no such token file")]:
        assert train_mod.main(args) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- the GPU path, run on the CPU as far as a CPU allows (issue 13) ---------------------------------------


def test_gpu_path_compiled_bf16_resume_and_no_graph_breaks(data):
    """compile=True with bf16 autocast, as a GPU run trains: no graph break (the id check and RoPE's
    complex multiply stay out of the graph), losses close to eager bf16, and an interrupted compiled
    run resumes to the same losses."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    over = dict(max_steps=6, precision="bf16", eval_every=3, checkpoint_every=3)
    compiled = train(config(data, out_dir=str(data / "compiled"), compile=True, **over))
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    eager = train(config(data, out_dir=str(data / "eager"), **over))
    for a, b in zip(compiled, eager):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.05)
    train(config(data, out_dir=str(data / "cut"), compile=True, **{**over, "max_steps": 3}))
    resumed = train(config(data, out_dir=str(data / "cut"), compile=True, resume=True, **over))
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in compiled], abs=1e-6)
    assert "mfu" not in compiled[-1]  # no GPU peak: MFU is not logged on a CPU


def test_mfu_is_logged_against_a_gpu_peak(data, monkeypatch):
    """On a GPU each record carries tokens x FLOPs per token / seconds / peak; here the peak of a GPU is
    pretended, to check the arithmetic of the logged value."""
    from lmcore.accounting import training_flops_per_token

    per_token = training_flops_per_token(ModelConfig(**MODEL))
    # a pretended GPU of peak 1e9 FLOP/s: the meter train() builds on a card whose peak is known
    monkeypatch.setattr(train_mod, "_mfu_meter", lambda cfg, device, amp: lambda tokens_per_s: tokens_per_s * per_token / 1e9)
    history = train(config(data, max_steps=4, eval_every=2, log_every=2))
    first, second = history
    assert first["mfu"] == pytest.approx(first["tokens"] * per_token / first["wall_s"] / 1e9, rel=1e-2, abs=1e-4)
    seconds = second["wall_s"] - first["train_end_s"]
    assert second["mfu"] == pytest.approx((second["tokens"] - first["tokens"]) * per_token / seconds / 1e9, rel=1e-2, abs=1e-4)


# Run under torchrun in place of ``-m lmcore.train``: main(), then a look at the threads left.
# gloo's threads are alive while the group is (seen just before destroy_process_group); once
# main() returns none may remain, or they race the interpreter's shutdown (an abort, seen in CI).
_MAIN_THEN_THREADS = """
import glob, sys
import torch
import torch.distributed as dist
from lmcore.train import main

def name(comm):
    try:
        with open(comm) as f:
            return f.read().strip()
    except FileNotFoundError:  # the thread ended between the listing and the read
        return ""

def gloo_threads():
    return [n for n in map(name, glob.glob("/proc/self/task/*/comm")) if "gloo" in n]

destroy, seen = dist.destroy_process_group, []
dist.destroy_process_group = lambda *a, **k: (seen.extend(gloo_threads()), destroy(*a, **k))[1]
code = main(sys.argv[1:])
# torch 2.13 and 2.15 name gloo's threads, 2.6 does not: where they are named, none may outlive the group
assert seen or torch.__version__ < (2, 13), "no gloo thread seen while the group was alive: the check would prove nothing"
assert not gloo_threads(), f"gloo threads outlive main(): {gloo_threads()}"
sys.exit(code)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are listed from Linux's /proc")
def test_ddp_two_compiled_processes_equal_one_eager_process(data):
    """torchrun with 2 CPU processes (gloo), each compiled, against one eager process with the same
    global batch: the same losses, token counts, validation loss and weights, and no gloo thread left."""
    common = [f"train_path={data / 'train.uint16'}", f"valid_path={data / 'valid.uint16'}", "max_steps=4", "batch_size=8",
              "eval_every=4", "eval_batches=1", "log_every=1", "progress=false", "device=cpu",
              *[f"model.{k}={v}" for k, v in MODEL.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "lmcore.train", f"out_dir={data / 'one'}", *common],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    (data / "launch.py").write_text(_MAIN_THEN_THREADS)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(data / "launch.py"), f"out_dir={data / 'two'}", "compile=true", *common],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = [json.loads(x) for x in (data / "one" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (data / "two" / "log.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 4
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], abs=1e-5)
    assert [r["tokens"] for r in b] == [r["tokens"] for r in a]
    assert b[-1]["valid_loss"] == pytest.approx(a[-1]["valid_loss"], abs=1e-5)
    torch.testing.assert_close(load_checkpoint(data / "two" / "checkpoint.pt")["model"]["lm_head.weight"],
                               load_checkpoint(data / "one" / "checkpoint.pt")["model"]["lm_head.weight"], atol=1e-5, rtol=0)


# -- precision by card: bf16, or fp16 with a gradient scaler, or fp32 (issue 25) --------------------------


@pytest.mark.parametrize("precision, device, capability, expected", [
    ("auto", "cpu", None, None), ("auto", "mps", None, None),
    ("auto", "cuda", (7, 5), torch.float16), ("auto", "cuda", (7, 0), torch.float16),   # T4, V100
    ("auto", "cuda", (8, 0), torch.bfloat16), ("auto", "cuda", (8, 9), torch.bfloat16),  # A100, L4
    ("auto", "cuda", (9, 0), torch.bfloat16),                                             # H100
    ("fp16", "cpu", None, torch.float16), ("bf16", "cpu", None, torch.bfloat16), ("fp32", "cuda", (9, 0), None),
])
def test_precision_by_card(precision, device, capability, expected):
    assert autocast_dtype(precision, device, capability) is expected


def test_old_bf16_key_names_the_new_one():
    with pytest.raises(ValueError, match="'bf16' is now 'precision'"):
        load_config(None, ["bf16=on"])
    with pytest.raises(ValueError, match="precision must be one of"):
        load_config(None, ["precision=fp8"])


def test_fp16_with_a_gradient_scaler_trains_and_resumes_exactly(data, monkeypatch):
    """A scaler that starts too high skips its first steps, halving the scale each time; an fp16
    run interrupted after them resumes with that scale (from the checkpoint) to the same losses."""
    real = train_mod._Run.__init__

    def high_scale(self, cfg):
        real(self, cfg)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, enabled=self.scaler.is_enabled())

    monkeypatch.setattr(train_mod._Run, "__init__", high_scale)
    over = dict(max_steps=24, precision="fp16", eval_every=6, log_every=1)
    full = train(config(data, out_dir=str(data / "full"), **over))
    assert full[-1]["train_loss"] < 0.8 * full[0]["train_loss"]
    saved = load_checkpoint(data / "full" / "checkpoint.pt")["extra"]["grad_scaler"]
    assert saved["scale"] < 2.0**24  # overflowing steps were skipped and the scale lowered
    fp32 = train(config(data, out_dir=str(data / "fp32"), **{**over, "precision": "fp32"}))
    assert [r["train_loss"] for r in full] != [r["train_loss"] for r in fp32]  # fp16 really computed in fp16
    with monkeypatch.context() as m:  # a Ctrl-C after step 10: checkpoint there, stop
        m.setattr(train_mod._Run, "stop_requested", lambda self, signals: signal.SIGINT if self.completed == 10 else None)
        with pytest.raises(TrainingInterrupted):
            train(config(data, out_dir=str(data / "cut"), **over))
    assert load_checkpoint(data / "cut" / "checkpoint.pt")["extra"]["grad_scaler"]["scale"] < 2.0**24
    resumed = train(config(data, out_dir=str(data / "cut"), resume=True, **over))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_lowered(data, monkeypatch):
    real = train_mod._Run.__init__

    def huge_scale(self, cfg):
        real(self, cfg)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # loss x 2**60 overflows fp16 gradients

    monkeypatch.setattr(train_mod._Run, "__init__", huge_scale)
    run = train_mod._Run(config(data, precision="fp16"))
    run.resume_or_start()
    before = [p.detach().clone() for p in run.model.parameters()]
    run.step()
    assert all(torch.equal(a, p) for a, p in zip(before, run.model.parameters()))  # skipped: nothing moved
    assert run.scaler.get_scale() == 2.0**59  # halved
    for _ in range(60):  # it keeps halving until the gradients fit, then the weights move
        run.step()
    assert run.scaler.get_scale() < 2.0**20
    assert not all(torch.equal(a, p) for a, p in zip(before, run.model.parameters()))
