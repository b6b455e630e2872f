"""How the write-up shows numbers and tables (shared by the claims' summary cells and RESULTS.md)."""
from __future__ import annotations

import math


def f(x, digits=3):
    """A number as the write-up shows it ('-' for a missing value)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def pct(x, digits=2):
    """A signed percentage ('-' for a missing value)."""
    return "-" if x is None else f"{x:+.{digits}f}%"


def seconds(x):
    return "-" if x is None else f"{x:.0f} s"


def table(head, rows):
    """A markdown table; columns whose cells all start with a digit, a sign or '-' are right-aligned."""
    rows = [[str(c) for c in r] for r in rows]

    def numeric(i):
        return bool(rows) and all(r[i][:1] in "0123456789+-" for r in rows)

    align = "|".join(" ---: " if numeric(i) else " --- " for i in range(len(head)))
    lines = ["| " + " | ".join(head) + " |", "|" + align + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
