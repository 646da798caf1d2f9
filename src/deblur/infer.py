"""The one inference path: a model, an image of any size, a deblurred image.

`deblur predict`, `deblur evaluate`, the report and the MLflow model all call
`deblur_image`, so the numbers in the tables are exactly what a user gets.

Large images are cut into overlapping tiles so memory stays bounded (a 4000x3000 photo
never goes through the network whole). Where two tiles meet, each tile's outer
`overlap // 4` pixels are dropped, because a convolution there saw zero padding instead
of the neighbouring pixels, and the rest of the overlap is cross-faded with a raised
cosine, so a model whose receptive field fits in that margin gives exactly what
whole-image inference gives, and a deeper one shows no seams.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import numpy as np
import torch

from deblur import paths
from deblur.errors import DeblurError

# Default tile side (params evaluate.tile): a 1280x720 frame goes through whole, and memory
# stays bounded on any photo: a 4000x3000 one peaks at 1.55 GiB RSS with the default GAN.
TILE = 1280

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
MODEL_FORMS = (
    "gan, ae, a checkpoint path (*.pt), an ONNX export (*.onnx) "
    "or a registry URI (models:/deblur-gan@champion)"
)


# --------------------------------------------------------------------------- tiling


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, stop) of each tile along one axis: full tiles, then one that ends at the border.

    The last tile is cut short rather than pulled back to full size: pulling it back made
    it overlap its neighbour by up to a whole tile of thrown-away work (a 1280x720 frame in
    512 px tiles cost 1.7x its pixels). It keeps at least half a tile, so it has context.
    """
    spans, start = [], 0
    while start + tile < length:
        spans.append((start, start + tile))
        start += tile - overlap
    start = min(start, max(length - tile // 2, 0))
    return spans + [(start, length)]


def _ramp(size: int, start: int, stop: int, overlap: int) -> np.ndarray:
    """1-D blending weight of one tile [start, stop) on an axis of length ``size``.

    Weight 0 on the outer quarter of the overlap at an edge shared with a neighbour (zero
    padding spoiled it), a raised cosine from 0 to 1 over the middle half, 1 elsewhere.
    Edges on the image border keep full weight: there is no neighbour to hand over to.
    The ramps of two neighbours overlapping by exactly ``overlap`` sum to 1.
    """
    n = stop - start
    w = np.ones(n, np.float64)
    margin = overlap // 4
    width = overlap - 2 * margin
    if width <= 0:
        return w
    d = np.arange(n, dtype=np.float64)
    t = np.clip((d - margin + 0.5) / width, 0.0, 1.0)
    rise = 0.5 - 0.5 * np.cos(np.pi * t)
    if start > 0:
        w = np.minimum(w, rise)
    if stop < size:
        w = np.minimum(w, rise[::-1])
    return w


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 or float HxWx3 -> float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DeblurError(f"expected an RGB image of shape HxWx3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded: what a PNG stores."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _tiles(h: int, w: int, tile: int, overlap: int):
    """(region, window) per tile: its slice of the image and its HxWx1 blending weight."""
    for top, bottom in _spans(h, tile, overlap):
        wy = _ramp(h, top, bottom, overlap)
        for left, right in _spans(w, tile, overlap):
            wx = _ramp(w, left, right, overlap)
            window = (wy[:, None] * wx[None, :]).astype(np.float32)[..., None]
            yield np.s_[top:bottom, left:right], window


def _forward(model: torch.nn.Module, crop: np.ndarray, device) -> np.ndarray:
    """float HxWx3 -> the model's float HxWx3 output in [0, 1].

    The input goes in channels-last (NHWC), the layout the image already has in memory: a
    conv then runs its channels-last kernels, which `deblur bench` measured 1.4-1.7x faster
    than NCHW for both models on a CPU, with the same output to 1e-6. The caller's model is
    left as it is. ONNX Runtime was faster still and torch.compile about as fast, but both
    cost seconds up front (an export, a compilation) that predicting one image must not
    pay; for bulk work, `deblur export` and `--model FILE.onnx`.
    """
    h, w, c = crop.shape
    # reshape, not [None]: a batch axis added as a view gets stride 0 or 3, which still
    # passes for channels-last but sent both models down a path 1.3-1.6x slower.
    inp = torch.from_numpy(crop).reshape(1, h, w, c).permute(0, 3, 1, 2).to(device)
    inp = inp.contiguous(memory_format=torch.channels_last)
    return model(inp).float().clamp_(0, 1)[0].cpu().numpy().transpose(1, 2, 0)


def deblur_image(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = TILE,
    overlap: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Deblur one uint8 or float HxWx3 image of any size -> float32 HxWx3 in [0, 1]."""
    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    x = to_float(image)
    h, w, _ = x.shape
    was_training = model.training
    model = model.to(device).eval()  # batch norm must use its running stats, not the tile's
    try:
        with torch.inference_mode():
            if h <= tile and w <= tile:  # one tile: its weights would all be 1, skip blending
                return np.ascontiguousarray(_forward(model, x, device))
            out = np.zeros((h, w, 3), np.float32)
            weight = np.zeros((h, w, 1), np.float32)
            for region, window in _tiles(h, w, tile, overlap):
                out[region] += _forward(model, x[region], device) * window
                weight[region] += window
    finally:
        model.train(was_training)
    return out / weight


# --------------------------------------------------------------------------- models


def default_spec(kind: str) -> str:
    """The registry's champion when the tracking store has one, else the pipeline's file."""
    from deblur import tracking

    if tracking.champion(kind) is not None:
        return f"models:/{tracking.registered_name(kind)}@{tracking.CHAMPION}"
    return kind


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as torch spells it."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeblurError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeblurError(f"device '{spec}' asked for, but no CUDA GPU is visible; use cpu")
    return device


def resolve_model(spec: str | os.PathLike) -> Path:
    """'gan' | 'ae' | a checkpoint or .onnx path | a registry URI -> a local model file."""
    text = str(spec)
    if text in ("gan", "ae"):
        path = paths.checkpoint(text)
        if not path.is_file():
            raise DeblurError(f"{path} not found; run `deblur train {text}` (or `dvc repro`)")
        return path
    if text.startswith(("models:/", "runs:/")):
        from deblur.tracking import download_checkpoint

        return download_checkpoint(text)
    path = Path(text)
    if path.is_file():
        return path
    if path.suffix in (".pt", ".onnx"):
        raise DeblurError(f"checkpoint {path} not found")
    raise DeblurError(f"unknown model '{text}'; use {MODEL_FORMS}")


def load_model(spec: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A model for deblur_image; an .onnx file runs in ONNX Runtime behind the same call."""
    from deblur import models

    path = resolve_model(spec)
    if path.suffix == ".onnx":
        from deblur.export import OnnxModel

        return OnnxModel(path)
    return models.load(path, device=device)


# --------------------------------------------------------------------------- predict


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
    from deblur.data.images import read_rgb

    try:
        return read_rgb(path), None
    except (DeblurError, OSError, ValueError) as exc:  # the reader should say DataError
        return None, exc


def _write(path: Path, image: np.ndarray) -> None:
    from deblur.data.images import write_png

    write_png(path, to_uint8(image))


def predict(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    spec: str = "gan",
    tile: int = TILE,
    overlap: int = 32,
    device: str = "auto",
    progress: bool = True,
    compile_model: bool = False,
) -> list[Path]:
    """Deblur files, folders and globs into ``out_dir`` as PNGs; skip (and report) bad files.

    Decoding the next image and encoding the last result run on threads beside the model
    (PIL lets go of the GIL), so on a folder the files cost little more than the model.
    ``compile_model`` runs the model through torch.compile: the fastest path `deblur bench`
    measured, but its compilation (seconds, again for each new tile size) only pays off on
    many frames, so it is not the default.
    Every readable image is written (atomically) even when some are not; the bad ones are
    named as they come and, at the end, a DeblurError carries their count.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    sources = expand_inputs(inputs)
    targets = plan_outputs(sources, Path(out_dir))
    dev = resolve_device(device)
    model = load_model(spec, device=dev)
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
