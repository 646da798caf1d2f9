"""The two deblurring models, their checkpoints and their size.

kind "gan" is the GAN's generator (the part used for inference; the discriminator only
exists during training), kind "ae" the attention autoencoder. Both map NCHW floats in
[0, 1] of any height and width to the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from deblur import kinds
from deblur.config import AutoencoderConfig, DiscriminatorConfig, GeneratorConfig, Params
from deblur.errors import ConfigError, DeblurError
from deblur.models.autoencoder import Autoencoder
from deblur.models.gan import Discriminator, Generator

__all__ = [
    "Autoencoder",
    "Discriminator",
    "Generator",
    "arch_config",
    "build",
    "build_discriminator",
    "checkpoint_dict",
    "count_params",
    "describe",
    "load",
    "macs_per_megapixel",
    "unwrap",
]

FORMAT = 1
# Each kind of deblur.kinds: its module and its architecture's params section.
ARCHS = {"gan": (Generator, GeneratorConfig), "ae": (Autoencoder, AutoencoderConfig)}


def _kind(kind: str) -> tuple[type[nn.Module], type[BaseModel]]:
    return ARCHS[kinds.check(kind)]


def _validate(schema: type[BaseModel], config: BaseModel | Mapping[str, Any], what: str):
    if isinstance(config, schema):
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump()
    try:
        return schema.model_validate(dict(config))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{what}: {key}: {err['msg']}") from None


def build(kind: str, config: BaseModel | Mapping[str, Any]) -> nn.Module:
    """A fresh model of ``kind`` from its arch config (pydantic object or plain dict)."""
    cls, schema = _kind(kind)
    return cls(_validate(schema, config, f"{kind} architecture"))


def build_discriminator(config: DiscriminatorConfig | Mapping[str, Any]) -> Discriminator:
    return Discriminator(_validate(DiscriminatorConfig, config, "discriminator"))


def arch_config(kind: str, cfg: BaseModel) -> BaseModel:
    """The architecture section of ``kind``'s training section (params train.<kind>)."""
    _kind(kind)
    return cfg.generator if kind == "gan" else cfg.autoencoder


# --------------------------------------------------------------------------- checkpoints


def unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the model in .module, torch.compile in ._orig_mod.
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return unwrap(inner)
    return model


def checkpoint_dict(kind: str, model: nn.Module, arch: BaseModel | Mapping[str, Any]) -> dict:
    """What ``load`` needs, in types ``torch.load(weights_only=True)`` accepts.

    Tensors are moved to the CPU so the file loads on a machine without a GPU.
    """
    _, schema = _kind(kind)
    arch = _validate(schema, arch, f"{kind} architecture")
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return {"format": FORMAT, "kind": kind, "arch": arch.model_dump(mode="json"), "model": state}


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from its checkpoint alone (no params.yaml), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DeblurError(f"checkpoint {path} not found; train it (dvc repro) or fix the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a pickle with code in it, a text file...
        raise DeblurError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}); "
            "retrain it or point at a models/*.pt file"
        ) from None
    if not (
        isinstance(payload, dict)
        and payload.get("kind") in ARCHS
        and isinstance(payload.get("arch"), dict)
        and isinstance(payload.get("model"), dict)
    ):
        raise DeblurError(f"{path} is not a deblur checkpoint; point at a models/*.pt file")
    if payload.get("format") != FORMAT:
        raise DeblurError(
            f"{path} has checkpoint format {payload.get('format')!r}, this deblur reads "
            f"format {FORMAT}; retrain it with this version"
        )
    try:
        model = build(payload["kind"], payload["arch"])
        model.load_state_dict(payload["model"])
    except (DeblurError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0]
        raise DeblurError(
            f"{path} does not match its architecture ({reason}); retrain it"
        ) from None
    return model.to(device).eval()


# --------------------------------------------------------------------------- size


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in unwrap(model).parameters())


@torch.no_grad()
def macs_per_megapixel(model: nn.Module, side: int = 256) -> int:
    """Multiply-accumulates of one forward pass on a 1,000,000-pixel RGB image.

    Counted: every Conv2d, ConvTranspose2d and Linear (the layers that hold the
    arithmetic), measured with forward hooks on a ``side`` x ``side`` probe. Conv work is
    proportional to the pixel count, so it is scaled to 1e6 pixels; Linear layers here
    act on pooled vectors (attention gates), once per image, so they are not scaled.
    Not counted: activations, attention products, padding, pooling, additions.
    ``side`` must be a multiple of the model's downsampling, or padding inflates the count.
    """
    model = unwrap(model)
    per_pixel, per_image = 0, 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal per_pixel, per_image
        if isinstance(layer, nn.Linear):
            per_image += out.numel() * layer.in_features
        elif isinstance(layer, nn.ConvTranspose2d):  # each input value feeds k*k*c_out outputs
            k = layer.kernel_size[0] * layer.kernel_size[1]
            per_pixel += inputs[0].numel() * k * layer.out_channels // layer.groups
        else:
            k = layer.kernel_size[0] * layer.kernel_size[1]
            per_pixel += out.numel() * k * layer.in_channels // layer.groups

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        model(torch.rand(1, 3, side, side, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return round(per_pixel * 1e6 / (side * side)) + per_image


def describe(params: Params, as_json: bool = False) -> None:
    """Print each model's parameter count and MACs per megapixel (``deblur info``)."""
    gen = build("gan", arch_config("gan", params.train.gan))
    ae = build("ae", arch_config("ae", params.train.ae))
    disc = build_discriminator(params.train.gan.discriminator)
    sizes = {
        "gan": {
            "params": count_params(gen),
            "macs_per_mp": macs_per_megapixel(gen),
            "discriminator_params": count_params(disc),
        },
        "ae": {"params": count_params(ae), "macs_per_mp": macs_per_megapixel(ae)},
    }
    if as_json:
        print(json.dumps(sizes, indent=2))
        return
    rows = [
        ("gan generator", sizes["gan"]["params"], f"{sizes['gan']['macs_per_mp'] / 1e9:.2f}"),
        ("gan discriminator", sizes["gan"]["discriminator_params"], "(training only)"),
        ("ae", sizes["ae"]["params"], f"{sizes['ae']['macs_per_mp'] / 1e9:.2f}"),
    ]
    print(f"{'model':<18} {'params':>12} {'GMACs/MP':>16}")
    for name, n, macs in rows:
        print(f"{name:<18} {n:>12,} {macs:>16}")
