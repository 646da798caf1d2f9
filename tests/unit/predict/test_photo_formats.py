"""`deblur predict` gives back what went in: gray, 16 bits, alpha; and never replaces silently."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from support.disks import small_tmpfs
from support.tiny_models import random_image, save_tiny

from deblur import predict as predicting
from deblur.data.images import png_bytes
from deblur.errors import DeblurError


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    """A fresh (untrained) GAN: the identity, so what comes out must be what went in."""
    path = tmp_path_factory.mktemp("models") / "identity.pt"
    save_tiny(path, "gan", nudge=0.0)
    return str(path)


@pytest.fixture(scope="module")
def nudged(tmp_path_factory):
    """A GAN whose output differs from its input, per channel."""
    path = tmp_path_factory.mktemp("models") / "nudged.pt"
    save_tiny(path, "gan")
    return str(path)


def run(inputs, out, model, **kw):
    return predicting.predict(inputs, out, spec=model, device="cpu", progress=False, **kw)


def unpng(data: bytes) -> tuple[int, int, np.ndarray]:
    """(bit depth, colour type, the raw samples) of one of our PNGs, decoded by hand:
    Pillow reads 16-bit colour as 8-bit, so it cannot check those."""
    pos, idat, head = 8, b"", None
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        head = body if kind == b"IHDR" else head
        idat += body if kind == b"IDAT" else b""
        pos += 12 + size
    w, h = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:8], "big")
    bits, colour = head[8], head[9]
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    step = channels * bits // 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * step)
    assert (raw[:, 0] == 1).all(), "every row uses the Sub filter"
    rows = raw[:, 1:].reshape(h, w, step).cumsum(axis=1, dtype=np.uint8).reshape(h, -1)
    samples = rows.view(">u2") if bits == 16 else rows
    return bits, colour, samples.reshape(h, w, channels).astype(np.int64)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encoder_writes_the_exact_samples(channels, dtype):
    top = np.iinfo(dtype).max
    image = np.random.default_rng(channels).integers(0, top + 1, (13, 17, channels), dtype=dtype)
    data = png_bytes(image)
    bits, _, samples = unpng(data)
    assert bits == 8 * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(samples, image)
    if dtype == np.uint8 or channels == 1:  # what Pillow can read in full, it reads the same
        pil = np.asarray(Image.open(io.BytesIO(data)))
        np.testing.assert_array_equal(pil.reshape(image.shape), image)


def test_gray_stays_gray_without_a_tint(tmp_path, identity, nudged):
    gray = random_image(30, 40)[..., 1]
    Image.fromarray(gray, "L").save(src := tmp_path / "bw.png")
    (out,) = run([src], tmp_path / "same", identity)
    back = Image.open(out)
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), gray)
    (out,) = run([src], tmp_path / "changed", nudged)
    assert Image.open(out).mode == "L"  # one channel: no room for a tint


def test_sixteen_bit_gray_png_stays_sixteen_bit(tmp_path, identity):
    deep = (np.random.default_rng(0).random((30, 40)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(src := tmp_path / "deep.png")
    (out,) = run([src], tmp_path / "out", identity)
    back = Image.open(out)
    assert back.mode.startswith("I;16")
    assert np.abs(np.asarray(back).astype(int) - deep).max() <= 1  # float32 keeps 24 bits


def test_sixteen_bit_colour_tiff_stays_sixteen_bit(tmp_path, identity):
    import tifffile

    deep = (np.random.default_rng(1).random((30, 40, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(src := tmp_path / "deep.tif", deep, photometric="rgb")
    (out,) = run([src], tmp_path / "out", identity)
    bits, colour, samples = unpng(out.read_bytes())
    assert (bits, colour) == (16, 2)
    assert np.abs(samples - deep).max() <= 1
    assert np.abs(samples - deep).mean() < 0.5  # not 8 bits scaled up: those miss by ~128


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png_round_trips_at_sixteen_bits(tmp_path, identity, channels):
    deep = (np.random.default_rng(2).random((30, 40, channels)) * 65535).astype(np.uint16)
    (src := tmp_path / "raw-export.png").write_bytes(png_bytes(deep))
    (out,) = run([src], tmp_path / "out", identity)
    bits, colour, samples = unpng(out.read_bytes())
    assert (bits, colour) == (16, {3: 2, 4: 6}[channels])
    assert np.abs(samples[..., :3] - deep[..., :3]).max() <= 1
    assert np.abs(samples[..., :3] - deep[..., :3]).mean() < 0.5  # 8 bits miss by ~128
    if channels == 4:
        np.testing.assert_array_equal(samples[..., 3], deep[..., 3])  # alpha as it was


def test_sixteen_bit_colour_png_is_turned_upright(tmp_path, identity):
    from deblur.data.photo import read_photo

    deep = (np.random.default_rng(3).random((30, 40, 3)) * 65535).astype(np.uint16)
    img = Image.fromarray(deep[..., 0] >> 8)  # Pillow only to write the EXIF chunk
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    data = png_bytes(deep)
    body = exif.tobytes()
    body = body[6:] if body.startswith(b"Exif\0\0") else body
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body
    chunk += zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    iend = data.rindex(b"IEND") - 4
    (src := tmp_path / "turned.png").write_bytes(data[:iend] + chunk + data[iend:])
    photo = read_photo(src)
    assert photo.depth == 16 and photo.rgb.shape == (40, 30, 3)
    expected = np.rot90(deep, 3).astype(np.float32) / 65535.0
    np.testing.assert_allclose(photo.rgb, expected, atol=1e-6)


def test_alpha_is_kept_and_transparent_areas_stay_transparent(tmp_path, identity, nudged):
    rgba = np.dstack([random_image(30, 40), np.full((30, 40), 255, np.uint8)])
    rgba[:, :15] = 0  # a transparent band over black: what turned black before
    rgba[10:20, 20:30, 3] = 128
    Image.fromarray(rgba, "RGBA").save(src := tmp_path / "logo.png")
    (out,) = run([src], tmp_path / "same", identity)
    back = np.asarray(Image.open(out))
    assert back.shape == (30, 40, 4)
    np.testing.assert_array_equal(back, rgba)
    (out,) = run([src], tmp_path / "changed", nudged)
    back = np.asarray(Image.open(out))
    np.testing.assert_array_equal(back[..., 3], rgba[..., 3])  # colour deblurred, alpha as is
    assert not np.array_equal(back[..., :3], rgba[..., :3])


def test_what_cannot_be_kept_is_said(tmp_path, identity, capfd):
    Image.fromarray(random_image(30, 40)).convert("CMYK").save(src := tmp_path / "print.jpg")
    (out,) = run([src], tmp_path / "out", identity)
    assert Image.open(out).mode == "RGB"
    assert "print.jpg: CMYK is written as RGB" in capfd.readouterr().err


def test_an_earlier_result_is_not_replaced_without_overwrite(tmp_path, identity, nudged):
    (tmp_path / "a").mkdir()
    Image.fromarray(random_image(30, 40)).save(jpg := tmp_path / "a" / "shot.jpg")
    Image.fromarray(random_image(30, 40, seed=1)).save(png := tmp_path / "a" / "shot.png")
    (first,) = run([jpg], tmp_path / "X", identity)
    before = first.read_bytes()
    with pytest.raises(DeblurError, match=r"shot\.png already exists; pass --overwrite"):
        run([png], tmp_path / "X", identity)
    assert first.read_bytes() == before
    (again,) = run([png], tmp_path / "X", nudged, overwrite=True)
    assert again == first and again.read_bytes() != before
    assert jpg.is_file() and png.is_file()  # inputs untouched either way


def test_overwrite_refusal_is_one_line_from_the_cli(tmp_path, identity):
    Image.fromarray(random_image(30, 40)).save(tmp_path / "shot.png")
    (tmp_path / "X").mkdir()
    (tmp_path / "X" / "shot.png").write_bytes(b"an earlier result")
    proc = subprocess.run(
        [sys.executable, "-m", "deblur", "predict", "shot.png", "-o", "X", "-m", identity],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {(tmp_path / 'X' / 'shot.png').resolve()} already exists; "
        "pass --overwrite to replace it, or choose another -o folder"
    ]
    assert (tmp_path / "X" / "shot.png").read_bytes() == b"an earlier result"


def test_recursive_mirrors_the_tree_and_lists_what_it_skips(tmp_path, identity, capfd):
    nested = tmp_path / "nested"
    for rel in ("day1/a.png", "day1/raw/b.png", "day2/a.png"):
        (nested / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_image(24, 32)).save(nested / rel)
    (nested / "day1" / "notes.txt").write_text("not an image")
    with pytest.raises(DeblurError, match="only in its subfolders; pass --recursive"):
        run([nested], tmp_path / "out", identity)

    written = run([nested], tmp_path / "out", identity, recursive=True)
    got = sorted(p.relative_to((tmp_path / "out").resolve()).as_posix() for p in written)
    assert got == ["day1/a.png", "day1/raw/b.png", "day2/a.png"]
    assert "skipped, not images: notes.txt" in capfd.readouterr().err

    run([nested / "day1"], tmp_path / "flat", identity)  # images here, and a subfolder
    err = capfd.readouterr().err
    assert "subfolders not searched (pass --recursive): raw" in err
    assert "skipped, not images: notes.txt" in err


def test_results_inside_the_input_tree_are_not_inputs_next_time(tmp_path, identity):
    trip = tmp_path / "trip"
    (trip / "day1").mkdir(parents=True)
    Image.fromarray(random_image(24, 32)).save(trip / "day1" / "a.png")
    first = run([trip], trip / "sharp", identity, recursive=True)
    again = run([trip], trip / "sharp", identity, recursive=True, overwrite=True)
    assert first == again == [(trip / "sharp" / "day1" / "a.png").resolve()]
    assert not (trip / "sharp" / "sharp").exists()


def test_the_icc_profile_is_kept(tmp_path, identity):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(random_image(24, 32)).save(src := tmp_path / "wide.png", icc_profile=profile)
    (out,) = run([src], tmp_path / "out", identity)
    assert Image.open(out).info.get("icc_profile") == profile


@pytest.fixture
def small_disk(tmp_path):
    """A 320 KB tmpfs: room for two noisy 200x200 PNGs, not five. Skipped where this
    process may not mount (not root, or a container without CAP_SYS_ADMIN)."""
    with small_tmpfs(tmp_path / "disk", "320k") as disk:
        yield disk


def test_a_full_disk_is_one_line_naming_the_file_and_the_photos_left(
    tmp_path, identity, small_disk
):
    names = [f"shot{i}.png" for i in range(5)]
    for i, name in enumerate(names):  # noise: each PNG ~120 KB, whatever the encoder
        Image.fromarray(random_image(200, 200, seed=i)).save(tmp_path / name)
    out = small_disk / "out"
    cmd = [sys.executable, "-m", "deblur", "predict", *names, "-o", str(out), "-m", identity]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    (line,) = lines
    kept = sorted(p.name for p in out.iterdir())
    assert kept and kept == names[: len(kept)]  # earlier outputs kept, whole, no temp files
    for name in kept:
        Image.open(out / name).load()
    failed = names[len(kept)]
    assert f"cannot write {(out / failed).resolve()} (No space left on device)" in line
    assert f"not attempted: {', '.join(names[len(kept) + 1 :])}" in line
