"""`deblur evaluate`: score both models, the blurry input and a classical baseline on the test set.

Every method sees the same 8-bit blurry image and is scored on its 8-bit output, the way a
user sees it: the learned models go through `infer.deblur_image` with the params' tile and
overlap, then rounding to uint8, which is exactly what `deblur predict` writes to a PNG.

Protocols (params evaluate.protocol):
  full    the test pairs at their full resolution (the default, as the papers do).
  resize  the seed's protocol: blur and sharp are both resized to the model's training
          square (preprocess.resize.gan / .ae, anti-aliased, back to 8 bits), the model
          deblurs the resized blur and is scored against the resized sharp. The blurry
          input and the baseline are scored at each of those sizes, so every gain compares
          like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from deblur.data.images import resize_square, to_uint8
from deblur.evaluate import baselines, tables
from deblur.infer import deblur_image
from deblur.kinds import KINDS
from deblur.metrics import score

Method = Callable[[np.ndarray], np.ndarray]


def tracks(protocol: str, resize) -> dict[str, str]:
    """The protocol label each learned model is scored under: 'full' or 'resize <side>'.

    ``protocol`` is evaluate.protocol, ``resize`` preprocess.resize (the training squares).
    """
    if protocol == "full":
        return dict.fromkeys(KINDS, "full")
    return {kind: f"resize {getattr(resize, kind)}" for kind in KINDS}


def _side(protocol: str) -> int | None:
    return None if protocol == "full" else int(protocol.split()[-1])


def _pair(store, i: int, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``i`` as uint8 (blur, sharp), resized to the square when the protocol says so."""
    blur, sharp = store.pair(i)
    side = _side(protocol)
    if side:
        return resize_square(blur, side), resize_square(sharp, side)
    return blur, sharp


def pairs(store, protocol: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for i, name in enumerate(store.names):
        yield name, *_pair(store, i, protocol)


def model_method(
    model: torch.nn.Module, tile: int, overlap: int, device, flips: bool = False
) -> Method:
    """What `deblur predict` (with ``--flips`` when ``flips``) does to one image, minus the PNG."""
    return lambda image: to_uint8(deblur_image(model, image, tile, overlap, device, flips=flips))


def score_method(key: str, method: Method, store, protocol: str, timed: bool = True) -> list[dict]:
    """One per-image row per test pair: PSNR, SSIM, and the wall time of ``method``.

    ``method`` maps a uint8 blurry image to a uint8 output, as a saved file would hold it.
    Untimed methods (the blurry input: no work at all) get 0 ms rather than timer noise.
    """
    from tqdm import tqdm

    rows = []
    for name, blur, sharp in tqdm(list(pairs(store, protocol)), desc=f"evaluate {key}"):
        if not rows:
            method(blur)  # warm-up: the first call pays for allocation and kernel selection
        start = time.perf_counter()
        out = method(blur)
        ms = (time.perf_counter() - start) * 1e3 if timed else 0.0
        h, w = blur.shape[:2]
        rows.append(
            {
                "model": key,
                "image": name,
                **score(out, sharp),
                "ms": ms,
                "megapixels": h * w / 1e6,
                "protocol": protocol,
            }
        )
    return rows


def baseline_method(name: str, train_store, protocol: str) -> tuple[str, Method]:
    """The classical method, its knobs tuned on train pairs seen under the same protocol."""
    n = len(train_store)
    picks = np.linspace(0, n - 1, min(n, baselines.TUNE_PAIRS)).round().astype(int)
    tune = [_pair(train_store, i, protocol) for i in dict.fromkeys(picks.tolist())]
    label, fn = baselines.build(name, tune)
    return label, lambda image: to_uint8(fn(image))


def evaluate(
    models: dict[str, torch.nn.Module],
    test_store,
    train_store,
    ev,
    protocols: dict[str, str],
    device: torch.device | str = "cpu",
) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """The per-image table of every method, and the table label of each baseline row.

    ``ev`` is params' evaluate section, ``protocols`` tracks()'s labels.
    """
    rows: list[dict] = []
    labels: dict[tuple[str, str], str] = {}
    for kind, model in models.items():
        method = model_method(model, ev.tile, ev.overlap, device)
        rows += score_method(kind, method, test_store, protocols[kind])
    for protocol in dict.fromkeys(protocols.values()):
        label, method = baseline_method(ev.baseline, train_store, protocol)
        labels[("baseline", protocol)] = label
        rows += score_method("baseline", method, test_store, protocol)
        rows += score_method("blurry", lambda image: image, test_store, protocol, timed=False)
    return pd.DataFrame(rows, columns=tables.PER_IMAGE_COLUMNS), labels


def evaluate_options(
    models: dict[str, torch.nn.Module],
    test_store,
    ev,
    protocols: dict[str, str],
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Per-image rows of each learned model under the inference options params enable.

    Today one option, the flip self-ensemble (params evaluate.flips, `predict --flips`),
    keyed '<kind>_flips'. A table of its own, apart from evaluate()'s: these rows never
    reach results.csv, per_image.csv or eval.json's per-model keys (the README's table and
    `deblur verify` read those), only eval.json's "options" (tables.option_metrics).
    """
    rows: list[dict] = []
    if ev.flips:
        for kind, model in models.items():
            method = model_method(model, ev.tile, ev.overlap, device, flips=True)
            key = tables.option_key(kind, "flips")
            rows += score_method(key, method, test_store, protocols[kind])
    return pd.DataFrame(rows, columns=tables.PER_IMAGE_COLUMNS)
