"""Tiny real checkpoints for the serving and export tests (not collected: no test_ prefix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblur import models

# Small enough to run in milliseconds, deep enough that padding to a multiple (4) matters.
TINY_ARCH = {
    "gan": {"channels": 4, "max_channels": 8, "n_down": 2, "n_res": 1},
    "ae": {"channels": 4, "max_channels": 8, "depth": 2, "dilations": [1, 2]},
}


def save_tiny(
    path: str | Path,
    kind: str = "gan",
    seed: int = 0,
    nudge: float = 0.05,
    meta: dict | None = None,
) -> nn.Module:
    """A checkpoint as `deblur train` writes it, with every weight nudged off its init.

    A fresh model is the identity (its last conv starts at zero), which would make any
    comparison of two inference paths pass trivially.
    """
    torch.manual_seed(seed)
    model = models.build(kind, TINY_ARCH[kind])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(nudge * torch.randn_like(p))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = models.checkpoint_dict(kind, model, TINY_ARCH[kind])
    if meta is not None:
        payload["meta"] = meta
    torch.save(payload, path)
    return model.eval()


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish uint8 RGB image (noise would compress badly and look like nothing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(4 * (x + y))], -1)
    noisy = 0.5 + 0.4 * base + 0.05 * rng.standard_normal((h, w, 3))
    return np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
