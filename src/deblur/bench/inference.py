"""Inference per path: ms per megapixel, GFLOP/s and agreement with eager, `predict`, and
the image codecs predict could use.

The default path (infer.deblur_image, what predict and evaluate run) against each
alternative (eager NCHW forward, channels-last, torch.compile, bfloat16 autocast, ONNX
Runtime), timed in rounds so a slow spell of a shared machine spreads over all of them.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deblur import models, paths
from deblur.bench.timing import SETTLE, Sizes, say, timed
from deblur.config import Params
from deblur.data.images import png_bytes, to_float, to_uint8, write_png
from deblur.device import native_bf16
from deblur.export import export_onnx
from deblur.infer import deblur_image, tile_count
from deblur.predict import predict as predict_files
from deblur.spec import OnnxModel

# "Same result" as eager: float32 paths only reorder sums, bfloat16 keeps 8 bits of mantissa.
FP32_TOL, BF16_TOL = 1e-4, 2e-2
TILED = 512  # a smaller tile, measured to show what tiling costs
# Paths with no one-off cost: candidates for deblur_image's default, since predicting a
# single image must not pay for an export or a compilation (see infer._forward).
NO_SETUP = ("default", "eager", "channels_last", "bf16")


def sample_image(h: int, w: int) -> np.ndarray:
    """A smooth uint8 RGB image with some noise: edges for the model to work on."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(17 * x + 5 * y), np.cos(11 * y - 7 * x), np.sin(13 * (x + y))], -1)
    noise = np.random.default_rng(0).standard_normal((h, w, 3))
    return to_uint8(0.5 + 0.4 * base + 0.03 * noise)


def bench_model(kind: str, params: Params) -> tuple[nn.Module, Path | None, str]:
    """models/<kind>.pt if trained, else the params' architecture with random weights."""
    path = paths.checkpoint(kind)
    if path.is_file():
        return models.load(path), path, str(path)
    model = models.build(kind, models.arch_config(kind, getattr(params.train, kind))).eval()
    # A fresh model is the identity (the last conv of each residual branch starts at zero),
    # which every path reproduces exactly: real weights make the comparison mean something.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                layer.reset_parameters()
    return model, None, f"untrained ({path} not found): params architecture, random weights"


def bf16_unsupported() -> str | None:
    """Why bfloat16 autocast is not worth measuring here, or None if it is.

    Without native bfloat16 (AVX512-BF16, AMX) oneDNN emulates it, slower than float32.
    """
    if native_bf16():
        return None
    return "unsupported: this CPU has no native bfloat16 (AVX512-BF16/AMX)"


def _checkpoint_file(kind: str, model: nn.Module, params: Params, tmp: Path) -> Path:
    """The bench model as a checkpoint file, for the paths that read one (export, predict)."""
    path = tmp / f"{kind}.pt"
    torch.save(
        models.checkpoint_dict(kind, model, models.arch_config(kind, getattr(params.train, kind))),
        path,
    )
    return path


def _onnx(kind: str, checkpoint: Path, tmp: Path):
    """(an ONNX Runtime model, None) through deblur.export, or (None, why not)."""
    try:
        import onnxruntime  # noqa: F401  (an optional dependency: its absence is a note)
    except ImportError:
        return None, "onnx export not available"
    try:
        path, _ = export_onnx(str(checkpoint), tmp / f"{kind}.onnx")
    except Exception as exc:  # the exporter fails in many ways; say which, go on
        return None, f"skipped: export failed ({str(exc).splitlines()[0][:120]})"
    return OnnxModel(path), None


def _compiled(model: nn.Module, x: torch.Tensor):
    """(torch.compile'd model, seconds to compile, None) or (None, None, why it failed)."""
    try:
        compiled = torch.compile(model)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        return compiled, time.perf_counter() - start, None
    except Exception as exc:  # no C compiler, unsupported op, ...: a note, not a crash
        torch._dynamo.reset()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        return None, None, f"skipped: torch.compile failed here ({reason})"


