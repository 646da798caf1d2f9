"""data/manifest.csv: one row per blur/sharp pair, with what validation needs to judge it.

Everything Great Expectations cannot look at by itself (does the file decode? does its twin
exist? do the sizes match? is sharp sharper?) is measured here and becomes a column, so the
expectation suites stay declarative and every failure points at a row, hence at a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deblur.data.images import channels_of, read_rgb
from deblur.data.parallel import imap
from deblur.errors import DataError
from deblur.metrics import laplacian_variance, psnr

SPLITS = ("train", "test")
SIDES = ("blur", "sharp")
# Beside the splits of an imported folder: the user's folder it was copied from, so that a
# failing file is named where the user can fix it, not as the copy the next import replaces.
ORIGIN = "origin.txt"

COLUMNS = [
    "split", "scene", "name", "blur_path", "sharp_path", "twin_exists",
    "blur_decodes", "sharp_decodes", "blur_error", "sharp_error",
    "width", "height", "channels", "blur_size", "sharp_size", "size_match",
    "blur_min", "blur_max", "sharp_min", "sharp_max",
    "blur_lapvar", "sharp_lapvar", "sharper", "psnr", "scene_splits",
]  # fmt: skip


@dataclass(frozen=True)
class PairFiles:
    """One pair of the GoPro layout; a side is None when its file is missing."""

    split: str
    scene: str
    frame: str  # file name without .png: NNNNNN in GoPro
    blur: Path | None
    sharp: Path | None

    @property
    def name(self) -> str:
        return f"{self.scene}/{self.frame}"


def scan(root: Path) -> list[PairFiles]:
    """Every <split>/<scene>/{blur,sharp}/*.png under ``root``, paired by file name, sorted.

    Any folder at the top counts as a split, so a stray val/ shows up in validation instead
    of disappearing silently.
    """
    pairs = []
    for split_dir in sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []:
        for scene_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            found = {side: _pngs(scene_dir / side) for side in SIDES}
            for frame in sorted(set(found["blur"]) | set(found["sharp"])):
                blur, sharp = found["blur"].get(frame), found["sharp"].get(frame)
                pairs.append(PairFiles(split_dir.name, scene_dir.name, frame, blur, sharp))
    return pairs


def _pngs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.suffix == ".png" and p.is_file()}


def write_origin(root: Path, source: Path) -> None:
    """Record that ``root`` is a copy of the GoPro layout at ``source``."""
    (root / ORIGIN).write_text(f"{source.resolve()}\n")


def origin(root: Path) -> Path | None:
    """The folder ``root`` was imported from, or None (rendered or extracted here)."""
    try:
        return Path((root / ORIGIN).read_text().strip())
    except FileNotFoundError:
        return None


def original(path: str, root: Path, source: Path | None) -> str:
    """A manifest path (a copy under ``root``) as the user's own file when imported."""
    if source is None or not path:
        return path
    try:
        return str(source / Path(path).relative_to(root))
    except ValueError:
        return path


def build(root: Path, project: Path = Path("."), workers: int | None = None) -> pd.DataFrame:
    """The manifest of the dataset under ``root``: decode and measure every pair once."""
    pairs = scan(root)
    if not pairs:
        raise DataError(
            f"{root} holds no <split>/<scene>/{{blur,sharp}}/*.png images; run `deblur download`"
        )
    rows = imap(_measure_pair, [(p, project) for p in pairs], "measure", "pair", workers)
    table = pd.DataFrame(list(rows), columns=COLUMNS)
    # A scene in both splits leaks test frames into training; GX checks this is 1 everywhere.
    table["scene_splits"] = table.groupby("scene")["split"].transform("nunique")
    return table


def _measure_pair(job: tuple[PairFiles, Path]) -> dict:
    pair, project = job
    row: dict = {"split": pair.split, "scene": pair.scene, "name": pair.name}
    images = {}
    for side in SIDES:
        path = getattr(pair, side)
        row[f"{side}_path"] = _relative(path, project) if path else None
        # None (not False) when the file is missing: that is twin_exists' failure, not this.
        row[f"{side}_decodes"], row[f"{side}_error"] = None, None
        if path is not None:
            try:
                images[side] = read_rgb(path)
                row[f"{side}_decodes"] = True
            except DataError as exc:
                row[f"{side}_decodes"], row[f"{side}_error"] = False, _reason(str(exc))
    row["twin_exists"] = pair.blur is not None and pair.sharp is not None

    first = next(iter(images.values()), None)
    if first is not None:
        row["height"], row["width"] = first.shape[:2]
        row["channels"] = channels_of(getattr(pair, next(iter(images))))
    for side, image in images.items():
        row[f"{side}_size"] = f"{image.shape[1]}x{image.shape[0]}"
        row[f"{side}_min"], row[f"{side}_max"] = int(image.min()), int(image.max())
        row[f"{side}_lapvar"] = lapvar(image)
    if len(images) == 2:
        blur, sharp = images["blur"], images["sharp"]
        row["size_match"] = blur.shape == sharp.shape
        if row["size_match"]:
            row["sharper"] = row["sharp_lapvar"] > row["blur_lapvar"]
            row["psnr"] = psnr(blur, sharp)
    return row


def _relative(path: Path, project: Path) -> str:
    return Path(os.path.relpath(path, project)).as_posix()


def _reason(message: str) -> str:
    # read_rgb's message is "image <path> cannot be decoded (<reason>); ..."; keep the reason.
    start, end = message.find("("), message.rfind(")")
    return message[start + 1 : end] if 0 <= start < end else message


def lapvar(image: np.ndarray) -> float:
    """metrics.laplacian_variance on gray levels in [0, 1], the scale the manifest and
    data.json have always kept (the report quotes it in 8-bit levels)."""
    return laplacian_variance(image) / 255.0**2


def read(path: Path) -> pd.DataFrame:
    """Load data/manifest.csv as written by validate."""
    if not path.is_file():
        raise DataError(f"{path} not found; run `deblur validate` first")
    return pd.read_csv(path, dtype={"split": str, "scene": str, "name": str})
