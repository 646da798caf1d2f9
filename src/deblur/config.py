"""params.yaml -> typed, validated settings.

Every tunable number of the pipeline is declared here once, with its type and range, so a
typo in params.yaml stops the run with one line naming the key and what it accepts instead
of surfacing as a shape error twenty minutes into training.

The defaults below are params.yaml's values, key for key (tests/test_profiles.py compares
them value for value): a profile or a test that leaves a key out gets what the pipeline
runs with. params.yaml spells every key out because DVC tracks only the keys it names;
change a default in both places.

Each stage is handed its own section (``Params.data``, ``Params.train.gan``, ...); only
cli.py sees the whole ``Params``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deblur.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
# data.folder's default: dvc.yaml's download stage depends on the folder it names, and DVC
# cannot depend on a null path, so it names an unchanging placeholder (its README says so).
OWN_DATA_PLACEHOLDER = "pipeline/own-data"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data


class SyntheticConfig(Strict):
    """A GoPro-style dataset rendered from scikit-image's bundled photographs."""

    train_scenes: int = Field(24, ge=1, description="scenes cut from the train photographs")
    test_scenes: int = Field(8, ge=1, description="scenes cut from the test photographs")
    pairs_per_scene: int = Field(4, ge=1, description="blur/sharp pairs along each scene's path")
    height: int = Field(192, ge=32, le=2048)
    width: int = Field(256, ge=32, le=2048)
    frames: int = Field(9, ge=3, le=31, description="frames averaged into one blurry image (odd)")
    shift: float = Field(
        9.0, ge=0.0, le=256.0, description="mean camera travel during one exposure (px)"
    )
    rotation: float = Field(1.0, ge=0.0, le=30.0, description="max in-plane rotation (degrees)")
    zoom: float = Field(0.02, ge=0.0, le=0.5, description="max relative zoom over the exposure")
    noise: float = Field(0.004, ge=0.0, le=0.2, description="sensor noise std at white (linear)")

    @field_validator("frames")
    @classmethod
    def _odd(cls, frames: int) -> int:
        if frames % 2 == 0:
            raise ValueError("must be odd: the sharp image is the burst's middle frame")
        return frames


class DataConfig(Strict):
    source: Literal["synthetic", "gopro", "folder"] = "synthetic"
    name: str = Field(
        "synthetic",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="folder under data/raw: letters, digits, _ . - (a plain name, not a path)",
    )
    url: str = Field(
        "https://cv.snu.ac.kr/~snah/Deblur/dataset/GOPRO_Large.zip",
        pattern=r"^(https?|file)://",
        description="GOPRO_Large archive (.zip, .tar, .tar.gz): http(s):// or file://",
    )
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$", description="the archive's SHA-256")
    folder: str | None = Field(
        OWN_DATA_PLACEHOLDER, description="local copy in the GoPro layout (source folder)"
    )
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "gopro" and not self.sha256:
            raise ValueError("source gopro needs data.sha256, the archive's 64-hex SHA-256")
        if self.source == "folder" and self.folder in (None, "", OWN_DATA_PLACEHOLDER):
            raise ValueError("source folder needs data.folder, a local copy in the GoPro layout")
        return self


class ValidateConfig(Strict):
    min_train_pairs: int = Field(8, ge=1)
    min_test_pairs: int = Field(4, ge=1)
    sharper_fraction: float = Field(
        0.9, ge=0.0, le=1.0, description="share of pairs whose sharp side must be sharper"
    )


class ResizeConfig(Strict):
    """The seed's protocol: every image resized to a square before training/testing."""

    gan: int = Field(448, ge=16)
    ae: int = Field(224, ge=16)


class PreprocessConfig(Strict):
    protocol: Literal["crop", "resize"] = "crop"
    resize: ResizeConfig = ResizeConfig()


# --------------------------------------------------------------------------- models


class _Widths(Strict):
    """The width doubles at each stride-2 downsampling, up to max_channels.

    Doubling keeps every level's cost per pixel the same; the cap makes the lowest levels
    cheaper still, which is how a CPU-sized model affords many blocks at low resolution.
    """

    @model_validator(mode="after")
    def _cap_not_below_width(self):
        if self.max_channels < self.channels:
            raise ValueError("max_channels must be >= channels")
        return self


