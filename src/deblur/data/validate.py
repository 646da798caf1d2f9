"""The validate stage: build data/manifest.csv, check it with Great Expectations, report.

The suites live as JSON under pipeline/expectations/ (a DVC dependency: editing one reruns
the stage); numbers that belong in params.yaml enter them as $PARAMETER values. A failing
dataset stops the DAG with the list of what failed and on which files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deblur import paths
from deblur.config import ValidateConfig
from deblur.data import manifest
from deblur.errors import DataError
from deblur.fsutil import atomic_path, write_json

SHOWN = 10  # failing rows listed per expectation; the rest are counted


def run(cfg: ValidateConfig, dataset: str) -> None:
    """The DVC stage: params' validate section over data/raw/<dataset> (data.name)."""
    root = paths.raw_dir(dataset)
    table = manifest.build(root)
    source = manifest.origin(root)
    failures = check(table, cfg, paths.EXPECTATIONS, where=_where(root, source))
    if failures:
        for failure in failures:
            print(failure.render(), file=sys.stderr)
        raise DataError(
            f"{source or root} failed {len(failures)} expectation(s), listed above; {_then(source)}"
        )
    with atomic_path(paths.MANIFEST) as tmp:
        table.to_csv(tmp, index=False)
    stats = metrics(table)
    write_json(paths.DATA_JSON, stats)
    print(f"{paths.MANIFEST}: {len(table)} pairs pass; {_brief(stats)}")


def _where(root: Path, source: Path | None):
    """Manifest path -> the file to name: the user's own for an imported folder."""
    return lambda path: manifest.original(path, root, source)


def _then(source: Path | None) -> str:
    if source is not None:  # the files named are the user's: fixing them there sticks
        return (
            f"fix or remove the named files in {source}, "
            "then run `dvc repro` (or `deblur download` and `deblur validate`)"
        )
    # Rendered or extracted data: `deblur download` would bring the same files back.
    return "fix or remove the named files, then run `deblur validate` again"


def _brief(stats: dict) -> str:
    return "; ".join(
        f"{split} {s['pairs']} pairs, blurry PSNR {s['psnr_blur']:.2f} dB"
        for split, s in stats.items()
        if isinstance(s, dict)
    )


# --------------------------------------------------------------------------- checking


@dataclass
class Failure:
    """One failed expectation, with the rows (already formatted) that broke it, and the fix."""

    what: str
    observed: str
    rows: list[str] = field(default_factory=list)
    more: int = 0
    fix: str = ""

    def render(self) -> str:
        lines = [f"FAILED {self.what}: {self.observed}"]
        lines += [f"    {row}" for row in self.rows]
        if self.more:
            lines.append(f"    ... and {self.more} more")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


# How a shown column is labelled in a failing row; a path column reads "blur <path>".
LABELS = {
    "blur_path": "blur",
    "sharp_path": "sharp",
    "blur_error": "blur error:",
    "sharp_error": "sharp error:",
    "blur_size": "blur size",
    "sharp_size": "sharp size",
    "blur_lapvar": "blur sharpness",
    "sharp_lapvar": "sharp sharpness",
    "scene": "scene",
    "split": "split",
}


def load_suite(path: Path):
    """An ExpectationSuite from its JSON file; DataError if the file or an entry is bad.

    GX itself would log and *drop* an invalid expectation; here a typo in a suite stops the
    stage instead of silently checking less.
    """
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"expectation suite {path} not found; run from the project root") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}); fix the syntax") from None
    expectations = []
    for i, entry in enumerate(spec.get("expectations", [])):
        try:
            expectations.append(ExpectationConfiguration(**entry).to_domain_obj())
        except Exception as exc:  # GX raises a zoo of types for a bad entry
            kind = entry.get("type", "?") if isinstance(entry, dict) else "?"
            raise DataError(f"{path}: expectation #{i + 1} ({kind}) is invalid: {exc}") from None
    return ExpectationSuite(name=spec.get("name", path.stem), expectations=expectations)


