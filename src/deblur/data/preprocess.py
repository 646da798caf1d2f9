"""The preprocess stage: decode every PNG once into memory-mappable uint8 arrays.

Training reads random crops thousands of times per epoch; decoding a 1280x720 PNG costs
milliseconds, reading a crop from a memory map microseconds (`deblur bench` measures both). Each store is a folder with
blur.npy and sharp.npy (every image of the split flattened end to end) and index.csv (name,
scene, offset, height, width per pair), read by deblur.data.dataset.PairStore.

protocol crop (default): full resolution, data/processed/{train,test}/.
protocol resize (the seed's): squares per model, data/processed/{gan,ae}/{train,test}/, plus
the full-resolution test split in data/processed/test/ for the full evaluation protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deblur import paths
from deblur.config import PreprocessConfig
from deblur.data import manifest
from deblur.data.images import read_rgb, resize_square
from deblur.data.parallel import imap
from deblur.errors import DataError
from deblur.fsutil import atomic_dir, write_json


@dataclass(frozen=True)
class Store:
    """One output store: a split at one resolution (size None = full)."""

    split: str
    kind: str | None = None  # None: full resolution; "gan" / "ae": the seed's squares
    size: int | None = None

    def folder(self, root: Path) -> Path:
        return root / self.kind / self.split if self.kind else root / self.split


def stores(cfg: PreprocessConfig) -> list[Store]:
    """What the protocol asks for, so the trainers and the evaluator find what they read."""
    if cfg.protocol == "crop":
        return [Store(split) for split in manifest.SPLITS]
    sizes = cfg.resize
    squares = [
        Store(split, kind, getattr(sizes, kind))
        for kind in ("gan", "ae")
        for split in manifest.SPLITS
    ]
    return [*squares, Store("test")]


def run(cfg: PreprocessConfig) -> None:
    """The DVC stage: params' preprocess section over data/manifest.csv."""
    table = manifest.read(paths.MANIFEST)
    wanted = stores(cfg)
    with atomic_dir(paths.PROCESSED) as tmp:
        counts = {}
        for split in manifest.SPLITS:
            rows = table[table["split"] == split].sort_values("name").reset_index(drop=True)
            targets = [s for s in wanted if s.split == split]
            write_split(rows, targets, tmp)
            counts[split] = len(rows)
        write_json(tmp / "meta.json", _meta(cfg, wanted, counts))
        size = sum(f.stat().st_size for f in tmp.rglob("*.npy"))
    protocol = cfg.protocol
    print(f"{paths.PROCESSED}: {protocol} protocol, {_counts(counts)} ({size / 1e6:.1f} MB)")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {split} pairs" for split, n in counts.items())


def _meta(cfg: PreprocessConfig, wanted: list[Store], counts: dict[str, int]) -> dict:
    return {
        "protocol": cfg.protocol,
        "stores": sorted(str(s.folder(Path())) for s in wanted),
        "sizes": {s.kind: s.size for s in wanted if s.kind},
        "pairs": counts,
    }


def write_split(rows: pd.DataFrame, targets: list[Store], root: Path) -> None:
    """Decode the split's pairs once and write them into every store of that split."""
    if rows.empty:
        return
    writers = [_Writer(t.folder(root), _shapes(rows, t.size)) for t in targets]
    jobs = [
        (r.blur_path, r.sharp_path, r.height, r.width, tuple(t.size for t in targets))
        for r in rows.itertuples()
    ]
    for i, versions in enumerate(imap(_decode, jobs, f"decode {rows['split'].iloc[0]}", "pair")):
        for writer, (blur, sharp) in zip(writers, versions, strict=True):
            writer.put(i, blur, sharp)
    index = rows[["name", "scene"]]
    for writer in writers:
        writer.close(index)


def _shapes(rows: pd.DataFrame, size: int | None) -> list[tuple[int, int]]:
    if size is None:
        return list(zip(rows["height"].astype(int), rows["width"].astype(int), strict=True))
    return [(size, size)] * len(rows)


def _decode(job) -> list[tuple[np.ndarray, np.ndarray]]:
    blur_path, sharp_path, height, width, sizes = job
    blur, sharp = read_rgb(blur_path), read_rgb(sharp_path)
    for path, image in ((blur_path, blur), (sharp_path, sharp)):
        if image.shape[:2] != (height, width):
            raise DataError(
                f"{path} is {image.shape[1]}x{image.shape[0]}, not the {width}x{height} of "
                "data/manifest.csv; the data changed since validation: run `deblur validate`"
            )
    return [
        (blur, sharp) if s is None else (resize_square(blur, s), resize_square(sharp, s))
        for s in sizes
    ]


class _Writer:
    """Fills blur.npy and sharp.npy (flat uint8, preallocated) and writes index.csv."""

    def __init__(self, folder: Path, shapes: list[tuple[int, int]]):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.shapes = folder, shapes
        sizes = np.array([h * w * 3 for h, w in shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        total = int(sizes.sum())
        # open_memmap writes the .npy header, so np.load(mmap_mode="r") reads it back as is;
        # filling it image by image never holds a whole split in memory.
        self.arrays = {
            side: np.lib.format.open_memmap(folder / f"{side}.npy", "w+", np.uint8, (total,))
            for side in manifest.SIDES
        }

    def put(self, i: int, blur: np.ndarray, sharp: np.ndarray) -> None:
        start = self.offsets[i]
        for side, image in (("blur", blur), ("sharp", sharp)):
            self.arrays[side][start : start + image.size] = image.reshape(-1)

    def close(self, index: pd.DataFrame) -> None:
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        table = index.reset_index(drop=True).assign(
            offset=self.offsets,
            height=[h for h, _ in self.shapes],
            width=[w for _, w in self.shapes],
        )
        table.to_csv(self.folder / "index.csv", index=False)