class GeneratorConfig(_Widths):
    """GAN generator: strided encoder, residual blocks, decoder, global residual skip."""

    channels: int = Field(16, ge=4, le=1024, description="width at full resolution")
    max_channels: int = Field(128, ge=4, le=2048, description="cap on the doubling width")
    n_down: int = Field(3, ge=0, le=5, description="stride-2 downsamplings")
    n_res: int = Field(4, ge=0, le=64, description="residual blocks at the lowest level")
    attention: bool = Field(
        True, description="channel + spatial attention in the lowest-level blocks"
    )


class DiscriminatorConfig(Strict):
    """PatchGAN: conv + batch norm + LeakyReLU, one real/fake logit per patch."""

    channels: int = Field(16, ge=4, le=1024, description="width of the first layer")
    n_layers: int = Field(3, ge=1, le=6, description="stride-2 convs; 3 scores 70x70 patches")


class AutoencoderConfig(_Widths):
    """Encoder with growing depth, dilated bottleneck, attention decoder with skips."""

    channels: int = Field(8, ge=4, le=1024, description="width at full resolution")
    max_channels: int = Field(128, ge=4, le=2048, description="cap on the doubling width")
    depth: int = Field(4, ge=1, le=5, description="stride-2 downsamplings")
    dilations: tuple[int, ...] = Field(
        (1, 2, 4), min_length=1, description="one residual block per dilation in the bottleneck"
    )
    attention: bool = Field(True, description="channel + spatial attention in the decoder")

    @model_validator(mode="after")
    def _dilations_positive(self):
        if min(self.dilations) < 1:
            raise ValueError("dilations must all be >= 1")
        return self


# --------------------------------------------------------------------------- training


class OptimConfig(Strict):
    """What both trainers share: loss, schedule, batch."""

    epochs: int = Field(8, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(128, ge=16, description="random crop side at full resolution")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="peak learning rate")
    lr_floor: float = Field(
        0.02, ge=0.0, le=1.0, description="learning rate at the last step, as a share of lr"
    )
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(0.1, gt=0.0)
    ema: float = Field(
        0.0, ge=0.0, lt=1.0, description="decay of the weights' moving average shipped; 0: off"
    )
    content_loss: Literal["l1", "charbonnier", "psnr"] = "charbonnier"
    fft_weight: float = Field(0.05, ge=0.0, description="frequency-domain L1 weight")
    perceptual_weight: float = Field(0.0, ge=0.0)
    vgg_weights: str | None = Field(
        None, description="local VGG19 state-dict file for the perceptual loss (never downloaded)"
    )
    val_images: int = Field(8, ge=1, description="held-out train images scored each epoch")
    curve: tuple[float, ...] = Field(
        (0.25, 0.5), description="shares of training at which a checkpoint is kept and scored"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16/fp16 autocast on CUDA, fp32 on a CPU; bf16: where native"
    )
    channels_last: bool = Field(True, description="NHWC activations on a CPU (always on CUDA)")
    compile: bool = Field(False, description="torch.compile the model for training")

    @field_validator("curve")
    @classmethod
    def _shares(cls, curve: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < share < 1.0 for share in curve):
            raise ValueError("each share must be between 0 and 1 (the end, 1, is always kept)")
        return tuple(sorted(set(curve)))

    @model_validator(mode="after")
    def _perceptual_needs_weights(self):
        if self.perceptual_weight > 0 and not self.vgg_weights:
            raise ValueError("perceptual_weight > 0 needs vgg_weights: a local VGG19 .pth file")
        return self


class GanTrainConfig(OptimConfig):
    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    adversarial: Literal["bce", "lsgan", "wgan-gp"] = "bce"
    adv_weight: float = Field(0.002, ge=0.0, description="adversarial vs content loss weight")
    d_lr: float = Field(2e-4, gt=0.0, le=1.0)
    gp_weight: float = Field(10.0, ge=0.0)


class AeTrainConfig(OptimConfig):
    epochs: int = Field(6, ge=1)
    autoencoder: AutoencoderConfig = AutoencoderConfig()


class TrainConfig(Strict):
    val_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="share of train scenes held out for validation"
    )
    num_workers: int = Field(1, ge=0, le=64)
    gan: GanTrainConfig = GanTrainConfig()
    ae: AeTrainConfig = AeTrainConfig()


# --------------------------------------------------------------------------- evaluation


