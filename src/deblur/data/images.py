"""Reading and writing images: the one place that knows about PIL's modes and failure modes."""

from __future__ import annotations

import os
import struct
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


_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, +alpha, RGB, +A)


def png_bytes(image: np.ndarray, icc: bytes | None = None) -> bytes:
    """HxW or HxWxC (C = 1..4) uint8 or uint16 as PNG file contents.

    Every row through PNG's Sub filter, then zlib's run-length strategy: a small encoder of
    our own, as small as Pillow's output and faster (`deblur bench`, codecs), so writing
    results does not rival the model's time.
    """
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG output wants uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    h, w, c = image.shape
    rows = image.astype(">u2" if image.dtype == np.uint16 else np.uint8).reshape(h, -1)
    rows = rows.view(np.uint8)
    step = c * image.dtype.itemsize  # the Sub filter subtracts the same byte of the last pixel
    raw = np.empty((h, rows.shape[1] + 1), np.uint8)
    raw[:, 0] = 1  # filter type Sub
    raw[:, 1 : 1 + step] = rows[:, :step]
    np.subtract(rows[:, step:], rows[:, :-step], out=raw[:, 1 + step :])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(raw.data) + deflate.flush()
    bits = 8 * image.dtype.itemsize
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, _COLOUR_TYPE[c], 0, 0, 0))]
    if icc:
        chunks.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    chunks += [(b"IDAT", data), (b"IEND", b"")]
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        crc = zlib.crc32(body, zlib.crc32(kind))
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc))
    return b"".join(out)


def write_png(path: str | os.PathLike, image: np.ndarray, icc: bytes | None = None) -> None:
    """Write ``image`` (as png_bytes takes it) as PNG, atomically: a crash leaves no partial
    file."""
    data = png_bytes(image, icc)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
