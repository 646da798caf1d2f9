"""`deblur bench`: runs, reports every section, and each path matches eager. No timing asserts:
the machine is shared and noisy; these check what is measured, not how fast."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from support.repo import REPO
from support.tiny_models import save_tiny

from deblur import config, infer
from deblur.bench import inference as bench_inference
from deblur.bench import output as bench_output
from deblur.bench.timing import sample_image
from deblur.data.images import to_float

KEYS = {"inference", "train", "data", "dvc_noop_s", "peak_gflops"}
PATHS = {"default", "eager", "channels_last", "tiled", "compile", "bf16", "onnx"}


@pytest.fixture(scope="module")
def quick(prepared, smoke_params, tmp_path_factory):
    """`deblur bench --quick --json` in a smoke project with data/processed and a trained
    (tiny) GAN checkpoint; the autoencoder is left untrained. Run once for these tests."""
    root = tmp_path_factory.mktemp("bench") / "proj"
    shutil.copytree(prepared, root)
    (root / "params.yaml").write_text(yaml.safe_dump(smoke_params()))
    save_tiny(root / "models" / "gan.pt", "gan")
    proc = subprocess.run(
        [sys.executable, "-m", "deblur", "bench", "--quick", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        # One thread: on a shared machine two OpenMP threads stall each other on tiny ops.
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)  # stdout is nothing but the JSON


def test_prints_every_section(quick):
    _, report = quick
    assert report.keys() >= KEYS
    assert report["peak_gflops"] >= report["peak_gemm_gflops"] > 0
    assert report["peak_fma_gflops"] is None or report["peak_gflops"] >= report["peak_fma_gflops"]
    shares = [r["peak_fraction"] for r in report["train"].values()]
    for inf in report["inference"].values():
        shares += [r["peak_fraction"] for r in inf["paths"].values() if r["status"] == "ok"]
    assert all(0 < s <= 1 for s in shares)  # the peak is raised rather than passed
    for kind in ("gan", "ae"):
        inf = report["inference"][kind]
        assert inf["ms_per_mp"] > 0 and inf["macs_per_mp"] > 0 and inf["gflops"] > 0
        assert inf["paths"].keys() == PATHS
        assert inf["ms_per_mp"] == inf["paths"]["default"]["ms_per_mp"]
        train = report["train"][kind]
        assert train["samples_per_s"] > 0 and train["gflop_per_step"] > 0 and train["gflops"] > 0
        predict = inf["predict"]  # the whole call, PNG in and out, against the bare forward
        assert predict["ms"] > 0 and predict["vs_forward"] > 0 and predict["vs_eager"] > 0
        assert predict["folder_images"] == 2 and predict["folder_vs_forward"] > 0
    assert report["inference"]["gan"]["source"] == "models/gan.pt"
    assert report["inference"]["ae"]["source"].startswith("untrained")
    data = report["data"]
    assert data["processed_samples_per_s"] > 0 and data["png_samples_per_s"] > 0
    assert report["dvc_noop_s"] is None and "no dvc.lock" in report["dvc_note"]


def test_each_path_matches_eager_within_its_tolerance(quick):
    _, report = quick
    for kind in ("gan", "ae"):
        paths = report["inference"][kind]["paths"]
        for name, r in paths.items():
            if r["status"] != "ok":
                assert r["note"], (kind, name)  # a skip always says why
                continue
            if name != "tiled":  # blending tiles is not one whole pass, by design
                assert r["max_abs_diff"] <= r["tolerance"], (kind, name, r)
                assert r["same_result"]
        assert paths["compile"]["status"] == "skipped"  # --quick does not compile
        assert paths["onnx"]["status"] == "ok"  # deblur.export is there
        assert paths["bf16"]["status"] == (
            "ok" if bench_inference.bf16_unsupported() is None else "unsupported"
        )


def test_writes_one_csv_row_per_measurement(quick):
    root, report = quick
    with open(root / "reports" / "bench.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert table and set(table[0]) == {"section", "model", "path", "value", "unit"}
    assert {r["section"] for r in table} == {"machine", "inference", "train", "data"}
    ms = {(r["model"], r["path"]): float(r["value"]) for r in table if r["unit"] == "ms/MP"}
    assert ms[("gan", "default")] == report["inference"]["gan"]["ms_per_mp"]
    assert ms[("ae", "predict")] == report["inference"]["ae"]["predict"]["ms_per_mp"]
    share = {(r["model"], r["path"]) for r in table if r["unit"] == "share of peak"}
    assert {("gan", "default"), ("ae", "Trainer.step")} <= share
    peak = [r for r in table if r["section"] == "machine" and r["unit"] == "GFLOP/s"]
    assert float(peak[0]["value"]) == report["peak_gflops"]
    assert peak[1]["path"] == f"fp32 best product ({report['peak_gemm_how']})"
    assert not list((root / "reports").glob(".*.tmp"))  # written atomically


def test_table_without_json(quick):
    _, report = quick
    text = bench_output.table(report)
    for word in (
        "inference gan",
        "channels_last",
        "predict, PNG in and out",
        "samples/s",
        "of peak)",  # training's share
        "fp32 peak",
        "best product",
        "FMA limit",
        "dvc repro",
    ):
        assert word in text


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 fma", False),
        ("fpu avx2 avx512f avx512bw avx512vl avx512dq", False),  # AVX-512 emulates bf16
        ("fpu avx512f avx512_bf16", True),
        ("fpu amx_tile amx_bf16", True),
    ],
)
def test_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    from deblur.device import native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert native_bf16(cpuinfo) is native
    assert native_bf16(tmp_path / "missing") is False


def test_bench_reports_bf16_as_this_cpu_has_it():
    from deblur.device import native_bf16

    why = bench_inference.bf16_unsupported()
    assert (why is None) is native_bf16()
    if why is not None:
        assert why.startswith("unsupported")


@pytest.mark.slow
def test_compiled_model_matches_eager(tmp_path):
    model = save_tiny(tmp_path / "gan.pt", "gan")
    x = torch.rand(1, 3, 40, 56).contiguous(memory_format=torch.channels_last)
    compiled, seconds, why = bench_inference._compiled(model, x)
    if compiled is None:
        pytest.skip(why)
    with torch.inference_mode():
        assert (compiled(x) - model(x)).abs().max() <= bench_inference.FP32_TOL


# ------------------------------------------------------------- the default inference path


@pytest.mark.parametrize("kind", ["gan", "ae"])
def test_default_path_gives_eager_result(tmp_path, kind):
    """deblur_image (channels-last input, one tile) = a plain NCHW forward of the model."""
    model = save_tiny(tmp_path / f"{kind}.pt", kind)
    image = sample_image(45, 70)
    x = torch.from_numpy(to_float(image).transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        want = model(x)[0].numpy().transpose(1, 2, 0)
    got = infer.deblur_image(model, image)
    assert got.shape == image.shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, atol=bench_inference.FP32_TOL)
    assert next(model.parameters()).is_contiguous()  # the caller's model is left as it was


class Strides(torch.nn.Module):
    """The identity, noting the strides of every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.stride()))
        return x


