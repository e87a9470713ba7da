"""Fixtures the tokenizer tests share."""

import pytest

from lmcore.data import cache_dir
from lmcore.tokenizer import FastTokenizer


@pytest.fixture(scope="module")
def gpt2():
    """GPT-2's tokenizer from the data cache (fast layer), or a skip when the files are not there."""
    vocab, merges = cache_dir() / "gpt2-vocab.json", cache_dir() / "gpt2-merges.txt"
    if not (vocab.exists() and merges.exists()):
        pytest.skip(f"GPT-2's files not in the data cache {cache_dir()}")
    return FastTokenizer.from_files(vocab, merges, ["<|endoftext|>"])
