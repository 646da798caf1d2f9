"""`deblur report`: the pipeline's outputs -> reports/report.md and a self-contained report.html.

Everything shown is read from files the DAG wrote (metrics/, plots/, reports/*.csv) or
recomputed from the models through `infer.deblur_image`, so the report cannot drift from
the numbers `dvc metrics show` and MLflow hold. A missing optional input (a run id, the
data summary, one model's curves) shows as "n/a" instead of failing the stage.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from deblur import fsutil, paths, runs, spec
from deblur.config import flatten
from deblur.data.dataset import PairStore
from deblur.data.images import read_rgb, to_uint8
from deblur.errors import DeblurError
from deblur.evaluate import tables
from deblur.infer import deblur_image
from deblur.kinds import KINDS
from deblur.metrics import METRICS, SHARPNESS, psnr, sharpness
from deblur.report import figures
from deblur.tracking.stages import log_report
from deblur.tracking.store import tracking_uri

TEMPLATES = paths.TEMPLATES
SHOWN_PARAMS = ("seed", "data", "preprocess", "train", "evaluate")
NA = "n/a"


# --------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DeblurError(f"{path} is not valid JSON; rerun the stage that writes it") from None


def _read_csv(path: Path, needed: str) -> pd.DataFrame:
    if not path.is_file():
        raise DeblurError(f"{path} not found; run `{needed}` (or `dvc repro`) first")
    return pd.read_csv(path)


def real_photo() -> Path | None:
    """scikit-image's clock photographed while moving: real blur, no ground truth."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / "clock_motion.png"
    return path if path.is_file() else None


# --------------------------------------------------------------------------- formatting


def _num(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    return format(value, fmt)


def _count(n) -> str:
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
            "params": _count(row.params),
            "scores": [_num(getattr(row, n), f".{m.decimals}f") for n, m in METRICS.items()],
            "ms_per_mp": _num(row.ms_per_mp, ".0f"),
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
    flat = {
        k: dict(flat_rows({n: v for n, v in trained[k].items() if n != "mlflow_run_id"}))
        for k in shown
    }
    keys = list(dict.fromkeys(key for k in shown for key in flat[k]))
    return {
        "models": [figures.NAMES[k] for k in shown],
        "rows": [(key, [flat[k].get(key, "–") for k in shown]) for key in keys],
    }


def option_rows(eval_json: dict) -> dict:
    """eval.json's "options" (each model under an inference option, e.g. gan_flips) as rows:
    its scores, its gain over the plain model, and its time as a factor of the plain one's
    (both timed in the same evaluate run). No rows when evaluate.flips was off."""
    options = eval_json.get("options", {})
    rank = {kind: i for i, kind in enumerate(KINDS)}  # eval.json's keys are sorted by name
    rows = []
    for key in sorted(options, key=lambda k: (rank.get(k.partition("_")[0], len(rank)), k)):
        kind, _, option = key.partition("_")
        scores = options[key]
        plain = eval_json.get(kind, {}).get("ms_per_mp")
        rows.append(
            {
                "model": f"{figures.NAMES.get(kind, kind)} + {option}",
                "scores": [_num(scores.get(n), f".{m.decimals}f") for n, m in METRICS.items()],
                "gains": [
                    _num(scores.get(f"{n}_vs_plain"), f"+.{m.decimals}f")
                    for n, m in METRICS.items()
                ],
                "ms_per_mp": _num(scores.get("ms_per_mp"), ".0f"),
                "cost": f"{scores['ms_per_mp'] / plain:.1f}×" if plain else "–",
            }
        )
    return {"rows": rows, "gain_labels": [f"Δ {m.label} vs plain" for m in METRICS.values()]}


def run_ids() -> list[dict]:
    """The MLflow runs behind the numbers, as the stages recorded them."""
    sources = {f"train {kind}": paths.train_metrics(kind) for kind in KINDS}
    sources["evaluate"] = paths.EVAL_JSON
    return [
        {"stage": stage, "run_id": _read_json(path).get("mlflow_run_id") or NA}
        for stage, path in sources.items()
    ]


# --------------------------------------------------------------------------- samples


def pick_samples(per_image: pd.DataFrame, n: int) -> list[tuple[str, str]]:
    """(image, why) for the best and worst test image by mean PSNR gain, and some between."""
    table = per_image.pivot_table(index="image", columns="model", values="psnr", aggfunc="mean")
    learned = [k for k in KINDS if k in table]
    if not learned or "blurry" not in table:
        return []
    gain = table[learned].mean(axis=1).sub(table["blurry"]).sort_values(ascending=False)
    n = min(n, len(gain))
    picks = np.unique(np.linspace(0, len(gain) - 1, n).round().astype(int))
    out = []
    for rank in picks:
        why = "best" if rank == 0 else "worst" if rank == len(gain) - 1 else f"#{rank + 1}"
        out.append((gain.index[rank], f"{why} of {len(gain)} by PSNR gain"))
    return out


def _titled(name: str, image: np.ndarray, sharp: np.ndarray | None) -> tuple[str, np.ndarray]:
    if sharp is None:
        return name, image
    return f"{name}\n{psnr(image, sharp):.2f} dB", image


def sample_figures(models, store, samples, params, out_dir: Path) -> list[dict]:
    """blur | GAN | autoencoder | sharp for each sampled test image, at full resolution."""
    ev = params.evaluate
    index = {name: i for i, name in enumerate(store.names)}
    stale = [name for name, _ in samples if name not in index]
    if stale:
        raise DeblurError(
            f"{paths.PER_IMAGE_CSV} names test image {stale[0]}, which {paths.PROCESSED} "
            "does not hold; rerun `deblur evaluate`"
        )
    shown = []
    for k, (name, why) in enumerate(samples, 1):
        blur, sharp = store.pair(index[name])
        panels = [_titled("blurry input", blur, sharp)]
        for kind, model in models.items():
            out = to_uint8(deblur_image(model, blur, ev.tile, ev.overlap))
            panels.append(_titled(figures.NAMES[kind], out, sharp))
        panels.append(("sharp (ground truth)", sharp))
        path = out_dir / f"sample_{k}.png"
        figures.comparison(panels, path)
        shown.append({"path": path, "image": name, "why": why})
    return shown


def _sharpness_title(row: dict, factor: bool) -> str:
    """'GAN' over one line per measure: 'Laplacian var 55.5 (×2.29)', the factor when asked."""
    lines = [row["name"]]
    for key, measure in SHARPNESS.items():
        times = row["factors"][key]
        shown = f" (×{times:.2f})" if factor and math.isfinite(times) else ""
        lines.append(f"{measure.label} {row['values'][key]:.3g}{shown}")
    return "\n".join(lines)


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
                    c for k in SHARPNESS for c in (f"{scores[k]:.3g}", _num(factors[k], ".2f"))
                ],
            }
        )
    return {"labels": [m.label for m in SHARPNESS.values()], "rows": rows}


