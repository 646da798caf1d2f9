"""The report renders from a pipeline's outputs: Markdown, one-file HTML, figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_evaluate import make_store, tiny

from deblur import config, fsutil, paths
from deblur.evaluate import protocol, samples, stage, tables
from deblur.report import render

TEMPLATES = Path(__file__).resolve().parents[1] / "pipeline" / "templates"
# Whole-image tiles: tiling is test_infer's business.
REPORT = config.parse({"evaluate": {"samples": 4}})
SHOWN = REPORT.model_dump(mode="json", by_alias=True)  # what cli.py hands the stage


def fake_quality_curve() -> pd.DataFrame:
    """plots/curve.csv as evaluate writes it: part-way checkpoints and the final model."""
    rows = [
        {"model": kind, "percent": pct, "step": 8 * pct}
        | {"psnr": 25 + gain, "ssim": 0.8, "psnr_gain": gain, "ssim_gain": gain / 100}
        for kind in ("gan", "ae")
        for pct, gain in ((25, 0.2), (50, 0.4), (100, 0.55))
    ]
    return pd.DataFrame(rows)


def fake_curve(kind: str, epochs: int = 4) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "step": e * 10,
            "train_loss": 0.1 / e,
            "val_psnr": 24 + np.log(e) + (kind == "gan"),
            "val_ssim": 0.8 + 0.01 * e,
            "lr": 1e-3,
        }
    )


@pytest.fixture(scope="module")
def evaluated():
    """What `deblur evaluate` computes, once for the module."""
    test, train = make_store(3), make_store(2, offset=3)
    models = {"gan": tiny("gan"), "ae": tiny("ae")}
    tracks = protocol.tracks("full", REPORT.preprocess.resize)
    per_image, labels = protocol.evaluate(models, test, train, REPORT.evaluate, tracks)
    summary = tables.summarize(per_image)
    results = tables.results_table(summary, labels, {"gan": 1200, "ae": 3400}, "synthetic")
    metrics = tables.eval_metrics(summary, tracks)
    options = protocol.evaluate_options(models, test, REPORT.evaluate, tracks)  # flips: on
    metrics["options"] = tables.option_metrics(tables.summarize(options), summary)
    figures, _ = tables.split_timings(metrics)
    return models, test, per_image, results, figures


def write_evaluated(models, test, per_image, results, figures) -> None:
    """Evaluate's files in the cwd: tables, eval.json, the curve, the sample images."""
    stage.write_outputs(per_image, results, figures, fake_quality_curve())
    samples.write(models, test, per_image, REPORT.evaluate)


@pytest.fixture
def report_project(tmp_path, monkeypatch, evaluated):
    """A tiny project as the report stage finds it after `dvc repro evaluate`."""
    models, test, per_image, results, figures = evaluated
    monkeypatch.chdir(tmp_path)
    shutil.copytree(TEMPLATES, tmp_path / "pipeline" / "templates")
    write_evaluated(models, test, per_image, results, figures)
    fsutil.write_text("plots/train_gan.csv", fake_curve("gan").to_csv(index=False))
    fsutil.write_text("plots/train_ae.csv", fake_curve("ae").to_csv(index=False))
    fsutil.write_json("metrics/train_gan.json", {"val_psnr": 25.1, "steps": 40})
    fsutil.write_json("metrics/data.json", {"test": {"pairs": 3}, "train": {"pairs": 2}})
    return tmp_path, models, test


def test_report_renders_md_html_and_figures(report_project):
    root, models, test = report_project
    written = render.run(SHOWN)

    md = (root / "reports" / "report.md").read_text()
    html = (root / "reports" / "report.html").read_text()
    figures = sorted(p.name for p in (root / "reports" / "figures").glob("*.png"))
    assert {"training_curves.png", "per_image_psnr.png", "real_photo.png"} <= set(figures)
    assert "quality_curve.png" in figures
    assert "| GAN | 50 | 400 | +0.400 | +0.0040 |" in md  # the curve's table
    assert len([f for f in figures if f.startswith("sample_")]) == 3  # samples=4, 3 images
    for name in figures:
        assert f"(figures/{name})" in md  # relative links from reports/report.md
    assert html.count("data:image/png;base64,") == len(figures)
    assert 'src="figures/' not in html  # self-contained: nothing to fetch
    assert set(written) == {paths.REPORT_MD, paths.REPORT_HTML, *paths.FIGURES.glob("*.png")}

    # Measured and reported rows under separate headings, with the seed's numbers.
    measured = md.index("### Measured (this run, synthetic)")
    reported = md.index("### Reported (GoPro, seed slides)")
    assert measured < md.index("| GAN (this project) |") < reported < md.index("| Ji et al. |")
    assert "| GAN (seed) | 8.1M | 27.24 | 0.8568 |" in md
    assert "best of 3" in md and "worst of 3" in md
    assert "test.pairs" in md and "samples: 4" in md and "| val_psnr | 25.1 |" in md

    # The Experiments view is its own page, linked; timings and run ids are run-info's.
    assert "[runs.html](runs.html)" in md and '<a href="runs.html">' in html
    assert "ms / MP" not in md and "run-info/" in md


def test_report_is_the_same_bytes_from_the_same_files(report_project):
    """A pure function of its deps: rendered twice, every file it writes is identical."""
    root, *_ = report_project
    first = {p: p.read_bytes() for p in render.run(SHOWN)}
    second = {p: p.read_bytes() for p in render.run(SHOWN)}
    assert first == second


