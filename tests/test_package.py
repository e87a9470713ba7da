import importlib
import subprocess
import sys

import lmcore


def test_every_public_name_resolves():
    for name in lmcore.__all__:
        assert getattr(lmcore, name) is not None, name
    assert lmcore.ModelConfig is importlib.import_module("lmcore.model").ModelConfig


def test_tokenizer_does_not_import_torch():
    code = "import sys, lmcore.tokenizer; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_every_module_is_in_the_lazy_table():
    from pathlib import Path

    folder = Path(lmcore.__file__).parent
    found = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")} | {
        p.parent.name for p in folder.glob("*/__init__.py")}
    assert found == set(lmcore._MODULES)
    for name in found:
        assert getattr(lmcore, name) is importlib.import_module(f"lmcore.{name}")
