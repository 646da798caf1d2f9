"""The demo's models: each kind's champion, else models/<kind>.pt, loaded once and warmed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from deblur import allocator, paths, spec
from deblur.errors import DeblurError
from deblur.infer import deblur_image
from deblur.kinds import KINDS, LABELS
from deblur.serve.queue import Queue

WARM_SIDE = 256


@dataclass
class Served:
    """One model choice on the page: where it comes from, and the loaded model if any."""

    kind: str
    source: str  # for people: "deblur-gan v3 @champion (MLflow registry)"
    model: torch.nn.Module | None = None
    missing: str = ""  # why it is not available

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "label": LABELS[self.kind],
            "available": self.model is not None,
            "source": self.source if self.model is not None else self.missing,
        }


def find_model(kind: str, device: torch.device) -> Served:
    """What spec.choose picks (the champion, else models/<kind>.pt), loaded; else unavailable."""
    chosen = spec.choose(kind)
    if chosen is None:
        path = paths.checkpoint(kind)
        return Served(kind, "", missing=f"no champion and no {path}; run `deblur train {kind}`")
    model_spec, source = chosen
    return Served(kind, source, spec.load(model_spec, device=device))


def load_models(device: torch.device) -> dict[str, Served]:
    served = {kind: find_model(kind, device) for kind in KINDS}
    if all(s.model is None for s in served.values()):
        raise DeblurError(
            "no model to serve: the registry has no champion and models/gan.pt and "
            "models/ae.pt do not exist; run `make repro` (or `dvc repro`) first"
        )
    return served


def warm_up(served: dict[str, Served], queue: Queue, tile: int, overlap: int, device) -> None:
    """One small pass per model: first-call costs paid, and a first ms-per-MP estimate."""
    image = np.full((WARM_SIDE, WARM_SIDE, 3), 128, np.uint8)
    for kind, s in served.items():
        if s.model is None:
            continue
        deblur_image(s.model, image, tile, overlap, device)
        start = time.perf_counter()
        deblur_image(s.model, image, tile, overlap, device)
        queue.learn(kind, (time.perf_counter() - start) * 1e3, WARM_SIDE**2 / 1e6)
    allocator.release()
