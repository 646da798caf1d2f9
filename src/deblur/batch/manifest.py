"""A batch job's manifest (OUT/manifest.csv, one row per input) and its summary line."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from deblur.batch.write import DISK_FULL, FAILED, NOT_ATTEMPTED, SKIPPED, WRITTEN
from deblur.errors import DeblurError
from deblur.fsutil import write_text

NAME = "manifest.csv"
COLUMNS = ("input", "output", "status", "error", "model_version", "ms")
ALREADY = "already written (a rerun skips it; --overwrite redoes it)"
NOT_IMAGE = "not an image file (by its suffix)"
LISTED = 5


def write(out_dir: Path, rows: list[dict]) -> Path:
    """The rows, sorted by input, as CSV; written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["input"]):
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    path = out_dir / NAME
    write_text(path, buf.getvalue())
    return path


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _names(rows: list[dict]) -> str:
    shown = ", ".join(Path(r["input"]).name for r in rows[:LISTED])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > LISTED else "")


def summary(rows: list[dict], seconds: float, label: str, path: Path) -> str:
    counts = Counter(r["status"] for r in rows)
    return (
        f"batch: {counts[WRITTEN]} written, {counts[SKIPPED]} skipped, {counts[FAILED]} failed "
        f"in {seconds:.0f} s with {label}; manifest {path}"
    )


def check(rows: list[dict], out_dir: Path) -> None:
    """A DeblurError (non-zero exit) when any row failed: the disk filling up first."""
    failed = [r for r in rows if r["status"] == FAILED]
    if not failed:
        return
    full = [r for r in failed if r["error"].startswith(DISK_FULL)]
    if full:
        left = [r for r in failed if r["error"] == NOT_ATTEMPTED or r in full]
        written = sum(r["status"] == WRITTEN for r in rows)
        raise DeblurError(
            f"{full[0]['error']}: free some space and rerun the same command; "
            f"{len(left)} photos not attempted ({_names(left)}); the {written} written "
            f"are kept in {out_dir} and a rerun skips them"
        )
    scored = [r for r in rows if r["error"] != NOT_IMAGE]
    raise DeblurError(
        f"{len(failed)} of {len(scored)} images failed ({_names(failed)}; the first: "
        f"{failed[0]['error']}); the others are in {out_dir}, each row in {out_dir / NAME}"
    )
