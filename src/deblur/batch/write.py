"""The executors' side of a batch job: each scored row -> its PNG file and a manifest row.

Runs in Spark's Python workers (mapInPandas). A result is written under a temporary name
and renamed (fsutil.atomic_path), so a retried or speculative task rewrites the same file
and a reader never sees half of one. A row that fails (the model's ``error``, or a write
that fails) is a row, never an exception: Spark would retry it, then abort the whole job.
Once the disk is full, the rest of the task's rows are not attempted.
"""

from __future__ import annotations

import base64
import errno
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from deblur.fsutil import atomic_path

SCHEMA = "input string, output string, status string, error string, ms double"
WRITTEN, SKIPPED, FAILED = "written", "skipped", "failed"
DISK_FULL = "no space left on device writing"
NOT_ATTEMPTED = "not attempted: the disk is full"


def local_path(uri: str) -> str:
    """binaryFile's ``path`` (file:/a/b c.png) -> the file's path (/a/b c.png)."""
    if not uri.startswith("file:"):
        return uri
    parsed = urlparse(uri)
    return unquote(parsed.path) if "%" in parsed.path else parsed.path


def _write(target: str, image: str) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(base64.b64decode(image))


def write_results(batches: Iterator[pd.DataFrame], targets, done=None) -> Iterator[pd.DataFrame]:
    """Scored batches (path, image, error, ms) -> manifest rows (SCHEMA).

    ``targets``: a broadcast {input path: output path}; ``done``: an accumulator counting
    rows for the driver's progress bar.
    """
    where = targets.value
    full = False
    for batch in batches:
        rows = []
        for uri, image, error, ms in zip(
            batch["path"], batch["image"], batch["error"], batch["ms"], strict=True
        ):
            src = local_path(uri)
            dst = where.get(src, "")
            status, why = FAILED, error or ""
            if full:
                why = NOT_ATTEMPTED
            elif not why and not dst:
                why = "no output planned for this file"
            elif not why:
                try:
                    _write(dst, image)
                    status = WRITTEN
                except OSError as exc:
                    full = exc.errno == errno.ENOSPC
                    why = f"{DISK_FULL} {dst}" if full else f"cannot write {dst} ({exc})"
            rows.append((src, dst, status, why, float(ms or 0.0)))
        if done is not None:
            done.add(len(rows))
        yield pd.DataFrame(rows, columns=["input", "output", "status", "error", "ms"])
