"""Loss curves from training logs (the JSON lines :func:`lmcore.train.train` writes)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["read_log", "plot_curves"]


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a ``log.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(
    runs: Mapping[str, Sequence[dict] | str | os.PathLike],
    keys: Sequence[str] = ("train_loss", "valid_loss"),
    x: str = "step",
    ax=None,
    title: str | None = None,
    logy: bool = False,
):
    """One line per run and key (train solid, validation dashed); ``runs`` maps a label to records or a log path.

    Returns the matplotlib axes. Non-finite values are left out, so a diverged run ends where it broke.
    """
    import math

    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    styles = {"train_loss": "-", "valid_loss": "--"}
    for i, (label, records) in enumerate(runs.items()):
        if not isinstance(records, Sequence) or isinstance(records, str):
            records = read_log(records)
        color = f"C{i % 10}"
        for key in keys:
            pts = [(r[x], r[key]) for r in records if key in r and math.isfinite(r[key])]
            if pts:
                xs, ys = zip(*pts)
                name = f"{label} ({key.replace('_loss', '')})" if len(keys) > 1 else label
                ax.plot(xs, ys, styles.get(key, "-"), color=color, label=name, marker="o" if len(pts) < 12 else None)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("loss (nats)" if all(k.endswith("loss") for k in keys) else ", ".join(keys))
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
