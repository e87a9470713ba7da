"""A claim a chapter prints is a claim its cell asserts.

nbval compares each output with the one committed, so a cell that printed ``equal: False`` when
it was committed passes nbval for ever after. This test reads the committed outputs instead:

- a printed boolean (``True`` or ``False`` as a word, as ``print(..., x == y)`` or
  ``f"{claim}: {holds}"`` writes it) is a claim, and the cell that prints it must ``assert``;
- a printed ``False`` is a claim that failed, unless the cell asserts the False on purpose
  (``assert not ...``), as a cell that shows what does *not* hold does.

The words are looked for in what the reader sees: streams and plain-text results, less the
library code a chapter prints with ``inspect.getsource`` (its defaults and docstrings say True
and False as code does), and not in quoted strings (``'False'`` in a printed list of tokens is
data, not a claim).
"""

import ast
import functools
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import lmcore

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: True or False as a word; not in quotes (data) and not after "=" (a default or keyword argument
#: in source code a chapter prints with inspect.getsource, ``keepdim=True``).
_BOOL = re.compile(r"(?<![\w'\"=])(?<!= )(True|False)(?![\w'\"])")


@functools.cache
def library_sources() -> list[str]:
    """The source of every function, class and method in lmcore, longest first."""
    found = set()
    for info in pkgutil.walk_packages(lmcore.__path__, "lmcore."):
        if info.name.endswith("__main__"):  # importing it would run the command line
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            members = [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]
            for member in members:
                member = getattr(member, "__func__", member)
                if inspect.isfunction(member) or inspect.isclass(member):
                    try:
                        found.add(inspect.getsource(member))
                    except OSError:  # made at run time (a dataclass's __init__): no file to read
                        pass
    return sorted(found, key=len, reverse=True)


def printed_text(cell: dict) -> str:
    """What a code cell shows as text (its streams and plain-text results), less printed lmcore source."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append("".join(out["text"]))
        elif "text/plain" in out.get("data", {}) and "text/html" not in out["data"]:
            parts.append("".join(out["data"]["text/plain"]))
    text = "".join(parts)
    for source in library_sources():
        text = text.replace(source, "")
    return text


def asserts(source: str) -> list[ast.Assert]:
    """The assert statements of a cell (IPython magics dropped so the source parses)."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    return [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Assert)]


def asserts_a_false(tests: list[ast.Assert]) -> bool:
    """True when one of the asserts checks that something is False (``assert not x``)."""
    return any(isinstance(a.test, ast.UnaryOp) and isinstance(a.test.op, ast.Not) for a in tests)


def claims(notebook: Path) -> list[tuple[int, str, str]]:
    """(cell index, printed word, cell source) for each printed boolean in a notebook."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(i, word, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"
            for word in sorted(set(_BOOL.findall(printed_text(c))))]


def test_the_claim_finder():
    lines = ["equal: True\n", "tokens ['False', ' x']\n", "def f(fused: bool = False, keepdim=True):\n"]
    cell = {"outputs": [{"output_type": "stream", "text": lines},
                        {"output_type": "execute_result", "data": {"text/plain": ["False"]}}]}
    assert _BOOL.findall(printed_text(cell)) == ["True", "False"]
    shown = inspect.getsource(lmcore.nn.scaled_dot_product_attention)  # its docstring says "True where ..."
    assert _BOOL.findall(shown) and not _BOOL.findall(printed_text({"outputs": [{"output_type": "stream", "text": [shown]}]}))
    assert asserts_a_false(asserts("x = 1\nassert not x == 2"))
    assert not asserts_a_false(asserts("%pip install x\nassert x == 1"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_printed_claims_are_asserted(notebook):
    unasserted = [f"cell {i} prints {word}" for i, word, source in claims(notebook) if not asserts(source)]
    assert not unasserted, f"{notebook.name}: a cell that prints a claim must assert it: {unasserted}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_claim_is_printed_false(notebook):
    failed = [f"cell {i}" for i, word, source in claims(notebook) if word == "False" and not asserts_a_false(asserts(source))]
    assert not failed, f"{notebook.name}: cells that print False for a claim (if meant, assert it with 'assert not'): {failed}"
