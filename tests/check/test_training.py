"""The training checkers: correct pieces pass, and each usual mistake fails with the hint that names it.

The wrong pieces are written as a reader would write them, with the handout's signatures.
"""

import random

import numpy as np
import pytest
import torch

from lmcore import check
from lmcore.dataset import get_batch as lmcore_get_batch
from lmcore.generate import sample_next as lmcore_sample_next


def batch(dataset, batch_size, context_length, device, *, high=None, shift=1, dtype=np.int64, to_device=True):
    """A reader's get_batch; the keywords make its usual mistakes."""
    high = len(dataset) - context_length if high is None else high
    starts = np.random.randint(0, high, size=batch_size)
    x = np.stack([dataset[s : s + context_length] for s in starts]).astype(dtype)
    y = np.stack([dataset[s + shift : s + shift + context_length] for s in starts]).astype(dtype)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return (x.to(device), y.to(device)) if to_device else (x, y)


def test_get_batch_lmcore_and_a_readers_pass():
    assert check.get_batch(lmcore_get_batch, show=False)
    assert check.get_batch(batch, show=False)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda d, b, t, dev: batch(d, b, t, dev, shift=0), "targets are not shifted"),
    (lambda d, b, t, dev: batch(d, b, t, dev, high=len(d) - t + 1), "ran past the end of the data"),
    (lambda d, b, t, dev: batch(d, b, t, dev, high=len(d) - t - 1), "last valid start is never drawn"),
    (lambda d, b, t, dev: batch(d, b, t, dev, high=len(d) // 2), "not drawn over the whole data"),
    (lambda d, b, t, dev: batch(d, b, t, dev, dtype=np.float32), "returned as floats"),
    (lambda d, b, t, dev: batch(d, b, t, dev, to_device=False), "move them to `device`"),
])
def test_get_batch_mistakes_are_named(wrong, phrase):
    report = check.get_batch(wrong, show=False)
    assert not report and any(phrase in h for h in report.hints), str(report)


def save_checkpoint(model, optimizer, iteration, out):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration}, out)


def load_checkpoint(src, model, optimizer):
    state = torch.load(src)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["iteration"]


def test_checkpointing_round_trips_and_leaves_the_random_state_alone():
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert check.checkpointing(save_checkpoint, load_checkpoint, show=False)
    assert torch.equal(before[0], torch.get_rng_state()) and (before[1] == np.random.get_state()[1]).all()
    assert before[2] == random.getstate()


def test_checkpointing_mistakes_are_named():
    def save_weights_only(model, optimizer, iteration, out):
        torch.save({"model": model.state_dict(), "iteration": iteration}, out)

    def load_weights_only(src, model, optimizer):
        state = torch.load(src)
        model.load_state_dict(state["model"])
        return state["iteration"]

    def load_returning_nothing(src, model, optimizer):
        load_checkpoint(src, model, optimizer)

    def save_to_a_path(model, optimizer, iteration, out):
        with open(out, "wb") as f:
            save_checkpoint(model, optimizer, iteration, f)

    for (save, load), phrase in [((save_weights_only, load_weights_only), "AdamW's state was not restored"),
                                 ((save_checkpoint, load_returning_nothing), "load_checkpoint returns nothing"),
                                 ((save_to_a_path, load_checkpoint), "open binary files as well as paths")]:
        report = check.checkpointing(save, load, show=False)
        assert not report and any(phrase in h for h in report.hints), str(report)


def sample(logits, temperature, top_p, generator=None, *, scale="divide", nucleus="reaches", softmax=True, squeeze=True,
           use_generator=True):
    """A reader's sample_next; the keywords make its usual mistakes."""
    if temperature == 0:
        return logits.argmax(-1) if squeeze else logits.argmax(-1, keepdim=True)
    scores = logits / temperature if scale == "divide" else logits * temperature
    probs = torch.softmax(scores, -1) if softmax else scores
    if top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = (cum - sorted_p >= top_p) if nucleus == "reaches" else (cum > top_p)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    ids = torch.multinomial(probs, 1, generator=generator if use_generator else None)
    return ids.squeeze(-1) if squeeze else ids


def test_sample_next_lmcore_and_a_readers_pass():
    assert check.sample_next(lmcore_sample_next, show=False)
    assert check.sample_next(sample, show=False)


@pytest.mark.parametrize("mistake, phrase", [
    ({"scale": "multiply"}, "multiplied by the temperature"),
    ({"nucleus": "below"}, "token that crosses top_p is left out"),
    ({"softmax": False}, "drawn in proportion to the logits"),
    ({"squeeze": False}, "one id per row"),
    ({"use_generator": False}, "draw with the `generator` passed in"),
])
def test_sample_next_mistakes_are_named(mistake, phrase):
    report = check.sample_next(lambda logits, t, p, generator=None: sample(logits, t, p, generator, **mistake), show=False)
    assert not report and any(phrase in h for h in report.hints), str(report)


def test_stubs_are_reported_not_written_and_a_wrong_kind_in_one_line():
    def stub(*args, **kwargs):
        raise NotImplementedError

    for report in (check.get_batch(stub, show=False), check.checkpointing(stub, stub, show=False),
                   check.checkpointing(save_checkpoint, stub, show=False), check.sample_next(stub, show=False)):
        assert not report and "not written yet" in str(report) and "\n" not in str(report)
    report = check.checkpointing(save_checkpoint, lambda src: 0, show=False)
    assert "load_checkpoint: expected a function taking (src, model, optimizer)" in str(report)
    assert "got a class" in str(check.get_batch(torch.nn.Linear, show=False))
