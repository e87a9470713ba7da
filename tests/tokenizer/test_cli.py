"""python -m lmcore.tokenizer train / encode, end to end."""

import subprocess
import sys

import numpy as np

from lmcore.tokenizer import Tokenizer


def test_train_then_encode(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat.<|endoftext|>the dog sat on the log.<|endoftext|>" * 30, encoding="utf-8")
    run = [sys.executable, "-m", "lmcore.tokenizer"]
    done = subprocess.run([*run, "train", str(corpus), "--vocab-size", "270", "--out", str(tmp_path / "t.json"),
                           "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "270 tokens, 13 merges" in done.stdout
    done = subprocess.run([*run, "encode", str(tmp_path / "t.json"), str(corpus), "--out", str(tmp_path / "ids.bin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tok = Tokenizer.load(tmp_path / "t.json")
    ids = np.fromfile(tmp_path / "ids.bin", dtype=np.uint16)
    assert ids.tolist() == tok.encode(corpus.read_text(encoding="utf-8"))


def test_clear_error_on_missing_file(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lmcore.tokenizer", "train", str(tmp_path / "none.txt"),
                           "--vocab-size", "300", "--out", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert done.returncode == 1 and "error:" in done.stderr and "none.txt" in done.stderr


def test_non_utf8_input_is_one_error_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"the cat \xe9 sat")
    done = subprocess.run([sys.executable, "-m", "lmcore.tokenizer", "train", str(corpus), "--vocab-size", "300",
                           "--out", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"error: {corpus}: not UTF-8 at byte offset 8 (b'\\xe9 sa'); "
                      "convert the file to UTF-8, or pass errors='replace' to read such bytes as U+FFFD"]
    again = subprocess.run([sys.executable, "-m", "lmcore.tokenizer", "train", str(corpus), "--vocab-size", "300",
                            "--errors", "replace", "--out", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
