"""Running a reader's piece case by case against the reference, and saying what went wrong.

A checker builds a :class:`Checker` for the reader's function or class, adds cases (an input, the
reference's answer, the usual mistakes' answers) and returns its :class:`Report`. A failed case
gets a hint: the usual mistake whose answer the reader's code reproduces, else a rule about what
came back (wrong shape, NaN, None).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Case", "Report", "Checker", "Mistake", "NotWritten", "compare", "CHECKS", "register", "seeded"]


class NotWritten(Exception):
    """The reader's stub has no body yet (it raised NotImplementedError, or returned ``...``/None)."""


@dataclass
class Mistake:
    """A usual mistake: what it gives on a case (``answer``, computed lazily), and the hint naming it."""

    hint: str
    answer: Callable[[], Any]


@dataclass
class Case:
    name: str
    passed: bool
    detail: str
    hint: str = ""


@dataclass
class Report:
    """A checker's verdict: truthy when every case passed. ``str`` is the whole report, ``repr`` one line."""

    piece: str
    cases: list[Case] = field(default_factory=list)
    problem: str = ""  # set when nothing could be run: the one line that says why
    shown: bool = False  # printed already (by the checker)

    def __bool__(self) -> bool:
        return not self.problem and bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    def __str__(self) -> str:
        if self.problem:
            return f"{self.piece}: {self.problem}"
        lines = [f"{self.piece}: {self.passed} of {len(self.cases)} cases passed"]
        for c in self.cases:
            lines.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
            if c.hint:
                lines.append(f"       hint: {c.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        verdict = self.problem or f"{self.passed} of {len(self.cases)} cases passed"
        return f"<check {self.piece}: {verdict}>"

    def _ipython_display_(self) -> None:
        """A notebook shows the report once: the checker printed it, so showing the result adds nothing."""
        if not self.shown:
            print(self)

    @property
    def hints(self) -> list[str]:
        return [c.hint for c in self.cases if c.hint]


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return repr(x) if len(repr(x)) <= 60 else repr(x)[:57] + "..."


def compare(expected: Any, got: Any, atol: float = 1e-5, rtol: float = 1e-4) -> tuple[bool, str]:
    """Whether ``got`` matches ``expected``, and a short account: shapes, dtypes, the largest difference.

    Tensors match with ``torch.allclose`` after both are cast to float64; sequences and dicts
    element by element; anything else with ``==`` (floats with ``math.isclose``).
    """
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            return False, f"expected a tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return False, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
        if got.dtype != expected.dtype:
            return False, f"expected dtype {expected.dtype}, got {got.dtype}"
        if expected.dtype == torch.bool or not expected.dtype.is_floating_point:
            same = torch.equal(got.cpu(), expected.cpu())
            return same, _describe(got) + ("" if same else f", {int((got.cpu() != expected.cpu()).sum())} entries differ")
        e, g = expected.detach().double().cpu(), got.detach().double().cpu()
        if not torch.isfinite(g).all() and torch.isfinite(e).all():
            return False, f"{_describe(got)} with {int((~torch.isfinite(g)).sum())} non-finite entries (NaN or inf)"
        diff = (e - g).abs().nan_to_num(0.0).max().item() if e.numel() else 0.0
        ok = torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
        return ok, f"{_describe(got)}, largest difference {diff:.2g}"
    if isinstance(expected, float) and isinstance(got, int | float) and not isinstance(got, bool):
        ok = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
        return ok, f"expected {expected:.6g}, got {got:.6g}"
    if isinstance(expected, tuple | list) and isinstance(got, tuple | list) and len(expected) == len(got) and \
            any(isinstance(e, Tensor | float) for e in expected):
        for i, (e, g) in enumerate(zip(expected, got)):
            ok, detail = compare(e, g, atol, rtol)
            if not ok:
                return False, f"item {i}: {detail}"
        return True, f"{len(expected)} items match"
    ok = type(got) is type(expected) and got == expected if not isinstance(expected, int) else got == expected
    return bool(ok), ("as expected: " if ok else f"expected {_describe(expected)}, got ") + _describe(got)


class Checker:
    """Collects the cases of one piece for the reader's ``obj``.

    ``kind`` is ``"function"`` or ``"class"``; ``params`` the names the stub's signature gives
    (for a class, its ``__init__``'s), so a wrong kind or signature is told in one line.
    """

    def __init__(self, piece: str, obj: Any, kind: str, params: Sequence[str]) -> None:
        self.report = Report(piece)
        self.obj = obj
        self.not_written = 0
        self.report.problem = _kind_problem(obj, kind, params)

    @property
    def ok(self) -> bool:
        """False once nothing more can be run: wrong kind of object, or a stub with no body yet."""
        return not self.report.problem

    def case(
        self,
        name: str,
        run: Callable[[Any], Any],
        expected: Any,
        mistakes: Sequence[Mistake] = (),
        rules: Sequence[tuple[Callable[[Any], bool], str]] = (),
        atol: float = 1e-5,
        rtol: float = 1e-4,
        same: Callable[[Any, Any], tuple[bool, str]] | None = None,
    ) -> bool:
        """Run ``run(obj)`` and hold its answer to ``expected``; on failure find the hint.

        ``mistakes``: usual mistakes, tried in order; the first whose answer matches the reader's
        names the error. ``rules``: ``(predicate(got), hint)`` pairs tried after them. ``same``
        replaces :func:`compare` when equality is something else (a token list, a state dict).
        """
        if not self.ok:
            return False
        try:
            got = run(self.obj)
        except NotImplementedError:
            return self._not_written()
        except NotWritten:
            return self._not_written()
        except Exception as e:  # the reader's code failed: say how, in one line, and go on
            first = str(e).splitlines()[0] if str(e) else ""
            self.report.cases.append(Case(name, False, f"raised {type(e).__name__}: {first}"[:200], _raised_hint(e)))
            return False
        if got is None or got is Ellipsis:
            return self._not_written()
        ok, detail = (same or (lambda e, g: compare(e, g, atol, rtol)))(expected, got)
        hint = ""
        if not ok:
            for m in mistakes:
                try:
                    wrong = m.answer()
                    if (same or (lambda e, g: compare(e, g, atol, rtol)))(wrong, got)[0]:
                        hint = m.hint
                        break
                except Exception:  # a mistake that cannot run on this case names nothing
                    continue
            if not hint:
                hint = next((h for pred, h in rules if _safe(pred, got)), "")
        self.report.cases.append(Case(name, ok, detail, hint))
        return ok

    def fail(self, name: str, detail: str, hint: str = "") -> None:
        """A case the checker judged itself (a timing, a file on disk)."""
        if self.ok:
            self.report.cases.append(Case(name, False, detail, hint))

    def passed(self, name: str, detail: str) -> None:
        if self.ok:
            self.report.cases.append(Case(name, True, detail))

    def _not_written(self) -> bool:
        self.report.problem = ("not written yet (the stub raises NotImplementedError or returns nothing): "
                               "write it, then run this check again")
        self.report.cases.clear()
        return False

    def done(self, show: bool = True) -> Report:
        """The report, printed when ``show``."""
        if show:
            print(self.report)
            self.report.shown = True
        return self.report


def _safe(pred: Callable[[Any], bool], got: Any) -> bool:
    try:
        return bool(pred(got))
    except Exception:
        return False


def _raised_hint(e: Exception) -> str:
    text = str(e)
    if isinstance(e, RuntimeError) and ("size of tensor" in text or "shape" in text or "mat1 and mat2" in text):
        return "the shapes do not line up: print each tensor's .shape and compare with the docstring's"
    if isinstance(e, TypeError) and "argument" in text:
        return "the call does not match the stub's signature: keep its parameter names and order"
    return ""


def _kind_problem(obj: Any, kind: str, params: Sequence[str]) -> str:
    """One line saying why ``obj`` cannot be checked as the stub describes, or ``""``."""
    want = f"{'a class' if kind == 'class' else 'a function'} taking ({', '.join(params)})"
    if kind == "class":
        if not inspect.isclass(obj):
            what = "an instance" if isinstance(obj, torch.nn.Module) else type(obj).__name__
            return f"expected {want}, got {what}: pass the class itself"
        target = obj.__init__
    else:
        if inspect.isclass(obj) or not callable(obj):
            return f"expected {want}, got {'a class' if inspect.isclass(obj) else type(obj).__name__}"
        target = obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return ""  # a builtin or C function: nothing to read, so let the cases speak
    ps = [p for p in sig.parameters.values() if p.name != "self"]
    if any(p.kind is p.VAR_POSITIONAL for p in ps):
        return ""
    positional = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if len(required) > len(params) or len(positional) < len(params):
        got = ", ".join(p.name for p in ps)
        return f"expected {want}, got one taking ({got}): keep the stub's signature"
    return ""


@dataclass
class Entry:
    """A registered checker: its function and the names it reads from a reader's module."""

    run: Callable[..., Report]
    attrs: tuple[str, ...]


#: check name -> checker, in the order the book meets the pieces (filled by :func:`register`)
CHECKS: dict[str, Entry] = {}


def register(*attrs: str) -> Callable[[Callable[..., Report]], Callable[..., Report]]:
    """Register a checker under its function's name; ``attrs`` are the names of what it checks in a
    reader's module (``python -m lmcore.check`` looks them up there)."""

    def wrap(fn: Callable[..., Report]) -> Callable[..., Report]:
        CHECKS[fn.__name__] = Entry(fn, attrs)
        return fn

    return wrap


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Run code that draws from the global generators (torch's CPU one, numpy's, ``random``) from
    ``seed``, and put all three back afterwards: the check repeats exactly, and a notebook's later
    cells draw what they drew before it ran."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
