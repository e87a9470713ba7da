"""The chapter 5 checkers: the reference passes, and each usual mistake fails with the hint that names it."""

import math

import pytest
import torch

from lmcore import check
from lmcore import nn as ref_nn
from lmcore import optim as ref


def hints_of(report) -> str:
    assert not report, str(report)
    return " | ".join(report.hints)


def stub(*args, **kwargs):
    raise NotImplementedError


# --- cross-entropy -------------------------------------------------------------------------------


def test_the_reference_cross_entropy_passes_and_so_does_torchs():
    assert check.cross_entropy(ref_nn.cross_entropy, show=False)
    flat = lambda logits, targets: torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())  # noqa: E731
    assert check.cross_entropy(flat, show=False)


def ce_summed(logits, targets):
    lse = torch.logsumexp(logits, -1)
    return (lse - logits.gather(-1, targets[..., None])[..., 0]).sum()


def ce_softmax_first(logits, targets):
    probs = torch.softmax(logits, dim=-1)  # "turn the scores into probabilities", then the loss
    m = probs.amax(-1, keepdim=True)
    lse = (probs - m).exp().sum(-1).log() + m[..., 0]
    return (lse - probs.gather(-1, targets[..., None])[..., 0]).mean()


def ce_log_of_logits(logits, targets):
    return -torch.log(logits.gather(-1, targets[..., None])).mean()


def ce_no_max(logits, targets):
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    return -p.gather(-1, targets[..., None]).log().mean()


def ce_indexing(logits, targets):
    lse = torch.logsumexp(logits, -1, keepdim=True)
    return (lse - logits[:, targets]).mean()


def ce_per_position(logits, targets):
    return torch.logsumexp(logits, -1) - logits.gather(-1, targets[..., None])[..., 0]


@pytest.mark.parametrize("wrong, phrase", [
    (ce_summed, "summed over the positions"),
    (ce_softmax_first, "softmax was applied before"),
    (ce_log_of_logits, "not probabilities"),
    (ce_no_max, "subtract the max"),
    (ce_indexing, "picked wrongly"),
    (ce_per_position, "return one number"),
])
def test_a_wrong_cross_entropy_is_told_its_mistake(wrong, phrase):
    assert phrase in hints_of(check.cross_entropy(wrong, show=False))


def test_a_cross_entropy_returning_a_float_is_told_to_return_a_tensor():
    def as_float(logits, targets):
        return ref_nn.cross_entropy(logits, targets).item()

    assert "return a tensor" in hints_of(check.cross_entropy(as_float, show=False))


def test_a_cross_entropy_without_autograd_is_told_so_in_the_gradient_case():
    def by_item(logits, targets):
        return torch.tensor(ref_nn.cross_entropy(logits, targets).item())

    report = check.cross_entropy(by_item, show=False)
    assert not report and report.cases[-1].name.startswith("gradient") and "through autograd" in report.cases[-1].detail


# --- AdamW ---------------------------------------------------------------------------------------


class LearnerAdamW(torch.optim.Optimizer):
    """AdamW as a learner writes it, with one switch per usual mistake."""

    mistake = ""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None and self.mistake != "decays without grad":
                    continue
                if p.grad is None:  # decays every weight, then looks at the gradient
                    p.mul_(1 - lr * wd)
                    continue
                g = p.grad + wd * p if self.mistake == "l2" else p.grad  # L2: the decay rides on the gradient
                state = self.state[p]
                t = state["t"] = state.get("t", 0) + 1
                m = state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
                v = state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
                if self.mistake == "no bias correction":
                    update = m / (v.sqrt() + eps)
                elif self.mistake == "eps inside sqrt":
                    update = m / (1 - b1**t) / (v / (1 - b2**t) + eps).sqrt()
                elif self.mistake == "handout":  # alpha_t = lr sqrt(1 - b2^t) / (1 - b1^t), eps on sqrt(v)
                    update = math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + eps)
                else:
                    update = m / (1 - b1**t) / ((v / (1 - b2**t)).sqrt() + eps)
                p -= lr * update
                if self.mistake == "decay without lr":
                    p -= wd * p
                elif self.mistake != "l2":
                    p -= lr * wd * p  # after the step, as the handout orders it: the checks allow either order


def learner(mistake: str) -> type:
    return type(f"AdamW_{mistake}", (LearnerAdamW,), {"mistake": mistake})


def test_the_reference_adamw_passes_and_so_do_torchs_and_a_learners():
    assert check.adamw(ref.AdamW, show=False)
    assert check.adamw(torch.optim.AdamW, show=False)
    assert check.adamw(learner(""), show=False)  # weight decay after the Adam step: allowed
    assert check.adamw(learner("handout"), show=False)  # the handout's rate alpha_t, eps before the correction: allowed


@pytest.mark.parametrize("mistake, phrase", [
    ("no bias correction", "no bias correction"),
    ("l2", "Adam with L2"),
    ("decay without lr", "not multiplied by the learning rate"),
    ("eps inside sqrt", "inside the square root"),
    ("decays without grad", "grad is None"),
])
def test_a_wrong_adamw_is_told_its_mistake(mistake, phrase):
    assert phrase in hints_of(check.adamw(learner(mistake), show=False))


