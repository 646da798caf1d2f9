"""`deblur report`: the pipeline's outputs -> reports/report.md and a self-contained report.html.

A pure function of its DVC deps: everything shown is read from files the DAG wrote
(metrics/, plots/, reports/*.csv, the sample images evaluate wrote in reports/samples/)
and the params it prints. It runs no model and reads no MLflow store, so two runs of the
same commit give the same bytes; the Experiments view over every pipeline run is
`deblur runs --html`, which the report links to. A missing optional
input (the data summary, one model's curves) shows as "n/a" instead of failing the stage.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import yaml

from deblur import fsutil, paths
from deblur.config import params_hash
from deblur.data.images import read_rgb
from deblur.errors import DeblurError
from deblur.evaluate import tables as results_tables
from deblur.kinds import KINDS
from deblur.metrics import METRICS, psnr
from deblur.report import figures, tables

TEMPLATES = paths.TEMPLATES
SHOWN_PARAMS = ("seed", "data", "preprocess", "train", "evaluate")


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


def _read_samples() -> dict:
    index = _read_json(paths.SAMPLES_INDEX)
    if not index:
        raise DeblurError(f"{paths.SAMPLES_INDEX} not found; run `deblur evaluate` first")
    return index


def _png(folder: str, name: str):
    path = paths.sample_image(folder, name)
    if not path.is_file():
        raise DeblurError(f"{path} not found; rerun `deblur evaluate`")
    return read_rgb(path)


# --------------------------------------------------------------------------- figures


def _titled(name: str, image, sharp) -> tuple[str, object]:
    if sharp is None:
        return name, image
    return f"{name}\n{psnr(image, sharp):.2f} dB", image


def sample_figures(index: dict, out_dir: Path) -> list[dict]:
    """blur | GAN | autoencoder | sharp for each sample evaluate wrote, at full resolution."""
    shown = []
    for k, sample in enumerate(index["samples"], 1):
        folder = sample["folder"]
        sharp = _png(folder, paths.SAMPLE_SHARP)
        panels = [_titled("blurry input", _png(folder, paths.SAMPLE_BLURRY), sharp)]
        panels += [
            _titled(figures.NAMES[kind], _png(folder, kind), sharp) for kind in index["kinds"]
        ]
        panels.append(("sharp (ground truth)", sharp))
        path = out_dir / f"sample_{k}.png"
        figures.comparison(panels, path)
        shown.append({"path": path, "image": sample["image"], "why": sample["why"]})
    return shown


def photo_figure(index: dict, out_dir: Path) -> tuple[Path, dict] | None:
    """Before and after on a real motion-blurred photograph, with no ground truth to score
    against: each panel titled with its no-reference sharpness, returned as rows too."""
    if not index.get("photo"):
        return None
    images = [("real blurred photo", _png(paths.SAMPLE_PHOTO, paths.SAMPLE_BLURRY))]
    images += [(figures.NAMES[kind], _png(paths.SAMPLE_PHOTO, kind)) for kind in index["kinds"]]
    table = tables.sharpness_rows(images)
    panels = [
        (tables.sharpness_title(row, factor=i > 0), picture)
        for i, ((_, picture), row) in enumerate(zip(images, table["rows"], strict=True))
    ]
    path = out_dir / "real_photo.png"
    # Zoomed like the samples: at page size a deblurred edge is easy to miss.
    figures.comparison(panels, path)
    return path, table


def _rel(path: Path) -> str:
    """How report.md (in reports/) refers to a figure: figures/<name>."""
    return f"{paths.FIGURES.name}/{Path(path).name}"


def _quality_curve(fig_dir: Path) -> dict:
    """The quality-vs-compute figure and its table, from evaluate's plots/curve.csv."""
    if not paths.CURVE_CSV.is_file():
        return {"quality": None, "quality_rows": []}
    curve = pd.read_csv(paths.CURVE_CSV)
    if curve.empty:
        return {"quality": None, "quality_rows": []}
    path = fig_dir / "quality_curve.png"
    figures.quality_curve(curve, path)
    return {"quality": _rel(path), "quality_rows": tables.quality_rows(curve)}


def draw_figures(per_image, curves, trained, index: dict, fig_dir: Path) -> dict:
    fig_dir.mkdir(parents=True, exist_ok=True)
    blurry = {k: t["val_psnr_blurry"] for k, t in trained.items() if "val_psnr_blurry" in t}
    figures.training_curves(curves, fig_dir / "training_curves.png", blurry)
    figures.gain_scatter(per_image, fig_dir / "per_image_psnr.png")
    quality = _quality_curve(fig_dir)
    shown = sample_figures(index, fig_dir)
    photo = photo_figure(index, fig_dir)
    return {
        "curves": _rel(fig_dir / "training_curves.png"),
        "scatter": _rel(fig_dir / "per_image_psnr.png"),
        **quality,
        "samples": [{**s, "path": _rel(s["path"])} for s in shown],
        "photo": _rel(photo[0]) if photo else None,
        "sharpness": photo[1] if photo else None,
    }


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


def build_context(shown: dict, fig_dir: Path) -> dict:
    """Read the pipeline's outputs, draw the figures, and gather what the templates show.

    ``shown`` holds the params sections the report prints (SHOWN_PARAMS, JSON types).
    """
    dataset = shown["data"]["name"]
    results = _read_csv(paths.RESULTS_CSV, "deblur evaluate")
    per_image = _read_csv(paths.PER_IMAGE_CSV, "deblur evaluate")
    index = _read_samples()
    curves = {kind: pd.read_csv(p) for kind in KINDS if (p := paths.train_plot(kind)).is_file()}
    trained = {kind: _read_json(paths.train_metrics(kind)) for kind in KINDS}
    drawn = draw_figures(per_image, curves, trained, index, fig_dir)
    eval_json = _read_json(paths.EVAL_JSON)
    learned = per_image[per_image["model"].isin(KINDS)]
    return {
        "dataset": dataset,
        "metric_labels": [metric.label for metric in METRICS.values()],
        "measured": tables.result_rows(results, results_tables.measured_source(dataset)),
        "reported": tables.result_rows(results, results_tables.REPORTED_SOURCE),
        "options": tables.option_rows(eval_json),
        "headline": [{"name": figures.NAMES[k], **eval_json[k]} for k in KINDS if k in eval_json],
        "protocol": " / ".join(dict.fromkeys(learned["protocol"])) or tables.NA,
        "n_test": per_image["image"].nunique(),
        "curve_models": [figures.NAMES[k] for k in curves],
        **drawn,
        "data_summary": tables.flat_rows(_read_json(paths.DATA_JSON)),
        "train_table": tables.train_table(trained),
        "runs_page": paths.RUNS_HTML.name,
        "run_info": paths.RUN_INFO.as_posix(),
        "params_yaml": yaml.safe_dump(shown, sort_keys=False),
        "params_hash": params_hash(shown),
    }


def run(params: dict) -> list[Path]:
    """The DVC stage. ``params``: the pipeline's params as a nested mapping (JSON types), of
    which the report prints SHOWN_PARAMS."""
    shown = {k: params[k] for k in SHOWN_PARAMS}
    # Drawn into a fresh folder that replaces figures/ whole: no stale sample from a past run.
    with fsutil.atomic_dir(paths.FIGURES) as fig_dir:
        context = build_context(shown, fig_dir)
    md, html = render(context, paths.REPORTS)
    written = [md, html, *sorted(paths.FIGURES.glob("*.png"))]
    print(f"wrote {md} and {html} ({len(written) - 2} figures)")
    return written
