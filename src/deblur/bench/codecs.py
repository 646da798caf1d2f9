"""The image codecs predict could use: decoding and encoding one frame, per library, with
whether the pixels are exactly Pillow's."""

from __future__ import annotations

import io
import statistics
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from deblur.bench.timing import sample_image, timed
from deblur.data.images import png_bytes


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
    """(op, name) -> a callable, or why it is not measured: OpenCV's headless build,
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
        for op in ("png encode", "png decode", "jpeg decode"):
            found[op, "opencv"] = "not installed (opencv-python-headless)"
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
    for (op, name), fn in candidates.items():
        key = f"{op}: {name}"
        if isinstance(fn, str):
            results[key] = {"status": "skipped", "note": fn}
            continue
        out = fn()
        if op == "png encode":
            same = np.array_equal(_pillow_decode(out), image)
            results[key] = {"status": "ok", "mb": round(len(out) / 1e6, 3), "same_pixels": same}
        else:
            want = image if op == "png decode" else jpeg_pixels
            results[key] = {"status": "ok", "same_pixels": np.array_equal(np.asarray(out), want)}
        runnable[key] = fn
    times: dict[str, list[float]] = {key: [] for key in runnable}
    for _ in range(max(repeats, 3)):  # rounds, as for the paths: a slow spell hits all
        for key, fn in runnable.items():
            times[key].append(timed(fn, 1, warmup=False))
    for key, runs in times.items():
        results[key]["ms"] = round(statistics.median(runs) * 1e3, 1)
    return results
