"""The evaluation protocol: DESIGN.md's metrics, rows equal to predict, tables kept apart."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import uniform_filter
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tiny_models import save_tiny
from torch import nn

from deblur import config, models
from deblur import predict as predicting
from deblur.evaluate import protocol, stage, tables
from deblur.metrics import psnr, score, ssim


class FakeStore:
    """PairStore's interface (names, len, pair) over pairs made in memory."""

    def __init__(self, pairs: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.names = list(pairs)
        self._pairs = list(pairs.values())

    def __len__(self):
        return len(self._pairs)

    def pair(self, i):
        return self._pairs[i]


def make_store(n: int, offset: int = 0, size=(48, 64)) -> FakeStore:
    """Crops of a real photo, box-blurred along x: real structure, known blur."""
    photo = skdata.astronaut()
    pairs = {}
    for i in range(n):
        top, left = 40 + 60 * (i + offset), 30 + 50 * (i + offset)
        sharp = photo[top : top + size[0], left : left + size[1]]
        blur = uniform_filter(sharp.astype(np.float32), size=(1, 5 + i, 1), mode="reflect")
        pairs[f"scene{i + offset}/{i:06d}"] = (np.round(blur).astype(np.uint8), sharp.copy())
    return FakeStore(pairs)


ARCH = {"gan": {"channels": 4, "n_down": 1, "n_res": 1}, "ae": {"channels": 4, "depth": 1}}


def tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return models.build(kind, ARCH[kind]).eval()


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
def stores():
    return make_store(3), make_store(2, offset=3)


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


def test_identity_model_scores_as_the_blurry_input(stores):
    test, train = stores
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


def test_rows_equal_what_predict_writes(tmp_path, stores):
    from deblur.data.images import read_rgb, write_png

    test, train = stores
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


def test_results_keep_measured_and_reported_apart(stores):
    test, train = stores
    per_image, labels = evaluate({"gan": tiny("gan"), "ae": tiny("ae")}, test, train)
    summary = tables.summarize(per_image)
    results = tables.results_table(summary, labels, {"gan": 1234, "ae": 5678}, "synthetic")
    assert list(results.columns) == tables.RESULT_COLUMNS

    measured = results[results.source == "measured (this run, synthetic)"]
    reported = results[results.source == "reported (GoPro, seed slides)"]
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
        "GAN (seed)": (27.24, 0.8568, 8_100_000),
        "Autoencoder (seed)": (26.95, 0.839, 10_300_000),
    }
    assert list(seed.index) == list(expected)
    for model, (p, s, n) in expected.items():
        assert (seed.loc[model, "psnr"], seed.loc[model, "ssim"]) == (p, s)
        assert pd.isna(seed.loc[model, "params"]) if n is None else seed.loc[model, "params"] == n


def test_resize_protocol_is_labelled(stores):
    test, train = stores
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


def test_run_writes_tables_and_logs(tmp_path, monkeypatch, stores):
    """The stage: both tables, eval.json, and an evaluate run in a real MLflow store."""
    from deblur.tracking import store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for kind in ("gan", "ae"):
        save_tiny(tmp_path / "models" / f"{kind}.pt", kind, meta={"steps": 20, "seconds": 4.0})
    save_tiny(tmp_path / "models" / "curve" / "gan" / "50.pt", "gan", seed=1, meta={"steps": 10})
    monkeypatch.setattr(stage, "open_stores", lambda protocol: stores)
    metrics = run_stage(PARAMS)
    saved = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert saved == metrics
    # Numbers only, and none a rerun changes: timings and ids are run-info's.
    assert all(isinstance(v, int | float) for v in config.flatten(saved).values())
    info = json.loads((tmp_path / "run-info" / "evaluate.json").read_text())
    assert info["device"] == "cpu" and info["protocol"] == "full"
    assert info["timings"]["gan"]["ms_per_mp"] > 0 and info["registry"] == {}
    logged = store.client().get_run(info["mlflow_run_id"]).data.metrics
    assert logged["gan.ms_per_mp"] == info["timings"]["gan"]["ms_per_mp"]
    assert logged["gan.psnr"] == pytest.approx(metrics["gan"]["psnr"])
    assert logged["ae.gain_db"] == pytest.approx(metrics["ae"]["gain_db"])
    results = pd.read_csv(tmp_path / "reports" / "results.csv")
    per_image = pd.read_csv(tmp_path / "reports" / "per_image.csv")
    assert len(per_image) == 4 * len(stores[0]) and "ms" not in per_image
    # The report's images: each sample's input, outputs and sharp frame, and the photo.
    index = json.loads((tmp_path / "reports" / "samples" / "index.json").read_text())
    assert len(index["samples"]) == len(stores[0]) and index["kinds"] == ["gan", "ae"]
    first = tmp_path / "reports" / "samples" / index["samples"][0]["folder"]
    assert sorted(p.name for p in first.iterdir()) == [
        "ae.png",
        "blurry.png",
        "gan.png",
        "sharp.png",
    ]
    gan = results.set_index("model").loc["GAN (this project)"]
    assert gan.params == models.count_params(models.load(tmp_path / "models" / "gan.pt"))
    assert gan.psnr == pytest.approx(saved["gan"]["psnr"], abs=1e-3)
    # The quality curve: the part-way checkpoint scored, the final point is the table's.
    curve = pd.read_csv(tmp_path / "plots" / "curve.csv").set_index(["model", "percent"])
    assert sorted(curve.index) == [("ae", 100), ("gan", 50), ("gan", 100)]
    assert curve.loc[("gan", 100), "psnr"] == pytest.approx(metrics["gan"]["psnr"], abs=1e-3)
    assert curve.loc[("gan", 50), "psnr"] != pytest.approx(curve.loc[("gan", 100), "psnr"])
    blurry = metrics["blurry"]["psnr"]
    assert curve.loc[("gan", 50), "psnr_gain"] == pytest.approx(
        curve.loc[("gan", 50), "psnr"] - blurry, abs=1e-3
    )
    assert curve.loc[("gan", 50), "step"] == 10
    history = store.client().get_metric_history(info["mlflow_run_id"], "curve.gan.psnr_gain")
    assert [m.step for m in history] == [10, 20]

    # evaluate.flips (on by default): each model again with the flip self-ensemble, under
    # "options" only; the results table, per-image rows and per-model keys are as before.
    assert set(saved["options"]) == {"gan_flips", "ae_flips"}
    assert not results.model.str.contains("flips").any()
    assert set(per_image.model) == {"gan", "ae", "baseline", "blurry"}
    for kind in ("gan", "ae"):
        option = saved["options"][f"{kind}_flips"]
        assert set(option) == {
            "psnr",
            "ssim",
            "images",
            "psnr_vs_plain",
            "ssim_vs_plain",
        }
        assert option["images"] == len(stores[0])
        assert info["timings"]["options"][f"{kind}_flips"]["ms_per_mp"] > 0
        gain = option["psnr"] - saved[kind]["psnr"]
        assert option["psnr_vs_plain"] == pytest.approx(gain, abs=2e-4)
        assert option["psnr"] != saved[kind]["psnr"]  # nudged weights: flips change the output
        assert set(saved[kind]) == {"psnr", "ssim", "images", "gain_db", "ssim_gain"}
    assert logged["options.gan_flips.psnr"] == pytest.approx(saved["options"]["gan_flips"]["psnr"])


def test_flips_option_rows(stores):
    test, _ = stores
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
