"""The report's tables: the pipeline's figures as cells for the templates, numbers formatted
for people. Each function takes what was read from a file and returns rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deblur.config import flatten
from deblur.kinds import KINDS
from deblur.metrics import METRICS, SHARPNESS, sharpness
from deblur.report.figures import NAMES

NA = "n/a"


def num(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    return format(value, fmt)


def count(n) -> str:
    """11400000 -> '11.4M', 0 -> '0', unknown -> '–'."""
    if n is None or n is pd.NA or (isinstance(n, float) and math.isnan(n)):
        return "–"
    n = int(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def result_rows(results: pd.DataFrame, source: str) -> dict:
    """The rows of results.csv from one source, numbers formatted for people, and a title."""
    rows = [
        {
            "model": row.model,
            "params": count(row.params),
            "scores": [num(getattr(row, n), f".{m.decimals}f") for n, m in METRICS.items()],
            "protocol": row.protocol,
        }
        for row in results[results["source"] == source].itertuples()
    ]
    return {"title": source[:1].upper() + source[1:], "rows": rows}


def flat_rows(tree) -> list[tuple[str, str]]:
    """Nested JSON -> [('train.pairs', '96'), ...] for a two-column table."""
    if not isinstance(tree, dict):
        return [("value", _scalar(tree))]
    return [(key, _scalar(value)) for key, value in flatten(tree).items()]


def _scalar(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value[:8])) + (", ..." if len(value) > 8 else "")
    return str(value)


def train_table(trained: dict[str, dict]) -> dict:
    """metrics/train_*.json side by side: {'models': [...], 'rows': [(key, [v, ...]), ...]}."""
    shown = [k for k in KINDS if trained.get(k)]
    flat = {k: dict(flat_rows(trained[k])) for k in shown}
    keys = list(dict.fromkeys(key for k in shown for key in flat[k]))
    return {
        "models": [NAMES[k] for k in shown],
        "rows": [(key, [flat[k].get(key, "–") for k in shown]) for key in keys],
    }


def option_rows(eval_json: dict) -> dict:
    """eval.json's "options" (each model under an inference option, e.g. gan_flips) as rows:
    its scores and its gain over the plain model. No rows when evaluate.flips was off.
    Their cost in time is a timing (run-info/evaluate.json), no part of the report."""
    options = eval_json.get("options", {})
    rank = {kind: i for i, kind in enumerate(KINDS)}  # eval.json's keys are sorted by name
    rows = []
    for key in sorted(options, key=lambda k: (rank.get(k.partition("_")[0], len(rank)), k)):
        kind, _, option = key.partition("_")
        scores = options[key]
        rows.append(
            {
                "model": f"{NAMES.get(kind, kind)} + {option}",
                "scores": [num(scores.get(n), f".{m.decimals}f") for n, m in METRICS.items()],
                "gains": [
                    num(scores.get(f"{n}_vs_plain"), f"+.{m.decimals}f") for n, m in METRICS.items()
                ],
            }
        )
    return {"rows": rows, "gain_labels": [f"Δ {m.label} vs plain" for m in METRICS.values()]}


def quality_rows(curve: pd.DataFrame) -> list[dict]:
    """plots/curve.csv's rows: each part-way checkpoint's gain over the blurry input."""
    return [
        {
            "model": NAMES.get(r.model, r.model),
            "percent": r.percent,
            "step": num(r.step, ".0f"),
            "psnr_gain": num(r.psnr_gain, "+.3f"),
            "ssim_gain": num(r.ssim_gain, "+.4f"),
        }
        for r in curve.itertuples(index=False)
    ]


def sharpness_rows(images: list[tuple[str, np.ndarray]]) -> dict:
    """No-reference sharpness (metrics.SHARPNESS) of each (name, uint8 image), the first the
    input: raw values and factors over the input's for a test, cells for the table."""
    measured = [(name, sharpness(image)) for name, image in images]
    ref = measured[0][1]
    rows = []
    for name, scores in measured:
        factors = {k: (v / ref[k] if ref[k] > 0 else math.nan) for k, v in scores.items()}
        rows.append(
            {
                "name": name,
                "values": scores,
                "factors": factors,
                "cells": [
                    c for k in SHARPNESS for c in (f"{scores[k]:.3g}", num(factors[k], ".2f"))
                ],
            }
        )
    return {"labels": [m.label for m in SHARPNESS.values()], "rows": rows}


def sharpness_title(row: dict, factor: bool) -> str:
    """'GAN' over one line per measure: 'Laplacian var 55.5 (×2.29)', the factor when asked."""
    lines = [row["name"]]
    for key, measure in SHARPNESS.items():
        times = row["factors"][key]
        shown = f" (×{times:.2f})" if factor and math.isfinite(times) else ""
        lines.append(f"{measure.label} {row['values'][key]:.3g}{shown}")
    return "\n".join(lines)
