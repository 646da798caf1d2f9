"""read_rgb / write_png: every mode to uint8 RGB, EXIF orientation, failures that name the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deblur.data.images import channels_of, read_rgb, write_png
from deblur.errors import DataError

RGB = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)


def test_png_roundtrip(tmp_path):
    write_png(tmp_path / "a" / "x.png", RGB)
    assert np.array_equal(read_rgb(tmp_path / "a" / "x.png"), RGB)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.png"]  # no temp file left


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    path = tmp_path / "x.png"
    if mode == "I;16":
        Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(RGB).convert(mode).save(path)
    image = read_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (12, 20, 3)
    if mode == "I;16":
        assert np.array_equal(image[..., 1], RGB[..., 0])
    if mode == "RGBA":
        assert np.array_equal(image, RGB)
    assert channels_of(path) == len(Image.open(path).getbands())


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "x.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(RGB).save(path, exif=exif, quality=100)
    assert read_rgb(path).shape == (20, 12, 3)


@pytest.mark.parametrize(
    "content", [b"", b"not an image", None], ids=["empty", "garbage", "truncated"]
)
def test_bad_files_name_the_path(tmp_path, content):
    path = tmp_path / "bad.png"
    if content is None:
        write_png(path, RGB)
        content = path.read_bytes()[:60]
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"bad\.png cannot be decoded"):
        read_rgb(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.png not found"):
        read_rgb(tmp_path / "nope.png")


def test_write_png_wants_uint8(tmp_path):
    with pytest.raises(TypeError):
        write_png(tmp_path / "x.png", RGB.astype(np.float32))
    assert not list(tmp_path.iterdir())
