"""Fixtures shared by the training and experiment tests."""

import numpy as np
import pytest


@pytest.fixture()
def data(tmp_path):
    """A learnable sequence: a repeating pattern with some noise."""
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(0, 60, 3), 400).astype(np.uint16)
    noise = rng.random(ids.size) < 0.05
    ids[noise] = rng.integers(0, 64, noise.sum())
    ids[:6000].tofile(tmp_path / "train.uint16")
    ids[6000:].tofile(tmp_path / "valid.uint16")
    return tmp_path
