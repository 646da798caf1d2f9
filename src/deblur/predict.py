"""`deblur predict`: files, folders and globs in, deblurred PNGs out, inputs never touched.

The model comes from deblur.spec, each image goes through infer.deblur_image (the path
the evaluation tables measure), and decoding and encoding overlap the model on threads.
deblur.data.photo keeps what a file holds (gray, 16 bits, alpha, ICC profile); an existing
result is only replaced with ``overwrite``; ``recursive`` mirrors a folder tree under out.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from deblur import device as devices
from deblur import spec as specs
from deblur.data.images import write_png
from deblur.data.photo import Photo, read_photo
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
LISTED = 5  # names listed in a one-line summary; the rest are counted


@dataclass
class Inputs:
    """What the arguments name: image files with the subfolder their result goes to."""

    files: list[tuple[Path, Path]] = field(default_factory=list)  # (file, folder under out)
    ignored: list[Path] = field(default_factory=list)  # non-image files met in folders
    unsearched: list[Path] = field(default_factory=list)  # subfolders left (no --recursive)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _folder(path: Path, recursive: bool, found: Inputs, skip: Path | None) -> None:
    entries = sorted(path.rglob("*") if recursive else path.iterdir())
    if skip == path.resolve():
        skip = None  # -o is the folder itself: plan_outputs refuses to overwrite its inputs
    for entry in entries:
        if skip is not None and entry.resolve().is_relative_to(skip):
            continue  # -o inside the input tree: earlier results are not inputs
        if _is_image(entry):
            found.files.append((entry, entry.parent.relative_to(path)))
        elif entry.is_file():
            found.ignored.append(entry)
        elif entry.is_dir() and not recursive:
            found.unsearched.append(entry)


def expand_inputs(
    items: list[str | os.PathLike], recursive: bool = False, out_dir: Path | None = None
) -> Inputs:
    """Files as given; folders (and with ``recursive`` their subfolders) and globs -> their
    image files, sorted, without duplicates. A folder's walk leaves ``out_dir`` out."""
    found = Inputs()
    skip = out_dir.resolve() if out_dir is not None else None
    for item in map(str, items):
        path = Path(item)
        if path.is_dir():
            before = len(found.files)
            _folder(path, recursive, found, skip)
            if len(found.files) == before and not recursive and found.unsearched:
                raise DeblurError(
                    f"no images found in {item} itself, only in its subfolders; "
                    "pass --recursive to deblur them too"
                )
        elif path.is_file():
            found.files.append((path, Path()))
        elif glob.has_magic(item):
            matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
            hits = [p for p in matches if _is_image(p)]
            if not hits:
                raise DeblurError(f"no image matches '{item}'")
            found.files += [(p, Path()) for p in hits]
        else:
            raise DeblurError(f"no such file or folder: {item}")
    unique = {p.resolve(): sub for p, sub in found.files}
    found.files = list(unique.items())
    if not found.files:
        raise DeblurError(f"no images found in {', '.join(map(str, items))}")
    return found


