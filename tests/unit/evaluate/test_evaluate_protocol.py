"""The evaluation protocol: DESIGN.md's metrics, rows equal to predict, tables kept apart."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import uniform_filter
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from support.arrays import make_arrays, tiny
from support.tiny_models import save_tiny
from torch import nn

from deblur import config, models
from deblur import predict as predicting
from deblur.evaluate import protocol, stage, tables
from deblur.metrics import psnr, score, ssim

PARAMS = config.parse({"evaluate": {"tile": 32, "overlap": 8, "baseline": "unsharp"}})


def tracks_of(params: config.Params) -> dict[str, str]:
    return protocol.tracks(params.evaluate.protocol, params.preprocess.resize)


def evaluate(models, test, train, params: config.Params = PARAMS):
    """protocol.evaluate over ``params``' own sections, as the stage calls it."""
    return protocol.evaluate(models, test, train, params.evaluate, tracks_of(params))


def evaluate_options(models, test, params: config.Params = PARAMS):
    return protocol.evaluate_options(models, test, params.evaluate, tracks_of(params))


def run_stage(params: config.Params, device: str = "cpu") -> dict:
    """The evaluate stage as cli.py calls it."""
    dump = params.model_dump(mode="json", by_alias=True)
    return stage.run(params.evaluate, params.preprocess, params.data.name, dump, device=device)


@pytest.fixture(scope="module")
def arrays():
    return make_arrays(3), make_arrays(2, offset=3)


