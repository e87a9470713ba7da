"""``python -m lmcore.check``: a reader's module checked from the command line."""

import subprocess
import sys
import textwrap


def run(*args):
    return subprocess.run([sys.executable, "-m", "lmcore.check", *args], capture_output=True, text=True)


def test_a_module_with_one_mistake_fails_with_its_hint(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(textwrap.dedent("""
        import torch

        def softmax(x, dim):
            e = torch.exp(x)  # forgot to subtract the max
            return e / e.sum(dim=dim, keepdim=True)
    """))
    done = run(str(mine), "--only", "softmax")
    assert done.returncode == 1
    assert "FAIL logits of +-1000" in done.stdout and "subtract the max" in done.stdout


def test_bad_input_gets_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def softmax(x, dim)\n    return x\n")
    for args, words in [((str(tmp_path / "absent.py"),), "no such file"),
                        ((str(broken),), "does not import"),
                        ((str(broken), "--only", "nosuch"), "no check named nosuch")]:
        done = run(*args)
        assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    done = run(str(empty), "--only", "softmax")
    assert done.returncode == 1 and "defines no softmax" in done.stdout