def test_an_adamw_counting_steps_from_0_is_told_to_count_from_1():
    class FromZero(LearnerAdamW):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is not None:
                        state = self.state.setdefault(p, {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                        t, m, v = state["t"], state["m"], state["v"]
                        m.mul_(b1).add_((1 - b1) * p.grad)
                        v.mul_(b2).add_((1 - b2) * p.grad**2)
                        p.mul_(1 - lr * wd).sub_(lr / (1 - b1**t) * m / ((v / (1 - b2**t)).sqrt() + eps))
                        state["t"] = t + 1

    report = check.adamw(FromZero, show=False)
    assert not report and "counts steps from 1" in report.cases[0].detail


def test_an_adamw_without_no_grad_is_told_to_add_it():
    class Tracked(LearnerAdamW):
        step = LearnerAdamW.step.__wrapped__  # without @torch.no_grad()

    report = check.adamw(Tracked, show=False)
    assert not report and "torch.no_grad" in report.cases[0].detail


# --- the learning-rate schedule -------------------------------------------------------------------


def test_the_reference_cosine_lr_passes():
    assert check.cosine_lr(ref.cosine_lr, show=False)


def schedule(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters, mistake=""):
    """The schedule as a learner writes it, with one switch per usual mistake."""
    if it < warmup_iters:
        return max_lr * ((it + 1) if mistake == "warm-up" else it) / warmup_iters
    if it > cosine_cycle_iters and mistake != "no floor":
        return min_lr
    span = cosine_cycle_iters if mistake == "span" else cosine_cycle_iters - warmup_iters
    progress = (it - warmup_iters - (1 if mistake == "late" else 0)) / span
    floor = 0.0 if mistake == "to zero" else min_lr
    return floor + 0.5 * (1 + math.cos(math.pi * max(progress, 0.0))) * (max_lr - floor)


@pytest.mark.parametrize("mistake, phrase", [
    ("warm-up", "off by one in the warm-up"),
    ("late", "one step late"),
    ("span", "wrong span"),
    ("to zero", "decays to 0"),
    ("no floor", "no floor after the cycle"),
])
def test_a_wrong_cosine_lr_is_told_its_mistake(mistake, phrase):
    def wrong(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
        return schedule(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters, mistake)

    assert check.cosine_lr(schedule, show=False)  # the switch off: right
    assert phrase in hints_of(check.cosine_lr(wrong, show=False))


def test_a_schedule_that_divides_by_a_zero_warm_up_is_told_so():
    def divides(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
        if it <= warmup_iters:
            return max_lr * it / warmup_iters
        return ref.cosine_lr(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters)

    report = check.cosine_lr(divides, show=False)
    assert not report and "no warm-up" in report.cases[-1].detail


# --- gradient clipping ----------------------------------------------------------------------------


def test_the_reference_clip_grad_norm_passes_and_so_does_torchs():
    assert check.clip_grad_norm(ref.clip_grad_norm, show=False)
    assert check.clip_grad_norm(torch.nn.utils.clip_grad_norm_, show=False)


def clip_per_tensor(params, max_l2_norm):
    for p in params:
        if p.grad is not None:
            norm = p.grad.norm()
            if norm > max_l2_norm:
                p.grad *= max_l2_norm / norm


def clip_always(params, max_l2_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    for g in grads:
        g.mul_(max_l2_norm / norm)


def clip_not_in_place(params, max_l2_norm):
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    for g in grads:
        g = g * min(1.0, max_l2_norm / norm)  # rebinds g: p.grad is untouched


def clip_two_passes(params, max_l2_norm):
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None))
    for p in params:  # a generator is spent by the line above
        if p.grad is not None:
            p.grad.mul_(min(1.0, max_l2_norm / norm))


def clip_forgets_none(params, max_l2_norm):
    params = list(params)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
    for p in params:
        p.grad.mul_(min(1.0, max_l2_norm / norm))


@pytest.mark.parametrize("wrong, phrase", [
    (clip_per_tensor, "its own norm"),
    (clip_always, "under the limit"),
    (clip_not_in_place, "in place"),
    (clip_two_passes, "generator"),
])
def test_a_wrong_clip_grad_norm_is_told_its_mistake(wrong, phrase):
    assert phrase in hints_of(check.clip_grad_norm(wrong, show=False))


def test_a_clip_grad_norm_that_trips_on_a_missing_gradient_is_told_to_skip_it():
    report = check.clip_grad_norm(clip_forgets_none, show=False)
    assert not report and any("skip parameters whose .grad is None" in c.detail for c in report.cases)


# --- all four ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, wrong_kind", [
    ("cross_entropy", torch.nn.CrossEntropyLoss), ("adamw", ref.cosine_lr),
    ("cosine_lr", ref.AdamW), ("clip_grad_norm", lambda params: None),
])
def test_a_stub_is_reported_not_written_and_a_wrong_kind_in_one_line(name, wrong_kind):
    class Stub(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
            super().__init__(params, dict(lr=lr))

        def step(self, closure=None):
            raise NotImplementedError

    run = getattr(check, name)
    report = run(Stub if name == "adamw" else stub, show=False)
    assert not report and "not written yet" in str(report) and "\n" not in str(report)
    report = run(wrong_kind, show=False)
    assert not report and report.problem and "\n" not in str(report)


def test_the_checks_leave_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    for run, obj in [(check.cross_entropy, ref_nn.cross_entropy), (check.adamw, ref.AdamW),
                     (check.cosine_lr, ref.cosine_lr), (check.clip_grad_norm, ref.clip_grad_norm)]:
        assert run(obj, show=False)
    assert torch.equal(before, torch.random.get_rng_state())
