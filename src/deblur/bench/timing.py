"""What every bench section shares: the sizes measured, the sample image, a median timer,
progress lines."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deblur.data.images import to_uint8

# Seconds of rest before each timed run: ONNX Runtime's threads spin-wait after a run and
# slow a PyTorch path timed right after it; this lets them go back to sleep.
SETTLE = 0.2


class Sizes:
    """What gets measured: full sizes, or tiny ones for a smoke test (--quick)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.image = (72, 128) if quick else (720, 1280)  # (height, width)
        self.matmul = (256,) if quick else (1024, 2048, 4096)
        self.conv = (64, 64) if quick else (256, 128)  # (channels, side) of a 3x3 conv
        self.crops = 8 if quick else 64  # data samples per timed run
        self.folder = 2 if quick else 4  # images in the timed `predict` of a folder


def sample_image(h: int, w: int) -> np.ndarray:
    """A smooth uint8 RGB image with some noise: edges for the model to work on."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(17 * x + 5 * y), np.cos(11 * y - 7 * x), np.sin(13 * (x + y))], -1)
    noise = np.random.default_rng(0).standard_normal((h, w, 3))
    return to_uint8(0.5 + 0.4 * base + 0.03 * noise)


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def say(message: str) -> None:
    # Progress goes to stderr, so that `--json` prints nothing but JSON on stdout.
    print(f"bench: {message}", file=sys.stderr, flush=True)
