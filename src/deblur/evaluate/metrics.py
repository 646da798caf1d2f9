"""PSNR and SSIM exactly as DESIGN.md fixes them, so numbers compare across runs and papers.

RGB in [0, 1], data_range=1, SSIM with a Gaussian window (sigma 1.5) and population
covariance: the settings of Wang et al. that most deblurring papers report.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from deblur.infer import to_float, to_uint8


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
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


def score(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) of ``pred`` against the sharp ``ref``; uint8 or float [0, 1] each."""
    return psnr(pred, ref), ssim(pred, ref)


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """The seed's protocol: squash to side x side (anti-aliased) and store as 8 bits again."""
    out = resize(to_float(image), (side, side), order=1, anti_aliasing=True)
    return to_uint8(out)
