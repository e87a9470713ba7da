"""``python -m lmcore.check path/to/module.py [--only NAME]``: check a reader's own module.

Each checker looks up the names the chapter's stubs use (``softmax``, ``Linear``, ...) in the
module and checks those it defines; ``--only NAME`` checks one piece, and a module that lacks it
fails. Exits 0 when every check run passed, 1 otherwise, 2 when the module cannot be read, defines
none of the names, or a check's name is unknown.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from . import CHECKS


def load_module(path: str):
    """Import the file at ``path`` as a module; raise ``SystemExit`` with one line when it cannot."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"lmcore.check: {path}: no such file")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"lmcore.check: {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the reader's file: say what broke, in one line
        where = ""
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(file):
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        raise SystemExit(f"lmcore.check: {path} does not import: {type(e).__name__}: {e}{where}") from None
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcore.check", description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a .py file holding your functions and classes, named as the stubs name them")
    parser.add_argument("--only", action="append", metavar="NAME", help=f"run this check only (repeatable): {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    names = args.only or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"lmcore.check: no check named {', '.join(unknown)}; the checks are: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    try:
        module = load_module(args.module)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    has = {name: all(hasattr(module, a) for a in CHECKS[name].attrs) for name in names}
    if args.only:  # asked for by name: a missing one is a failure
        for name in names:
            if not has[name]:
                print(f"{name}: {args.module} defines no {' or '.join(a for a in CHECKS[name].attrs if not hasattr(module, a))}")
    elif not any(has.values()):
        print(f"lmcore.check: {args.module} defines none of the checked names "
              f"({', '.join(a for e in CHECKS.values() for a in e.attrs)})", file=sys.stderr)
        return 2
    else:
        skipped = [n for n in names if not has[n]]
        if skipped:
            print(f"not defined, so not checked: {', '.join(skipped)}\n")
        names = [n for n in names if has[n]]
    failed = [n for n in names if not has[n] or not CHECKS[n].run(*(getattr(module, a) for a in CHECKS[n].attrs))]
    print(f"\n{len(names) - len(failed)} of {len(names)} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
