"""Data loading: random training crops per second from data/processed against PNG decoding."""

from __future__ import annotations

from typing import Any

import numpy as np

from deblur import paths
from deblur.bench.timing import Sizes, say, timed
from deblur.config import Params
from deblur.data import manifest
from deblur.data.dataset import CropDataset, PairArrays
from deblur.data.images import read_rgb


class PngPairs:
    """PairArrays's pair(i), decoded from the PNGs in data/raw on every call: the cost of
    training without the preprocess stage."""

    def __init__(self, arrays, table):
        rows = table[table["split"] == arrays.split].set_index("name")
        self.folder = arrays.folder
        self.files = [(rows.at[n, "blur_path"], rows.at[n, "sharp_path"]) for n in arrays.names]

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        blur, sharp = self.files[i]
        return read_rgb(blur), read_rgb(sharp)


def bench_data(params: Params, sizes: Sizes, repeats: int) -> dict[str, Any]:
    """Random training crops per second, one process, from the arrays and from PNGs."""
    if params.preprocess.protocol != "crop":
        return {"skipped": "compares full-resolution crops: needs preprocess.protocol crop"}
    if not (paths.PROCESSED / "train" / "index.csv").is_file() or not paths.MANIFEST.is_file():
        return {"skipped": f"{paths.PROCESSED} not found; run `dvc repro` first"}
    arrays = PairArrays(paths.PROCESSED, "train")
    crop = params.train.gan.crop
    indices = np.arange(len(arrays))
    out: dict[str, Any] = {"crop": crop, "image": "x".join(map(str, arrays.shape(0)[::-1]))}
    sources = {"processed": arrays, "png": PngPairs(arrays, manifest.read(paths.MANIFEST))}
    for name, source in sources.items():
        data = CropDataset(source, indices, crop=crop, seed=params.seed, length=sizes.crops)
        say(f"data: {name}")
        seconds = timed(lambda data=data: [data[k] for k in range(len(data))], repeats)
        out[f"{name}_samples_per_s"] = round(len(data) / seconds, 1)
    out["speedup"] = round(out["processed_samples_per_s"] / out["png_samples_per_s"], 1)
    return out
