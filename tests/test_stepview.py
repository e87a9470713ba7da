"""Step-through views: every step in the HTML, deterministic, controls wired to the right element."""

import pandas as pd
import pytest

from lmcore.stepview import Step, StepView


def test_all_steps_are_embedded_in_order_and_escaped():
    view = StepView([("first", "a < b"), Step("second", pd.DataFrame({"x": [1, 2]}))], title="demo")
    html = view.html()
    assert html.count('class="lmcore-step"') == 2
    assert html.index("first") < html.index("second")
    assert "a &lt; b" in html and "<table" in html
    assert 'max="1"' in html  # the slider spans the steps


def test_html_is_a_function_of_the_steps():
    a, b = StepView([("s", "1")]), StepView([("s", "1")])
    assert a.html() == b.html()  # the same output on every run, so nbval can compare it
    other = StepView([("s", "2")])
    view_id = a.html().split('id="')[1].split('"')[0]
    assert view_id != other.html().split('id="')[1].split('"')[0]
    assert a.html().count(view_id) == 2  # the element and the script that drives it


def test_repr_and_empty():
    assert repr(StepView([("one", ""), ("two", ""), ("three", ""), ("four", "")], "t")) == \
        "StepView('t', 4 steps: one; two; three; ...)"
    with pytest.raises(ValueError, match="at least one step"):
        StepView([])
