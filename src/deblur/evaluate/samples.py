"""The images the report shows, written by evaluate: the report only reads files.

For a few test images (the best and worst by PSNR gain, and some between) the blurry input,
each model's output and the sharp frame; and the same models on a real motion-blurred
photograph with no sharp twin. Each output is what `deblur predict` would save (8-bit,
through `infer.deblur_image` with evaluate's tile and overlap), as PNGs under
reports/samples/ (paths.SAMPLES) with an index naming each image and why it was picked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deblur import fsutil, paths
from deblur.data.images import read_rgb, to_uint8, write_png
from deblur.infer import deblur_image
from deblur.kinds import KINDS

BLURRY, SHARP, PHOTO = paths.SAMPLE_BLURRY, paths.SAMPLE_SHARP, paths.SAMPLE_PHOTO


def real_photo() -> Path | None:
    """scikit-image's clock photographed while moving: real blur, no ground truth."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / "clock_motion.png"
    return path if path.is_file() else None


def pick(per_image: pd.DataFrame, n: int) -> list[tuple[str, str]]:
    """(image, why) for the best and worst test image by mean PSNR gain, and some between."""
    table = per_image.pivot_table(index="image", columns="model", values="psnr", aggfunc="mean")
    learned = [k for k in KINDS if k in table]
    if not learned or "blurry" not in table:
        return []
    gain = table[learned].mean(axis=1).sub(table["blurry"]).sort_values(ascending=False)
    n = min(n, len(gain))
    picks = np.unique(np.linspace(0, len(gain) - 1, n).round().astype(int))
    out = []
    for rank in picks:
        why = "best" if rank == 0 else "worst" if rank == len(gain) - 1 else f"#{rank + 1}"
        out.append((gain.index[rank], f"{why} of {len(gain)} by PSNR gain"))
    return out


def _in(tmp: Path, folder: str, name: str) -> Path:
    """paths.sample_image(folder, name), in the folder that will become paths.SAMPLES."""
    return tmp / paths.sample_image(folder, name).relative_to(paths.SAMPLES)


def _outputs(models, image: np.ndarray, ev) -> dict[str, np.ndarray]:
    return {
        kind: to_uint8(deblur_image(model, image, ev.tile, ev.overlap))
        for kind, model in models.items()
    }


def write(models, store, per_image: pd.DataFrame, ev) -> dict:
    """Run ``models`` on ``ev.samples`` picked test images of ``store`` and on the real
    photo; write their PNGs and the index into reports/samples/, replaced whole."""
    index = {name: i for i, name in enumerate(store.names)}
    picked = pick(per_image, ev.samples)
    with fsutil.atomic_dir(paths.SAMPLES) as tmp:
        shown = []
        for k, (name, why) in enumerate(picked, 1):
            blur, sharp = store.pair(index[name])
            images = {BLURRY: blur, **_outputs(models, blur, ev), SHARP: sharp}
            for key, image in images.items():
                write_png(_in(tmp, str(k), key), image)
            shown.append({"folder": str(k), "image": name, "why": why})
        source = real_photo()
        if source is not None:
            image = read_rgb(source)  # the same reader `deblur predict` uses
            for key, out in {BLURRY: image, **_outputs(models, image, ev)}.items():
                write_png(_in(tmp, PHOTO, key), out)
        written = {"kinds": list(models), "samples": shown, "photo": source is not None}
        fsutil.write_json(tmp / paths.SAMPLES_INDEX.name, written)
    return written
