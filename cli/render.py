"""Plain-text rendering for people: tables, sizes, money. No colours, so output pastes anywhere."""

from __future__ import annotations

from collections.abc import Sequence

# Money is formatted once, in the core (report.py's Markdown uses it too); the commands import it from here.
from llmdeploy.costs import usd as usd

GIB = 1024**3


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:,.1f} GiB"




def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = ()) -> str:
    """A fixed-width table; columns whose index is in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
