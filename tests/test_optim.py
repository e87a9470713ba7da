"""Optimisers, schedule and clipping against PyTorch's own."""

import math

import pytest
import torch

from lmcore.model import ModelConfig, TransformerLM
from lmcore.nn import cross_entropy
from lmcore.optim import SGD, AdamW, clip_grad_norm, cosine_lr


def _model():
    torch.manual_seed(0)
    return TransformerLM(ModelConfig(vocab_size=50, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64))


def _train(model, opt, steps=100):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 50, (4, 16), generator=gen)
        loss = cross_entropy(model(x)[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("fused", [False, True], ids=["torch-foreach", "torch-fused"])
def test_adamw_tracks_torch_over_100_steps(fused):
    """The teaching AdamW against torch's, and against the fused kernel that training runs."""
    ours, ref = _model(), _model()
    groups = lambda m: [  # noqa: E731
        {"params": [p for n, p in m.named_parameters() if "ln" not in n]},
        {"params": [p for n, p in m.named_parameters() if "ln" in n], "weight_decay": 0.0, "lr": 5e-4},
    ]
    kw = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    _train(ours, AdamW(groups(ours), **kw))
    _train(ref, torch.optim.AdamW(groups(ref), **kw, fused=fused))
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_clip_grad_norm_equals_torch_and_leaves_small_gradients_alone():
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((3, 4), (5,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn(p.shape) * 3
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for c, p in zip(copies, params):
        c.grad = p.grad.clone()
    ours = clip_grad_norm(params, 1.0)
    theirs = torch.nn.utils.clip_grad_norm_(copies, 1.0)
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(params, copies):
        torch.testing.assert_close(a.grad, b.grad)
    small = [g.clone() for g in (p.grad for p in params)]
    clip_grad_norm(params, 100.0)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, small))


def test_adamw_state_saves_and_loads():
    model = _model()
    opt = AdamW(model.parameters(), lr=1e-3)
    _train(model, opt, steps=3)
    state = opt.state_dict()
    again = AdamW(model.parameters(), lr=1e-3)
    again.load_state_dict(state)
    first = next(iter(again.state.values()))
    assert first["step"] == 3 and set(first) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(ValueError, match="betas"):
        AdamW(model.parameters(), betas=(0.9, 1.0))


def test_sgd_toy_decays_step_size():
    w = torch.nn.Parameter(torch.ones(3))
    opt = SGD([w], lr=1.0)
    for t in range(3):
        w.grad = torch.ones(3)
        before = w.detach().clone()
        opt.step()
        torch.testing.assert_close(before - w.detach(), torch.full((3,), 1 / math.sqrt(t + 1)))


@pytest.mark.parametrize("it, expected", [
    (0, 0.0),  # warm-up start
    (5, 0.5),  # mid warm-up
    (10, 1.0),  # warm-up end
    (55, 0.1 + 0.5 * 0.9),  # mid-cycle: half-way down
    (100, 0.1),  # cycle end
    (150, 0.1),  # after: flat
])
def test_cosine_schedule(it, expected):
    assert cosine_lr(it, max_lr=1.0, min_lr=0.1, warmup_iters=10, cosine_cycle_iters=100) == pytest.approx(expected)


@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
def test_clipping_equals_torch(max_norm):
    a, b = _model(), _model()
    for m in (a, b):
        x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(3))
        cross_entropy(m(x)[:, :-1], x[:, 1:]).backward()
    a.lm_head.weight.grad = None  # a parameter without a gradient is skipped
    b.lm_head.weight.grad = None
    ours = clip_grad_norm(a.parameters(), max_norm)
    ref = torch.nn.utils.clip_grad_norm_([p for p in b.parameters() if p.grad is not None], max_norm)
    torch.testing.assert_close(ours, ref)
    for p, q in zip(a.parameters(), b.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad)


def test_sgd_toy_converges_or_diverges_as_the_algebra_says():
    from lmcore.optim import sgd_toy

    small, mid, big = sgd_toy(1e1), sgd_toy(1e2), sgd_toy(1e3)
    assert small[0] == mid[0] == big[0]
    assert small[-1] < small[0]
    # lr 1e2: W is multiplied by 1 - 2/sqrt(t+1): -1 (loss unchanged), then shrinks, and is 0 at t = 3
    assert mid[1] == pytest.approx(mid[0]) and mid[4] < 1e-12 * mid[0]
    # lr 1e3: |1 - 20/sqrt(t+1)| > 1 at each of the ten steps, so the loss explodes
    assert all(b > a for a, b in zip(big, big[1:])) and big[-1] > 1e16 * big[0]


def test_state_bytes_is_two_float32_copies():
    from lmcore.measure import adamw_state_bytes

    model = _model()
    opt = AdamW(model.parameters())
    _train(model, opt, steps=1)
    n = sum(p.numel() for p in model.parameters())
    assert adamw_state_bytes(opt) == 2 * 4 * n  # exp_avg and exp_avg_sq; the step count is a Python int


def test_adamw_by_hand_equals_the_optimizer_and_torch():
    import torch

    from lmcore.optim import AdamW, adamw_by_hand

    rows = adamw_by_hand(1.0, lambda th: 2 * (th - 3.0), steps=5, lr=0.1, weight_decay=0.01)
    for make in (lambda p: AdamW([p], lr=0.1, weight_decay=0.01), lambda p: torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)):
        p = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        opt = make(p)
        for row in rows:
            opt.zero_grad()
            ((p - 3.0) ** 2).backward()
            assert p.grad.item() == pytest.approx(row["g"], rel=1e-12)
            opt.step()
            assert p.item() == pytest.approx(row["theta"], rel=1e-12)
    # the first step: m_hat = g and v_hat = g^2, so Adam adds -lr * sign(g) (g < 0 here: +0.1), whatever the size of g
    assert rows[0]["m_hat"] == pytest.approx(rows[0]["g"]) and rows[0]["adam"] == pytest.approx(0.1, rel=1e-6)
    assert rows[0]["decay"] == pytest.approx(-0.001)  # -lr * weight_decay * theta
    assert rows[0]["theta"] == pytest.approx(1.0 + rows[0]["decay"] + rows[0]["adam"])