@pytest.mark.parametrize("tile", [4096, 48])
def test_default_path_feeds_plain_channels_last(tile):
    # A batch stride of 0 or 3 (a view's) also counts as channels-last, but was 1.3-1.6x
    # slower: the models must get exactly the strides that .contiguous() would give.
    spy = Strides()
    infer.deblur_image(spy, sample_image(70, 90), tile=tile, overlap=16)
    assert spy.seen
    for (_, c, h, w), stride in spy.seen:
        assert stride == (c * h * w, 1, w * c, c)


@pytest.mark.parametrize("length", [1, 33, 512, 513, 720, 1280, 3000, 4000])
@pytest.mark.parametrize("tile", [64, 512, 1280])
def test_tile_spans_cover_the_axis_without_waste(length, tile):
    overlap = 32
    spans = infer._spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(0 < b - a <= tile for a, b in spans)
    assert all(b0 - a1 >= overlap for (_, b0), (a1, _) in zip(spans, spans[1:], strict=False))
    if length > tile:  # the last tile keeps context, and never redoes a whole tile's work
        assert spans[-1][1] - spans[-1][0] >= tile // 2
        assert sum(b - a for a, b in spans) < length + len(spans) * overlap + tile // 2


def test_default_tile_takes_a_720p_frame_whole():
    assert infer.TILE >= 1280
    assert config.load(REPO / "params.yaml").evaluate.tile >= 1280
