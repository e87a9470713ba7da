"""Checkers for chapter 6's pieces: the data loader, checkpoints, and one sampling step.

The reader's code runs under :func:`~lmcore.check.report.seeded`, so a ``get_batch`` that draws
from the global generator is repeatable and leaves the notebook's random state as it was. The
handout's signatures are used (``get_batch(dataset, batch_size, context_length, device)``,
``save_checkpoint(model, optimizer, iteration, out)``, ``load_checkpoint(src, model, optimizer)``).
"""

from __future__ import annotations

import copy
import functools
import io
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..generate import sample_next as ref_sample_next
from ..model import ModelConfig, TransformerLM
from ..nn import cross_entropy
from ..optim import AdamW
from .nn import _randn
from .report import Checker, Mistake, Report, register, seeded

__all__ = ["get_batch", "checkpointing", "sample_next"]


# -- get_batch ----------------------------------------------------------------------------------------


class _RanPastEnd:
    """What a window that reads past the end of the data raised (an index or a ragged stack)."""

    def __init__(self, error: Exception) -> None:
        self.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:120]


def _pair(f: Callable, data: np.ndarray, batch_size: int, context_length: int, device: str, seed: int) -> tuple[Tensor, Tensor]:
    """The reader's ``(x, y)``, refused in one line when it is not a pair of tensors (None passes: a stub's)."""
    with seeded(seed):
        got = f(data, batch_size, context_length, device)
    if got is None:
        return got
    if not (isinstance(got, tuple | list) and len(got) == 2 and all(isinstance(t, Tensor) for t in got)):
        raise TypeError(f"get_batch should return a pair (x, y) of tensors, got {type(got).__name__}")
    return got


def _judged(test: Callable[[Any], tuple[bool, str]]) -> Callable[[Any, Any], tuple[bool, str]]:
    """A ``same`` for cases with no single right answer: ``test(got)`` says whether it is one."""
    return lambda expected, got: (False, f"raised {got.error}") if isinstance(got, _RanPastEnd) else test(got)


def _shifted(pair: tuple[Tensor, Tensor]) -> tuple[bool, str]:
    x, y = (t.cpu().long() for t in pair)
    consecutive = bool((x[:, 1:] - x[:, :-1] == 1).all())
    shifted = torch.equal(y, x + 1)
    return consecutive and shifted, ("each row consecutive ids, y one ahead of x" if consecutive and shifted else
                                     f"{int((y != x + 1).sum())} of {y.numel()} targets are not the next id")


def _starts(pair: tuple[Tensor, Tensor]) -> Tensor:
    return pair[0][:, 0].cpu().long()  # the data is 0, 1, 2, ...: a window's first id is its start


