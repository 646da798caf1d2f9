"""params.yaml -> typed, validated settings.

Every tunable number of the pipeline is declared here once, with its type and range, so a
typo in params.yaml stops the run with one line naming the key and what it accepts instead
of surfacing as a shape error twenty minutes into training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deblur.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


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
    frames: int = Field(9, ge=3, le=31, description="frames averaged into one blurry image")
    shift: float = Field(14.0, ge=0.0, description="mean camera travel during one exposure (px)")
    rotation: float = Field(1.0, ge=0.0, le=30.0, description="max in-plane rotation (degrees)")
    zoom: float = Field(0.02, ge=0.0, le=0.5, description="max relative zoom over the exposure")
    noise: float = Field(0.004, ge=0.0, le=0.2, description="sensor noise std (linear light)")


class DataConfig(Strict):
    source: Literal["synthetic", "gopro", "folder"] = "synthetic"
    name: str = Field("synthetic", pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = "https://cv.snu.ac.kr/~snah/Deblur/dataset/GOPRO_Large.zip"
    sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$")
    folder: str | None = None
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _source_needs(self) -> DataConfig:
        if self.source == "gopro" and not self.sha256:
            raise ValueError(
                "data.sha256 must be the archive's 64-hex SHA-256 when data.source is gopro"
            )
        if self.source == "folder" and not self.folder:
            raise ValueError("data.folder must name a local GoPro-layout copy for source folder")
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


class GeneratorConfig(Strict):
    """GAN generator: strided encoder, residual blocks, decoder, global residual skip."""

    channels: int = Field(32, ge=4, description="width of the first level")
    n_down: int = Field(2, ge=0, le=5, description="stride-2 downsamplings")
    n_res: int = Field(6, ge=0, le=64, description="residual blocks at the lowest level")


class DiscriminatorConfig(Strict):
    """PatchGAN-style: conv + batch norm + LeakyReLU, sigmoid real/fake per patch."""

    channels: int = Field(32, ge=4)
    n_layers: int = Field(3, ge=1, le=6)


class AutoencoderConfig(Strict):
    """Encoder with growing depth, dilated bottleneck, attention decoder with skips."""

    channels: int = Field(32, ge=4, description="width of the first level")
    depth: int = Field(3, ge=1, le=5, description="stride-2 downsamplings")
    dilations: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1)
    attention: bool = True


# --------------------------------------------------------------------------- training


class OptimConfig(Strict):
    """What both trainers share: loss, schedule, batch."""

    epochs: int = Field(8, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(128, ge=16, description="random crop side at full resolution")
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, gt=0.0)
    content_loss: Literal["l1", "charbonnier"] = "charbonnier"
    fft_weight: float = Field(0.05, ge=0.0, description="frequency-domain L1 weight")
    perceptual_weight: float = Field(0.0, ge=0.0)
    vgg_weights: str | None = Field(
        None, description="local VGG19 state-dict file for the perceptual loss (never downloaded)"
    )
    val_images: int = Field(8, ge=1, description="held-out train images scored each epoch")

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
    tile: int = Field(512, ge=32, description="inference tile side; larger images are tiled")
    overlap: int = Field(32, ge=0, description="tile overlap, blended to hide seams")
    baseline: Literal["unsharp", "wiener", "richardson_lucy"] = "unsharp"
    samples: int = Field(4, ge=1, le=16, description="triptychs drawn in the report")


class Params(Strict):
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def section_hash(self, *keys: str) -> str:
        """A short, stable hash of the named sections, to tag runs with what produced them."""
        dump = self.model_dump(mode="json", by_alias=True)
        blob = json.dumps({k: dump[k] for k in keys} if keys else dump, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _describe(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in error["loc"] if p != "validate_") or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'; remove it or fix its spelling"
    if kind == "value_error":
        return f"{source}: {error['msg'].removeprefix('Value error, ')}"
    got = error.get("input")
    return f"{source}: {key}: {error['msg']} (got {got!r})"


def parse(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError with one readable line on the first problem."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], source)) from None


def load(path: str | Path | None = None) -> Params:
    """Read and validate params.yaml (or ``path``)."""
    path = Path(path) if path else DEFAULT_PARAMS
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse(raw, str(path))
