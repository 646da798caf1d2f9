"""The synthetic GoPro-style renderer: physics of the blur, determinism, no leakage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from deblur.config import SyntheticConfig
from deblur.data import synthetic
from deblur.data.manifest import scan

SMALL = SyntheticConfig(
    train_scenes=2, test_scenes=1, pairs_per_scene=2, height=40, width=56, frames=5
)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, tiny_params, _tiny_raw):
    # _tiny_raw was rendered in-process; this one in two worker processes.
    synthetic.render(tiny_params.data.synthetic, tiny_params.seed, tmp_path / "again", workers=2)
    assert _digest(tmp_path / "again") == _digest(_tiny_raw)


def test_other_seed_other_images(tmp_path):
    synthetic.render(SMALL, 0, tmp_path / "a", workers=1)
    synthetic.render(SMALL, 1, tmp_path / "b", workers=1)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")


def test_gopro_layout_and_psnr(tmp_path):
    psnr = synthetic.render(SMALL, 0, tmp_path, workers=1)
    pairs = scan(tmp_path)
    assert len(pairs) == 6
    assert all(p.blur and p.sharp for p in pairs)
    assert {p.split for p in pairs} == {"train", "test"}
    assert all(p.frame.isdigit() and len(p.frame) == 6 for p in pairs)
    assert set(psnr) == {"train", "test"} and all(15 < v < 45 for v in psnr.values())


def test_train_and_test_come_from_different_photos(_tiny_raw):
    assert not set(synthetic.TRAIN_PHOTOS) & set(synthetic.TEST_PHOTOS)
    assert "clock_motion.png" not in synthetic.PHOTOS.values()
    for name in synthetic.PHOTOS.values():  # all inside the wheel: nothing to download
        assert (synthetic.photo_dir() / name).is_file()
    photo_of = {s.name: s.photo for s in synthetic.scenes(SMALL)}
    for pair in scan(_tiny_raw):
        photos = synthetic.TEST_PHOTOS if pair.split == "test" else synthetic.TRAIN_PHOTOS
        assert pair.scene.rsplit("_", 1)[0] in photos
    assert set(photo_of) == {s.name for s in synthetic.scenes(SMALL)}


def _motion(cfg: SyntheticConfig, seed: int = 3) -> synthetic.Motion:
    return synthetic.Motion.sample(np.random.default_rng(seed), cfg)


def test_blur_is_mean_of_frames_in_linear_light_and_sharp_the_middle():
    cfg = SMALL.model_copy(update={"noise": 0.0, "shift": 12.0, "frames": 7})
    photo = synthetic.load_photo("astronaut")
    corner = np.array([100.0, 120.0])
    motion = _motion(cfg)
    frames = np.stack(list(synthetic.frames(photo, corner, 1.0, motion, cfg)))
    blur, sharp = synthetic.render_pair(photo, corner, 1.0, motion, cfg, np.random.default_rng())

    assert np.array_equal(blur, synthetic.to_uint8(frames.mean(axis=0)))
    assert np.array_equal(sharp, synthetic.to_uint8(frames[cfg.frames // 2]))
    # The middle frame is the photo itself, pixel for pixel: no resampling softness.
    crop = photo[100 : 100 + cfg.height, 120 : 120 + cfg.width]
    assert np.array_equal(sharp, synthetic.to_uint8(crop))
    # Averaging gamma-encoded frames instead would give a visibly different image.
    gamma_mean = np.round(np.mean([synthetic.to_uint8(f) for f in frames], axis=0))
    assert np.abs(blur.astype(float) - gamma_mean).max() >= 2


def test_path_is_smooth_and_centred_on_the_middle_frame():
    cfg = SyntheticConfig(shift=10.0)
    for seed in range(20):
        motion = _motion(cfg, seed)
        times = np.linspace(-1, 1, cfg.frames)
        offsets = np.array([motion.at(t)[1] for t in times])
        assert np.abs(offsets.mean(axis=0)).max() < 0.5  # sharp = centre of the blur
        steps = np.diff(offsets, axis=0)
        speeds = np.linalg.norm(steps, axis=1)
        assert speeds.max() < 2.0 * speeds.min()  # steady, not a random walk
        travel = np.linalg.norm(offsets[-1] - offsets[0])
        assert 0.3 * cfg.shift < travel < 2.0 * cfg.shift


def test_noise_is_gentle_in_the_dark():
    rng = np.random.default_rng(0)
    dark = np.full((64, 64, 3), 0.001)
    noisy = synthetic.to_uint8(dark + synthetic.sensor_noise(dark, 0.004, rng))
    assert noisy.astype(float).std() < 2.0  # grey levels, after gamma


def test_frames_must_be_odd():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="odd"):
        SyntheticConfig(frames=8)
