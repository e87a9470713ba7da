"""Step-through views: a list of precomputed steps a reader moves through in the page itself.

The notebook computes every state of an algorithm (each merge of BPE, each stage of attention)
and :class:`StepView` writes them all into one HTML output with previous/next buttons and a
slider. The published page needs no kernel, server, network or widget library: the states are
in the page, and a few lines of inline JavaScript show one at a time. The HTML is a pure function
of the steps (its element id is a hash of them), so re-running the notebook writes the same
output and nbval can compare it.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Step", "StepView"]


@dataclass(frozen=True)
class Step:
    """One state: a short ``title`` and its ``body`` (a string, shown as preformatted text, or
    anything with ``to_html()``, such as a pandas DataFrame)."""

    title: str
    body: object

    def body_html(self) -> str:
        if hasattr(self.body, "to_html"):
            return self.body.to_html()
        return f"<pre>{html.escape(str(self.body))}</pre>"


_SCRIPT = """<script>
(function () {
  const root = document.getElementById("%(id)s");
  const steps = root.querySelectorAll(".lmcore-step");
  const slider = root.querySelector("input[type=range]");
  const label = root.querySelector(".lmcore-step-label");
  function show(i) {
    i = Math.max(0, Math.min(steps.length - 1, i));
    steps.forEach((s, j) => { s.style.display = j === i ? "block" : "none"; });
    slider.value = i;
    label.textContent = "step " + (i + 1) + " of " + steps.length;
    root.dataset.step = i;
  }
  root.querySelector(".lmcore-prev").onclick = () => show(Number(root.dataset.step) - 1);
  root.querySelector(".lmcore-next").onclick = () => show(Number(root.dataset.step) + 1);
  slider.oninput = () => show(Number(slider.value));
  show(0);
})();
</script>"""


class StepView:
    """A sequence of :class:`Step` shown one at a time, with previous/next buttons and a slider.

    In a notebook the last expression ``StepView(steps, title)`` displays it; ``html()`` is the
    same markup as a string. Without JavaScript every step is shown, one under the other.
    """

    def __init__(self, steps: Sequence[Step | tuple[str, object]], title: str = "") -> None:
        self.steps = [s if isinstance(s, Step) else Step(*s) for s in steps]
        if not self.steps:
            raise ValueError("a step view needs at least one step")
        self.title = title

    def html(self) -> str:
        bodies = [f'<div class="lmcore-step"><p><b>{html.escape(s.title)}</b></p>{s.body_html()}</div>' for s in self.steps]
        digest = hashlib.sha1("".join([self.title, *bodies]).encode("utf-8")).hexdigest()[:12]
        view_id = f"lmcore-steps-{digest}"
        controls = (
            '<div class="lmcore-step-controls">'
            '<button class="lmcore-prev" type="button">&#9664; previous</button> '
            f'<input type="range" min="0" max="{len(self.steps) - 1}" value="0" step="1" style="width:40%"> '
            '<button class="lmcore-next" type="button">next &#9654;</button> '
            f'<span class="lmcore-step-label">{len(self.steps)} steps</span></div>'
        )
        heading = f"<p><b>{html.escape(self.title)}</b></p>" if self.title else ""
        return (f'<div class="lmcore-stepview" id="{view_id}" data-step="0" style="border:1px solid #ccc;padding:0.5em;'
                f'overflow-x:auto">{heading}{controls}{"".join(bodies)}</div>' + _SCRIPT % {"id": view_id})

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        titles = "; ".join(s.title for s in self.steps[:3]) + ("; ..." if len(self.steps) > 3 else "")
        return f"StepView({self.title!r}, {len(self.steps)} steps: {titles})"
