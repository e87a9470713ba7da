"""Numbers in the chapters' prose come from the code that computes them (myst-nb ``glue``).

A number typed into a markdown cell goes stale the moment the code changes; a glued one is
whatever the executed notebook computed. So this test reads every markdown cell and fails on a
typed number that is not on the allow-list below, where each entry says why it may be typed:
a *choice* (a configuration value, a sweep's grid), a *definition* (a fact of the format or the
arithmetic), or a *cited* figure (from the handout or a paper, with its source nearby).

Not counted as typed numbers: anything inside code (fenced or inline), math (``$...$``), glue,
citation and cross-reference roles, link targets; digits that are part of a name (UTF-8, GPT-2,
float32, A100, W1, 6ND); and single-digit integers (byte widths, small counts, list numbers).
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

CHOICE, DEFINITION, CITED, NAME, BOUND = "choice", "definition", "cited", "a name", "a bound the cell asserts"
ALLOWED: dict[str, dict[str, str]] = {
    "01_unicode": {
        "256": DEFINITION + ": the values of a byte",
        "1,114,112": DEFINITION + ": the number of Unicode code points, 0 to 0x10FFFF",
        "0x10FFFF": DEFINITION + ": the largest code point",
    },
    "02_bpe": {
        "256": DEFINITION + ": the values of a byte",
        "10,000": CHOICE + ": the vocabulary size (the handout's for TinyStories)",
        "50,257": CITED + ": GPT-2's vocabulary size (radford2019gpt2)",
        "65,536": DEFINITION + ": 2**16, the ids uint16 holds",
        "512": CHOICE + ": KiB, one of the input sizes training is timed at",
        "500": CHOICE + ": kB of each text compression is measured on",
        "1,000": CHOICE + ": the smaller vocabulary of exercise 1",
        "2.1": CITED + ": GB, the size of the TinyStories V2 training file",
        "11": CITED + ": GB, the size of the handout's OpenWebText training file",
        "10K": CHOICE + ": the vocabulary size",
        "50K": CITED + ": GPT-2's vocabulary size",
    },
    "03_transformer": {
        "10,000": CHOICE + ": the TinyStories configuration (the handout's)",
        "256": CHOICE + ": the TinyStories configuration's context",
        "512": CHOICE + ": the TinyStories configuration's d_model",
        "1,344": CHOICE + ": the TinyStories configuration's d_ff",
        "16": CHOICE + ": the TinyStories configuration's heads",
        "12": CHOICE + ": the positions shown in the heat map",
        "17M": NAME + ": the configuration as papers and the handout quote it",
        "64": CHOICE + ": the keys each query is scored against in the 1/sqrt(d_k) measurement",
        "1024": CHOICE + ": the widest d_k of that measurement",
    },
    "04_accounting": {
        "50,257": CITED + ": GPT-2's vocabulary size",
        "1,024": CHOICE + ": GPT-2's context length, the handout's batch and context",
        "48": CITED + ": GPT-2 XL's layers",
        "1,600": CITED + ": GPT-2 XL's d_model",
        "25": CITED + ": GPT-2 XL's heads",
        "6,400": CITED + ": GPT-2 XL's d_ff (4 d_model)",
        "16,384": CHOICE + ": the long context the handout asks about",
        "80": CHOICE + ": the GPU memory (GB or GiB) the handout asks about",
        "400,000": CITED + ": the handout's training steps",
        "50%": CITED + ": the handout's MFU",
        "19.5": CITED + ": the A100's float32 peak in TFLOP/s (also lmcore.accounting.PEAK_FLOPS)",
        "16K": CHOICE + ": 16,384 tokens",
        "40%": CHOICE + ": the MFU of exercise 2",
        "256": CHOICE + ": the context of exercise 3",
        "16x": DEFINITION + ": 16,384 / 1,024",
        "0.2": DEFINITION + ": half of bf16's relative spacing, 2**-9, in percent",
        "0.4%": DEFINITION + ": half of bf16's relative spacing, 2**-8",
        "1.0": CHOICE + ": the weight of exercise 1",
        "0.001": CHOICE + ": the update of exercise 1",
    },
    "05_optimizer": {
        "100": CHOICE + ": steps of the comparison run",
        "16": DEFINITION + ": bytes per parameter, 4 + 4 + 8",
        "1.0": CHOICE + ": the clipping threshold",
        "256": DEFINITION + ": the values of a byte",
        "0.1": CHOICE + ": the learning rate of the AdamW example",
        "0.01": CHOICE + ": the weight decay of the AdamW example",
        "10,000": CHOICE + ": the vocabulary size of the TinyStories models",
        "1,000": CHOICE + ": the factor the gradient is scaled by, to show Adam's first step does not depend on it",
        "257": CHOICE + ": the bytes of the story the clipping example reads (256 inputs and the last target)",
    },
    "06_training": {
        "17M": NAME + ": the handout's TinyStories configuration",
        "10,000": CHOICE + ": the vocabulary size",
        "10%": CHOICE + ": the share of stories held out",
        "22": CITED + ": MB, the size of the TinyStories V2 validation file",
        "128": CHOICE + ": the chapter's context length",
        "192": CHOICE + ": the chapter's d_model",
        "512": CHOICE + ": d_ff",
        "20": CHOICE + ": warm-up steps",
        "1.0": CHOICE + ": the clipping threshold",
        "100": CHOICE + ": training steps",
        "16": CHOICE + ": the 17M configuration's heads",
        "50": CHOICE + ": steps between evaluations",
        "10": CHOICE + ": validation batches; the extra steps of exercise 3",
        "256": CHOICE + ": the 17M configuration's context",
        "1,344": CHOICE + ": the 17M configuration's d_ff",
        "327,680,000": CITED + ": the handout's token budget",
        "2,000": CHOICE + ": the GPU branch's most steps, which its 5-minute budget may shorten",
        "1.45": CITED + ": the handout's target validation loss",
    },
    "07_experiments": {
        "16": CHOICE + ": the base batch size",
        "17M": NAME + ": the handout's TinyStories configuration",
    },
}

_HIDDEN = [  # what is not prose: removed before numbers are looked for
    r"```.*?```",                       # fenced code
    r"\{glue:[a-z]+\}`[^`]*`",          # glued values
    r"\{[a-z:]+\}`[^`]*`",              # other roles: cite, doc, ref, eq
    r"`[^`]*`",                         # inline code
    r"\$\$.*?\$\$", r"\$[^$\n]*\$",     # math
    r"\]\([^)]*\)",                     # link targets
]
_NUMBER = re.compile(r"(?<![\w.+-])(?<![A-Za-z]-)(0x[0-9A-Fa-f]+|\d[\d,]*(?:\.\d+)?(?:[KMGx%]|(?![A-Za-z])))(?![\w.]\d)")


def typed_numbers(markdown: str) -> list[str]:
    """The numbers typed into ``markdown`` as prose (see the module docstring for what is skipped)."""
    for pattern in _HIDDEN:
        markdown = re.sub(pattern, " ", markdown, flags=re.S)
    found = [m.group(1).rstrip(",") for m in _NUMBER.finditer(markdown)]
    return [n for n in found if not re.fullmatch(r"\d", n)]


def test_the_number_finder():
    text = "UTF-8 and GPT-2 cost 1 byte; 9,743 merges, 45% and 17.58M and 2.2, `7,200` $3.5$ {glue:text}`x:,` 0x10FFFF, 6ND."
    assert typed_numbers(text) == ["9,743", "45%", "17.58M", "2.2", "0x10FFFF"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_numbers_are_glued_or_allowed(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    allowed = ALLOWED.get(notebook.stem, {})
    stray, seen = [], set()
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            numbers = typed_numbers("".join(cell["source"]))
            seen.update(numbers)
            stray += [f"cell {i}: {n}" for n in numbers if n not in allowed]
    assert not stray, f"{notebook.name}: typed numbers to glue from the code, or to allow with a reason: {stray}"
    assert not set(allowed) - seen, f"{notebook.name}: allowed but no longer in the text: {sorted(set(allowed) - seen)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_a_folded_answer(notebook):
    """Exercises are numbered in the "## Exercises" section; each has a code cell "# Answer to
    exercise N", folded in the book (tag ``hide-cell``). nbval runs those cells like any other,
    and they assert what their comments say, so every answer is run and checked."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    section = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in "".join(c["source"]))
    text = "".join(cells[section]["source"]).split("## Exercises", 1)[1]
    exercises = [int(n) for n in re.findall(r"^(\d+)\. ", text, flags=re.M)]
    answers = {}
    for cell in cells[section + 1 :]:
        found = re.match(r"# Answer to exercise (\d+)\n", "".join(cell["source"]))
        if cell["cell_type"] == "code" and found:
            answers[int(found.group(1))] = "hide-cell" in cell.get("metadata", {}).get("tags", [])
    assert exercises == list(range(1, len(exercises) + 1)) and len(exercises) >= 3
    assert sorted(answers) == exercises, f"exercises {exercises}, answers {sorted(answers)}"
    assert all(answers.values()), "answers must be folded (tag hide-cell)"