def plan_outputs(
    inputs: list[tuple[Path, Path]], out_dir: Path, overwrite: bool = False
) -> list[Path]:
    """<out_dir>/<subfolder>/<stem>.png for each input; refuse collisions, overwriting any
    input, and replacing an earlier result unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DeblurError(f"output folder {out_dir} is a file; pass a folder to -o")
    sources = [src for src, _ in inputs]
    outputs = [(out_dir / sub / f"{src.stem}.png").resolve() for src, sub in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(sources, outputs, strict=True):
        if dst in seen:
            raise DeblurError(
                f"{seen[dst]} and {src} would both be written to {dst}; predict them separately"
            )
        seen[dst] = src
    clash = set(outputs) & set(sources)
    if clash:
        raise DeblurError(
            f"output {sorted(clash)[0]} would overwrite an input; choose another -o folder"
        )
    existing = [dst for dst in outputs if dst.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DeblurError(
            f"{existing[0]}{more} already exists; pass --overwrite to replace it, "
            "or choose another -o folder"
        )
    return outputs


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:LISTED])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > LISTED else "")


def _compile(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise DeblurError("--compile applies to PyTorch checkpoints, not to an ONNX model")
    return torch.compile(model)


def _read(path: Path) -> tuple[Photo | None, Exception | None]:
    """(photo, None), or (None, why) for a file that is not a readable image."""
    try:
        return read_photo(path), None
    except (DeblurError, OSError, ValueError) as exc:  # the reader should say DataError
        return None, exc


def _write(path: Path, photo: Photo, image: np.ndarray) -> None:
    write_png(path, photo.result(image), photo.icc)


def _raise(exc: BaseException) -> None:
    raise exc


def _wait(writing, dst: Path, later: list[Path], written: list[Path], out_dir) -> None:
    """The pending write's end; a failed one (a full disk, mostly) -> DeblurError naming the
    file being written and the photos not attempted after it. Earlier results stay."""
    try:
        writing.result()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        done = len(written) - 1  # ``dst`` is counted in written already
        rest = f"; not attempted: {_names(later)}" if later else ""
        raise DeblurError(
            f"cannot write {dst} ({reason}){rest}; the {done} results before it are kept "
            f"in {out_dir}; free space, then predict the rest (or rerun with --overwrite)"
        ) from None


def predict(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    spec: str = "gan",
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str = "auto",
    progress: bool = True,
    compile_model: bool = False,
    overwrite: bool = False,
    recursive: bool = False,
    flips: bool = False,
) -> list[Path]:
    """Deblur files, folders and globs into ``out_dir`` as PNGs; skip (and report) bad files.

    Decoding the next image and encoding the last result run on threads beside the model
    (PIL and zlib let go of the GIL), so on a folder the files cost little more than the
    model. ``compile_model`` runs the model through torch.compile: often the fastest path
    `deblur bench` measures, but its compilation (seconds, again for each new tile size)
    only pays off on many frames, so it is not the default. ``flips`` averages the model
    over the image's four flips (infer.deblur_image): 4x the time for a small gain.
    Every readable image is written (atomically) even when some are not; the bad ones are
    named as they come and, at the end, a DeblurError carries their count. What a format
    loses on the way (CMYK, a palette...) is said per file; files in a folder that are not
    images, and subfolders left unsearched, are listed at the end.
    """
    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    found = expand_inputs(inputs, recursive, Path(out_dir))
    sources = [src for src, _ in found.files]
    targets = plan_outputs(found.files, Path(out_dir), overwrite)
    dev = devices.resolve(device)
    model = specs.load(spec, device=dev)
    if compile_model:
        model = _compile(model)
    written, skipped = [], []
    bar = tqdm(targets, desc="deblur", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:
        reading, writing, pending = pool.submit(_read, sources[0]), None, targets[0]
        for i, dst in enumerate(bar):
            src = sources[i]
            photo, error = reading.result()
            if i + 1 < len(sources):
                reading = pool.submit(_read, sources[i + 1])
            if error is not None:
                skipped.append(src)
                tqdm.write(f"skipped {src.name}: {error}", file=sys.stderr)
                continue
            for note in photo.notes:
                tqdm.write(f"note: {src.name}: {note}", file=sys.stderr)
            start = time.perf_counter()
            try:
                out = deblur_image(
                    model, photo.rgb, tile=tile, overlap=overlap, device=dev, flips=flips
                )
            except torch._dynamo.exc.TorchDynamoException as exc:  # compiles on first call
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                raise DeblurError(
                    f"torch.compile failed here ({reason}); run without --compile"
                ) from None
            bar.set_postfix(ms=f"{(time.perf_counter() - start) * 1e3:.0f}")
            if writing is not None:  # one result waits at most: memory stays bounded
                _wait(writing, pending, sources[i:], written, out_dir)
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                writing = pool.submit(_raise, exc)
            else:
                writing = pool.submit(_write, dst, photo, out)
            pending = dst
            written.append(dst)
        if writing is not None:
            _wait(writing, pending, [], written, out_dir)
    if found.ignored:
        print(f"skipped, not images: {_names(found.ignored)}", file=sys.stderr)
    if found.unsearched:
        print(
            f"subfolders not searched (pass --recursive): {_names(found.unsearched)}",
            file=sys.stderr,
        )
    if skipped:
        raise DeblurError(
            f"{len(skipped)} of {len(sources)} images skipped ({_names(skipped)}); "
            f"the other {len(written)} are in {out_dir}"
        )
    return written