def photo_figure(models, params, out_dir: Path) -> tuple[Path, dict] | None:
    """Before and after on a real motion-blurred photograph, with no ground truth to score
    against: each panel titled with its no-reference sharpness, returned as rows too."""

    source = real_photo()
    if source is None:
        return None
    image = read_rgb(source)  # the same reader `deblur predict` uses
    ev = params.evaluate
    images = [("real blurred photo", image)]
    for kind, model in models.items():
        out = deblur_image(model, image, ev.tile, ev.overlap)
        images.append((figures.NAMES[kind], to_uint8(out)))  # scored as predict saves it
    table = sharpness_rows(images)
    panels = [
        (_sharpness_title(row, factor=i > 0), picture)
        for i, ((_, picture), row) in enumerate(zip(images, table["rows"], strict=True))
    ]
    path = out_dir / "real_photo.png"
    # Zoomed like the samples: at page size a deblurred edge is easy to miss.
    figures.comparison(panels, path)
    return path, table


# --------------------------------------------------------------------------- rendering


def _embed(html: str, base: Path) -> str:
    """Inline every <img src="figures/..."> as base64 so the HTML is one portable file."""

    def inline(match: re.Match) -> str:
        data = base64.b64encode((base / match.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="(figures/[^"]+\.png)"', inline, html)


def render(context: dict, out_dir: Path) -> tuple[Path, Path]:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails here, not silently
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        md = env.get_template("report.md.j2").render(**context)
        html = env.get_template("report.html.j2").render(**context)
    except jinja2.TemplateNotFound as exc:
        raise DeblurError(f"report template {TEMPLATES / exc.name} not found") from None
    md_path, html_path = out_dir / paths.REPORT_MD.name, out_dir / paths.REPORT_HTML.name
    fsutil.write_text(md_path, md)
    fsutil.write_text(html_path, _embed(html, out_dir))
    return md_path, html_path


def _rel(path: Path) -> str:
    """How report.md (in reports/) refers to a figure: figures/<name>."""
    return f"{paths.FIGURES.name}/{Path(path).name}"


