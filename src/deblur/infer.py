"""The one inference path: a model, an image of any size, a deblurred image.

`deblur predict`, `deblur evaluate`, the report, the demo server, the MLflow model and
`deblur bench` all call `deblur_image`, so the numbers in the tables are exactly what a
user gets. Which model a name points at is deblur.spec's job; files are deblur.predict's.

Large images are cut into overlapping tiles so memory stays bounded (a 4000x3000 photo
never goes through the network whole). Where two tiles meet, each tile's outer
`overlap // 4` pixels are dropped, because a convolution there saw zero padding instead
of the neighbouring pixels, and the rest of the overlap is cross-faded with a raised
cosine, so a model whose receptive field fits in that margin gives exactly what
whole-image inference gives, and a deeper one shows no seams.

``flips`` is a self-ensemble: each tile also goes through the model flipped left-right,
up-down and both ways, each output is flipped back and the four are averaged. It costs 4x
the time for a small gain (`deblur evaluate` measures both); it happens per tile, inside
the tiling, so memory stays what one pass needs and progress still counts tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from deblur.data.images import to_float
from deblur.errors import DeblurError

# The tile side when a caller names none; every command takes params evaluate.tile, whose
# default this is: a 1280x720 frame goes through whole, and memory stays bounded on any photo.
TILE = 1280
OVERLAP = 32
# The self-ensemble's passes: axes of an HxWx3 array to flip (none, up-down, left-right,
# both). Each is its own inverse, so the same axes flip an output back.
FLIPS = ((), (0,), (1,), (0, 1))


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


def tile_count(h: int, w: int, tile: int, overlap: int) -> int:
    """How many forward passes deblur_image makes on an h x w image."""
    if h <= tile and w <= tile:
        return 1
    return len(_spans(h, tile, overlap)) * len(_spans(w, tile, overlap))


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
    conv then runs its channels-last kernels, which `deblur bench` measures faster than
    NCHW for both models on a CPU, with the same output to 1e-6. The caller's model is left
    as it is. ONNX Runtime and torch.compile can be faster still, but both cost seconds up
    front (an export, a compilation) that predicting one image must not pay; for bulk
    work, `deblur export` and `--model FILE.onnx`, or `predict --compile`.
    """
    h, w, c = crop.shape
    # reshape, not [None]: a batch axis added as a view gets stride 0 or 3, which still
    # passes for channels-last but sends both models down a much slower path.
    inp = torch.from_numpy(crop).reshape(1, h, w, c).permute(0, 3, 1, 2).to(device)
    inp = inp.contiguous(memory_format=torch.channels_last)
    return model(inp).float().clamp_(0, 1)[0].cpu().numpy().transpose(1, 2, 0)


def _ensemble(model: torch.nn.Module, crop: np.ndarray, device) -> np.ndarray:
    """The mean of the model's outputs on ``crop`` and its three flips, each flipped back.

    Summed in pairs, ((a + b) + (c + d)) / 4: for a flip-equivariant model the four are
    equal and the mean is exactly the plain output, bit for bit.
    """
    outs = []
    for axes in FLIPS:
        x = np.ascontiguousarray(np.flip(crop, axes)) if axes else crop
        y = _forward(model, x, device)
        outs.append(np.flip(y, axes) if axes else y)
    return np.ascontiguousarray(((outs[0] + outs[1]) + (outs[2] + outs[3])) * np.float32(0.25))


def deblur_image(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str | torch.device = "cpu",
    on_tile: Callable[[int, int], None] | None = None,
    flips: bool = False,
) -> np.ndarray:
    """Deblur one uint8 or float HxWx3 image of any size -> float32 HxWx3 in [0, 1].

    ``on_tile(done, total)`` is called after each tile: a caller shows progress with it,
    or stops the work between tiles by raising (the server does, for a client gone).
    ``flips`` averages each tile over the model's four flipped passes (4x the time).
    """
    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    x = to_float(image)
    h, w, _ = x.shape
    was_training = model.training
    model = model.to(device).eval()  # batch norm must use its running stats, not the tile's
    forward = _ensemble if flips else _forward
    try:
        with torch.inference_mode():
            total = tile_count(h, w, tile, overlap)
            if total == 1:  # one tile: its weights would all be 1, skip blending
                out = np.ascontiguousarray(forward(model, x, device))
                if on_tile is not None:
                    on_tile(1, 1)
                return out
            out = np.zeros((h, w, 3), np.float32)
            weight = np.zeros((h, w, 1), np.float32)
            for done, (region, window) in enumerate(_tiles(h, w, tile, overlap), 1):
                out[region] += forward(model, x[region], device) * window
                weight[region] += window
                if on_tile is not None:
                    on_tile(done, total)
    finally:
        model.train(was_training)
    return out / weight
