#!/usr/bin/env python3
"""The README's two commands, with their own set-up.

    python3 tasks.py book   # build the HTML book into _build/html, every notebook executed
    python3 tasks.py test   # unit tests + strict nbval over every notebook, twice (default and AVX2 kernels)
    python3 tasks.py version X.Y.Z               # set lmcore's version everywhere it is written (see VERSIONED)
    python3 tasks.py torch-range [VERSION ...]   # the unit tests on the lowest torch requirements.txt allows
                                                 # and the newest on the registry (throwaway venvs, GBs of wheels)

Both create ``.venv`` (once, and again when a requirements file changes), install the pinned
requirements and ``lmcore`` into it, and fetch the data the notebooks read into the data cache
(``$LMCORE_CACHE_DIR``, default ``~/.cache/lmcore``). Extra arguments go to pytest or
jupyter-book.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
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


def lowest_torch() -> str:
    """The lowest torch ``requirements.txt`` allows (its ``torch>=X`` line)."""
    found = re.search(r"^torch>=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    if not found:
        sys.exit("requirements.txt has no torch>=X line")
    return found.group(1)


def newest_torch(pip_env: dict[str, str]) -> str:
    """The newest torch release on the package registry (``pip index versions torch``)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "torch"], env=pip_env,
                         capture_output=True, text=True, check=True).stdout
    return re.search(r"^torch \(([^)]+)\)", out, re.M).group(1)


#: tests that check the notebooks or the built book, not lmcore on a torch: left to ``test``
NOT_TORCH_RANGE = ["tests/test_book_browser.py", "tests/test_notebook_claims.py", "tests/test_notebook_prose.py"]


def torch_range(args: list[str]) -> None:
    """The unit tests on each torch version in a throwaway venv, with every other package at its pin.

    pip's own config is ignored (``PIP_CONFIG_FILE`` set to the null device) so that a machine-wide
    cap on torch does not pick the version instead of us. Prints one line a version and writes them
    to ``benchmarks/results/torch-range.json``.
    """
    pip_env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    versions = args or [lowest_torch(), newest_torch(pip_env)]
    pins = [line for f in ("requirements.txt", "requirements-ci.txt") for line in (ROOT / f).read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r", "torch"))]
    results = {}
    for version in versions:
        with tempfile.TemporaryDirectory(prefix=f"torch-{version}-") as tmp:
            env_dir = Path(tmp) / "venv"
            venv.create(env_dir, with_pip=True)
            py = env_dir / BIN.name / PY.name
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("\n".join([f"torch=={version}", *pins]) + "\n")
            print(f"+ torch {version}: installing into {env_dir}", flush=True)
            install = subprocess.run([py, "-m", "pip", "install", "--quiet", "-r", reqs, "-e", ROOT], env=pip_env)
            if install.returncode:
                results[version] = "install failed"
            else:
                ignore = [f"--ignore={t}" for t in NOT_TORCH_RANGE]
                done = subprocess.run([py, "-m", "pytest", "tests", "-q", "-x", "-p", "no:cacheprovider", *ignore],
                                      cwd=ROOT, capture_output=True, text=True)
                print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", flush=True)
                first = next((line for line in done.stdout.splitlines() if line.startswith("FAILED")), "")
                results[version] = "passed" if done.returncode == 0 else f"failed: {first or f'pytest exit {done.returncode}'}"
        print(f"torch {version}: {results[version]}", flush=True)
    out = ROOT / "benchmarks" / "results" / "torch-range.json"
    known = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**known, **results}, indent=1, sort_keys=True) + "\n")
    if any(r != "passed" for r in results.values()):
        sys.exit(1)


#: where the book's version is written: ``lmcore.__version__`` (the setting), the tag the launch buttons open,
#: the Colab link in the README, and each notebook's ``BOOK_VERSION`` (what its first cell installs) with the
#: line that cell prints. (file pattern, regex whose group 1 is the version)
VERSIONED = [
    ("lmcore/__init__.py", r'^__version__ = "([^"]+)"'),
    ("_config.yml", r"^  branch: v(\S+)"),
    ("README.md", r"lmcore/blob/v([^/]+)/notebooks"),
    ("README.md", r"tag `v([^`]+)`"),
    ("notebooks/*.ipynb", r'BOOK_VERSION = \\"([^\\"]+)\\"'),
    ("notebooks/*.ipynb", r'"lmcore ([^ ]+) \(this book\'s version\)'),
]


def versions_written() -> dict[str, set[str]]:
    """Each file of :data:`VERSIONED` -> the versions written in it."""
    found: dict[str, set[str]] = {}
    for pattern, regex in VERSIONED:
        for path in sorted(ROOT.glob(pattern)):
            hits = re.findall(regex, path.read_text(encoding="utf-8"), re.M)
            found.setdefault(str(path.relative_to(ROOT)), set()).update(hits or {"(none)"})
    return found


def set_version(args: list[str]) -> None:
    """Write version ``args[0]`` in every place of :data:`VERSIONED`."""
    if len(args) != 1 or not re.fullmatch(r"\d+\.\d+\.\d+\S*", args[0]):
        sys.exit("usage: python3 tasks.py version X.Y.Z")
    for pattern, regex in VERSIONED:
        for path in sorted(ROOT.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            new = re.sub(regex, lambda m: m.group(0).replace(m.group(1), args[0]), text, flags=re.M)
            path.write_text(new, encoding="utf-8")
    print(f"version {args[0]} written; tag the commit v{args[0]} and push the tag")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("book", "test", "torch-range", "version"):
        sys.exit(__doc__)
    if sys.argv[1] == "version":
        return set_version(sys.argv[2:])
    if sys.argv[1] == "torch-range":  # its own venvs; the data comes from the cache as for ``test``
        setup()
        run(PY, "-m", "lmcore", "fetch", *DATA)
        return torch_range(sys.argv[2:])
    setup()
    run(PY, "-m", "lmcore", "fetch", *DATA)
    {"book": book, "test": test}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