def draw_figures(params, models, store, per_image, curves, trained, fig_dir: Path) -> dict:
    fig_dir.mkdir(parents=True, exist_ok=True)
    blurry = {k: t["val_psnr_blurry"] for k, t in trained.items() if "val_psnr_blurry" in t}
    figures.training_curves(curves, fig_dir / "training_curves.png", blurry)
    figures.gain_scatter(per_image, fig_dir / "per_image_psnr.png")
    quality = _quality_curve(fig_dir)
    samples = pick_samples(per_image, params.evaluate.samples)
    shown = sample_figures(models, store, samples, params, fig_dir)
    photo = photo_figure(models, params, fig_dir)
    return {
        "curves": _rel(fig_dir / "training_curves.png"),
        "scatter": _rel(fig_dir / "per_image_psnr.png"),
        **quality,
        "samples": [{**s, "path": _rel(s["path"])} for s in shown],
        "photo": _rel(photo[0]) if photo else None,
        "sharpness": photo[1] if photo else None,
    }


def _quality_curve(fig_dir: Path) -> dict:
    """The quality-vs-compute figure and its table, from evaluate's plots/curve.csv."""
    if not paths.CURVE_CSV.is_file():
        return {"quality": None, "quality_rows": []}
    curve = pd.read_csv(paths.CURVE_CSV)
    if curve.empty:
        return {"quality": None, "quality_rows": []}
    path = fig_dir / "quality_curve.png"
    figures.quality_curve(curve, path)
    rows = [
        {
            "model": figures.NAMES.get(r.model, r.model),
            "percent": r.percent,
            "step": _num(r.step, ".0f"),
            "seconds": _num(r.seconds, ".0f"),
            "psnr_gain": _num(r.psnr_gain, "+.3f"),
            "ssim_gain": _num(r.ssim_gain, "+.4f"),
        }
        for r in curve.itertuples(index=False)
    ]
    return {"quality": _rel(path), "quality_rows": rows}


def experiments_section(fig_dir: Path) -> dict:
    """Every pipeline run in the tracking store (deblur.runs): the quality/speed chart and
    the table. Champions are the registry's as the report runs, before this run's promotion.
    The store is no DVC dependency: the section is as of the report stage's last run."""
    rows = runs.collect()
    if not rows:
        return {"figure": None, "header": [], "rows": [], "count": 0}
    points = runs.points(rows)
    path = fig_dir / "experiments.png"
    figures.experiments(points, runs.pareto(points), path)
    header, body = runs.table(rows)
    return {"figure": _rel(path), "header": header, "rows": body, "count": len(rows)}


def build_context(params, models, store, fig_dir: Path) -> dict:
    """Read the pipeline's outputs, draw the figures, and gather what the templates show."""
    results = _read_csv(paths.RESULTS_CSV, "deblur evaluate")
    per_image = _read_csv(paths.PER_IMAGE_CSV, "deblur evaluate")
    curves = {kind: pd.read_csv(p) for kind in KINDS if (p := paths.train_plot(kind)).is_file()}
    trained = {kind: _read_json(paths.train_metrics(kind)) for kind in KINDS}
    drawn = draw_figures(params, models, store, per_image, curves, trained, fig_dir)
    dump = params.model_dump(mode="json", by_alias=True)
    eval_json = _read_json(paths.EVAL_JSON)
    return {
        "dataset": params.data.name,
        "metric_labels": [metric.label for metric in METRICS.values()],
        "measured": result_rows(results, tables.measured_source(params.data.name)),
        "reported": result_rows(results, tables.REPORTED_SOURCE),
        "options": option_rows(eval_json),
        "headline": [{"name": figures.NAMES[k], **eval_json[k]} for k in KINDS if k in eval_json],
        "protocol": eval_json.get("protocol", params.evaluate.protocol),
        "device": eval_json.get("device", NA),
        "n_test": per_image["image"].nunique(),
        "curve_models": [figures.NAMES[k] for k in curves],
        **drawn,
        "data_summary": flat_rows(_read_json(paths.DATA_JSON)),
        "train_table": train_table(trained),
        "experiments": experiments_section(fig_dir),
        "run_ids": run_ids(),
        "tracking_uri": tracking_uri(),
        "params_yaml": yaml.safe_dump({k: dump[k] for k in SHOWN_PARAMS}, sort_keys=False),
        "params_hash": params.section_hash(*SHOWN_PARAMS),
    }


def run(params, models=None, store=None) -> list[Path]:
    """The DVC stage. ``models`` ({kind: module}) and ``store`` default to the pipeline's."""
    if models is None:
        models = {kind: spec.load(kind) for kind in KINDS}
    if store is None:
        store = PairStore(root=paths.PROCESSED, split="test")
    # Drawn into a fresh folder that replaces figures/ whole: no stale sample from a past run.
    with fsutil.atomic_dir(paths.FIGURES) as fig_dir:
        context = build_context(params, models, store, fig_dir)
    md, html = render(context, paths.REPORTS)
    written = [md, html, *sorted(paths.FIGURES.glob("*.png"))]
    print(f"wrote {md} and {html} ({len(written) - 2} figures)")
    log_report(params, written)
    return written
