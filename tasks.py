#!/usr/bin/env python3
"""The README's two commands, with their own set-up.

    python3 tasks.py book   # build the HTML book into _build/html, every notebook executed
    python3 tasks.py test   # unit tests + strict nbval over every notebook, twice (default and AVX2 kernels)

Both create ``.venv`` (once, and again when a requirements file changes), install the pinned
requirements and ``lmcore`` into it, and fetch the data the notebooks read into the data cache
(``$LMCORE_CACHE_DIR``, default ``~/.cache/lmcore``). Extra arguments go to pytest or
jupyter-book.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
INPUTS = ["requirements.txt", "requirements-ci.txt", "pyproject.toml"]
DATA = ["tinystories-sample", "tinystories-valid-sample", "gpt2-vocab", "gpt2-merges"]


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if done.returncode:
        sys.exit(done.returncode)


def setup() -> None:
    """Make .venv match the pinned requirements (skipped when nothing changed since last time)."""
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in INPUTS)).hexdigest()
    stamp = VENV / ".lmcore-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-r", "requirements-ci.txt", "-e", ".")
    stamp.write_text(digest)


def book(args: list[str]) -> None:
    run(BIN / "jupyter-book", "build", ".", "-W", "-n", "--keep-going", *args)
    print(f"book: {ROOT / '_build' / 'html' / 'index.html'}")


#: PyTorch, oneDNN and MKL on their AVX2 kernels: on an AVX-512 machine, another kernel path, standing in
#: for another CPU. The notebooks must print the same under it, so their outputs hold on any reader's CPU.
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
NBVAL = ["--nbval", "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "-p", "no:cacheprovider"]


def test(args: list[str]) -> None:
    run(PY, "-m", "ruff", "check", "lmcore", "tests", "benchmarks", "tasks.py")
    run(PY, "-m", "pytest", "tests", "notebooks", *NBVAL, "-rs", *args)
    print("+ the notebooks again, strict, on the AVX2 kernel path:", " ".join(f"{k}={v}" for k, v in AVX2.items()), flush=True)
    run(PY, "-m", "pytest", "notebooks", *NBVAL, "-q", *args, env={**os.environ, **AVX2})


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("book", "test"):
        sys.exit(__doc__)
    setup()
    run(PY, "-m", "lmcore", "fetch", *DATA)
    {"book": book, "test": test}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
