"""Rows of cells as the terminal shows them (aligned columns) and as GitHub renders them
(Markdown): what `deblur verify`, `deblur runs`, `deblur bench --serve` and the CI step
summary print."""

from __future__ import annotations


def text(header: list[str], body: list[list[str]], right: bool = False) -> str:
    """Columns two spaces apart, each as wide as its widest cell; ``right`` for numbers."""
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    pad = str.rjust if right else str.ljust
    lines = [
        "  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)) for row in [header, *body]
    ]
    return "\n".join(line.rstrip() for line in lines)


def markdown(header: list[str], body: list[list[str]], aligns: list[str] | None = None) -> str:
    """``aligns``: one Markdown alignment per column ("---", "---:"); left when omitted."""
    aligns = aligns or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)
