"""One classical, non-learned deblurring method from scikit-image, to show what learning buys.

Each method has a few knobs. They are tuned once, by grid search on a handful of *train*
pairs, never on the test images the table reports; a hand-picked default would either
flatter or sink the baseline. Deconvolution needs a blur kernel (PSF): it is estimated per
image as a straight motion streak along the direction in which the image has the least
gradient energy (motion blur smooths along its path), its length is a tuned knob.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from skimage import filters, restoration

from deblur.data.images import to_float
from deblur.metrics import psnr

TUNE_PAIRS = 6  # train pairs scored per knob setting
TUNE_SIDE = 256  # tuned on central crops: the blur statistics are local, the search is cheaper


def blur_direction(image: np.ndarray) -> np.ndarray:
    """Unit (row, col) vector along which the image varies least: the motion's direction."""
    gray = to_float(image).mean(axis=2)
    gr, gc = np.gradient(gray)
    tensor = np.array([[np.mean(gr * gr), np.mean(gr * gc)], [np.mean(gr * gc), np.mean(gc * gc)]])
    _, vectors = np.linalg.eigh(tensor)  # eigenvalues ascending
    return vectors[:, 0]


def motion_psf(length: int, direction: np.ndarray) -> np.ndarray:
    """A normalised straight streak of ``length`` pixels, splatted bilinearly."""
    size = length + 2 + (length % 2 == 0)  # odd, so the streak is centred
    psf = np.zeros((size, size))
    centre = size // 2
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        r, c = centre + t * direction[0], centre + t * direction[1]
        r0, c0 = int(np.floor(r)), int(np.floor(c))
        fr, fc = r - r0, c - c0
        psf[r0, c0] += (1 - fr) * (1 - fc)
        psf[r0 + 1, c0] += fr * (1 - fc)
        psf[r0, c0 + 1] += (1 - fr) * fc
        psf[r0 + 1, c0 + 1] += fr * fc
    return psf / psf.sum()


def _per_channel(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    x = to_float(image).astype(np.float64)
    out = np.stack([fn(x[..., c]) for c in range(3)], axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def unsharp(image: np.ndarray, radius: float, amount: float) -> np.ndarray:
    # Channel by channel: unsharp_mask(channel_axis=-1) returns garbage in scikit-image 0.26.
    return _per_channel(image, lambda ch: filters.unsharp_mask(ch, radius=radius, amount=amount))


def wiener(image: np.ndarray, length: int, balance: float) -> np.ndarray:
    psf = motion_psf(length, blur_direction(image))
    return _per_channel(image, lambda ch: restoration.wiener(ch, psf, balance, clip=True))


def richardson_lucy(image: np.ndarray, length: int, num_iter: int) -> np.ndarray:
    psf = motion_psf(length, blur_direction(image))
    return _per_channel(
        image, lambda ch: restoration.richardson_lucy(ch, psf, num_iter=num_iter, clip=True)
    )


@dataclass(frozen=True)
class Method:
    label: str
    fn: Callable[..., np.ndarray]
    grid: dict[str, tuple]


METHODS = {
    "unsharp": Method(
        "unsharp mask", unsharp, {"radius": (1, 2, 3, 5), "amount": (0.5, 1.0, 1.5, 2.0, 3.0)}
    ),
    "wiener": Method(
        "Wiener deconvolution",
        wiener,
        {"length": (3, 5, 9, 13, 19), "balance": (0.01, 0.03, 0.1, 0.3)},
    ),
    "richardson_lucy": Method(
        "Richardson-Lucy deconvolution",
        richardson_lucy,
        {"length": (3, 5, 9, 13, 19), "num_iter": (5, 10, 20)},
    ),
}


def _centre(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top : top + side, left : left + side]


def tune(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The grid point with the best mean PSNR on ``pairs`` (blur, sharp): train data only."""
    method = METHODS[name]
    crops = [(_centre(b, TUNE_SIDE), _centre(s, TUNE_SIDE)) for b, s in pairs[:TUNE_PAIRS]]
    best, best_psnr = None, -np.inf
    for values in itertools.product(*method.grid.values()):
        knobs = dict(zip(method.grid, values, strict=True))
        mean = np.mean([psnr(method.fn(b, **knobs), s) for b, s in crops])
        if mean > best_psnr:
            best, best_psnr = knobs, mean
    return best


def describe(name: str, knobs: dict[str, float]) -> str:
    """'unsharp mask (radius=2, amount=1)': the table label, knobs included."""
    return f"{METHODS[name].label} ({', '.join(f'{k}={v:g}' for k, v in knobs.items())})"


def build(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]):
    """Tune on ``pairs``; return (label, image -> float32 HxWx3 in [0, 1])."""
    knobs = tune(name, pairs)
    fn = METHODS[name].fn
    return describe(name, knobs), lambda image: fn(image, **knobs)
