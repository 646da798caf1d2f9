"""A user's photo in and out of `deblur predict`, keeping what the file holds.

read_rgb (images.py) makes every file the 8-bit RGB that training wants. A photographer
wants back what went in: so here gray stays gray, 16 bits stay 16 bits, alpha is carried
through untouched while the colour is deblurred, and the ICC profile is kept. What cannot
be kept (CMYK, a palette) is said in ``Photo.notes`` for predict to print; README,
"Formats", has the table. Pillow decodes 16-bit colour as 8-bit, so those files go
through other decoders: tifffile for TIFF, pyspng (libspng) for PNG.

Results are written by images.write_png, the project's one PNG writer.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from deblur.errors import DataError

# The most pixels a user's image may have where a server takes it (the demo's uploads,
# the MLflow model's rows): a 24 MP photo, ~1 GB of float buffers while it is deblurred.
MAX_PIXELS = 24_000_000

# Modes that only gain or lose a representation on the way to RGB; each says what it became.
_CONVERTED = {
    "CMYK": "CMYK is written as RGB (PNG has no CMYK)",
    "YCbCr": "YCbCr is written as RGB",
    "LAB": "Lab is written as RGB",
    "HSV": "HSV is written as RGB",
    "P": "the palette is written as full RGB",
    "PA": "the palette is written as full RGB",
    "1": "1-bit black and white is written as 8-bit gray",
    "F": "32-bit float is written as 16-bit gray",
}


_FOREIGN = ("CMYK", "YCbCr", "LAB", "HSV")


@dataclass
class Photo:
    """What predict deblurs (``rgb``) and what it puts back around the result."""

    rgb: np.ndarray  # HxWx3: uint8 (8-bit files) or float32 in [0, 1] (16-bit files)
    alpha: np.ndarray | None = None  # HxW, the file's own depth, written back unchanged
    gray: bool = False
    depth: int = 8
    icc: bytes | None = None
    notes: list[str] = field(default_factory=list)

    def result(self, deblurred: np.ndarray) -> np.ndarray:
        """The model's HxWx3 float output as the array to write: gray, depth and alpha back."""
        image = np.clip(deblurred, 0.0, 1.0)
        if self.gray:  # ITU-R 601 luma, as Pillow's convert("L"): the model's RGB is gray-ish
            image = image @ np.array([0.299, 0.587, 0.114], dtype=image.dtype)
        top = 65535.0 if self.depth == 16 else 255.0
        out = np.round(image * top).astype(np.uint16 if self.depth == 16 else np.uint8)
        if self.alpha is not None:
            out = np.dstack([out if out.ndim == 3 else out[..., None], self.alpha])
        return out


def read_photo(path: str | os.PathLike) -> Photo:
    """Decode ``path`` upright (EXIF) for predict; DataError naming the file if it cannot."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                # A CMYK or Lab profile would mislabel the RGB written: keep RGB and gray ones.
                icc = img.info.get("icc_profile") if img.mode not in _FOREIGN else None
                wide = _wide_colour(img, path)
                img = ImageOps.exif_transpose(img)
                photo = _photo(img) if wide is None else wide
    except FileNotFoundError:
        raise DataError(f"image {path} not found") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"image {path} cannot be decoded ({reason})") from None
    photo.icc = icc
    return photo


def _wide_colour(img: Image.Image, path: Path) -> Photo | None:
    """16-bit colour, which Pillow can only see as 8-bit: TIFFs through tifffile, PNGs
    through pyspng, upright as the EXIF says. None for everything else."""
    if img.format == "TIFF" and img.mode in ("RGB", "RGBA"):
        bits = img.tag_v2.get(258, (8,))
        if max(bits if isinstance(bits, tuple) else (bits,)) == 16:
            import tifffile  # ships with scikit-image

            data = np.asarray(tifffile.imread(path))
            if data.dtype == np.uint16 and data.ndim == 3 and data.shape[2] in (3, 4):
                rgb = data[..., :3].astype(np.float32) / 65535.0
                alpha = data[..., 3] if data.shape[2] == 4 else None
                return Photo(rgb, alpha, depth=16)
    if img.format == "PNG" and img.mode in ("RGB", "RGBA") and _png_depth(path) == 16:
        import pyspng

        data = pyspng.load(path.read_bytes())  # 16-bit RGB comes back with an opaque alpha
        alpha = data[..., 3] if img.mode == "RGBA" or "transparency" in img.info else None
        rgb = _upright(data[..., :3].astype(np.float32) / 65535.0, img)
        alpha = None if alpha is None else _upright(alpha, img)
        return Photo(np.ascontiguousarray(rgb), alpha, depth=16)
    return None


# EXIF orientation -> (quarter turns counter-clockwise, then a left-right mirror), as
# ImageOps.exif_transpose applies it to what Pillow decodes.
_ORIENT = {2: (0, True), 3: (2, False), 4: (2, True), 5: (3, True), 6: (3, False),
           7: (1, True), 8: (1, False)}  # fmt: skip


def _upright(array: np.ndarray, img: Image.Image) -> np.ndarray:
    """An array decoded outside Pillow, turned as ``img``'s EXIF orientation says."""
    turns, mirror = _ORIENT.get(img.getexif().get(0x0112, 1), (0, False))
    array = np.rot90(array, turns)
    return array[:, ::-1] if mirror else array


def _png_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) == 26 and head[12:16] == b"IHDR" else 8


def _photo(img: Image.Image) -> Photo:
    notes = [_CONVERTED[img.mode]] if img.mode in _CONVERTED else []
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = np.clip(np.asarray(img, dtype=np.float32), 0, 65535)
        if img.mode == "F":
            gray = gray * (65535.0 if gray.max() <= 1.0 else 1.0)
        rgb = np.repeat(gray[..., None] / 65535.0, 3, axis=2)
        return Photo(np.ascontiguousarray(rgb, dtype=np.float32), gray=True, depth=16, notes=notes)
    if img.mode in ("1", "L", "LA"):
        alpha = np.asarray(img.getchannel("A")) if img.mode == "LA" else None
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        return Photo(np.repeat(gray[..., None], 3, axis=2), alpha, gray=True, notes=notes)
    has_alpha = img.mode in ("RGBA", "PA", "La", "RGBa") or "transparency" in img.info
    img = img.convert("RGBA" if has_alpha else "RGB")
    data = np.asarray(img, dtype=np.uint8)
    alpha = data[..., 3].copy() if has_alpha else None
    return Photo(np.ascontiguousarray(data[..., :3]), alpha, notes=notes)
