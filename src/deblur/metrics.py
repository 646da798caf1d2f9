"""The quality metrics, as a table: each is a name, a function and how people read it.

PSNR and SSIM follow the settings most deblurring papers report (Wang et al.): RGB in
[0, 1], data_range 1, SSIM with a Gaussian window (sigma 1.5) and population covariance, so
the numbers compare across runs and papers. Everything that scores, tabulates, tags or
promotes iterates over METRICS; adding one (LPIPS, say) is one entry here plus its test
(docs/architecture.md, "A new metric").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
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
