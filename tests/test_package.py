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