class EvaluateConfig(Strict):
    protocol: Literal["full", "resize"] = "full"
    tile: int = Field(1280, ge=32, description="inference tile side; larger images are tiled")
    overlap: int = Field(32, ge=0, description="tile overlap, blended to hide seams")
    baseline: Literal["unsharp", "wiener", "richardson_lucy"] = "unsharp"
    samples: int = Field(4, ge=1, le=16, description="triptychs drawn in the report")
    # Also score each learned model with the flip self-ensemble (`predict --flips`), kept
    # apart from the results table (eval.json "options"): what it gains and what it costs
    # is a measured fact for the report, not a guess. It runs every model 4x more, so
    # false makes the stage quicker (the report then shows no options table).
    flips: bool = Field(True, description="score each model with --flips too (4x its time)")


# --------------------------------------------------------------------------- serving


class ServeConfig(Strict):
    """`deblur serve`: how much work the demo server admits (docs/architecture.md)."""

    max_waiting: int = Field(8, ge=0, le=1000, description="requests queued behind the running one")
    timeout_s: float = Field(120.0, gt=0.0, description="longest wait in the queue before refusal")
    keep_s: float = Field(300.0, gt=0.0, description="how long a finished job's result is kept")
    tile: int | None = Field(
        None, ge=32, description="tile side for served images; None: evaluate.tile"
    )
    max_uploads: int = Field(
        4, ge=1, le=1000, description="uploads being received at once; more get 503"
    )
    disk_mb: int = Field(
        1024, ge=64, description="uploads and results on disk, those in flight counted whole"
    )
    header_timeout_s: float = Field(
        10.0, gt=0.0, description="a request's line and headers must arrive within this"
    )
    body_timeout_s: float = Field(
        60.0, gt=0.0, description="an upload's whole body must arrive within this"
    )
    idle_timeout_s: float = Field(
        5.0, gt=0.0, description="a kept-alive connection with no request is closed after this"
    )
    allowed_hosts: list[str] = Field(
        [], description="Host names served besides the loopback ones (DNS rebinding guard)"
    )


# --------------------------------------------------------------------------- verification


class VerifyConfig(Strict):
    """`deblur verify`: how far a reproduced figure may move from the committed one."""

    psnr_tolerance: float = Field(0.2, ge=0.0, description="dB, what two CPUs may differ by")
    ssim_tolerance: float = Field(0.005, ge=0.0)


class Params(Strict):
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()
    verify: VerifyConfig = VerifyConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def section_hash(self, *keys: str) -> str:
        """A short, stable hash of the named sections, to tag runs with what produced them."""
        dump = self.model_dump(mode="json", by_alias=True)
        return params_hash({k: dump[k] for k in keys} if keys else dump)


def params_hash(tree: dict[str, Any]) -> str:
    """A short, stable hash of a params mapping (JSON types), to tag a run with its inputs."""
    blob = json.dumps(tree, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'gan': {'lr': 1}}} -> {'train.gan.lr': 1}: params as DVC and MLflow name them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in error["loc"] if p != "validate_") or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or fix its spelling"
    if kind == "value_error":
        where = f"{key}: " if error["loc"] else ""
        return f"{source}: {where}{error['msg'].removeprefix('Value error, ')}"
    got = error.get("input")
    return f"{source}: {key}: {error['msg']} (got {got!r})"


def parse(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError with one readable line on the first problem."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], source)) from None


PROFILES = Path("pipeline") / "profiles"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys put in, section by section (a list replaces a list)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A params file as a plain mapping; a profile's ``extends: FILE`` (relative to the
    profile) is read first and the profile's keys put over it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"params file {path} not found; run from the project root or pass --params"
        )
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: extends itself (through {_seen[-1]}); fix its extends")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    return merge(load_raw(path.parent / str(base), (*_seen, path.resolve())), raw)


def profile_path(name: str) -> Path:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml"))) or "none"
        raise ConfigError(f"no profile '{name}' in {PROFILES} (there are: {known})")
    return path


def render_profile(name: str) -> str:
    """Profile ``name`` over params.yaml as a whole params file, validated first."""
    path = profile_path(name)
    raw = load_raw(path)
    parse(raw, str(path))
    header = f"# params.yaml with {path} applied (deblur profile {name})\n"
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def load(path: str | Path | None = None) -> Params:
    """Read and validate params.yaml (or ``path``, a profile included)."""
    path = Path(path) if path else DEFAULT_PARAMS
    return parse(load_raw(path), str(path))
