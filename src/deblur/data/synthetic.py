"""A GoPro-style dataset rendered offline from the photographs inside scikit-image's wheel.

GoPro (Nah et al., 2017) averaged 7-13 consecutive 240 fps frames of a hand-held camera in
linear light to make each blurry image and kept the middle frame as its sharp twin. We do the
same with a virtual camera: each scene is a window on one photograph that pans slowly from
pair to pair, and each pair is a burst of frames along a short, smooth camera path (shift,
in-plane rotation, slight zoom) that is symmetric in time around the middle frame, so the
sharp image sits at the centre of its blur, as it does in GoPro and as a network can learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from deblur.config import SyntheticConfig
from deblur.data.images import read_rgb, write_png
from deblur.data.parallel import imap
from deblur.errors import DataError
from deblur.metrics import psnr

# Photographs shipped inside the scikit-image wheel (never fetched: nothing here calls
# skimage.data.<name>(), which may download through pooch). clock_motion.png is left out on
# purpose: it is a real motion-blurred photo, kept for the report. The split is fixed here,
# by photograph, so no test scene ever shows a train photo; the two motorcycle views are one
# stereo scene and stay together in train.
PHOTOS = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "motorcycle-left": "motorcycle_left.png",
    "motorcycle-right": "motorcycle_right.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}
TEST_PHOTOS = ("chelsea", "coffee", "rocket")
TRAIN_PHOTOS = tuple(sorted(set(PHOTOS) - set(TEST_PHOTOS)))
SPLIT_PHOTOS = {"train": TRAIN_PHOTOS, "test": TEST_PHOTOS}

GAMMA = 2.2  # GoPro's camera response, undone before averaging and redone after (Nah et al.)
ACCEL = 0.15  # acceleration over the exposure, relative to the speed: a nearly steady hand
READ_NOISE = 0.05  # read-noise std relative to the shot-noise std at full white
PAN = 0.25  # how far a scene's window drifts from its first pair to its last (window sides)
SPLINE = 4  # source pixels a cubic spline reads beyond the point it interpolates, plus one
MIN_TEXTURE = 0.005  # mean |gradient| a window needs: skips black sky and retina's dark rim
TRIES = 16  # window placements tried per scene before settling for the best textured one


def photo_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


@cache  # a worker renders several scenes of each photo
def load_photo(name: str) -> np.ndarray:
    """A bundled photograph as float linear light in [0, 1], HxWx3."""
    path = photo_dir() / PHOTOS[name]
    if not path.is_file():
        raise DataError(f"scikit-image's bundled photo {path} is missing; reinstall scikit-image")
    return ((read_rgb(path) / 255.0) ** GAMMA).astype(np.float32)


def to_uint8(linear: np.ndarray) -> np.ndarray:
    """Linear light back to 8-bit gamma-encoded pixels."""
    return np.round(np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Motion:
    """One exposure's camera path, for t in [-1, 1] with the middle frame at t = 0.

    Offsets are in output pixels. Position v*t + a*t^2/2 passes through the identity at t = 0
    and, with |a| << |v|, keeps the path's centroid within a fraction of a pixel of it.
    """

    velocity: np.ndarray  # (dy, dx) travelled from t = 0 to t = 1: half the exposure
    accel: np.ndarray
    angle: float  # radians turned from t = 0 to t = 1
    zoom: float  # relative scale change from t = 0 to t = 1

    @classmethod
    def sample(cls, rng: np.random.Generator, cfg: SyntheticConfig) -> Motion:
        travel = cfg.shift * rng.uniform(0.5, 1.5)  # mean travel = cfg.shift
        direction = rng.uniform(0.0, 2.0 * math.pi)
        velocity = 0.5 * travel * np.array([math.sin(direction), math.cos(direction)])
        accel = ACCEL * 0.5 * travel * rng.uniform(-1.0, 1.0, size=2)
        angle = 0.5 * math.radians(cfg.rotation) * rng.uniform(-1.0, 1.0)
        zoom = 0.5 * cfg.zoom * rng.uniform(-1.0, 1.0)
        return cls(velocity, accel, angle, zoom)

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(2x2 linear map, shift) taking output offsets from the window centre at time t."""
        c, s = math.cos(self.angle * t), math.sin(self.angle * t)
        linear = (1.0 + self.zoom * t) * np.array([[c, -s], [s, c]])
        return linear, self.velocity * t + 0.5 * self.accel * t * t


