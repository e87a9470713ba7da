"""The accounting checkers: lmcore's formulas pass, and each usual mistake fails with the hint that names it.

The wrong formulas are written as a reader would write them, from the config's fields.
"""

import pytest

from lmcore import accounting as acc
from lmcore import check


def params(cfg, *, lm_head=True, norms=True, ffn_matrices=3):
    d, L = cfg.d_model, cfg.num_layers
    per_layer = 4 * d * d + ffn_matrices * d * cfg.d_ff + (2 * d if norms else 0)
    return cfg.vocab_size * d * (2 if lm_head else 1) + L * per_layer + (d if norms else 0)


def flops(cfg, batch_size, seq_len, *, per_term=2, attention=True, lm_head=True):
    tokens, d = batch_size * seq_len, cfg.d_model
    per_layer = 4 * tokens * d * d + 3 * tokens * d * cfg.d_ff + (2 * batch_size * seq_len**2 * d if attention else 0)
    return per_term * (cfg.num_layers * per_layer + (tokens * d * cfg.vocab_size if lm_head else 0))


def memory(cfg, batch_size, *, gradients=True, moments=2, gib=False, activations="all"):
    B, T, d, f, L = batch_size, cfg.context_length, cfg.d_model, cfg.d_ff, cfg.num_layers
    fixed = params(cfg) * (4 + (4 if gradients else 0) + 4 * moments)
    if activations == "residual":
        acts = L * B * T * d
    else:
        # norms' inputs, q k v, scores and weights, heads' output, W_o, W1 / SiLU / W3 / gate, W2
        layer = 2 * B * T * d + 3 * B * T * d + 2 * B * cfg.num_heads * T * T + B * T * d + B * T * d + 4 * B * T * f + B * T * d
        acts = L * layer + B * T * d + (2 * B * T * cfg.vocab_size if activations == "all" else 0)
    total = fixed + 4 * acts
    return total * 1e9 / 2**30 if gib else total  # "GiB" computed, then taken as GB


def test_lmcore_formulas_and_hand_written_ones_pass():
    assert check.parameter_count(lambda cfg: acc.parameter_counts(cfg)["total"], show=False)
    assert check.forward_flops(lambda cfg, b, t: acc.forward_flops(cfg, b, t)["total"], show=False)
    assert check.training_memory(lambda cfg, b: acc.memory_bytes(cfg, b)["total"], show=False)
    assert check.parameter_count(params, show=False)
    assert check.forward_flops(flops, show=False)
    assert check.training_memory(memory, show=False)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda cfg: params(cfg, lm_head=False), "LM head is missing"),
    (lambda cfg: params(cfg, norms=False), "RMSNorm gains are missing"),
    (lambda cfg: params(cfg, ffn_matrices=2), "three d_model x d_ff matrices"),
])
def test_parameter_count_mistakes_are_named(wrong, phrase):
    report = check.parameter_count(wrong, show=False)
    assert not report and any(phrase in h for h in report.hints), str(report)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda cfg, b, t: flops(cfg, b, t, per_term=1), "a multiply-add is two FLOPs"),
    (lambda cfg, b, t: flops(cfg, b, t, attention=False), "two T x T products are missing"),
    (lambda cfg, b, t: flops(cfg, b, t, lm_head=False), "LM head is missing"),
    (lambda cfg, b, t: flops(cfg, b, cfg.context_length), "instead of seq_len"),
])
def test_forward_flops_mistakes_are_named(wrong, phrase):
    report = check.forward_flops(wrong, show=False)
    assert not report and any(phrase in h for h in report.hints), str(report)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda cfg, b: memory(cfg, b, gib=True), "GB (1e9 bytes) and GiB"),
    (lambda cfg, b: memory(cfg, b, moments=1), "12 bytes a parameter"),
    (lambda cfg, b: memory(cfg, b, gradients=False), "12 bytes a parameter"),
    (lambda cfg, b: memory(cfg, b, activations="residual"), "far too few activation bytes"),
    (lambda cfg, b: memory(cfg, b, activations="no logits"), "logits and the cross-entropy"),
])
def test_training_memory_mistakes_are_named(wrong, phrase):
    report = check.training_memory(wrong, show=False)
    assert not report and any(phrase in h for h in report.hints), str(report)


def test_stubs_are_reported_not_written():
    def stub(*args):
        raise NotImplementedError

    for name in ("parameter_count", "forward_flops", "training_memory"):
        report = getattr(check, name)(stub, show=False)
        assert not report and "not written yet" in str(report) and "\n" not in str(report)
    assert "keep the stub's signature" in str(check.forward_flops(lambda cfg: 0, show=False))
