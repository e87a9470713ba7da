"""Chapter 7's experiments: one plan, run once by a command into a results file, read by the chapter.

    python -m lmcore.experiments run --out lmcore/results/ch7-experiments.json  # the committed run (2 CPU cores: ~20 min)
    python -m lmcore.experiments run --scale live --out /tmp/live.json          # the chapter's small version

:func:`plan` is the only place the experiments are defined: the base config at each scale, the
learning-rate grid, the groups (the baseline, each batch size, each ablation) and the seeds. The
command and the chapter both call it, and a test checks that the configs stored in the committed
results file are the ones it builds.

Each group is run by :func:`run_group`: its starting rates with seed 0, then one more rate of the
grid beyond whichever end holds the best, until the best is *bracketed* (a lower and a higher rate
were tried; a higher one that blew up counts), then a second seed at the best rate and its
neighbours, so a difference can be compared with the spread between seeds.

Also here: :func:`sweep` (train one config per variant), :func:`summarize` (what each run did, as
facts that hold on any machine) and :func:`best_run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig, with_overrides
from .safety import TrainingDiverged
from .train import train

__all__ = [
    "Group", "plan", "rate", "run_config", "stored_config", "run_once", "run_group", "run_plan", "load",
    "finals", "best_k", "bracketed", "at", "best_of", "verdict", "sweep", "summarize", "best_run", "main",
]

#: the runs' data and model scale. "committed": what the results file holds; "live": what the chapter re-runs on CPU
SCALES: dict[str, dict[str, Any]] = {
    "committed": dict(model=dict(vocab_size=2_000, context_length=64, d_model=96, num_layers=3, num_heads=4, d_ff=None),
                      batch_size=16, max_steps=256, warmup_steps=12, eval_every=64, eval_batches=16, log_every=8),
    "live": dict(model=dict(vocab_size=2_000, context_length=64, d_model=64, num_layers=2, num_heads=4, d_ff=None),
                 batch_size=16, max_steps=200, warmup_steps=10, eval_every=50, eval_batches=4, log_every=10),
}
#: config fields that say where a run is, not what it is: left out of stored configs
_PLACE = ("train_path", "valid_path", "out_dir", "device", "progress", "overwrite", "resume")


def rate(k: int) -> float:
    """The grid of peak learning rates: 3e-3 times a power of 3 (k = 0 is 3e-3, k = 1 is 9e-3, ...)."""
    return 3e-3 * 3.0**k


@dataclass(frozen=True)
class Group:
    """Runs that differ only in learning rate (and seed): one line of chapter 7's tables.

    ``overrides`` are applied to the base config; ``start`` are the grid indices (see :func:`rate`)
    run first, relative to the baseline's best index when ``relative`` (a batch size or ablation
    starts around where the baseline was best), absolute otherwise. With ``to_blow_up`` the grid
    also grows upwards until a rate blows up, so it shows the whole valley and its cliff.
    """

    overrides: dict[str, Any] = field(default_factory=dict)
    start: tuple[int, ...] = (-1, 0, 1)
    relative: bool = True
    to_blow_up: bool = False


def _equal_tokens(base: dict[str, Any], batch: int) -> dict[str, Any]:
    """Overrides that train with ``batch`` sequences a step on as many tokens as the base batch size,
    logging and evaluating at the same token counts, on as many validation windows."""
    steps = base["max_steps"] * base["batch_size"] // batch
    scale = steps / base["max_steps"]
    return {"batch_size": batch, "max_steps": steps, "warmup_steps": max(2, round(base["warmup_steps"] * scale)),
            "eval_every": max(1, round(base["eval_every"] * scale)), "log_every": max(1, round(base["log_every"] * scale)),
            "eval_batches": max(1, base["eval_batches"] * base["batch_size"] // batch)}  # as many validation windows


def plan(scale: str = "committed") -> dict[str, Any]:
    """Chapter 7's experiments at ``scale``: ``{"base": TrainConfig fields, "groups": {name: Group}, "seeds": [...]}``.

    The baseline's grid is wide (slow, best and blow-up); a batch size starts at the rate the
    square-root rule (rate proportional to the square root of the batch) predicts from the baseline's
    best, rounded to the grid; each ablation starts at the baseline's best and one rate either side.
    """
    base = SCALES[scale]
    d_model = base["model"]["d_model"]
    small, large = base["batch_size"] // 4, base["batch_size"] * 4
    groups = {
        "baseline": Group(start=tuple(range(-1, 4)), relative=False, to_blow_up=True),
        f"batch {small}": Group(_equal_tokens(base, small), start=(-2, -1, 0)),
        f"batch {large}": Group(_equal_tokens(base, large), start=(0, 1, 2)),
        "no RMSNorm": Group({"model.norm": "none"}),
        "post-norm": Group({"model.norm": "post"}),
        "NoPE": Group({"model.position": "none"}),
        "SiLU FFN": Group({"model.ffn": "silu", "model.d_ff": 4 * d_model}),
    }
    return {"scale": scale, "base": base, "groups": groups, "seeds": [0, 1]}


def run_config(the_plan: dict[str, Any], group: str, k: int, seed: int, data: dict[str, str], out_dir: str,
               device: str = "cpu") -> TrainConfig:
    """The config of one run: the plan's base, the group's overrides, peak rate ``rate(k)`` decaying to a tenth, ``seed``."""
    base = TrainConfig(train_path=str(data["train"]), valid_path=str(data["valid"]), out_dir=out_dir, device=device,
                       progress=False, overwrite=True, **the_plan["base"])
    lr = rate(k)
    return with_overrides(base, {**the_plan["groups"][group].overrides, "lr": lr, "min_lr": lr / 10, "seed": seed})


def stored_config(config: TrainConfig) -> dict[str, Any]:
    """What a run is, without where it ran: the config as JSON, less paths, device and progress flags."""
    data = json.loads(json.dumps(config.to_dict()))
    return {key: value for key, value in data.items() if key not in _PLACE}


# -- running ---------------------------------------------------------------------------------------------------


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
        slug = "".join(ch if ch.isalnum() else "-" for ch in label)
        config = with_overrides(base, overrides)
        config = dataclasses.replace(config, out_dir=str(Path(out_root or base.out_dir) / slug))
        results[label] = _train_logged(config)
    return results


def _train_logged(config: TrainConfig) -> list[dict]:
    """``train(config)``'s records; a diverged run's records end in ``{"train_loss": inf, "diverged": True}``."""
    try:
        return train(config)
    except TrainingDiverged as err:
        step = (err.history[-1]["step"] + 1) if err.history else 1
        return [*err.history, {"step": step, "train_loss": math.inf, "diverged": True}]


def summarize(results: dict[str, list[dict]], vocab_size: int) -> dict[str, dict[str, Any]]:
    """What a sweep's runs did, as facts that hold on any machine.

    For each run: ``final`` validation loss (``None`` when the run stopped on a non-finite loss),
    ``peak`` training loss over its logged steps, and ``blew_up``: the loss climbed more than a
    nat above ``ln(vocab_size)``, what guessing uniformly costs, so the run destroyed what it had
    learned (it may creep back as the schedule lowers the rate) or stopped on NaN. A run past that
    point is chaotic: its exact numbers change with the CPU's kernels, the fact that it blew up does not.
    """
    uniform = math.log(vocab_size)
    out = {}
    for label, history in results.items():
        losses = [r["train_loss"] for r in history]
        nan = bool(history) and history[-1].get("diverged", False)
        peak = max(losses) if losses else math.inf
        final = None if nan else next((r["valid_loss"] for r in reversed(history) if "valid_loss" in r), None)
        out[label] = {"final": final, "peak": peak, "blew_up": nan or peak > uniform + 1}
    return out


def best_run(summary: dict[str, dict[str, Any]]) -> str:
    """The label of the run with the lowest final validation loss among those that did not blow up."""
    return min((s["final"], label) for label, s in summary.items() if not s["blew_up"])[1]


def _record(group: str, k: int, config: TrainConfig, history: list[dict], seconds: float) -> dict[str, Any]:
    """One run as the results file keeps it: what it was, what it ended at, and its log (4 decimals)."""
    fact = summarize({"run": history}, config.model.vocab_size)["run"]
    keep = ("step", "tokens", "lr", "train_loss", "valid_loss")
    log = [{key: _json_number(r[key]) for key in keep if key in r} for r in history]
    return {"group": group, "k": k, "lr": config.lr, "seed": config.seed, "final": fact["final"],
            "blew_up": fact["blew_up"], "seconds": round(seconds, 1), "config": stored_config(config), "log": log}


def _json_number(v: Any) -> Any:
    """A float rounded to 4 decimals, ``None`` for inf or NaN (which JSON cannot hold); anything else as it is."""
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    return v


def finals(runs: list[dict], group: str) -> dict[int, dict[int, float | None]]:
    """``{k: {seed: final loss, or None if it blew up}}`` for ``group``'s runs."""
    out: dict[int, dict[int, float | None]] = {}
    for r in runs:
        if r["group"] == group:
            out.setdefault(r["k"], {})[r["seed"]] = None if r["blew_up"] else r["final"]
    return dict(sorted(out.items()))


