"""Device choice, repeatable runs, and the measured matmul rate."""

import torch

from lmcore import device as device_mod


def test_pick_device_honours_a_preference():
    assert device_mod.pick_device("cpu") == torch.device("cpu")


def test_set_determinism_repeats_random_draws():
    device_mod.set_determinism(seed=3, threads=None)
    first = torch.randn(4)
    device_mod.set_determinism(seed=3, threads=None)
    assert torch.equal(first, torch.randn(4))


def test_matmul_rate_counts_two_n_cubed_flops_per_product(monkeypatch):
    """With a clock that advances one second per reading, three timed products give 3 x 2 n^3 FLOPs
    over the three seconds the loop saw: the arithmetic of the rate, free of the machine's speed."""
    clock = iter(range(100))
    monkeypatch.setattr(device_mod.time, "perf_counter", lambda: float(next(clock)))
    assert device_mod.matmul_flops_per_second("cpu", n=8, seconds=3) == 3 * 2 * 8**3 / 3


def test_matmul_rate_on_this_cpu_is_plausible():
    rate = device_mod.matmul_flops_per_second("cpu", n=256, seconds=0.05)
    assert 1e8 < rate < 1e14  # between a slow core and far beyond any CPU


def test_check_device_agrees_on_the_cpu_and_leaves_the_rng_alone(capsys):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    result = device_mod.check_device("cpu")
    assert result and result.largest_difference == 0.0  # the same arithmetic twice
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is where it was
    out = capsys.readouterr().out.strip()
    assert out.startswith("cpu: agrees with the CPU") and "\n" not in out


def test_check_device_warns_when_the_device_computes_something_else(monkeypatch, capsys):
    """A device is simulated by perturbing the first of the two runs (the one on the device): a
    small change in its last weight, then a NaN there (after the finite differences, where a plain
    max() would skip it); each is reported in one warning line."""
    real = device_mod._tiny_training

    def off_by(change):
        def run(device, steps, calls=[]):  # noqa: B006 - counts the calls: the first is the device's
            out = real(device, steps)
            calls.append(device)
            return [*out[:-1], out[-1] + change] if len(calls) == 1 else out  # the last weight
        return run

    for change, shown in ((0.01, "largest difference 0.01 "), (float("nan"), "largest difference inf ")):
        monkeypatch.setattr(device_mod, "_tiny_training", off_by(change))
        result = device_mod.check_device("cpu")
        assert not result and not result.agreed
        out = capsys.readouterr().out
        assert out.startswith("WARNING: cpu gives different numbers from the CPU") and shown in out
        assert 'device = torch.device("cpu")' in out and out.count("\n") == 1
