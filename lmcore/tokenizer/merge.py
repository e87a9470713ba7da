"""The one operation BPE is made of, shared by training and encoding: merge a pair wherever it occurs."""

from __future__ import annotations

__all__ = ["apply_merge"]


def apply_merge(ids: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every adjacent ``a, b`` in ``ids`` by ``new``, left to right (``a a a`` with pair ``a a`` gives ``new a``)."""
    merged: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            merged.append(new)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged
