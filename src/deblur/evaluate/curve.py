"""Quality against compute: the test scores of each model's part-way checkpoints.

train-<kind> keeps a checkpoint at each share of train.<kind>.curve (paths.curve_dir); here
each one, and the final model, is scored on the test split exactly as the results table
scores it, so the curve's last point is the table's figure. No timing: the curve's x axis
is the training steps each checkpoint cost (its seconds are run-info's, not a DVC out's).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from deblur import models as zoo
from deblur import paths
from deblur.evaluate.protocol import model_method, score_method
from deblur.metrics import METRICS, mean_scores

COLUMNS = ["model", "percent", "step", *METRICS, *(f"{m}_gain" for m in METRICS)]


def part_way(kind: str) -> list[tuple[int, Path]]:
    """(percent of training, checkpoint) of each part-way checkpoint of ``kind``."""
    found = paths.curve_dir(kind).glob("*.pt")
    return sorted((int(path.stem), path) for path in found if path.stem.isdigit())


def _meta(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True).get("meta", {})


def _row(kind: str, percent: int, path: Path, scores: dict, blurry: dict) -> dict:
    meta = _meta(path)
    return {
        "model": kind,
        "percent": percent,
        "step": meta.get("steps"),
        **{m: scores[m] for m in METRICS},
        **{f"{m}_gain": scores[m] - blurry[m] for m in METRICS},
    }


def score_curve(summary: pd.DataFrame, tracks: dict[str, str], test_store, ev, device):
    """One row per (model, checkpoint): test scores and their gain over the blurry input.

    ``summary`` is evaluate's per-model table: it holds the final models' scores (the
    curve's 100% points) and the blurry input's, under each model's protocol ``tracks``;
    ``ev`` is params' evaluate section.
    """
    row_of = {(r.model, r.protocol): r._asdict() for r in summary.itertuples(index=False)}
    rows = []
    for kind, protocol in tracks.items():
        if (kind, protocol) not in row_of:
            continue
        blurry = row_of[("blurry", protocol)]
        for percent, path in part_way(kind):
            method = model_method(zoo.load(path, device), ev.tile, ev.overlap, device)
            scored = score_method(f"{kind} {percent}%", method, test_store, protocol, timed=False)
            rows.append(_row(kind, percent, path, mean_scores(scored), blurry))
        rows.append(_row(kind, 100, paths.checkpoint(kind), row_of[(kind, protocol)], blurry))
    return pd.DataFrame(rows, columns=COLUMNS)