def check(
    table: pd.DataFrame, cfg: ValidateConfig, suites: Path, where=lambda path: path
) -> list[Failure]:
    """Validate the manifest with the suites under ``suites``; return what failed.

    manifest.json judges every row; split.json judges each split's rows on their own, with
    that split's minimum number of pairs (``cfg``, params' validate section). ``where`` maps
    a manifest path to the file named.
    """
    whole, split_suite = load_suite(suites / "manifest.json"), load_suite(suites / "split.json")
    runs = [("", whole, table, {"sharper_fraction": cfg.sharper_fraction})]
    for split, least in (("train", cfg.min_train_pairs), ("test", cfg.min_test_pairs)):
        rows = table[table["split"] == split].reset_index(drop=True)
        runs.append((split, split_suite, rows, {"min_pairs": least}))

    batches = _batches()
    failures = []
    for prefix, suite, rows, values in runs:
        batch = batches.get_batch(batch_parameters={"dataframe": rows})
        result = batch.validate(
            suite, expectation_parameters=values, result_format={"result_format": "COMPLETE"}
        )
        failures += [_failure(r, rows, prefix, where) for r in result.results if not r.success]
    return failures


def _batches():
    """A GX batch definition that takes any DataFrame, in a throwaway in-memory context."""
    gx = _quiet_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("manifest")
    return source.add_dataframe_asset("pairs").add_batch_definition_whole_dataframe("all")


def _quiet_gx():
    # GX phones home unless told not to, and logs at WARNING about things users cannot act on.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    return gx


def _failure(result, rows: pd.DataFrame, split: str, where) -> Failure:
    spec = result.expectation_config
    meta = spec.meta or {}
    what = (f"{split}: " if split else "") + (spec.description or spec.type)
    fix = meta.get("fix", "").format(split=split or "train or test")
    info: dict[str, Any] = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = result.exception_info["exception_message"]
        return Failure(what, f"could not be checked ({message})", fix=fix)
    if "observed_value" in info and "unexpected_count" not in info:
        observed = f"observed {info['observed_value']}, {_expected(spec.kwargs)}"
        return Failure(what, observed, fix=fix)
    bad = info.get("unexpected_index_list") or []
    total = info.get("element_count", len(rows))
    observed = f"{info.get('unexpected_count', len(bad))} of {total} rows fail"
    if spec.kwargs.get("mostly", 1) < 1:
        observed += f" (at most {1 - spec.kwargs['mostly']:.0%} may)"
    show = [c for c in meta.get("show", ["name"]) if c in rows.columns]
    lines = [_row(rows.loc[i, show], where) for i in bad[:SHOWN]]
    return Failure(what, observed, lines, max(0, len(bad) - SHOWN), fix)


def _expected(kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"expected {lo} to {hi}"
    return f"expected at least {lo}" if lo is not None else f"expected at most {hi}"


def _row(values: pd.Series, where) -> str:
    """``blur <file>  blur size 64x48  sharp <file>  sharp size 64x40``: labelled values."""
    cells = []
    for column, value in values.items():
        shown = "(missing)" if _missing(value) else str(value)
        if isinstance(value, float) and not _missing(value):
            shown = f"{value:.4g}"
        if column.endswith("_path") and not _missing(value):
            shown = where(shown)
        label = LABELS.get(str(column), str(column).replace("_", " "))
        cells.append(f"{label} {shown}")
    return "  ".join(cells)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------- metrics


def metrics(table: pd.DataFrame) -> dict:
    """metrics/data.json: counts, sizes and blur statistics per split (DVC metric)."""
    out: dict[str, Any] = {"pairs": len(table), "scenes": int(table["scene"].nunique())}
    for split, rows in table.groupby("split", sort=True):
        psnr = rows["psnr"].astype(float)
        out[str(split)] = {
            "pairs": len(rows),
            "scenes": int(rows["scene"].nunique()),
            "width": _mean(rows["width"]),
            "height": _mean(rows["height"]),
            "megapixels": round(float((rows["width"] * rows["height"]).sum()) / 1e6, 3),
            "blur_lapvar": _mean(rows["blur_lapvar"], 6),
            "sharp_lapvar": _mean(rows["sharp_lapvar"], 6),
            "sharper": _mean(rows["sharper"].astype(float)),
            "psnr_blur": _mean(psnr[np.isfinite(psnr)]),
        }
    return out


def _mean(values: pd.Series, digits: int = 4) -> float:
    values = values.astype(float)
    return round(float(values.mean()), digits) if values.notna().any() else 0.0
