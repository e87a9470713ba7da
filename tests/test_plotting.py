import json
import math

import matplotlib

matplotlib.use("Agg")

from lmcore.plotting import plot_curves, read_log  # noqa: E402


def test_read_and_plot(tmp_path):
    records = [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.0, "valid_loss": 2.5},
               {"step": 3, "train_loss": math.inf}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_log(tmp_path / "log.jsonl") == records
    ax = plot_curves({"a": tmp_path / "log.jsonl", "b": records[:1]})
    lines = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    assert lines == {"a (train)": [[1, 3.0], [2, 2.0]], "a (valid)": [[2, 2.5]], "b (train)": [[1, 3.0]]}