def margin(cfg: SyntheticConfig) -> int:
    """Output pixels any frame can move a window corner: rendering never reads past this."""
    shift = 0.75 * cfg.shift * (1.0 + ACCEL)  # the most Motion.sample can travel in half
    radius = math.hypot(cfg.height, cfg.width) / 2.0
    turn = radius * (math.radians(cfg.rotation) / 2.0 + cfg.zoom / 2.0) * 1.05
    return math.ceil(shift + turn) + SPLINE


def frames(
    photo: np.ndarray, corner: np.ndarray, scale: float, motion: Motion, cfg: SyntheticConfig
) -> Iterator[np.ndarray]:
    """The burst, in linear light: each frame samples the full-resolution photo at its pose.

    ``corner`` is the source pixel under the window's top-left at t = 0; at scale 1 and an
    integer corner the middle frame is an exact crop of the photo.
    """
    shape = (cfg.height, cfg.width)
    centre = (np.array(shape, dtype=np.float64) - 1.0) / 2.0
    poses = [motion.at(t) for t in np.linspace(-1.0, 1.0, cfg.frames)]

    # Only the part of the photo the burst can see is spline-filtered: once per pair, not
    # once per frame, and not the whole photo.
    box = np.array([[0, 0], [0, shape[1] - 1], [shape[0] - 1, 0], [shape[0] - 1, shape[1] - 1]])
    seen = np.concatenate(
        [corner + scale * (centre + (box - centre) @ lin.T + off) for lin, off in poses]
    )
    lo = np.maximum(np.floor(seen.min(axis=0)).astype(int) - SPLINE, 0)
    hi = np.minimum(np.ceil(seen.max(axis=0)).astype(int) + SPLINE + 1, photo.shape[:2])
    window = photo[lo[0] : hi[0], lo[1] : hi[1]]
    coeffs = [ndimage.spline_filter(window[..., c], order=3, mode="mirror") for c in range(3)]

    for lin, off in poses:
        # affine_transform reads input index matrix @ o + offset for output index o.
        matrix = scale * lin
        offset = corner - lo + scale * (centre + off) - matrix @ centre
        yield np.stack([_sample(coef, matrix, offset, shape) for coef in coeffs], axis=-1)


def _sample(coeffs: np.ndarray, matrix, offset, shape) -> np.ndarray:
    return ndimage.affine_transform(
        coeffs, matrix, offset, output_shape=shape, order=3, mode="mirror", prefilter=False
    )


