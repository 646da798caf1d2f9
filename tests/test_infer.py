"""Tiled inference equals whole-image inference; predict is safe with a user's files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from deblur import infer, spec
from deblur import predict as predicting
from deblur.data.images import to_uint8
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
    from tiny_models import random_image, save_tiny

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
    from tiny_models import TINY_ARCH, random_image

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
    from tiny_models import random_image, save_tiny

    model, img = save_tiny(tmp_path / "m.pt", kind), random_image(37, 53)
    plain = infer.deblur_image(model, img)
    flips = infer.deblur_image(model, img, flips=True)
    assert np.abs(flips - plain).max() > 1e-3  # nudged weights: no longer flip-equivariant
    np.testing.assert_allclose(flips, flipped_passes(model, img), atol=1e-6)


# --------------------------------------------------------------------------- models


def save_tiny_gan(path) -> nn.Module:
    """A real (tiny) GAN generator checkpoint, the format `deblur train` writes."""
    from deblur import models

    torch.manual_seed(0)
    arch = {"channels": 4, "n_down": 1, "n_res": 1}
    model = models.build("gan", arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(models.checkpoint_dict("gan", model, arch), path)
    return model


def test_resolve_model_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeblurError, match=r"models/gan\.pt not found.*deblur train gan"):
        spec.resolve("gan")
    save_tiny_gan(tmp_path / "models" / "gan.pt")
    assert spec.resolve("gan").name == "gan.pt"
    assert spec.resolve(str(tmp_path / "models" / "gan.pt")).is_file()
    with pytest.raises(DeblurError, match="checkpoint nope.pt not found"):
        spec.resolve("nope.pt")
    with pytest.raises(DeblurError, match="unknown model 'vgg'.*models:/"):
        spec.resolve("vgg")

    from deblur.tracking import registry

    seen = []
    monkeypatch.setattr(registry, "download_checkpoint", lambda uri: seen.append(uri) or tmp_path)
    assert spec.resolve("models:/deblur-gan@champion") == tmp_path
    assert seen == ["models:/deblur-gan@champion"]


# --------------------------------------------------------------------------- predict


def write_images(folder, names, size=(24, 32)) -> None:
    from deblur.data.images import write_png

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_png(folder / name, image(*size, seed=i))


def test_predict_refuses_to_overwrite_inputs(tmp_path):
    save_tiny_gan(ckpt := tmp_path / "gan.pt")
    write_images(tmp_path / "in", ["a.png"])
    before = (tmp_path / "in" / "a.png").read_bytes()
    with pytest.raises(DeblurError, match="would overwrite an input"):
        predicting.predict([tmp_path / "in"], tmp_path / "in", spec=str(ckpt), device="cpu")
    assert (tmp_path / "in" / "a.png").read_bytes() == before
    write_images(tmp_path / "in", ["a.jpg"])
    with pytest.raises(DeblurError, match="would both be written"):
        predicting.predict([tmp_path / "in"], tmp_path / "out", spec=str(ckpt), device="cpu")


def test_predict_globs_and_missing_paths(tmp_path):
    save_tiny_gan(ckpt := tmp_path / "gan.pt")
    write_images(tmp_path / "in", ["a.png", "b.png"])
    (tmp_path / "in" / "notes.txt").write_text("not an image, not picked up by a folder")
    written = predicting.predict(
        [str(tmp_path / "in" / "*.png")], tmp_path / "out", spec=str(ckpt), device="cpu"
    )
    assert sorted(p.name for p in written) == ["a.png", "b.png"]
    with pytest.raises(DeblurError, match="no such file or folder"):
        predicting.predict([tmp_path / "nope.png"], tmp_path / "out", spec=str(ckpt))
    with pytest.raises(DeblurError, match="is a file"):
        predicting.predict([tmp_path / "in"], tmp_path / "in" / "notes.txt", spec=str(ckpt))


def test_predict_cli_skips_corrupt_file(tmp_path):
    save_tiny_gan(ckpt := tmp_path / "gan.pt")
    write_images(tmp_path / "in", ["a.png", "c.jpg"])
    (tmp_path / "in" / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "deblur", "predict", "in", "-o", "out", "--model", str(ckpt)]
    proc = subprocess.run(
        [*cmd, "--device", "cpu", "--tile", "32", "--overlap", "8"],
        cwd=tmp_path,  # no params.yaml here: predict falls back to the defaults
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "b_corrupt.png" in proc.stderr
    assert "1 of 3 images skipped" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_predict_respects_exif_orientation(tmp_path):
    from PIL import Image

    save_tiny_gan(ckpt := tmp_path / "gan.pt")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, display rotated by 90 degrees
    (tmp_path / "in").mkdir()
    Image.fromarray(image(20, 30)).save(tmp_path / "in" / "turned.jpg", exif=exif)
    (out,) = predicting.predict([tmp_path / "in"], tmp_path / "out", spec=str(ckpt), device="cpu")
    assert Image.open(out).size == (20, 30)  # (width, height): upright, as a viewer shows it


def test_predict_writes_what_deblur_image_gives(tmp_path, capfd):
    # What `deblur bench` times as "predict" is this call: its output must be the model's.
    from tiny_models import random_image, save_tiny

    from deblur.data.images import read_rgb, write_png

    model = save_tiny(ckpt := tmp_path / "ae.pt", "ae")
    write_png(src := tmp_path / "in" / "frame.png", random_image(37, 53))
    (out,) = predicting.predict(
        [src], tmp_path / "out", spec=str(ckpt), tile=32, overlap=8, device="cpu", progress=False
    )
    want = to_uint8(infer.deblur_image(model, read_rgb(src), tile=32, overlap=8))
    assert not np.array_equal(want, read_rgb(src))  # the model changes the image
    np.testing.assert_array_equal(read_rgb(out), want)
    assert "deblur" not in capfd.readouterr().err  # progress=False: no bar


def test_predict_flips_writes_the_ensemble(tmp_path, monkeypatch):
    # Through the command's own function: --flips reaches deblur_image.
    from tiny_models import random_image, save_tiny

    from deblur import cli
    from deblur.data.images import read_rgb, write_png

    model = save_tiny(ckpt := tmp_path / "gan.pt", "gan")
    write_png(src := tmp_path / "in" / "frame.png", random_image(37, 53))
    monkeypatch.chdir(tmp_path)  # no params.yaml: the defaults apply
    cli.predict([str(src)], tmp_path / "out", model=str(ckpt), tile=32, overlap=8,
                device="cpu", flips=True)  # fmt: skip
    want = to_uint8(infer.deblur_image(model, read_rgb(src), tile=32, overlap=8, flips=True))
    plain = to_uint8(infer.deblur_image(model, read_rgb(src), tile=32, overlap=8))
    assert not np.array_equal(want, plain)
    np.testing.assert_array_equal(read_rgb(tmp_path / "out" / "frame.png"), want)


def test_predict_compiled_writes_what_eager_writes(tmp_path):
    # Two image sizes: the second one recompiles (or goes dynamic) and must still match.
    from tiny_models import random_image, save_tiny

    from deblur.data.images import read_rgb, write_png

    save_tiny(ckpt := tmp_path / "gan.pt", "gan")
    write_png(tmp_path / "in" / "a.png", random_image(40, 56))
    write_png(tmp_path / "in" / "b.png", random_image(36, 64, seed=1))
    run = dict(spec=str(ckpt), device="cpu", progress=False)
    eager = predicting.predict([tmp_path / "in"], tmp_path / "eager", **run)
    compiled = predicting.predict(
        [tmp_path / "in"], tmp_path / "compiled", compile_model=True, **run
    )
    for want, got in zip(eager, compiled, strict=True):
        diff = np.abs(read_rgb(want).astype(int) - read_rgb(got).astype(int))
        assert diff.max() <= 1  # float sums in another order: at most one rounding step


def test_compile_refuses_an_onnx_model():
    with pytest.raises(DeblurError, match="not to an ONNX model"):
        predicting._compile(object())