def test_metrics_follow_the_protocol():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pred = np.clip(ref + rng.normal(0, 12, ref.shape), 0, 255).astype(np.uint8)
    a, b = ref / 255.0, pred / 255.0
    assert psnr(pred, ref) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1))
    expected = structural_similarity(
        a,
        b,
        data_range=1,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(pred, ref) == pytest.approx(expected, abs=1e-6)
    scores = score(b.astype(np.float32), ref)
    assert scores == pytest.approx({"psnr": psnr(pred, ref), "ssim": ssim(pred, ref)})


def test_sharpness_drops_with_blur_and_rises_with_unsharp_masking():
    from scipy.ndimage import gaussian_filter

    from deblur.metrics import SHARPNESS, sharpness

    sharp = skdata.astronaut()[100:260, 120:320]
    blur = np.round(uniform_filter(sharp.astype(np.float32), size=(1, 7, 1))).astype(np.uint8)
    x = blur / 255.0
    masked = np.clip(x + 1.5 * (x - gaussian_filter(x, sigma=(2, 2, 0))), 0, 1)  # float
    s_sharp, s_blur, s_masked = sharpness(sharp), sharpness(blur), sharpness(masked)
    assert set(s_sharp) == set(SHARPNESS)
    for name in SHARPNESS:
        assert s_blur[name] < s_sharp[name], name
        assert s_masked[name] / s_blur[name] > 1, name
    assert sharpness(blur.astype(np.float32) / 255) == pytest.approx(s_blur)  # uint8 or float
    flat = np.full((20, 30, 3), 128, np.uint8)
    assert sharpness(flat) == {name: 0.0 for name in SHARPNESS}


def test_identity_model_scores_as_the_blurry_input(arrays):
    test, train = arrays
    per_image, labels = evaluate({"gan": nn.Identity(), "ae": tiny("ae")}, test, train)
    assert list(per_image.columns) == tables.PER_IMAGE_COLUMNS
    assert set(per_image["model"]) == {"gan", "ae", "baseline", "blurry"}
    assert labels[("baseline", "full")].startswith("unsharp mask (radius=")
    gan = per_image[per_image.model == "gan"].set_index("image")
    blurry = per_image[per_image.model == "blurry"].set_index("image")
    pd.testing.assert_frame_equal(gan[["psnr", "ssim"]], blurry[["psnr", "ssim"]])
    for name, (blur, sharp) in zip(test.names, test._pairs, strict=True):
        assert blurry.loc[name, "psnr"] == pytest.approx(peak_signal_noise_ratio(sharp, blur))

    summary = tables.summarize(per_image)
    metrics = tables.eval_metrics(summary, tracks_of(PARAMS))
    assert metrics["gan"]["gain_db"] == 0 and tables.protocol_label(tracks_of(PARAMS)) == "full"
    assert set(metrics) >= {"gan", "ae", "blurry", "baseline"}


def test_rows_equal_what_predict_writes(tmp_path, arrays):
    from deblur.data.images import read_rgb, write_png

    test, train = arrays
    # Nudged weights: an untrained model is the identity, under which evaluate's and
    # predict's paths would agree whatever either did to the image.
    save_tiny(ckpt := tmp_path / "gan.pt", "gan")
    per_image, _ = evaluate({"gan": models.load(ckpt)}, test, train)

    name = test.names[1]
    blur, sharp = test.pair(1)
    write_png(tmp_path / "in" / "blurry.png", blur)
    ev = PARAMS.evaluate
    predicting.predict([tmp_path / "in"], tmp_path / "out", str(ckpt), ev.tile, ev.overlap, "cpu")
    got = score(read_rgb(tmp_path / "out" / "blurry.png"), sharp)
    row = per_image[(per_image.model == "gan") & (per_image.image == name)].iloc[0]
    assert got == pytest.approx({"psnr": row.psnr, "ssim": row.ssim}, abs=1e-9)
    assert got["psnr"] != pytest.approx(score(blur, sharp)["psnr"], abs=1e-3)  # it did work


def test_results_keep_measured_and_reported_apart(arrays):
    test, train = arrays
    per_image, labels = evaluate({"gan": tiny("gan"), "ae": tiny("ae")}, test, train)
    summary = tables.summarize(per_image)
    results = tables.results_table(summary, labels, {"gan": 1234, "ae": 5678}, "synthetic")
    assert list(results.columns) == tables.RESULT_COLUMNS

    measured = results[results.source == "measured (this run, synthetic)"]
    reported = results[results.source == "reported (GoPro, reference study)"]
    assert len(measured) + len(reported) == len(results)
    assert list(measured.model) == [
        "GAN (this project)",
        "Autoencoder (this project)",
        labels[("baseline", "full")],
        "blurry input",
    ]
    assert measured.set_index("model").loc["blurry input", "params"] == 0
    assert "ms_per_mp" not in results  # a timing: run-info/evaluate.json, not a DVC out

    seed = reported.set_index("model")
    expected = {
        "Kupyn et al.": (28.7, 0.958, None),
        "Nah et al.": (28.93, 0.91, None),
        "Ji et al.": (31.15, 0.96, None),
        "Li et al.": (29.3, 0.72, 11_400_000),
        "GAN (reference study)": (27.24, 0.8568, 8_100_000),
        "Autoencoder (reference study)": (26.95, 0.839, 10_300_000),
    }
    assert list(seed.index) == list(expected)
    for model, (p, s, n) in expected.items():
        assert (seed.loc[model, "psnr"], seed.loc[model, "ssim"]) == (p, s)
        assert pd.isna(seed.loc[model, "params"]) if n is None else seed.loc[model, "params"] == n


def test_resize_protocol_is_labelled(arrays):
    test, train = arrays
    params = config.parse(
        {
            "evaluate": {"protocol": "resize", "tile": 32, "overlap": 8},
            "preprocess": {"resize": {"gan": 32, "ae": 24}},
        }
    )
    identity = {"gan": nn.Identity(), "ae": nn.Identity()}
    per_image, labels = evaluate(identity, test, train, params)
    assert set(per_image.protocol) == {"resize 32", "resize 24"}
    assert (per_image.megapixels[per_image.protocol == "resize 24"] == 24 * 24 / 1e6).all()
    metrics = tables.eval_metrics(tables.summarize(per_image), tracks_of(params))
    assert tables.protocol_label(tracks_of(params)) == "resize 32 / resize 24"
    assert {"gan", "ae", "blurry_32", "blurry_24", "baseline_32", "baseline_24"} <= set(metrics)
    assert metrics["ae"]["gain_db"] == 0  # identity vs the blurry input at its own size
    # Every key is a valid MLflow metric name (log_evaluation logs them flattened).
    assert all(re.fullmatch(r"[\w\-. :/]+", key) for key in metrics)
    results = tables.results_table(tables.summarize(per_image), labels, {}, "synthetic")
    baseline = results[results.model.str.startswith("unsharp mask")]
    assert sorted(baseline.protocol) == ["resize 24", "resize 32"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, arrays):
    """The stage run once on tiny checkpoints (one part-way), into a real MLflow tracking
    store -> (its folder, run()'s metrics, eval.json, run-info, results.csv, per_image.csv)."""
    root = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for kind in ("gan", "ae"):
            save_tiny(root / "models" / f"{kind}.pt", kind, meta={"steps": 20, "seconds": 4.0})
        save_tiny(root / "models" / "curve" / "gan" / "50.pt", "gan", seed=1, meta={"steps": 10})
        mp.setattr(stage, "open_arrays", lambda protocol: arrays)
        metrics = run_stage(PARAMS)
    saved = json.loads((root / "metrics" / "eval.json").read_text())
    info = json.loads((root / "run-info" / "evaluate.json").read_text())
    results = pd.read_csv(root / "reports" / "results.csv")
    per_image = pd.read_csv(root / "reports" / "per_image.csv")
    return root, metrics, saved, info, results, per_image


@pytest.fixture
def client(evaluated, monkeypatch):
    """An MLflow client on the stage's tracking store."""
    from deblur.tracking import store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{evaluated[0] / 'mlflow.db'}")
    return store.client()


def test_run_writes_numbers_to_eval_json_and_the_rest_to_run_info(evaluated):
    """Numbers only in eval.json, and none a rerun changes: timings and ids are run-info's."""
    _, metrics, saved, info, _, _ = evaluated
    assert saved == metrics
    assert all(isinstance(v, int | float) for v in config.flatten(saved).values())
    assert info["device"] == "cpu" and info["protocol"] == "full"
    assert info["timings"]["gan"]["ms_per_mp"] > 0 and info["registry"] == {}


def test_run_logs_scores_and_timings_to_mlflow(evaluated, client):
    _, metrics, saved, info, _, _ = evaluated
    logged = client.get_run(info["mlflow_run_id"]).data.metrics
    assert logged["gan.ms_per_mp"] == info["timings"]["gan"]["ms_per_mp"]
    assert logged["gan.psnr"] == pytest.approx(metrics["gan"]["psnr"])
    assert logged["ae.gain_db"] == pytest.approx(metrics["ae"]["gain_db"])
    assert logged["options.gan_flips.psnr"] == pytest.approx(saved["options"]["gan_flips"]["psnr"])


def test_run_writes_the_tables_and_the_reports_images(evaluated, arrays):
    """Both tables, and each sample's input, outputs and sharp frame for the report."""
    root, _, saved, _, results, per_image = evaluated
    assert len(per_image) == 4 * len(arrays[0]) and "ms" not in per_image
    index = json.loads((root / "reports" / "samples" / "index.json").read_text())
    assert len(index["samples"]) == len(arrays[0]) and index["kinds"] == ["gan", "ae"]
    first = root / "reports" / "samples" / index["samples"][0]["folder"]
    assert sorted(p.name for p in first.iterdir()) == [
        "ae.png",
        "blurry.png",
        "gan.png",
        "sharp.png",
    ]
    gan = results.set_index("model").loc["GAN (this project)"]
    assert gan.params == models.count_params(models.load(root / "models" / "gan.pt"))
    assert gan.psnr == pytest.approx(saved["gan"]["psnr"], abs=1e-3)


def test_run_scores_the_part_way_checkpoint_on_the_quality_curve(evaluated, client):
    """The part-way checkpoint scored like the final one, whose point is the table's."""
    root, metrics, _, info, _, _ = evaluated
    curve = pd.read_csv(root / "plots" / "curve.csv").set_index(["model", "percent"])
    assert sorted(curve.index) == [("ae", 100), ("gan", 50), ("gan", 100)]
    assert curve.loc[("gan", 100), "psnr"] == pytest.approx(metrics["gan"]["psnr"], abs=1e-3)
    assert curve.loc[("gan", 50), "psnr"] != pytest.approx(curve.loc[("gan", 100), "psnr"])
    blurry = metrics["blurry"]["psnr"]
    assert curve.loc[("gan", 50), "psnr_gain"] == pytest.approx(
        curve.loc[("gan", 50), "psnr"] - blurry, abs=1e-3
    )
    assert curve.loc[("gan", 50), "step"] == 10
    history = client.get_metric_history(info["mlflow_run_id"], "curve.gan.psnr_gain")
    assert [m.step for m in history] == [10, 20]


def test_run_scores_flips_as_options_only(evaluated, arrays):
    """evaluate.flips (on by default): each model again with the flip self-ensemble, under
    "options" only; the results table, per-image rows and per-model keys are as before."""
    _, _, saved, info, results, per_image = evaluated
    assert set(saved["options"]) == {"gan_flips", "ae_flips"}
    assert not results.model.str.contains("flips").any()
    assert set(per_image.model) == {"gan", "ae", "baseline", "blurry"}
    for kind in ("gan", "ae"):
        option = saved["options"][f"{kind}_flips"]
        assert set(option) == {"psnr", "ssim", "images", "psnr_vs_plain", "ssim_vs_plain"}
        assert option["images"] == len(arrays[0])
        assert info["timings"]["options"][f"{kind}_flips"]["ms_per_mp"] > 0
        gain = option["psnr"] - saved[kind]["psnr"]
        assert option["psnr_vs_plain"] == pytest.approx(gain, abs=2e-4)
        assert option["psnr"] != saved[kind]["psnr"]  # nudged weights: flips change the output
        assert set(saved[kind]) == {"psnr", "ssim", "images", "gain_db", "ssim_gain"}


def test_flips_option_rows(arrays):
    test, _ = arrays
    identity = {"gan": nn.Identity(), "ae": nn.Identity()}
    rows = evaluate_options(identity, test)
    assert set(rows.model) == {"gan_flips", "ae_flips"}
    assert list(rows.columns) == tables.PER_IMAGE_COLUMNS
    method = protocol.model_method(nn.Identity(), 32, 8, "cpu")
    plain = pd.DataFrame(
        [row for kind in identity for row in protocol.score_method(kind, method, test, "full")]
    )
    options = tables.option_metrics(tables.summarize(rows), tables.summarize(plain))
    # The identity is flip-equivariant: the ensemble scores exactly as the plain model.
    assert options["gan_flips"]["psnr_vs_plain"] == 0 and options["gan_flips"]["ssim_vs_plain"] == 0
    assert all(re.fullmatch(r"[\w\-. :/]+", key) for key in options)  # MLflow metric names

    off = config.parse({"evaluate": {"tile": 32, "overlap": 8, "flips": False}})
    assert evaluate_options(identity, test, off).empty
