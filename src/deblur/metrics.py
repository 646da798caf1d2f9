"""The quality metrics, as a table: each is a name, a function and how people read it.

PSNR and SSIM follow the settings most deblurring papers report (Wang et al.): RGB in
[0, 1], data_range 1, SSIM with a Gaussian window (sigma 1.5) and population covariance, so
the numbers compare across runs and papers. Everything that scores, tabulates, tags or
promotes iterates over METRICS; adding one (LPIPS, say) is one entry here plus its test
(docs/architecture.md, "A new metric").

SHARPNESS holds no-reference measures, for an image with no sharp twin (a real photo):
how much fine detail it has. Blur lowers them, but noise and ringing raise them as real
detail does, so they say "sharper", never "better".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from deblur.data.images import to_float


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of ``pred`` against ``ref`` (uint8 or float in [0, 1]); inf when equal."""
    with np.errstate(divide="ignore"):  # identical images: inf, not a warning
        return float(peak_signal_noise_ratio(to_float(ref), to_float(pred), data_range=1.0))


def ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(
        structural_similarity(
            to_float(ref),
            to_float(pred),
            data_range=1.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]
    label: str  # column heading for people
    decimals: int  # how many a table shows
    gain_key: str  # metrics/eval.json's name for the gain over the blurry input


# Ordered: the first decides a promotion, the next breaks an exact tie (deblur.promote).
METRICS = {
    "psnr": Metric(psnr, "PSNR (dB)", 2, "gain_db"),
    "ssim": Metric(ssim, "SSIM", 4, "ssim_gain"),
}


def score(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Every metric of ``pred`` against the sharp ``ref``; uint8 or float [0, 1] each."""
    return {name: metric.fn(pred, ref) for name, metric in METRICS.items()}


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """The per-metric mean of a list of ``score`` results."""
    return {name: float(np.mean([s[name] for s in scores])) for name in METRICS}


# --------------------------------------------------------------------------- no reference

# Rec. 709 luma (skimage.color.rgb2gray's weights), in 8-bit levels: the scale the
# variance-of-Laplacian blur test is usually quoted in (a sharp photo scores in the hundreds).
LUMA = np.array([0.2125, 0.7154, 0.0721], np.float64) * 255.0


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 or float [0, 1] HxWx3 -> float64 HxW luma in [0, 255]."""
    return to_float(image).astype(np.float64) @ LUMA


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of the gray image (mirrored at the border)."""
    return float(ndimage.laplace(_gray(image), mode="reflect").var())


def gradient_energy(image: np.ndarray) -> float:
    """Mean squared Sobel gradient magnitude of the gray image, in levels per pixel: the
    Sobel kernel answers 8s to a ramp of slope s, so it is divided by 8 (the ramp scores s**2)."""
    gray = _gray(image)
    gy = ndimage.sobel(gray, axis=0, mode="reflect") / 8
    gx = ndimage.sobel(gray, axis=1, mode="reflect") / 8
    return float(np.mean(gx**2 + gy**2))


@dataclass(frozen=True)
class NoReference:
    fn: Callable[[np.ndarray], float]
    label: str  # column heading for people


# Higher is sharper. The report shows each on its real photo, and as a factor of the input's.
SHARPNESS = {
    "laplacian_var": NoReference(laplacian_variance, "Laplacian var"),
    "gradient_energy": NoReference(gradient_energy, "gradient energy"),
}


def sharpness(image: np.ndarray) -> dict[str, float]:
    """Every no-reference measure of one uint8 or float [0, 1] image."""
    return {name: measure.fn(image) for name, measure in SHARPNESS.items()}
