"""Reading and writing images: the one place that knows about PIL's modes and failure modes."""

from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from deblur.errors import DataError
from deblur.fsutil import atomic_path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 HxWx3 RGB, upright as its EXIF orientation says.

    Gray becomes three equal channels, alpha is dropped, 16-bit is scaled down to 8. Anything
    that does not decode completely (missing, truncated, corrupt, not an image) raises
    DataError naming the file: training on half an image fails silently much later.
    """
    path = Path(path)
    try:
        # A decompression-bomb warning is an error for us: no real photo is that large.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decode now, inside the try: PIL is lazy
                img = ImageOps.exif_transpose(img)
                return _to_rgb8(img)
    except FileNotFoundError:
        raise DataError(f"image {path} not found; check the dataset folder") from None
    except (OSError, ValueError, SyntaxError, EOFError, *_TOO_LARGE) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"image {path} cannot be decoded ({reason}); replace or remove the file"
        ) from None


# Pixel counts beyond PIL's guard: a corrupt header, or no photo we could train on.
_TOO_LARGE = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I"):
        # 16-bit gray: PIL's convert("L") clips instead of scaling, so scale by hand.
        wide = np.asarray(img).astype(np.int64)
        if img.mode.startswith("I;16") or wide.max() > 255:
            wide = wide >> 8
        gray = np.clip(wide, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode != "RGB":
        # A palette with transparency goes through RGBA, as PIL asks; alpha is then dropped.
        img = img.convert("RGBA").convert("RGB") if img.mode in ("P", "PA") else img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float HxWx3 -> float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"expected an RGB image of shape HxWx3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded: what a PNG stores."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """The seed's protocol: a uint8 image squashed to side x side, bicubic (anti-aliased
    when shrinking). preprocess trains on it and evaluate scores on it: one resampler."""
    square = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.uint8)


def channels_of(path: str | os.PathLike) -> int:
    """How many channels the file itself stores (1 gray, 3 RGB, 4 RGBA...), before read_rgb."""
    with Image.open(path) as img:
        return len(img.getbands())


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 HxW or HxWx3 array as PNG file contents.

    zlib's run-length strategy (Z_RLE) after PNG's row filters: as small as PIL's default
    (level 6, default strategy) on photos and noise, and several times faster to write
    (README, "Speed"), so writing results does not rival the model's time.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"PNG output wants uint8, got {image.dtype}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_type=zlib.Z_RLE)
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 HxW or HxWx3 array as PNG, atomically (a crash leaves no partial file)."""
    data = png_bytes(image)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
