"""``python -m lmcore.check``: a reader's module checked from the command line."""

import subprocess
import sys
import textwrap

from lmcore.check.__main__ import main


def test_a_module_with_one_mistake_fails_with_its_hint(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text(textwrap.dedent("""
        import torch

        def softmax(x, dim):
            e = torch.exp(x)  # forgot to subtract the max
            return e / e.sum(dim=dim, keepdim=True)
    """))
    done = subprocess.run([sys.executable, "-m", "lmcore.check", str(mine), "--only", "softmax"], capture_output=True, text=True)
    assert done.returncode == 1
    assert "FAIL logits of +-1000" in done.stdout and "subtract the max" in done.stdout
    assert "0 of 1 checks passed; failed: softmax" in done.stdout


def test_bad_input_gets_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def softmax(x, dim)\n    return x\n")
    for args, words in [([str(tmp_path / "absent.py")], "no such file"),
                        ([str(broken)], "does not import: SyntaxError"),
                        ([str(broken), "--only", "nosuch"], "no check named nosuch")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    assert main([str(empty), "--only", "softmax"]) == 1
    assert "softmax: " + str(empty) + " defines no softmax" in capsys.readouterr().out


def test_a_correct_module_passes_and_exits_0(tmp_path, capsys):
    good = tmp_path / "good.py"
    good.write_text("from lmcore.nn import softmax\n")
    assert main([str(good), "--only", "softmax"]) == 0
    assert "1 of 1 checks passed" in capsys.readouterr().out


def test_a_whole_module_checks_what_it_defines_and_names_the_rest(tmp_path, capsys):
    part = tmp_path / "part.py"
    part.write_text("from lmcore.nn import softmax, silu\n")
    assert main([str(part)]) == 0
    out = capsys.readouterr().out
    assert "not defined, so not checked: train_bpe, tokenizer, linear" in out and "2 of 2 checks passed" in out
    nothing = tmp_path / "nothing.py"
    nothing.write_text("x = 1\n")
    assert main([str(nothing)]) == 2 and "defines none of the checked names" in capsys.readouterr().err
