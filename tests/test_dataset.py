import numpy as np
import pytest
import torch

from lmcore.dataset import get_batch, load_tokens, prepare_dataset, split_stories, unigram_entropy
from lmcore.tokenizer import Tokenizer


def test_get_batch_windows_and_targets():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, 8, 16, "cpu", torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # consecutive ids
    assert int(x.min()) >= 0 and int(y.max()) <= 999
    starts = {int(r[0]) for _ in range(50) for r in get_batch(tokens, 8, 16)[0]}
    assert len(starts) > 100  # random windows all over the array
    with pytest.raises(ValueError, match="cannot fill a window"):
        get_batch(tokens[:10], 2, 16)


def test_memmap_batches(tmp_path):
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "ids.uint16")
    tokens = load_tokens(tmp_path / "ids.uint16", vocab_size=500)
    assert isinstance(tokens, np.memmap)
    x, _ = get_batch(tokens, 2, 4)
    assert x.shape == (2, 4)
    with pytest.raises(ValueError, match="holds id 499 but the model's vocab_size is 100"):
        load_tokens(tmp_path / "ids.uint16", vocab_size=100)


def test_split_by_whole_stories(tmp_path):
    text = "one<|endoftext|> two <|endoftext|>three<|endoftext|>four<|endoftext|>unfinished fi"
    assert split_stories(text) == ["one", "two", "three", "four"]
    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [], ["<|endoftext|>"])
    (tmp_path / "s.txt").write_text(text)
    paths = prepare_dataset(tok, tmp_path / "s.txt", tmp_path / "out", valid_fraction=0.25)
    train = np.fromfile(paths["train"], dtype=np.uint16)
    valid = np.fromfile(paths["valid"], dtype=np.uint16)
    assert tok.decode(train.tolist()) == "one<|endoftext|>two<|endoftext|>three<|endoftext|>"
    assert tok.decode(valid.tolist()) == "four<|endoftext|>"


def test_unigram_entropy():
    assert unigram_entropy(np.array([1, 1, 1, 1])) == 0.0
    assert unigram_entropy(np.array([0, 1, 2, 3])) == pytest.approx(np.log(4))


def test_prepare_corpus_from_registry_names(tmp_path):
    from lmcore.data import cache_dir

    if not (cache_dir() / "tinystories-v1-valid-sample.txt").exists():
        pytest.skip("TinyStories samples not in the data cache")
    from lmcore.dataset import prepare_corpus

    paths = prepare_corpus(tmp_path, "tinystories-valid-sample", "tinystories-valid-sample", vocab_size=400, num_workers=2,
                           progress=False)
    tok = Tokenizer.load(paths["tokenizer"])
    ids = np.fromfile(paths["valid"], dtype=np.uint16)
    text = (cache_dir() / "tinystories-v1-valid-sample.txt").read_text(encoding="utf-8")
    assert tok.vocab_size == 400 and ids.tolist() == tok.encode(text)


def test_command_line_errors_are_one_line(tmp_path):
    """Unknown registry name, and offline (every URL pointed at a closed port): one error line, no traceback."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    offline = ("import dataclasses, sys, lmcore.data as d; from lmcore.dataset import main\n"
               f"url = 'http://127.0.0.1:{port}/x'\n"
               "d.REGISTRY.update({k: dataclasses.replace(v, url=url) for k, v in d.REGISTRY.items()})\n"
               "raise SystemExit(main(sys.argv[1:]))")
    env = {"LMCORE_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    for args, message in [(["-m", "lmcore.dataset", str(tmp_path / "out"), "--train", "nope"], "error: unknown data file 'nope'"),
                          (["-c", offline, str(tmp_path / "out")], "error: tinystories-train: could not download")]:
        run = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.strip().splitlines() == [line for line in run.stderr.strip().splitlines() if line.startswith("error:")]
        assert message in run.stderr
