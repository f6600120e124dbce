"""Aligned text columns for the commands that print tables (``fsmfast routes``, ``explain``,
``status``); no other import, so ``fsmfast status`` does not load the data plane to print one."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows as aligned columns (the last column is not padded)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)] + [row[-1]]
        out.append((indent + "  ".join(cells)).rstrip())
    return out