@register("get_batch")
def get_batch(fn: Callable, show: bool = True) -> Report:
    """``get_batch(dataset, batch_size, context_length, device)``: shapes and dtype, targets shifted by
    one, every window inside the data, every start drawn, fresh draws each call, the device."""
    c = Checker("get_batch", fn, "function", ("dataset", "batch_size", "context_length", "device"))
    data = np.arange(1000, dtype=np.uint16)  # each id is its position, so a window shows where it starts
    short = np.arange(12, dtype=np.uint16)  # 8 valid starts for context 4: 4,096 draws hit each of them
    last = len(short) - 4 - 1

    def shape(pair: tuple[Tensor, Tensor] | None) -> str | None:
        if pair is None:
            return None
        return "; ".join(f"{n}: shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for n, t in zip("xy", pair))

    c.case("batch 8, context 5 from uint16 ids: shapes and dtype", lambda f: shape(_pair(f, data, 8, 5, "cpu", 0)),
           "x: shape (8, 5) int64; y: shape (8, 5) int64",
           rules=[(lambda g: "float" in g, "ids are returned as floats: keep them int64 (torch.long), which embeddings "
                   "and cross-entropy index with"),
                  (lambda g: "int64" not in g, "return int64 ids (torch.long): convert the uint16 data with .astype(np.int64) "
                   "or .long()")])
    c.case("y is x shifted by one, inside the same window", lambda f: _pair(f, data, 8, 5, "cpu", 0), "shifted",
           same=_judged(_shifted),
           rules=[(lambda g: torch.equal(g[0], g[1]), "the targets are not shifted: y is the window one position later, "
                   "y[:, i] == x[:, i + 1] (take context_length + 1 ids and split them)"),
                  (lambda g: not (g[0][:, 1:] - g[0][:, :-1] == 1).all(), "a row should be context_length consecutive ids "
                   "from one random start: dataset[s : s + context_length]")])

    def draws(f: Callable) -> tuple[Tensor, Tensor] | _RanPastEnd:
        try:
            return _pair(f, short, 4096, 4, "cpu", 1)
        except (IndexError, RuntimeError, ValueError) as e:  # a window past the end: numpy's index, or a ragged stack
            return _RanPastEnd(e)

    def inside(pair: tuple[Tensor, Tensor]) -> tuple[bool, str]:
        top = int(_starts(pair).max())
        return top <= last, f"latest start {top} (the last valid one is {last})"

    past_end = ("a window ran past the end of the data: a window holds context_length + 1 ids, so the last valid start is "
                "len(dataset) - context_length - 1 (torch.randint's high is exclusive: "
                "randint(0, len(dataset) - context_length))")
    c.case(f"12 ids, context 4, 4,096 windows: all inside the data (starts 0 to {last})", draws, "inside",
           same=_judged(inside), rules=[(lambda g: isinstance(g, _RanPastEnd) or int(_starts(g).max()) > last, past_end)])

    def covered(pair: tuple[Tensor, Tensor]) -> tuple[bool, str]:
        counts = torch.bincount(_starts(pair).clamp(0, last + 1), minlength=last + 2)[: last + 1]
        # uniform draws give each of the 8 starts 512 +- 23: half that is far outside chance
        ok = bool((counts > len(pair[0]) / (last + 1) / 2).all())
        return ok, f"draws per start: {counts.tolist()}"

    c.case("every start from 0 to the last valid one is drawn, about equally often", draws, "covered",
           same=_judged(covered),
           rules=[(lambda g: isinstance(g, _RanPastEnd), past_end),
                  (lambda g: int(_starts(g).max()) == last - 1,
                   "the last valid start is never drawn: the high end of torch.randint (and np.random.randint) is exclusive, so "
                   "pass len(dataset) - context_length"),
                  (lambda g: not isinstance(g, _RanPastEnd), "the windows are not drawn over the whole data: draw each "
                   "start uniformly from 0 to len(dataset) - context_length - 1")])

    def fresh(f: Callable) -> tuple[Tensor, Tensor]:
        with seeded(2):  # both calls inside one seeding: a reader's global generator moves between them
            first, second = f(data, 8, 5, "cpu"), f(data, 8, 5, "cpu")
        return first[0], second[0]

    def differ(xs: tuple[Tensor, Tensor]) -> tuple[bool, str]:
        calls, rows = not torch.equal(*xs), len(set(xs[0][:, 0].tolist())) > 1
        said = {True: "differ", False: "are equal"}
        return calls and rows, f"two calls {said[calls]}; rows of one batch {said[rows]}"

    c.case("two calls draw different windows, and so do the rows of one batch", fresh, "random", same=_judged(differ),
           rules=[(lambda g: torch.equal(*g), "two calls gave the same batch: draw new random starts each call (do not "
                   "reseed inside get_batch)"),
                  (lambda g: len(set(g[0][:, 0].tolist())) == 1, "every row has the same start: draw batch_size starts, "
                   "one per row")])
    c.case("device='meta' (a device other than the CPU)",
           lambda f: " and ".join(t.device.type for t in _pair(f, data, 2, 3, "meta", 0)), "meta and meta",
           rules=[(lambda g: "cpu" in g, "x and y stay on the CPU: move them to `device` (x.to(device))")])
    return c.done(show)


# -- checkpointing -------------------------------------------------------------------------------------

TINY = ModelConfig(vocab_size=32, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)


def _trained(seed: int) -> tuple[TransformerLM, AdamW, Tensor]:
    """A tiny model and its AdamW after one step, the same for the same seed; and a second batch."""
    with seeded(seed):
        model = TransformerLM(TINY)
        ids = torch.randint(0, TINY.vocab_size, (2, 2, TINY.context_length + 1))
    opt = AdamW(model.parameters(), lr=1e-2)
    _step(model, opt, ids[0])
    return model, opt, ids[1]


def _step(model: TransformerLM, opt: torch.optim.Optimizer, ids: Tensor) -> None:
    opt.zero_grad()
    cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
    opt.step()


def _weights(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(expected: Any, got: Any) -> tuple[bool, str]:
    """Nested dicts and lists of tensors and numbers, equal exactly; the detail names what differs."""
    def walk(e: Any, g: Any, where: str) -> str:
        if isinstance(e, dict):
            if isinstance(g, dict) and e and not g:
                return f"{where or 'state'} is empty"
            if not isinstance(g, dict) or set(e) != set(g):
                missing = sorted(map(str, set(e) - set(g if isinstance(g, dict) else {})))
                return f"{where or 'state'}: keys differ" + (f" (missing {', '.join(missing[:4])})" if missing else "")
            return next((d for k in e if (d := walk(e[k], g[k], f"{where}.{k}" if where else str(k)))), "")
        if isinstance(e, Tensor):
            same = isinstance(g, Tensor) and g.shape == e.shape and torch.equal(g.cpu(), e.cpu())
            return "" if same else f"{where} differs"
        return "" if (g.item() if isinstance(g, Tensor) else g) == e else f"{where} differs"

    problem = walk(expected, got, "")
    return not problem, problem or "all equal"


@register("save_checkpoint", "load_checkpoint")
def checkpointing(save: Callable, load: Callable, show: bool = True) -> Report:
    """``save_checkpoint(model, optimizer, iteration, out)`` and ``load_checkpoint(src, model, optimizer) -> iteration``:
    a tiny model and AdamW after a step, saved and loaded into fresh ones; then one more step on both."""
    c = Checker("checkpointing", save, "function", ("model", "optimizer", "iteration", "out"))
    loader = Checker("checkpointing", load, "function", ("src", "model", "optimizer"))
    if c.ok and not loader.ok:
        c.report.problem = "load_checkpoint: " + loader.report.problem
    if not c.ok:
        return c.done(show)
    model, opt, batch = _trained(0)
    weights, opt_state = _weights(model), copy.deepcopy(opt.state_dict()["state"])  # state_dict shares its tensors
    _step(model, opt, batch)
    after = _weights(model)
    # what one more step gives when the weights come back but AdamW starts afresh
    with seeded(2):
        restart = TransformerLM(TINY)
    restart.load_state_dict(weights)
    _step(restart, AdamW(restart.parameters(), lr=1e-2), batch)
    results: dict[str, dict] = {}

    def round_trip(out: str) -> dict[str, Any]:
        """Save the step-one model at iteration 7 to ``out`` (a path, or "file" for a BytesIO); load into fresh objects."""
        if out not in results:
            original, original_opt, _ = _trained(0)
            with seeded(1):
                fresh = TransformerLM(TINY)  # other weights, so a load that does nothing shows
            fresh_opt = AdamW(fresh.parameters(), lr=1e-2)
            with tempfile.TemporaryDirectory() as tmp:
                target = io.BytesIO() if out == "file" else os.path.join(tmp, out)
                save(original, original_opt, 7, target)
                if out == "file":
                    target.seek(0)
                iteration = load(target, fresh, fresh_opt)
            state = copy.deepcopy(fresh_opt.state_dict()["state"])  # before the step below changes it
            loaded = {"iteration": iteration, "weights": _weights(fresh), "optimizer": state}
            _step(fresh, fresh_opt, batch)
            results[out] = {**loaded, "after": _weights(fresh)}
        return results[out]

    c.case("weights restored into a fresh model", lambda _: round_trip("checkpoint.pt")["weights"], weights, same=_same_state)
    c.case("load_checkpoint returns the iteration saved (7)",
           lambda _: (lambda it: "nothing (None)" if it is None else it)(round_trip("checkpoint.pt")["iteration"]), 7,
           rules=[(lambda g: g == "nothing (None)", "load_checkpoint returns nothing: return the iteration read from the "
                   "checkpoint, so training resumes from the right step")])
    no_state = ("AdamW's state was not restored: save optimizer.state_dict() in the checkpoint and load it with "
                "optimizer.load_state_dict(); the moments and step count decide the next updates")
    c.case("optimizer state restored (AdamW's step and moments)", lambda _: round_trip("checkpoint.pt")["optimizer"],
           opt_state, same=_same_state, rules=[(lambda g: not g, no_state)])
    c.case("one more step after loading gives the same weights as without the checkpoint",
           lambda _: round_trip("checkpoint.pt")["after"], after, same=_same_state,
           mistakes=[Mistake(no_state, lambda: _weights(restart))])

    def through_file(_: Any) -> dict[str, Tensor] | str:
        try:
            return round_trip("file")["weights"]
        except (TypeError, AttributeError, OSError) as e:
            return f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:120]

    c.case("to and from an open file (io.BytesIO) instead of a path", through_file, weights,
           same=lambda e, g: (False, g) if isinstance(g, str) else _same_state(e, g),
           rules=[(lambda g: isinstance(g, str), "out and src may be open binary files as well as paths: torch.save(obj, out) "
                   "and torch.load(src) accept either, so pass them straight through")])
    return c.done(show)


# -- sample_next ---------------------------------------------------------------------------------------

#: One row of positive logits, in no order: sampling must sort for top-p, and a sampler that skips
#: the softmax (drawing in proportion to the logits themselves) is told apart from one that does not.
LOGITS = torch.tensor([1.0, 3.0, 0.2, 2.2, 0.6, 1.5])
DRAWS = 20_000  # rows drawn at once: each frequency is within about 0.0035 (one standard deviation) of its probability
TOL = 0.02


def _frequencies(ids: Tensor, vocab: int) -> Tensor:
    return torch.bincount(ids.cpu().long().reshape(-1), minlength=vocab).double() / ids.numel()


def _reference(logits: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """The reference's distribution, as frequencies of 200,000 draws of lmcore's ``sample_next``
    (tokens it never draws, outside the nucleus, are exactly 0)."""
    return _reference_of(tuple(logits.tolist()), temperature, top_p).clone()


@functools.lru_cache(maxsize=16)  # the same few rows each time the check runs
def _reference_of(logits: tuple[float, ...], temperature: float, top_p: float) -> Tensor:
    rows = torch.tensor(logits).repeat(200_000, 1)
    return _frequencies(ref_sample_next(rows, temperature, top_p, torch.Generator().manual_seed(0)), len(logits))


def _same_distribution(expected: Tensor, got: Tensor) -> tuple[bool, str]:
    if got.shape != expected.shape:
        return False, f"ids outside [0, {len(expected)}) were drawn"
    never = (expected == 0) & (got > 0)
    diff = (got - expected).abs().max().item()
    ok = diff <= TOL and not never.any()
    detail = f"frequencies {[round(p, 3) for p in got.tolist()]}, largest difference {diff:.3f}"
    return ok, detail + (f"; drew tokens {never.nonzero().flatten().tolist()}, outside the nucleus" if never.any() else "")


@register("sample_next")
def sample_next(fn: Callable, show: bool = True) -> Report:
    """``sample_next(logits, temperature, top_p, generator=None)``: temperature 0 is the argmax; the
    frequencies of many draws (one row repeated) match the reference's with temperature and top-p."""
    c = Checker("sample_next", fn, "function", ("logits", "temperature", "top_p"))
    logits = _randn(5, 11, seed=7)
    c.case("temperature 0 takes the most likely id of each row", lambda f: f(logits.clone(), 0.0, 1.0, generator=None),
           logits.argmax(-1),
           rules=[(lambda g: g.shape == (5, 1), "return one id per row, shape (batch,): squeeze the sampled dimension")])

    def draw(f: Callable, row: Tensor, temperature: float, top_p: float) -> Tensor:
        with seeded(3):  # a sampler that ignores `generator` draws from the global one: keep that as it was
            try:
                ids = f(row.repeat(DRAWS, 1), temperature, top_p, generator=torch.Generator().manual_seed(1))
            except RuntimeError as e:  # torch.multinomial refuses inf or NaN probabilities: the rule below names why
                if "inf" not in str(e) and "nan" not in str(e):
                    raise
                return torch.full((len(row),), float("nan"), dtype=torch.float64)
        if not isinstance(ids, Tensor) or ids.numel() != DRAWS:
            raise ValueError(f"expected one id for each of the {DRAWS} rows, got {getattr(ids, 'shape', type(ids).__name__)}")
        return _frequencies(ids, len(row))

    def strict(p: Tensor) -> Tensor:
        """The nucleus without the token that crosses top_p: the reference's least likely kept token dropped."""
        kept = p.masked_fill(p == 0, 2.0)
        q = p.masked_fill(torch.arange(len(p)) == kept.argmin(), 0.0)
        return q / q.sum()

    multiplied = "the logits were multiplied by the temperature: divide them by it (below 1 sharpens, above 1 flattens)"
    cases = [("temperature 1", LOGITS, 1.0, 1.0), ("temperature 0.5", LOGITS, 0.5, 1.0),
             ("top_p 0.8: the nucleus includes the token that crosses p", LOGITS, 1.0, 0.8),
             ("temperature 0.7 and top_p 0.9", LOGITS, 0.7, 0.9),
             ("logits of +-1000", torch.tensor([1000.0, 999.0, -1000.0, -1000.0]), 1.0, 1.0)]
    for name, row, t, p in cases:
        expected = _reference(row, t, p)
        mistakes = []
        if p == 1 and (row > 0).all():  # multinomial takes positive scores as unnormalised probabilities
            mistakes.append(Mistake("drawn in proportion to the logits: turn them into probabilities with "
                                    "softmax(logits / temperature) first", lambda row=row: (row / row.sum()).double()))
        if t != 1:
            mistakes.append(Mistake(multiplied, lambda row=row, t=t, p=p: _reference(row, 1 / t, p)))
        if p < 1:
            mistakes.append(Mistake("the token that crosses top_p is left out: the nucleus is the smallest set whose "
                                    "probability reaches p, so keep a token while the probability ranked above it is below p",
                                    lambda e=expected: strict(e)))
        c.case(f"{name}: frequencies of {DRAWS:,} draws", lambda f, row=row, t=t, p=p: draw(f, row, t, p), expected,
               mistakes=mistakes, same=_same_distribution,
               rules=[(lambda g, e=expected: bool(((e == 0) & (g > 0)).any()),
                       "tokens outside the nucleus were drawn: zero their probabilities before sampling"),
                      (lambda g: not torch.isfinite(g).all(), "subtract the max before exp so +-1000 cannot overflow")])
        if not c.ok:
            return c.done(show)

    def twice(f: Callable) -> bool:
        with seeded(4):
            a, b = (f(LOGITS.repeat(64, 1), 1.0, 1.0, generator=torch.Generator().manual_seed(5)) for _ in range(2))
        return torch.equal(a, b)

    c.case("the same generator seed gives the same ids", twice, True,
           rules=[(lambda g: g is False, "draw with the `generator` passed in: "
                   "torch.multinomial(probs, 1, generator=generator)")])
    return c.done(show)