def bench_inference(kind: str, params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    model, checkpoint, source = bench_model(kind, params)
    macs = models.macs_per_megapixel(model)
    h, w = sizes.image
    image = sample_image(h, w)
    x = torch.from_numpy(to_float(image).transpose(2, 0, 1).copy())[None]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    tile, overlap = params.evaluate.tile, params.evaluate.overlap
    small_tile = min(TILED, max(h, w) // 2)

    def bf16_forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    # name -> (forward, tolerance, note); a string instead: why it is skipped. A forward
    # returns NCHW, or HxWx3 as deblur_image does: compared as NCHW, timed as it is.
    candidates: dict[str, Any] = {
        "default": (
            lambda: deblur_image(model, image, tile, overlap),
            FP32_TOL,
            f"deblur_image, tile {tile}: {tile_count(h, w, tile, overlap)} tile(s)",
        ),
        "eager": (lambda: model(x), FP32_TOL, "model(x), NCHW float32"),
        "channels_last": (lambda: model(x_cl), FP32_TOL, "channels-last input"),
    }
    candidates["tiled"] = (
        (
            lambda: deblur_image(model, image, small_tile, overlap),
            FP32_TOL,
            f"deblur_image, tile {small_tile}: {tile_count(h, w, small_tile, overlap)} "
            "tiles (blended tiles differ from one whole pass: not expected to be the same)",
        )
        if small_tile > overlap
        else f"skipped: tile {small_tile} is not larger than evaluate.overlap {overlap}"
    )
    if sizes.quick:
        candidates["compile"] = "skipped: --quick (compiling takes half a minute)"
    else:
        say(f"{kind}: torch.compile")
        compiled, compile_s, why = _compiled(model, x_cl)
        candidates["compile"] = why or (
            lambda: compiled(x_cl),
            FP32_TOL,
            f"torch.compile, channels-last input; compiling took {compile_s:.0f} s",
        )
    why = bf16_unsupported()
    candidates["bf16"] = why or (bf16_forward, BF16_TOL, "torch.autocast bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = checkpoint or _checkpoint_file(kind, model, params, Path(tmp))
        say(f"{kind}: onnx export")
        onnx_model, why = _onnx(kind, checkpoint, Path(tmp))
        candidates["onnx"] = why or (lambda: onnx_model(x), FP32_TOL, "ONNX Runtime, CPU")
        results = _measure(kind, candidates, h * w / 1e6, macs, repeats)
        say(f"{kind}: predict")
        # predict's own forward is the default path's: channels-last input, one tile at 720p.
        predict = bench_predict(
            image, checkpoint, params, Path(tmp), repeats, sizes.folder, lambda: model(x_cl)
        )
    torch._dynamo.reset()  # drop compiled graphs and their memory
    # Against eager too: eager's time relative to channels-last's, from the rounds above.
    eager_vs_cl = results["eager"]["ms_per_mp"] / results["channels_last"]["ms_per_mp"]
    predict["vs_eager"] = round(predict["vs_forward"] / eager_vs_cl, 3)
    predict["folder_vs_eager"] = round(predict["folder_vs_forward"] / eager_vs_cl, 3)

    default, eager = results["default"], results["eager"]
    same = [n for n, r in results.items() if r.get("same_result") and n != "tiled"]

    def fastest(names: list[str]) -> str:
        return min(names, key=lambda n: results[n]["ms_per_mp"])

    return {
        "source": source,
        "image": f"{w}x{h}",
        "params": models.count_params(model),
        "macs_per_mp": macs,
        "ms_per_mp": default["ms_per_mp"],
        "gflops": default["gflops"],
        "default_vs_eager": round(default["ms_per_mp"] / eager["ms_per_mp"], 3),
        "fastest_same_result": fastest(same),
        "fastest_same_result_without_setup": fastest([n for n in same if n in NO_SETUP]),
        "paths": results,
        "predict": predict,
    }


def bench_predict(
    image: np.ndarray,
    checkpoint: Path,
    params: Params,
    tmp: Path,
    repeats: int,
    folder: int,
    forward: Callable[[], torch.Tensor],
) -> dict[str, Any]:
    """`deblur predict` against the model's own ``forward``, timed in turns like the paths:
    one PNG, the whole call (load the checkpoint, decode, deblur, encode, write), and per
    image on a folder of ``folder`` PNGs, where the model loads once and file I/O overlaps
    the model."""
    sources = [tmp / "frames" / f"{i}.png" for i in range(folder)]
    for source in sources:
        write_png(source, image)

    def predict(files: list[Path]) -> None:
        predict_files(
            files,
            tmp / "out",
            spec=str(checkpoint),
            tile=params.evaluate.tile,
            overlap=params.evaluate.overlap,
            device="cpu",
            progress=False,
            overwrite=True,  # each timed call writes the same results again
        )

    def bare() -> None:
        with torch.inference_mode():
            forward()

    runs: dict[str, list[float]] = {"forward": [], "one": [], "folder": []}
    predict(sources)  # warm-up
    for _ in range(repeats):
        time.sleep(SETTLE)
        runs["forward"].append(timed(bare, 1, warmup=False))
        time.sleep(SETTLE)
        runs["one"].append(timed(lambda: predict(sources[:1]), 1, warmup=False))
        time.sleep(SETTLE)
        runs["folder"].append(timed(lambda: predict(sources), 1, warmup=False) / folder)
    fwd, one, each = (statistics.median(runs[k]) for k in ("forward", "one", "folder"))
    h, w = image.shape[:2]
    return {
        "ms": round(one * 1e3, 1),
        "ms_per_mp": round(one * 1e3 / (image.shape[0] * image.shape[1] / 1e6), 2),
        "folder_ms_per_image": round(each * 1e3, 1),
        "folder_images": folder,
        "forward_ms": round(fwd * 1e3, 1),
        "vs_forward": round(one / fwd, 3),
        "folder_vs_forward": round(each / fwd, 3),
        "note": "deblur.predict on PNGs against a channels-last forward, timed in turns",
        "codecs": bench_codecs(h, w, repeats),
    }


# --------------------------------------------------------------------------- codecs


def _pillow_png(image: np.ndarray, **options) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", **options)
    return buf.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _optional_codecs(image: np.ndarray, png: bytes, jpeg: bytes) -> dict[str, Any]:
    """(kind, name) -> a callable, or why it is not measured: OpenCV's headless build,
    pyspng and simplejpeg are no dependencies of deblur; measured where installed."""
    found: dict[str, Any] = {}
    try:
        import cv2

        bgr = np.ascontiguousarray(image[..., ::-1])
        found["png encode", "opencv"] = lambda: cv2.imencode(".png", bgr)[1].tobytes()
        found["png decode", "opencv"] = lambda: cv2.imdecode(
            np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR
        )[..., ::-1]
        found["jpeg decode", "opencv"] = lambda: cv2.imdecode(
            np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR
        )[..., ::-1]
    except ImportError:
        for kind in ("png encode", "png decode", "jpeg decode"):
            found[kind, "opencv"] = "not installed (opencv-python-headless)"
    try:
        import pyspng

        found["png decode", "pyspng"] = lambda: pyspng.load(png)
    except ImportError:
        found["png decode", "pyspng"] = "not installed"
    try:
        import simplejpeg

        found["jpeg decode", "simplejpeg"] = lambda: simplejpeg.decode_jpeg(jpeg)
    except ImportError:
        found["jpeg decode", "simplejpeg"] = "not installed"
    return found


@lru_cache(maxsize=4)  # the same for every model: measured once per bench
def bench_codecs(h: int, w: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Decoding and encoding one h x w frame, per codec: ms, MB written, and whether the
    pixels are exactly Pillow's (a PNG decoded back, a JPEG decoded as Pillow decodes it)."""
    image = sample_image(h, w)
    png, jpeg = _pillow_png(image), io.BytesIO()
    from PIL import Image

    Image.fromarray(image).save(jpeg, format="JPEG", quality=92)
    jpeg = jpeg.getvalue()
    jpeg_pixels = _pillow_decode(jpeg)
    candidates: dict[tuple[str, str], Any] = {
        ("png encode", "deblur (predict)"): lambda: png_bytes(image),
        ("png encode", "pillow level 6"): lambda: _pillow_png(image),
        ("png encode", "pillow level 1"): lambda: _pillow_png(image, compress_level=1),
        ("png encode", "pillow Z_RLE"): lambda: _pillow_png(image, compress_type=zlib.Z_RLE),
        ("png decode", "pillow (predict)"): lambda: _pillow_decode(png),
        ("jpeg decode", "pillow (predict)"): lambda: _pillow_decode(jpeg),
        **_optional_codecs(image, png, jpeg),
    }
    results: dict[str, dict[str, Any]] = {}
    runnable = {}
    for (kind, name), fn in candidates.items():
        key = f"{kind}: {name}"
        if isinstance(fn, str):
            results[key] = {"status": "skipped", "note": fn}
            continue
        out = fn()
        if kind == "png encode":
            same = np.array_equal(_pillow_decode(out), image)
            results[key] = {"status": "ok", "mb": round(len(out) / 1e6, 3), "same_pixels": same}
        else:
            want = image if kind == "png decode" else jpeg_pixels
            results[key] = {"status": "ok", "same_pixels": np.array_equal(np.asarray(out), want)}
        runnable[key] = fn
    times: dict[str, list[float]] = {key: [] for key in runnable}
    for _ in range(max(repeats, 3)):  # rounds, as for the paths: a slow spell hits all
        for key, fn in runnable.items():
            times[key].append(timed(fn, 1, warmup=False))
    for key, runs in times.items():
        results[key]["ms"] = round(statistics.median(runs) * 1e3, 1)
    return results


def _nchw(out: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(out, np.ndarray):  # deblur_image's HxWx3
        return torch.from_numpy(out.transpose(2, 0, 1).copy())[None]
    return out.float()


def _measure(kind, candidates, megapixels, macs, repeats) -> dict[str, dict[str, Any]]:
    """Check each path against eager, then time them in turns: round k times every path
    once. On a shared machine a slow spell lasts seconds; timed one path after the other,
    it falls on whichever path runs then and makes it look faster or slower than it is."""
    results: dict[str, dict[str, Any]] = {}
    runnable: dict[str, Callable[[], torch.Tensor]] = {}
    with torch.inference_mode():
        reference = candidates["eager"][0]()
        for name, entry in candidates.items():
            if isinstance(entry, str):
                status = "unsupported" if entry.startswith("unsupported") else "skipped"
                results[name] = {"status": status, "note": entry}
                continue
            forward, tol, note = entry
            say(f"{kind}: {name}")
            diff = float((_nchw(forward()) - reference).abs().max())  # doubles as warm-up
            runnable[name] = forward
            results[name] = {
                "status": "ok",
                "max_abs_diff": diff,
                "tolerance": tol,
                "same_result": diff <= tol,
                "note": note,
            }
        say(f"{kind}: timing {len(runnable)} paths in {repeats} rounds")
        times: dict[str, list[float]] = {name: [] for name in runnable}
        for _ in range(repeats):
            for name, forward in runnable.items():
                time.sleep(SETTLE)
                times[name].append(timed(forward, 1, warmup=False))
    for name, runs in times.items():
        seconds = statistics.median(runs)
        results[name]["ms_per_mp"] = round(seconds * 1e3 / megapixels, 2)
        results[name]["gflops"] = round(2 * macs * megapixels / seconds / 1e9, 2)
    eager = results["eager"]["ms_per_mp"]
    for r in results.values():
        if r["status"] == "ok":
            r["speedup_vs_eager"] = round(eager / r["ms_per_mp"], 3)
    return results
