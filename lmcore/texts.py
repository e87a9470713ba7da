"""Texts that are not TinyStories, found on every machine that runs lmcore: no download.

A tokenizer trained on children's stories meets other text in use, and both its compression and
its speed change there (chapter 2 measures both). These are the stand-ins. The first two are
read from the installed PyTorch (a dependency, so always there, and pinned for the book's tests,
so the chapter's numbers repeat); the third is generated:

- ``"docs"``: English technical prose, PyTorch's docstrings (``torch/_torch_docs.py`` and
  ``torch/_tensor_docs.py``, the text of ``help(torch.add)``), code examples included.
- ``"code"``: Python source code, the ``.py`` files of ``torch.nn`` in sorted order.
- ``"multilingual"``: seeded text in eight scripts (Latin with accents, Greek, Cyrillic, Arabic,
  Devanagari, Han, Hangul, Thai) from word lists drawn at random, words repeating with a Zipf
  law as in real text. It is not any real language; it has their characters and their rhythm
  of common and rare words, which is what byte-level BPE sees.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

__all__ = ["KINDS", "out_of_domain_text"]

#: the kinds :func:`out_of_domain_text` makes, with a line on what each is
KINDS = {
    "docs": "English technical prose: PyTorch's docstrings",
    "code": "Python source: the torch.nn package",
    "multilingual": "eight scripts, seeded words with Zipf-law repeats",
}

# (first, last) code points of letters in each script; Han has no spaces between words
_SCRIPTS = {
    "latin": [(0x61, 0x7A), (0xE0, 0xFF)],
    "greek": [(0x3B1, 0x3C9)],
    "cyrillic": [(0x430, 0x44F)],
    "arabic": [(0x627, 0x64A)],
    "devanagari": [(0x915, 0x939), (0x93E, 0x94C)],
    "han": [(0x4E00, 0x62FF)],
    "hangul": [(0xAC00, 0xD7A3)],
    "thai": [(0xE01, 0xE2E)],
}


def out_of_domain_text(kind: str, max_bytes: int = 1 << 21, seed: int = 0) -> str:
    """About ``max_bytes`` of UTF-8 text of ``kind`` (one of :data:`KINDS`), never more.

    The text is cut at a line end, so no pre-token is cut in half.
    """
    torch_dir = Path(importlib.util.find_spec("torch").origin).parent  # found, not imported
    if kind == "docs":
        text = "".join((torch_dir / name).read_text(encoding="utf-8") for name in ("_torch_docs.py", "_tensor_docs.py"))
    elif kind == "code":
        parts, size = [], 0
        for path in sorted((torch_dir / "nn").rglob("*.py")):
            part = path.read_text(encoding="utf-8", errors="replace")
            parts.append(part)
            size += len(part.encode("utf-8"))
            if size > max_bytes:
                break
        text = "".join(parts)
    elif kind == "multilingual":
        text = _multilingual(max_bytes, seed)
    else:
        raise ValueError(f"unknown text kind {kind!r}; choose from {', '.join(KINDS)}")
    data = text.encode("utf-8")[:max_bytes]
    end = data.rfind(b"\n")
    return data[: end + 1 if end > 0 else len(data)].decode("utf-8", errors="ignore")


def _multilingual(max_bytes: int, seed: int) -> str:
    rng = random.Random(seed)
    lexicons = {}
    for script, ranges in _SCRIPTS.items():
        letters = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
        lexicons[script] = ["".join(rng.choices(letters, k=rng.randint(1 if script == "han" else 2, 8))) for _ in range(2000)]
    zipf = [1 / (rank + 1) for rank in range(2000)]
    lines, size = [], 0
    while size < max_bytes:
        script = rng.choice(list(_SCRIPTS))
        words = rng.choices(lexicons[script], weights=zipf, k=rng.randint(5, 20))
        sep = "" if script == "han" else " "
        line = sep.join(words) + rng.choice([".", "!", "?", ",", "。" if script == "han" else "."]) + "\n"
        lines.append(line)
        size += len(line.encode("utf-8"))
    return "".join(lines)