def best_k(table: dict[int, dict[int, float | None]], seeds: list[int]) -> int | None:
    """The grid index with the lowest mean final loss over ``seeds``, among rates run on all of them
    where none blew up; ``None`` if there is no such rate."""
    calm = [(statistics.mean(row[s] for s in seeds), k) for k, row in table.items()
            if all(row.get(s) is not None for s in seeds)]
    return min(calm)[1] if calm else None


def bracketed(table: dict[int, dict[int, float | None]], k: int) -> bool:
    """Whether a lower and a higher rate than ``rate(k)`` were both tried (a higher one that blew up counts)."""
    return (k - 1) in table and (k + 1) in table


def at(runs: list[dict], group: str, k: int, seeds: list[int]) -> dict[str, Any]:
    """One rate of a group: its per-seed losses, mean and spread (None where a seed blew up or was not run)."""
    row = finals(runs, group).get(k, {})
    vals = [row.get(s) for s in seeds if s in row]
    calm = vals and all(v is not None for v in vals)
    return {"k": k, "lr": rate(k), "seeds": vals, "blew_up": not calm and bool(vals),
            "mean": statistics.mean(vals) if calm else None,
            "spread": max(vals) - min(vals) if calm and len(vals) == len(seeds) else None}


def best_of(runs: list[dict], group: str, seeds: list[int]) -> dict[str, Any]:
    """The group's best rate (lowest mean over every seed) as :func:`at` gives it; refused unless bracketed."""
    table = finals(runs, group)
    k = best_k(table, seeds)
    if not bracketed(table, k):
        raise ValueError(f"{group}: the best rate {rate(k):.2g} was not bracketed by a lower and a higher one")
    return at(runs, group, k, seeds)


def verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``a`` against ``b`` (both from :func:`at`): "better" or "worse" only when the gap in means
    exceeds both seed spreads, else "level"; "blew up" when ``a`` did."""
    if a["blew_up"] or b["blew_up"]:
        return "blew up" if a["blew_up"] else "better"
    gap, noise = a["mean"] - b["mean"], max(s for s in (a["spread"], b["spread"]) if s is not None)
    return "level" if abs(gap) <= noise else ("better" if gap < 0 else "worse")


def run_once(the_plan: dict[str, Any], group: str, k: int, seed: int, data: dict[str, str], work: Path,
             device: str = "cpu") -> dict[str, Any]:
    """Train one run of the plan (``group`` at peak rate ``rate(k)``, ``seed``) in ``work``; return its record."""
    config = run_config(the_plan, group, k, seed, data, str(Path(work) / f"{group}-{k}-{seed}".replace(" ", "_")), device)
    t = time.perf_counter()
    return _record(group, k, config, _train_logged(config), time.perf_counter() - t)


def run_group(the_plan: dict[str, Any], group: str, centre: int, data: dict[str, str], work: Path, device: str,
              runs: list[dict], log=print) -> None:
    """Run ``group`` into ``runs``: start rates (seed 0), extend until the best is bracketed, then more seeds.

    The other seeds run at the best rate and at each neighbour that did not blow up on seed 0. If
    the best by the mean over seeds is then another rate, its neighbours get every seed too, until
    the best stays put: the best and both neighbours have been run on every seed.
    """
    seeds, spec = the_plan["seeds"], the_plan["groups"][group]

    def run(k: int, seed: int) -> None:
        if seed in finals(runs, group).get(k, {}):
            return
        runs.append(run_once(the_plan, group, k, seed, data, work, device))
        r = runs[-1]
        log(f"{group:>12}  lr {r['lr']:<8.2g} seed {seed}: "
            f"{'blew up' if r['blew_up'] else format(r['final'], '.3f')}  ({r['seconds']:.0f} s)")

    for k in (centre + s for s in spec.start) if spec.relative else spec.start:
        run(k, seeds[0])
    while True:  # seed 0: extend past whichever end holds the best (below, if every rate blew up)
        table = finals(runs, group)
        k = best_k(table, seeds[:1])
        cliff = any(row[seeds[0]] is None for row in table.values())
        if k is None or (k - 1) not in table:
            run(min(table) - 1, seeds[0])
        elif (k + 1) not in table or (spec.to_blow_up and not cliff):
            run(max(table) + 1, seeds[0])
        else:
            break
    while True:  # every seed at the best and its neighbours that trained
        for j in (k - 1, k, k + 1):
            if j == k or finals(runs, group)[j][seeds[0]] is not None:
                for seed in seeds:
                    run(j, seed)
        table = finals(runs, group)
        new = best_k(table, seeds)
        if new == k:
            break
        k = new
        for j in (k - 1, k + 1):  # the new best's neighbours, on seed 0 first
            run(j, seeds[0])


def run_plan(scale: str = "committed", device: str = "cpu", threads: int | None = 2, log=print) -> dict[str, Any]:
    """Run every group of :func:`plan` at ``scale`` on the TinyStories sample; return the results file's contents."""
    import torch

    from . import fetch, set_determinism
    from .dataset import prepare_dataset
    from .tokenizer import ENDOFTEXT, Tokenizer, train_bpe

    t0 = time.perf_counter()
    set_determinism(seed=0, threads=threads)
    the_plan = plan(scale)
    vocab_size = the_plan["base"]["model"]["vocab_size"]
    path = fetch("tinystories-sample")
    vocab, merges = train_bpe(path, vocab_size, [ENDOFTEXT], num_workers=2)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {k: str(v) for k, v in prepare_dataset(Tokenizer(vocab, merges, [ENDOFTEXT]), path, work / "data").items()}
        run_group(the_plan, "baseline", 0, data, work, device, runs, log)
        centre = best_k(finals(runs, "baseline"), the_plan["seeds"])
        for group in the_plan["groups"]:
            if group == "baseline":
                continue
            run_group(the_plan, group, centre, data, work, device, runs, log)
    return {
        "what": "chapter 7's experiments (lmcore.experiments.plan)", "scale": scale,
        "command": f"python -m lmcore.experiments run --scale {scale} --threads {threads}",
        "lmcore_commit": _git_commit(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads": threads, "device": device,
                    "torch": torch.__version__, "python": platform.python_version()},
        "minutes": round((time.perf_counter() - t0) / 60, 1), "baseline_best_k": centre,
        "base": the_plan["base"], "seeds": the_plan["seeds"], "runs": runs,
    }


#: the committed run, shipped inside the package so that the chapter finds it wherever lmcore is installed
COMMITTED = Path(__file__).resolve().parent / "results" / "ch7-experiments.json"


def load(path: str | os.PathLike = COMMITTED) -> dict[str, Any]:
    """A results file written by ``python -m lmcore.experiments run`` (by default the committed run)."""
    return json.loads(Path(path).read_text())


def _git_commit() -> str:
    """The lmcore commit the run used, with ``+dirty`` when lmcore's files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lmcore"], cwd=root, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcore.experiments", description="Run chapter 7's experiments.")
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="run every group of the plan into a JSON results file")
    run.add_argument("--scale", choices=sorted(SCALES), default="committed")
    run.add_argument("--out", required=True, help="the JSON file to write, e.g. lmcore/results/ch7-experiments.json")
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads; 1 (the committed run's) is fastest on a CPU that other jobs share")
    args = parser.parse_args(argv)
    results = run_plan(args.scale, args.device, args.threads, log=lambda line: print(line, flush=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{len(results['runs'])} runs in {results['minutes']} min -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
