"""The tables `deblur evaluate` writes: per image, per model, and the JSON for DVC.

Measured rows (this run, this dataset) and the seed's reported rows (GoPro, other people's
code and protocol) share one table so they can be read side by side, but the `source`
column always says which is which: they are not the same experiment.
"""

from __future__ import annotations

import math

import pandas as pd

from deblur import kinds
from deblur.metrics import METRICS

RESULT_COLUMNS = ["model", "params", *METRICS, "protocol", "source"]
PER_IMAGE_COLUMNS = ["model", "image", *METRICS, "ms", "megapixels", "protocol"]
# What per_image.csv keeps (a DVC out): the same minus the timing, which a rerun changes.
PER_IMAGE_SAVED = [c for c in PER_IMAGE_COLUMNS if c != "ms"]
# Figures that describe the machine and the moment, not the result: they go to
# run-info/evaluate.json and MLflow, never to eval.json (split_timings).
TIMINGS = ("ms_per_mp",)

REPORTED_SOURCE = "reported (GoPro, seed slides)"

# The seed's results slide, verbatim: (model, parameters, {metric: value}, protocol). The
# papers score GoPro's full 1280x720 test set; the seed resized it to its training squares.
# A metric the slide does not report stays blank.
REPORTED = [
    ("Kupyn et al.", None, {"psnr": 28.7, "ssim": 0.958}, "full"),
    ("Nah et al.", None, {"psnr": 28.93, "ssim": 0.91}, "full"),
    ("Ji et al.", None, {"psnr": 31.15, "ssim": 0.96}, "full"),
    ("Li et al.", 11_400_000, {"psnr": 29.3, "ssim": 0.72}, "full"),
    ("GAN (seed)", 8_100_000, {"psnr": 27.24, "ssim": 0.8568}, "resize 448"),
    ("Autoencoder (seed)", 10_300_000, {"psnr": 26.95, "ssim": 0.839}, "resize 224"),
]

LABELS = {
    **{kind: f"{label} (this project)" for kind, label in kinds.LABELS.items()},
    "blurry": "blurry input",
}
ORDER = ["gan", "ae", "baseline", "blurry"]


def measured_source(dataset: str) -> str:
    return f"measured (this run, {dataset})"


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean PSNR/SSIM and ms per megapixel for each (model, protocol) of the per-image table."""
    rows = []
    for (model, protocol), group in per_image.groupby(["model", "protocol"], sort=False):
        rows.append(
            {
                "model": model,
                "protocol": protocol,
                **{name: group[name].mean() for name in METRICS},
                "ms_per_mp": group["ms"].sum() / group["megapixels"].sum(),
                "images": len(group),
            }
        )
    summary = pd.DataFrame(rows)
    rank = summary["model"].map({key: i for i, key in enumerate(ORDER)}).fillna(len(ORDER))
    return summary.iloc[rank.argsort(kind="stable")].reset_index(drop=True)


def results_table(
    summary: pd.DataFrame,
    labels: dict[tuple[str, str], str],
    n_params: dict[str, int],
    dataset: str,
) -> pd.DataFrame:
    """results.csv: the measured rows of ``summary``, then the seed's reported rows.

    ``labels`` names a (model, protocol) row where LABELS does not, e.g. the baseline with
    the knobs it was tuned to under that protocol.
    """
    keys = zip(summary["model"], summary["protocol"], strict=True)
    measured = pd.DataFrame(
        {
            "model": [labels.get(key, LABELS.get(key[0], key[0])) for key in keys],
            "params": summary["model"].map(lambda k: n_params.get(k, 0)),
            **{name: summary[name].round(4) for name in METRICS},
            "protocol": summary["protocol"],
            "source": measured_source(dataset),
        }
    )
    reported = pd.DataFrame(
        [
            {
                "model": model,
                "params": n,
                **{name: values.get(name, math.nan) for name in METRICS},
                "protocol": protocol,
                "source": REPORTED_SOURCE,
            }
            for model, n, values, protocol in REPORTED
        ]
    )
    table = pd.concat([measured, reported], ignore_index=True)[RESULT_COLUMNS]
    table["params"] = table["params"].astype("Int64")  # unknown counts stay blank, not 0.0
    return table


def _key(model: str, protocol: str, shared: bool) -> str:
    """'blurry' under one protocol; 'blurry_224' when the resize protocol has two sizes."""
    return f"{model}_{protocol.split()[-1]}" if shared else model


def protocol_label(tracks: dict[str, str]) -> str:
    """'full', or 'resize 448 / resize 224': the protocols the models were scored under."""
    return " / ".join(dict.fromkeys(tracks.values()))


def eval_metrics(summary: pd.DataFrame, tracks: dict[str, str]) -> dict:
    """Each model's scores, its gain over the blurry input it was fed, and its ms_per_mp
    (split_timings parts them: eval.json holds numbers a rerun reproduces).

    ``tracks`` maps each learned model to its protocol; the blurry input and the baseline
    are scored once per protocol, and keyed by its size when there is more than one
    (`blurry_224`: MLflow metric names allow no '@').
    """
    several = len(set(tracks.values())) > 1
    by = {(r.model, r.protocol): r for r in summary.itertuples()}
    out: dict = {}
    for (model, protocol), row in by.items():
        scores = {name: round(getattr(row, name), 4) for name in METRICS}
        scores["images"] = row.images
        if model != "blurry":
            blurry = by[("blurry", protocol)]
            for name, metric in METRICS.items():
                scores[metric.gain_key] = round(getattr(row, name) - getattr(blurry, name), 4)
            scores["ms_per_mp"] = round(row.ms_per_mp, 2)
        out[model if model in tracks else _key(model, protocol, several)] = scores
    return out


# --------------------------------------------------------------------------- inference options


def option_key(kind: str, option: str) -> str:
    """'gan_flips': a model under an inference option ('+' is no MLflow metric name)."""
    return f"{kind}_{option}"


def option_metrics(options: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """metrics/eval.json's "options": each model under an inference option (``options``,
    summarize()'d rows keyed by option_key) and its gain over the plain model in ``summary``.

    Timings stay ms_per_mp, a figure `deblur verify` shows and never compares; the cost as
    a factor of the plain model's time is the report's to work out.
    """
    plain = {(r.model, r.protocol): r for r in summary.itertuples()}
    out: dict = {}
    for row in options.itertuples():
        kind = row.model.split("_", 1)[0]
        base = plain[(kind, row.protocol)]
        scores = {name: round(getattr(row, name), 4) for name in METRICS}
        scores["images"] = row.images
        for name in METRICS:
            scores[f"{name}_vs_plain"] = round(getattr(row, name) - getattr(base, name), 4)
        scores["ms_per_mp"] = round(row.ms_per_mp, 2)
        out[row.model] = scores
    return out


def split_timings(tree: dict) -> tuple[dict, dict]:
    """(the figures, the timings) of a nested metrics mapping, each keeping its nesting:
    {'gan': {'psnr': 26.4, 'ms_per_mp': 1297.7}} -> ({'gan': {'psnr': 26.4}},
    {'gan': {'ms_per_mp': 1297.7}})."""
    figures: dict = {}
    timings: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            inner_figures, inner_timings = split_timings(value)
            if inner_figures:
                figures[key] = inner_figures
            if inner_timings:
                timings[key] = inner_timings
        elif key in TIMINGS:
            timings[key] = value
        else:
            figures[key] = value
    return figures, timings
