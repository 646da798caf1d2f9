"""Test pairs made in memory with PairArrays's interface, and tiny untrained models."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from skimage import data as skdata
from torch import nn

from deblur import models


class FakeArrays:
    """PairArrays's interface (names, len, pair) over pairs made in memory."""

    def __init__(self, pairs: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.names = list(pairs)
        self._pairs = list(pairs.values())

    def __len__(self):
        return len(self._pairs)

    def pair(self, i):
        return self._pairs[i]


def make_arrays(n: int, offset: int = 0, size=(48, 64)) -> FakeArrays:
    """Crops of a real photo, box-blurred along x: real structure, known blur."""
    photo = skdata.astronaut()
    pairs = {}
    for i in range(n):
        top, left = 40 + 60 * (i + offset), 30 + 50 * (i + offset)
        sharp = photo[top : top + size[0], left : left + size[1]]
        blur = uniform_filter(sharp.astype(np.float32), size=(1, 5 + i, 1), mode="reflect")
        pairs[f"scene{i + offset}/{i:06d}"] = (np.round(blur).astype(np.uint8), sharp.copy())
    return FakeArrays(pairs)


ARCH = {"gan": {"channels": 4, "n_down": 1, "n_res": 1}, "ae": {"channels": 4, "depth": 1}}


def tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return models.build(kind, ARCH[kind]).eval()
