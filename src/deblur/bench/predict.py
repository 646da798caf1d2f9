"""`deblur predict` timed against the model's own forward: one PNG, and per image on a
folder, in turns like the inference paths."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur.bench.timing import SETTLE, timed
from deblur.config import Params
from deblur.data.images import write_png
from deblur.predict import predict as predict_files


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
    return {
        "ms": round(one * 1e3, 1),
        "ms_per_mp": round(one * 1e3 / (image.shape[0] * image.shape[1] / 1e6), 2),
        "folder_ms_per_image": round(each * 1e3, 1),
        "folder_images": folder,
        "forward_ms": round(fwd * 1e3, 1),
        "vs_forward": round(one / fwd, 3),
        "folder_vs_forward": round(each / fwd, 3),
        "note": "deblur.predict on PNGs against a channels-last forward, timed in turns",
    }