def test_sample_figures_are_drawn_from_the_files_evaluate_wrote(report_project, monkeypatch):
    """The report titles each output with its PSNR read from the PNG evaluate wrote."""
    from deblur.data.images import read_rgb
    from deblur.metrics import psnr

    root, models, test = report_project
    index = json.loads(paths.SAMPLES_INDEX.read_text())
    first = index["samples"][0]
    gan = read_rgb(paths.sample_image(first["folder"], "gan"))
    sharp = read_rgb(paths.sample_image(first["folder"], paths.SAMPLE_SHARP))
    blur, truth = test.pair(test.names.index(first["image"]))
    assert np.array_equal(sharp, truth)
    assert np.array_equal(read_rgb(paths.sample_image(first["folder"], "blurry")), blur)
    captions = []
    monkeypatch.setattr(render.figures, "comparison", lambda panels, path: captions.append(panels))
    render.sample_figures(index, root)
    assert captions[0][1][0].endswith(f"{psnr(gan, sharp):.2f} dB")


def test_report_without_optional_inputs(report_project):
    root, models, test = report_project
    for name in (
        "plots/train_gan.csv",
        "plots/train_ae.csv",
        "metrics/data.json",
        "plots/curve.csv",
    ):
        (root / name).unlink()
    (root / "metrics" / "train_gan.json").unlink()
    saved = json.loads((root / "metrics" / "eval.json").read_text())
    del saved["options"]  # evaluate.flips: false
    fsutil.write_json(root / "metrics" / "eval.json", saved)
    render.run(SHOWN)
    md = (root / "reports" / "report.md").read_text()
    assert "No training curves found" in md and "n/a (metrics/data.json not found)" in md
    assert "Inference options" not in md
    assert "Quality against compute" not in md


def rendered(root: Path) -> tuple[dict, str, str]:
    """The report stage's context (what the templates are given), report.md, report.html."""
    shown = {k: SHOWN[k] for k in render.SHOWN_PARAMS}
    context = render.build_context(shown, root / "reports" / "figures")
    md_path, html_path = render.render(context, root / "reports")
    return context, md_path.read_text(), html_path.read_text()


def test_report_shows_inference_options_apart(report_project):
    from deblur.report.figures import NAMES

    root, models, test = report_project
    _, md, html = rendered(root)
    # flips under its own heading, never in the results table above it.
    results = md[md.index("### Measured") : md.index("### Inference options")]
    assert "flips" not in results
    options = md[md.index("### Inference options") : md.index("![PSNR")]
    gan = json.loads((root / "metrics" / "eval.json").read_text())["options"]["gan_flips"]
    assert f"| {NAMES['gan']} + flips | {gan['psnr']:.2f} | {gan['ssim']:.4f} |" in options
    gan_row, ae_row = (options.index(f"| {NAMES[k]} + flips |") for k in ("gan", "ae"))
    assert gan_row < ae_row  # in KINDS order, as every table
    assert "ms / MP" not in options and "<h3>Inference options</h3>" in html


def test_report_scores_the_real_photo_sharpness(report_project, tmp_path):
    from tiny_models import save_tiny

    from deblur.data.images import read_rgb, to_uint8
    from deblur.infer import deblur_image
    from deblur.metrics import SHARPNESS, sharpness
    from deblur.report.figures import NAMES

    root, _, test = report_project
    # Nudged weights: an untrained model is the identity, as sharp as its input.
    models = {kind: save_tiny(tmp_path / f"{kind}.pt", kind) for kind in ("gan", "ae")}
    per_image = pd.read_csv(paths.PER_IMAGE_CSV)
    samples.write(models, test, per_image, REPORT.evaluate)  # evaluate, with these models
    context, md, html = rendered(root)

    # The report's data: the input's sharpness, then each model's output's as predict saves it.
    rows = context["sharpness"]["rows"]
    assert [r["name"] for r in rows] == ["real blurred photo", NAMES["gan"], NAMES["ae"]]
    photo = read_rgb(samples.real_photo())
    assert rows[0]["values"] == pytest.approx(sharpness(photo))
    assert rows[0]["factors"] == pytest.approx(dict.fromkeys(SHARPNESS, 1.0))
    gan = sharpness(to_uint8(deblur_image(models["gan"], photo, REPORT.evaluate.tile)))
    assert rows[1]["values"] == pytest.approx(gan)
    assert rows[1]["factors"] == pytest.approx({k: gan[k] / rows[0]["values"][k] for k in gan})
    assert rows[1]["factors"] != pytest.approx(dict.fromkeys(SHARPNESS, 1.0))

    section = md[md.index("## A real blurred photograph") : md.index("## Data")]
    assert "| image | Laplacian var | × input | gradient energy | × input |" in section
    laplacian = f"{rows[0]['values']['laplacian_var']:.3g}"
    assert f"| real blurred photo | {laplacian} | 1.00 |" in section
    factor = f"{rows[1]['factors']['gradient_energy']:.2f}"
    assert f"| {NAMES['gan']} | " in section and f" | {factor} |" in section
    assert '<table class="sharpness">' in html


def test_report_needs_evaluate_first(report_project):
    from deblur.errors import DeblurError

    root, models, test = report_project
    (root / "reports" / "results.csv").unlink()
    with pytest.raises(DeblurError, match="run `deblur evaluate`"):
        render.run(SHOWN)
    (root / "reports" / "results.csv").write_text("model\n")
    shutil.rmtree(paths.SAMPLES)
    with pytest.raises(DeblurError, match="run `deblur evaluate`"):
        render.run(SHOWN)


def test_eval_json_keys_match_what_the_report_reads(report_project):
    root, *_ = report_project
    saved = json.loads((root / "metrics" / "eval.json").read_text())
    assert {"psnr", "ssim", "gain_db"} <= set(saved["gan"])
