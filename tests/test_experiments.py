"""Chapter 7's experiments: the plan, the adaptive grid, sweeps, summaries, and the committed results file."""

import math

import pytest

from lmcore import experiments as ex
from lmcore.train import TrainConfig

RESULTS = ex.COMMITTED
MODEL = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}
DATA = {"train": "train.uint16", "valid": "valid.uint16"}


# -- the committed results file is what the plan builds ------------------------------------------------------------


def test_committed_configs_are_the_ones_the_plan_builds():
    results = ex.load(RESULTS)
    the_plan = ex.plan(results["scale"])
    assert results["base"] == the_plan["base"] and results["seeds"] == the_plan["seeds"]
    assert {r["group"] for r in results["runs"]} == set(the_plan["groups"])
    for r in results["runs"]:
        built = ex.stored_config(ex.run_config(the_plan, r["group"], r["k"], r["seed"], DATA, "runs/x"))
        assert built == r["config"], (r["group"], r["k"], r["seed"])  # every field, the model's too
        assert r["lr"] == ex.rate(r["k"])
        assert r["log"][-1]["step"] == r["config"]["max_steps"] or r["blew_up"]  # ran to the end, or stopped on NaN
    assert {"lmcore_commit", "machine", "date", "minutes", "command"} <= set(results)
    assert results["machine"]["cpu"] and results["machine"]["torch"] and results["minutes"] > 0


def test_committed_grids_bracket_each_best_on_every_seed():
    results = ex.load(RESULTS)
    the_plan = ex.plan(results["scale"])
    for group, spec in the_plan["groups"].items():
        table = ex.finals(results["runs"], group)
        start = spec.start if not spec.relative else [results["baseline_best_k"] + s for s in spec.start]
        assert set(start) <= set(table), group
        full = {k: row for k, row in table.items() if set(row) == set(the_plan["seeds"])}
        k = ex.best_k(full, the_plan["seeds"])
        assert ex.bracketed(table, k), group
        assert all(set(table[j]) == set(the_plan["seeds"]) for j in (k - 1, k + 1) if table[j][0] is not None), group
    assert any(row[0] is None for row in ex.finals(results["runs"], "baseline").values())  # the baseline reaches the cliff


# -- the plan -------------------------------------------------------------------------------------------------------


def test_grid_is_powers_of_three_around_3e_3():
    assert ex.rate(0) == 3e-3 and ex.rate(1) == pytest.approx(9e-3) and ex.rate(-1) == pytest.approx(1e-3)


def test_batch_sizes_see_equal_tokens_and_validation_windows():
    the_plan = ex.plan("committed")
    base = TrainConfig(**the_plan["base"])
    tokens = base.max_steps * base.batch_size
    for name in the_plan["groups"]:
        c = ex.run_config(the_plan, name, 0, 1, DATA, "runs/x")
        assert c.max_steps * c.batch_size == tokens and c.eval_batches * c.batch_size == base.eval_batches * base.batch_size
        assert c.lr == 3e-3 and c.min_lr == pytest.approx(3e-4) and c.seed == 1
    assert ex.run_config(the_plan, "SiLU FFN", 0, 0, DATA, "x").model.d_ff == 4 * base.model.d_model
    assert ex.run_config(the_plan, "post-norm", 0, 0, DATA, "x").model.norm == "post"
    assert ex.plan("live")["base"]["model"]["d_model"] < the_plan["base"]["model"]["d_model"]


def test_stored_config_leaves_out_where_a_run_ran():
    c = ex.stored_config(ex.run_config(ex.plan("live"), "baseline", 0, 0, DATA, "/tmp/somewhere", device="cuda"))
    assert not {"train_path", "valid_path", "out_dir", "device", "progress"} & set(c)
    assert c["model"]["norm"] == "pre" and c["betas"] == [0.9, 0.95]


# -- the adaptive grid, on a fake trainer: loss (k - 3)^2 / 10 + 4, blown up from k = 6 -------------------------------


def fake_train(config: TrainConfig) -> list[dict]:
    k = round(math.log(config.lr / 3e-3, 3))
    if k >= 6:
        return [{"step": 1, "train_loss": 50.0}, {"step": 2, "train_loss": 9.0, "valid_loss": 9.0}]
    final = (k - 3) ** 2 / 10 + 4 + config.seed / 100
    return [{"step": 1, "train_loss": 7.0}, {"step": 2, "train_loss": 5.0, "valid_loss": final}]


def test_run_group_extends_until_bracketed_then_seeds_best_and_neighbours(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "_train_logged", fake_train)
    the_plan, runs = ex.plan("live"), []
    ex.run_group(the_plan, "post-norm", 0, DATA, tmp_path, "cpu", runs, log=lambda line: None)
    table = ex.finals(runs, "post-norm")
    assert sorted(table) == [-1, 0, 1, 2, 3, 4]  # started at -1..1, grew up to one past the best (3)
    assert {k for k, row in table.items() if set(row) == {0, 1}} == {2, 3, 4}
    assert ex.best_k(table, [0, 1]) == 3 and ex.bracketed(table, 3)


