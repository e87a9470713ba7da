"""Checks for the reader's own code: ``check.softmax(my_softmax)`` runs the piece's cases
against lmcore's reference, prints a report, and names the usual mistake a failure points to.

Each chapter's "Your turn" cells call these; ``python -m lmcore.check my_module.py`` runs them on
a module of the reader's (``--only softmax`` for one). Every checker returns a :class:`Report`,
truthy when every case passed. Inputs are seeded with generators of their own, so a check never
moves the global random state.
"""

from __future__ import annotations

import sys

from . import accounting, nn, optim, tokenizer, training  # each registers its checkers
from .report import CHECKS, Report

# in the order the book meets the pieces: chapter 2's tokenizer first, chapter 6's training last
_CHAPTERS = [tokenizer, nn, accounting, optim, training]
for _name, _entry in sorted(CHECKS.items(), key=lambda kv: _CHAPTERS.index(sys.modules[kv[1].run.__module__])):
    CHECKS[_name] = CHECKS.pop(_name)
del _name, _entry
# a checker may share its module's name (check.tokenizer): the name is the checker's
globals().update({name: entry.run for name, entry in CHECKS.items()})

__all__ = ["CHECKS", "Report", *CHECKS]


def __getattr__(name: str):
    if name in CHECKS:
        return CHECKS[name].run
    raise AttributeError(f"lmcore.check has no checker {name!r}; the checkers are: {', '.join(CHECKS)}")


def __dir__() -> list[str]:
    return __all__
