"""`deblur predict`: files, folders and globs in, deblurred PNGs out, inputs never touched.

The model comes from deblur.spec, each image goes through infer.deblur_image (the path
the evaluation tables measure), and decoding and encoding overlap the model on threads.
"""

from __future__ import annotations

import glob
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deblur import device as devices
from deblur import spec as specs
from deblur.data.images import read_rgb, to_uint8, write_png
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def expand_inputs(items: list[str | os.PathLike]) -> list[Path]:
    """Files as given; folders and globs -> their image files, sorted, without duplicates."""
    found: list[Path] = []
    for item in map(str, items):
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            hits = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not hits:
                raise DeblurError(f"no image matches '{item}'")
            found += hits
        else:
            raise DeblurError(f"no such file or folder: {item}")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise DeblurError(f"no images found in {', '.join(map(str, items))}")
    return unique


def plan_outputs(inputs: list[Path], out_dir: Path) -> list[Path]:
    """<out_dir>/<stem>.png for each input; refuse collisions and overwriting any input."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DeblurError(f"output folder {out_dir} is a file; pass a folder to -o")
    outputs = [(out_dir / f"{p.stem}.png").resolve() for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, outputs, strict=True):
        if dst in seen:
            raise DeblurError(
                f"{seen[dst]} and {src} would both be written to {dst}; predict them separately"
            )
        seen[dst] = src
    clash = set(outputs) & set(inputs)
    if clash:
        raise DeblurError(
            f"output {sorted(clash)[0]} would overwrite an input; choose another -o folder"
        )
    return outputs


def _compile(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise DeblurError("--compile applies to PyTorch checkpoints, not to an ONNX model")
    return torch.compile(model)


def _read(path: Path) -> tuple[np.ndarray | None, Exception | None]:
    """(image, None), or (None, why) for a file that is not a readable image."""
    try:
        return read_rgb(path), None
    except (DeblurError, OSError, ValueError) as exc:  # the reader should say DataError
        return None, exc


def _write(path: Path, image: np.ndarray) -> None:
    write_png(path, to_uint8(image))


def predict(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    spec: str = "gan",
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str = "auto",
    progress: bool = True,
    compile_model: bool = False,
) -> list[Path]:
    """Deblur files, folders and globs into ``out_dir`` as PNGs; skip (and report) bad files.

    Decoding the next image and encoding the last result run on threads beside the model
    (PIL lets go of the GIL), so on a folder the files cost little more than the model.
    ``compile_model`` runs the model through torch.compile: often the fastest path `deblur
    bench` measures, but its compilation (seconds, again for each new tile size) only pays
    off on many frames, so it is not the default.
    Every readable image is written (atomically) even when some are not; the bad ones are
    named as they come and, at the end, a DeblurError carries their count.
    """
    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    sources = expand_inputs(inputs)
    targets = plan_outputs(sources, Path(out_dir))
    dev = devices.resolve(device)
    model = specs.load(spec, device=dev)
    if compile_model:
        model = _compile(model)
    written, skipped = [], []
    bar = tqdm(targets, desc="deblur", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        reading, writing = pool.submit(_read, sources[0]), None
        for i, dst in enumerate(bar):
            src = sources[i]
            image, error = reading.result()
            if i + 1 < len(sources):
                reading = pool.submit(_read, sources[i + 1])
            if error is not None:
                skipped.append(src)
                tqdm.write(f"skipped {src.name}: {error}")
                continue
            start = time.perf_counter()
            try:
                out = deblur_image(model, image, tile=tile, overlap=overlap, device=dev)
            except torch._dynamo.exc.TorchDynamoException as exc:  # compiles on first call
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise DeblurError(
                    f"torch.compile failed here ({reason}); run without --compile"
                ) from None
            bar.set_postfix(ms=f"{(time.perf_counter() - start) * 1e3:.0f}")
            if writing is not None:
                writing.result()  # one result waits at most: memory stays bounded
            writing = pool.submit(_write, dst, out)
            written.append(dst)
        if writing is not None:
            writing.result()
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        raise DeblurError(
            f"{len(skipped)} of {len(sources)} images skipped ({names}); "
            f"the other {len(written)} are in {out_dir}"
        )
    return written