def test_baseline_grows_to_the_cliff_and_seeds_skip_blown_up_neighbours(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "_train_logged", lambda c: fake_train(c) if c.lr < 0.1 else fake_train(TrainConfig(lr=10.0)))
    the_plan, runs = ex.plan("live"), []
    the_plan["groups"]["baseline"] = ex.Group(start=(0, 1, 2), relative=False, to_blow_up=True)
    ex.run_group(the_plan, "baseline", 0, DATA, tmp_path, "cpu", runs, log=lambda line: None)
    table = ex.finals(runs, "baseline")
    assert sorted(table) == [0, 1, 2, 3, 4] and table[4][0] is None  # 0.24 blows up; the best is 3 (0.081)
    assert set(table[4]) == {0} and set(table[2]) == {0, 1} and set(table[3]) == {0, 1}


def test_best_k_skips_rates_where_a_seed_blew_up():
    table = {0: {0: 4.5, 1: 4.6}, 1: {0: 4.0, 1: None}, 2: {0: 4.3, 1: 4.4}}
    assert ex.best_k(table, [0]) == 1 and ex.best_k(table, [0, 1]) == 2
    assert ex.best_k({0: {0: None}}, [0]) is None
    assert ex.bracketed(table, 1) and not ex.bracketed(table, 2)


# -- sweeps and their summaries --------------------------------------------------------------------------------------


def test_sweep_runs_variants_and_records_divergence(data):
    base = TrainConfig(train_path=str(data / "train.uint16"), valid_path=str(data / "valid.uint16"), out_dir=str(data / "run"),
                       model=MODEL, batch_size=8, max_steps=6, lr=3e-3, min_lr=3e-4, warmup_steps=2, eval_every=3,
                       eval_batches=2, log_every=1, device="cpu", progress=False)
    results = ex.sweep(base, {"base": {}, "post": {"model.norm": "post"}, "huge": {"lr": 1e6}})
    assert [r["step"] for r in results["base"]] == list(range(1, 7))
    assert results["post"][-1]["train_loss"] != results["base"][-1]["train_loss"]
    assert results["huge"][-1]["diverged"] and results["huge"][-1]["train_loss"] == float("inf")
    assert (data / "run" / "post" / "log.jsonl").exists()


def test_summarize_tells_blown_up_runs_from_slow_ones():
    runs = {
        "slow": [{"step": 10, "train_loss": 7.5}, {"step": 20, "train_loss": 6.0, "valid_loss": 6.1}],
        "spiked": [{"step": 10, "train_loss": 30.0}, {"step": 20, "train_loss": 5.5, "valid_loss": 5.6}],
        "nan": [{"step": 10, "train_loss": 7.0}, {"step": 11, "train_loss": math.inf, "diverged": True}],
    }
    got = ex.summarize(runs, vocab_size=2000)  # ln 2000 = 7.6
    assert got["slow"] == {"final": 6.1, "peak": 7.5, "blew_up": False}
    assert got["spiked"]["blew_up"] and got["spiked"]["final"] == 5.6
    assert got["nan"]["blew_up"] and got["nan"]["final"] is None


def test_best_run_skips_runs_that_blew_up():
    summary = {"a": {"final": 4.2, "blew_up": False}, "b": {"final": 3.9, "blew_up": True}, "c": {"final": 4.1, "blew_up": False}}
    assert ex.best_run(summary) == "c"


def test_record_keeps_a_json_safe_log():
    config = ex.run_config(ex.plan("live"), "baseline", 0, 0, DATA, "x")
    r = ex._record("baseline", 0, config, [{"step": 1, "train_loss": 7.123456, "wall_s": 0.1},
                                           {"step": 2, "train_loss": math.inf, "diverged": True}], 1.23)
    assert r["log"] == [{"step": 1, "train_loss": 7.1235}, {"step": 2, "train_loss": None}]
    assert r["blew_up"] and r["final"] is None and r["seconds"] == 1.2


def test_verdict_counts_a_difference_only_beyond_the_seed_spread():
    runs = [{"group": g, "k": 0, "seed": s, "final": v, "blew_up": v is None}
            for g, vals in {"a": (4.00, 4.02), "b": (4.10, 4.11), "c": (4.01, 4.03), "d": (None, None)}.items()
            for s, v in zip((0, 1), vals)]
    a, b, c, d = (ex.at(runs, g, 0, [0, 1]) for g in "abcd")
    assert a["mean"] == pytest.approx(4.01) and a["spread"] == pytest.approx(0.02) and d["blew_up"]
    assert ex.verdict(a, b) == "better" and ex.verdict(b, a) == "worse" and ex.verdict(a, c) == "level"
    assert ex.verdict(d, a) == "blew up" and ex.verdict(a, d) == "better"


def test_best_of_refuses_a_best_at_the_end_of_its_grid():
    runs = [{"group": "g", "k": k, "seed": s, "final": v, "blew_up": False}
            for k, v in ((0, 4.2), (1, 4.0)) for s in (0, 1)]
    with pytest.raises(ValueError, match="not bracketed"):
        ex.best_of(runs, "g", [0, 1])
    runs += [{"group": "g", "k": 2, "seed": s, "final": 4.1, "blew_up": False} for s in (0, 1)]
    assert ex.best_of(runs, "g", [0, 1])["k"] == 1
