"""A model spec -> a loaded model: the one place that knows what `--model` accepts.

A spec is ``gan`` or ``ae`` (the pipeline's models/<kind>.pt), a checkpoint file (*.pt),
an ONNX export (*.onnx, run in ONNX Runtime behind the same module interface) or a
registry URI (``models:/deblur-gan@champion``, ``runs:/...``). predict, evaluate, the
report, the demo server, export and bench all resolve models here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblur import kinds, models, paths
from deblur.errors import DeblurError
from deblur.models.blocks import pad_to_multiple
from deblur.tracking import registry

FORMS = (
    "gan, ae, a checkpoint path (*.pt), an ONNX export (*.onnx) "
    "or a registry URI (models:/deblur-gan@champion)"
)
ONNX_INPUT, ONNX_OUTPUT = "blurry", "sharp"


def is_registry(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(("models:/", "runs:/"))


def champion_uri(kind: str) -> str:
    return f"models:/{kinds.registered_name(kind)}@{registry.CHAMPION}"


def choose(kind: str) -> tuple[str, str] | None:
    """(spec, where it comes from, for people) of what serves ``kind`` by default: the
    registry's champion when the tracking store has one, else models/<kind>.pt; None when
    there is neither. predict's default and the demo server both ask this."""
    mv = registry.champion(kind)
    if mv is not None:
        name = kinds.registered_name(kind)
        return champion_uri(kind), f"{name} v{mv.version} @{registry.CHAMPION} (MLflow registry)"
    path = paths.checkpoint(kind)
    if path.is_file():
        return kind, f"{path} (pipeline checkpoint)"
    return None


def default(kind: str) -> str:
    """The spec ``choose`` picks, or ``kind`` itself (whose loading then says what is missing)."""
    chosen = choose(kind)
    return chosen[0] if chosen else kind


def resolve(spec: str | os.PathLike) -> Path:
    """A spec -> the local model file it names (downloaded first for a registry URI)."""
    text = str(spec)
    if text in kinds.KINDS:
        path = paths.checkpoint(text)
        if not path.is_file():
            raise DeblurError(f"{path} not found; run `deblur train {text}` (or `dvc repro`)")
        return path
    if is_registry(text):
        return registry.download_checkpoint(text)
    path = Path(text)
    if path.is_file():
        return path
    if path.suffix in (".pt", ".onnx"):
        raise DeblurError(f"checkpoint {path} not found")
    raise DeblurError(f"unknown model '{text}'; use {FORMS}")


def load(spec: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A spec -> a model for infer.deblur_image: NCHW float tensor in, same shape out."""
    path = resolve(spec)
    if path.suffix == ".onnx":
        return OnnxModel(path)
    return models.load(path, device=device)


# --------------------------------------------------------------------------- ONNX Runtime


def onnx_session(path: Path):
    import onnxruntime as ort

    try:
        # CPU explicitly: the GPU build lists CUDA first and fails if its libraries are off.
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for every kind of bad file
        reason = str(exc).splitlines()[0][:160]
        raise DeblurError(
            f"{path} is not a loadable ONNX model ({reason}); export it with `deblur export`"
        ) from None


class OnnxModel(nn.Module):
    """An ONNX Runtime session that quacks like a deblur model: NCHW float tensor in, out.

    The input is padded to the model's multiple here, with the very function the PyTorch
    model uses: in the graph the pad is a reflection, which a side smaller than the pad
    (a tiny image) cannot take, and PyTorch switches to edge padding for those. Padding
    first gives the same pixels, since the model crops back to the input size either way.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(self.path)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "deblur.multiple" not in meta:
            raise DeblurError(f"{self.path} was not exported by `deblur export`; re-export it")
        self.kind = meta["deblur.kind"]
        self.multiple = int(meta["deblur.multiple"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x.detach().float().cpu(), self.multiple)
        out = self.session.run(None, {ONNX_INPUT: np.ascontiguousarray(padded.numpy())})[0]
        return torch.from_numpy(out[..., :h, :w]).to(x.device)
