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
