"""What the trainers and the evaluator read: preprocessed pairs, splits, random crops.

PairArrays opens data/processed/<split> (or <kind>/<split> under the resize protocol) as
memory maps: a pair is a zero-copy view, so no epoch decodes a PNG and many DataLoader
workers share the page cache instead of each holding the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from deblur import paths
from deblur.errors import DataError


class PairArrays:
    """The (blur, sharp) pairs of one split, as uint8 HxWx3 views into memory maps.

    ``names[i]`` is "scene/NNNNNN" and ``scenes[i]`` its scene, both in the order of pair(i).
    ``kind`` picks the reference study's squares ("gan" or "ae") under preprocess.protocol
    resize; None is full resolution (protocol crop, and the test split under either protocol).
    """

    def __init__(self, root: str | Path = paths.PROCESSED, split: str = "train", kind=None):
        self.root, self.split, self.kind = Path(root), split, kind
        self.folder = self.root / kind / split if kind else self.root / split
        index_file = self.folder / "index.csv"
        if not index_file.is_file():
            raise DataError(_missing_arrays(self.root, self.folder, kind))
        index = pd.read_csv(index_file, dtype={"name": str, "scene": str})
        self.names: list[str] = index["name"].tolist()
        self.scenes: list[str] = index["scene"].tolist()
        self._offsets = index["offset"].to_numpy(np.int64)
        self._shapes = index[["height", "width"]].to_numpy(np.int64)
        self._arrays: dict[str, np.ndarray] | None = None  # opened on first use, per process

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"PairArrays({self.folder}, {len(self)} pairs, {len(set(self.scenes))} scenes)"

    def shape(self, i: int) -> tuple[int, int]:
        """(height, width) of pair i, without touching its pixels."""
        h, w = self._shapes[i]
        return int(h), int(w)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(blur, sharp) of pair i: read-only uint8 HxWx3 views, copied only when sliced."""
        if self._arrays is None:
            # Plain ndarray views of the maps: np.memmap runs Python code on every slice
            # and view, which took 40% of the time of a training crop.
            self._arrays = {
                side: np.asarray(np.load(self.folder / f"{side}.npy", mmap_mode="r"))
                for side in ("blur", "sharp")
            }
        h, w = self.shape(i)
        start = self._offsets[i]
        return tuple(
            self._arrays[side][start : start + h * w * 3].reshape(h, w, 3)
            for side in ("blur", "sharp")
        )

    def __getstate__(self) -> dict:
        # A memmap pickles as a full copy of its data: DataLoader workers reopen it instead.
        return {**self.__dict__, "_arrays": None}


def _missing_arrays(root: Path, folder: Path, kind: str | None) -> str:
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        return f"{folder} not found; run `deblur preprocess` first"
    meta = json.loads(meta_file.read_text())
    have = ", ".join(meta.get("stores", []))
    hint = (
        "pass kind='gan' or kind='ae' (preprocess.protocol is resize)"
        if kind is None and meta.get("protocol") == "resize"
        else "set preprocess.protocol to match and run `deblur preprocess`"
    )
    return f"{folder} not found ({root} holds {have}); {hint}"


def split_train_val(
    arrays: PairArrays, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) pair indices with whole scenes held out, so validation frames never have
    near-duplicate neighbours in training. At least one scene lands on each side."""
    scenes = sorted(set(arrays.scenes))
    if len(scenes) < 2:
        raise DataError(
            f"{arrays.folder} has {len(scenes)} scene(s); holding out validation scenes needs "
            "at least 2 (render or download more train scenes)"
        )
    n_val = min(max(1, round(val_fraction * len(scenes))), len(scenes) - 1)
    order = np.random.default_rng(seed).permutation(len(scenes))
    held = {scenes[i] for i in order[:n_val]}
    is_val = np.array([scene in held for scene in arrays.scenes])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class CropDataset(Dataset):
    """Aligned random crops of (blur, sharp) as float32 CHW tensors in [0, 1].

    Item k of epoch e depends only on (seed, e, k): reproducible with any number of
    DataLoader workers and any order of access. Call set_epoch(e) before each epoch (with
    persistent_workers=False, so workers pick it up). With ``length`` an epoch is that many
    crops of random pairs; without, one crop of each pair in ``indices``. ``crop=None`` keeps
    the whole image (for the resize protocol's equal squares). Images smaller than the crop are
    padded by reflection.
    """

    def __init__(
        self,
        arrays: PairArrays,
        indices,
        crop: int | None,
        seed: int,
        length: int | None = None,
        flip: bool = True,
        rotate: bool = False,
        permute_channels: bool = False,
    ):
        self.arrays, self.indices = arrays, np.asarray(indices, dtype=np.int64)
        if len(self.indices) == 0:
            raise DataError(f"no pairs to draw crops from in {arrays.folder}")
        self.crop, self.seed, self.length = crop, seed, length
        self.flip, self.rotate, self.permute = flip, rotate, permute_channels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        rng = np.random.default_rng([self.seed, self.epoch, k])
        i = self.indices[rng.integers(len(self.indices)) if self.length is not None else k]
        blur, sharp = self.arrays.pair(int(i))
        if self.crop is not None:
            blur, sharp = _random_crop(blur, sharp, self.crop, rng)
        if self.flip and rng.random() < 0.5:
            blur, sharp = blur[:, ::-1], sharp[:, ::-1]
        if self.flip and rng.random() < 0.5:
            blur, sharp = blur[::-1], sharp[::-1]
        if self.rotate:
            turns = int(rng.integers(4))
            blur, sharp = np.rot90(blur, turns), np.rot90(sharp, turns)
        order = rng.permutation(3) if self.permute else (0, 1, 2)
        return to_tensor(blur, order), to_tensor(sharp, order)


def _random_crop(blur: np.ndarray, sharp: np.ndarray, crop: int, rng: np.random.Generator):
    h, w = blur.shape[:2]
    if h < crop or w < crop:
        pad = ((0, max(crop - h, 0)), (0, max(crop - w, 0)), (0, 0))
        blur, sharp = np.pad(blur, pad, mode="reflect"), np.pad(sharp, pad, mode="reflect")
        h, w = blur.shape[:2]
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    return blur[y : y + crop, x : x + crop], sharp[y : y + crop, x : x + crop]


def to_tensor(image: np.ndarray, channels=(0, 1, 2)) -> torch.Tensor:
    """uint8 HxWx3 (any strides) -> float32 3xHxW in [0, 1], a fresh tensor, its colour
    channels in the order ``channels`` (a permutation, for the colour augmentation)."""
    # Indexing the channel axis gathers a contiguous CHW copy of the (flipped, turned) view
    # in one pass, and converting contiguous uint8 is fast: half the time of converting
    # the strided view, which made this the costliest step of a training crop.
    chw = image.transpose(2, 0, 1)[list(channels)]
    return torch.from_numpy(np.divide(chw, np.float32(255), dtype=np.float32, order="C"))
