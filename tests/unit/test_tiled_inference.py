"""Tiled inference equals whole-image inference; the flip self-ensemble per tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deblur import infer
from deblur.errors import DeblurError


def small_conv(seed: int = 0) -> nn.Module:
    """Two 3x3 convs: a receptive-field radius of 2 px, well inside any overlap // 4 >= 2."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1), nn.Sigmoid()
    ).eval()


class Spy(nn.Module):
    """Records the largest input it was given."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.largest = inner, (0, 0)

    def forward(self, x):
        self.largest = max(self.largest, tuple(x.shape[-2:]))
        return self.inner(x)


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(150, 200), (37, 101), (64, 64), (65, 129), (5, 7)])
def test_tiling_matches_whole_image(shape):
    model, img = small_conv(), image(*shape)
    whole = infer.deblur_image(model, img, tile=4096, overlap=16)
    tiled = infer.deblur_image(model, img, tile=48, overlap=16)
    assert tiled.shape == (*shape, 3) and tiled.dtype == np.float32
    assert np.isfinite(tiled).all() and tiled.min() >= 0 and tiled.max() <= 1
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_large_image_goes_through_bounded_tiles():
    spy = Spy(small_conv()).train()
    out = infer.deblur_image(spy, image(300, 420), tile=96, overlap=16)
    assert out.shape == (300, 420, 3)
    assert spy.largest == (96, 96)
    assert spy.training  # evaluated in eval mode, handed back as it came


def test_uint8_and_float_inputs_agree():
    model, img = small_conv(), image(40, 60)
    a = infer.deblur_image(model, img)
    b = infer.deblur_image(model, img.astype(np.float32) / 255)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_shapes_and_tiles_are_user_errors():
    with pytest.raises(DeblurError, match="HxWx3"):
        infer.deblur_image(small_conv(), np.zeros((8, 8), np.uint8))
    with pytest.raises(DeblurError, match="larger than overlap"):
        infer.deblur_image(small_conv(), image(8, 8), tile=32, overlap=32)


# --------------------------------------------------------------------------- flips


def flipped_passes(model, img, **kw) -> np.ndarray:
    """The self-ensemble by hand: four whole-image passes on flipped copies, flipped back."""
    outs = [
        np.flip(infer.deblur_image(model, np.ascontiguousarray(np.flip(img, axes)), **kw), axes)
        for axes in [(), (0,), (1,), (0, 1)]
    ]
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("kind", ["gan", "ae"])
@pytest.mark.parametrize("tile", [4096, 32])  # whole, and tiles smaller than the image
def test_flips_keep_the_shape_at_odd_sizes(tmp_path, kind, tile):
    from support.tiny_models import random_image, save_tiny

    model, img = save_tiny(tmp_path / "m.pt", kind), random_image(37, 53)
    calls = []
    out = infer.deblur_image(
        model, img, tile=tile, overlap=8, flips=True, on_tile=lambda *a: calls.append(a)
    )
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    total = infer.tile_count(37, 53, tile, 8)
    assert total == 1 if tile == 4096 else total > 1
    assert calls == [(i, total) for i in range(1, total + 1)]  # tiles, not passes


def test_flips_of_a_flip_equivariant_model_are_the_plain_output():
    # An untrained Restorer is the identity (its last conv starts at zero): flipping the
    # input, running it and flipping back changes nothing, so the mean is the plain output.
    from support.tiny_models import TINY_ARCH, random_image

    from deblur import models

    img = random_image(37, 53)
    for kind in ("gan", "ae"):
        model = models.build(kind, TINY_ARCH[kind]).eval()
        for tile in (4096, 32):
            plain = infer.deblur_image(model, img, tile=tile, overlap=8)
            np.testing.assert_array_equal(
                infer.deblur_image(model, img, tile=tile, overlap=8, flips=True), plain
            )


@pytest.mark.parametrize("kind", ["gan", "ae"])
def test_flips_are_the_mean_of_four_flipped_passes(tmp_path, kind):
    from support.tiny_models import random_image, save_tiny

    model, img = save_tiny(tmp_path / "m.pt", kind), random_image(37, 53)
    plain = infer.deblur_image(model, img)
    flips = infer.deblur_image(model, img, flips=True)
    assert np.abs(flips - plain).max() > 1e-3  # nudged weights: no longer flip-equivariant
    np.testing.assert_allclose(flips, flipped_passes(model, img), atol=1e-6)