def render_pair(
    photo: np.ndarray,
    corner: np.ndarray,
    scale: float,
    motion: Motion,
    cfg: SyntheticConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 (blur, sharp) pair: the burst's mean plus sensor noise, and its middle frame."""
    total = np.zeros((cfg.height, cfg.width, 3))
    for k, frame in enumerate(frames(photo, corner, scale, motion, cfg)):
        total += frame
        if k == cfg.frames // 2:
            sharp = frame
    blur = total / cfg.frames
    return to_uint8(blur + sensor_noise(blur, cfg.noise, rng)), to_uint8(sharp)


def sensor_noise(linear: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise plus a little read noise, ``level`` the std at full white (linear light).

    Noise that grows with the signal, as a sensor's does: a constant std would drown dark
    regions once gamma expands them (the darkest levels gain ~20x), making them noisier, not
    blurrier, than their sharp twin.
    """
    std = level * np.sqrt(np.clip(linear, 0.0, None) + READ_NOISE**2)
    return rng.normal(0.0, 1.0, size=linear.shape) * std


def _texture(photo: np.ndarray, corner: np.ndarray, size: np.ndarray) -> float:
    """Mean gradient magnitude of a window (gamma space, gray): low on sky and black rims."""
    y, x = corner.astype(int)
    h, w = np.ceil(size).astype(int)
    gray = photo[y : y + h, x : x + w].mean(axis=-1) ** (1.0 / GAMMA)
    gy, gx = np.gradient(gray)
    return float(np.mean(np.hypot(gy, gx)))


@dataclass(frozen=True)
class Scene:
    split: str
    index: int
    photo: str

    @property
    def name(self) -> str:
        return f"{self.photo}_{self.index:03d}"

    def rng(self, seed: int) -> np.random.Generator:
        # One stream per scene: a scene's pixels depend on the seed and on nothing else, so
        # adding scenes or reordering the loop never changes the ones already rendered.
        return np.random.default_rng([seed, list(SPLIT_PHOTOS).index(self.split), self.index])


def scenes(cfg: SyntheticConfig) -> list[Scene]:
    """Every scene of both splits, the photos dealt round-robin within each split."""
    counts = {"train": cfg.train_scenes, "test": cfg.test_scenes}
    return [
        Scene(split, i, SPLIT_PHOTOS[split][i % len(SPLIT_PHOTOS[split])])
        for split in SPLIT_PHOTOS
        for i in range(counts[split])
    ]


def _place(
    photo: np.ndarray, cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale and first/last window corners of a scene: whole window + margin inside the photo."""
    m = margin(cfg)
    need = np.array([cfg.height + 2 * m, cfg.width + 2 * m], dtype=np.float64)
    room_px = np.array(photo.shape[:2], dtype=np.float64) - 1.0
    # Photos smaller than the window are magnified (softer); others are used at full size.
    scale = float(min(1.0, *(room_px / need)))
    room = room_px - need * scale
    size = np.array([cfg.height, cfg.width]) * scale

    best, best_texture = None, -1.0
    for _ in range(TRIES):
        start = np.round(rng.uniform(0.0, 1.0, size=2) * room) + m * scale
        texture = _texture(photo, start, size)
        if texture > best_texture:
            best, best_texture = start, texture
        if texture >= MIN_TEXTURE:
            break
    heading = rng.uniform(0.0, 2.0 * math.pi)
    pan = PAN * min(cfg.height, cfg.width) * scale
    pan = pan * np.array([math.sin(heading), math.cos(heading)])
    end = np.clip(np.round(best + pan), m * scale, room + m * scale)
    return scale, best, end


def render_scene(
    scene: Scene, cfg: SyntheticConfig, seed: int, out: Path, photo: np.ndarray
) -> list[float]:
    """Write one scene's pairs under out/<split>/<scene>/{blur,sharp}; return their PSNRs."""
    rng = scene.rng(seed)
    scale, start, end = _place(photo, cfg, rng)
    psnrs = []
    for j in range(cfg.pairs_per_scene):
        step = j / max(cfg.pairs_per_scene - 1, 1)
        corner = np.round(start + step * (end - start))
        blur, sharp = render_pair(photo, corner, scale, Motion.sample(rng, cfg), cfg, rng)
        folder = out / scene.split / scene.name
        write_png(folder / "blur" / f"{j:06d}.png", blur)
        write_png(folder / "sharp" / f"{j:06d}.png", sharp)
        psnrs.append(psnr(blur, sharp))
    return psnrs


def _render_one(scene: Scene, cfg: SyntheticConfig, seed: int, out: Path) -> list[float]:
    return render_scene(scene, cfg, seed, out, load_photo(scene.photo))


def render(cfg: SyntheticConfig, seed: int, out: Path, workers: int | None = None) -> dict:
    """Render the whole dataset into ``out`` (GoPro layout); return mean blurry PSNR per split.

    Scenes render in parallel processes; each has its own random stream, so the bytes written
    do not depend on the number of workers.
    """
    todo = scenes(cfg)
    job = partial(_render_one, cfg=cfg, seed=seed, out=out)
    psnrs = list(imap(job, todo, "render", "pair", workers, weight=cfg.pairs_per_scene))
    by_split: dict[str, list[float]] = {split: [] for split in SPLIT_PHOTOS}
    for scene, values in zip(todo, psnrs, strict=True):
        by_split[scene.split] += values
    return {split: float(np.mean(values)) for split, values in by_split.items() if values}
