"""ONNX: export a checkpoint with free batch, height and width, and run it in ONNX Runtime.

The exporter is torch's TorchScript-based one (``dynamo=False``). The newer torch.export
path turns the models' pad-to-a-multiple branch (``if -h % multiple``) into a guard on the
input size, so its graph rejects every size of the other kind; tracing records the pad
amounts as shape arithmetic instead, which ONNX keeps dynamic. The trace follows the pad
branch only if the example needs padding, so the example is never a multiple.

Running the file is deblur.spec's (``OnnxModel``), so every command that takes ``--model``
takes an export, and tiles and blends ONNX Runtime's output exactly as PyTorch's.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deblur import kinds, models, spec
from deblur.errors import DeblurError
from deblur.fsutil import atomic_path
from deblur.spec import ONNX_INPUT as INPUT
from deblur.spec import ONNX_OUTPUT as OUTPUT

OPSET = 17
TOLERANCE = 1e-4  # float32 kernels differ in summation order, not in substance
AXES = {0: "batch", 2: "height", 3: "width"}


def _example(multiple: int, batch: int, k: int, seed: int) -> torch.Tensor:
    """A batch with odd sides, never a multiple (so the trace takes the pad branch), each
    over twice the multiple (reflection needs a pad smaller than the side)."""
    h = 2 * multiple + 1 + 2 * k
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, h + 2 * multiple, generator=g)


def _metadata(payload: dict, multiple: int) -> dict[str, str]:
    return {
        "deblur.kind": payload["kind"],
        "deblur.arch": json.dumps(payload["arch"]),
        "deblur.multiple": str(multiple),
        "deblur.io": "float32 NCHW RGB in [0, 1] -> same shape",
    }


def _trace(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice and the tracer's note on the pad
        # branch: both expected, both explained in the module docstring.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: AXES, OUTPUT: AXES},
        )


def _annotate(path: Path, metadata: dict[str, str]) -> None:
    """Record what the graph is in the file itself, so a runtime needs nothing else."""
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def compare(model: nn.Module, path: Path, multiple: int) -> list[tuple[tuple[int, ...], float]]:
    """Max |PyTorch - ONNX Runtime| on two sizes neither traced nor a multiple, raw session."""
    session = spec.onnx_session(path)
    diffs = []
    for batch, k, seed in ((1, 3, 1), (2, multiple + 1, 2)):
        x = _example(multiple, batch, k, seed)
        with torch.inference_mode():
            want = model(x).numpy()
        got = session.run(None, {INPUT: x.numpy()})[0]
        if got.shape != want.shape:
            raise DeblurError(f"ONNX output has shape {got.shape}, PyTorch {want.shape}")
        diffs.append((tuple(x.shape), float(np.abs(got - want).max())))
    return diffs


def export_onnx(model_spec: str, out: str | os.PathLike | None = None) -> tuple[Path, list]:
    """Export ``model_spec`` (as `deblur predict --model` takes it) to ONNX, checked.

    The file is written only if ONNX Runtime reproduces PyTorch on two fresh sizes.
    Returns the path and the (shape, max abs difference) of each check.
    """
    checkpoint = spec.resolve(model_spec)
    if checkpoint.suffix == ".onnx":
        raise DeblurError(f"{checkpoint} is already ONNX; pass a .pt checkpoint or gan/ae")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = models.load(checkpoint)
    multiple = int(model.multiple)
    out = Path(out) if out else default_output(model_spec, checkpoint, payload["kind"])
    with atomic_path(out) as tmp:
        _trace(model, _example(multiple, 1, 0, 0), tmp)
        _annotate(tmp, _metadata(payload, multiple))
        diffs = compare(model, tmp, multiple)
        worst = max(d for _, d in diffs)
        if worst > TOLERANCE:
            raise DeblurError(
                f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {TOLERANCE:g}); "
                f"{out} not written"
            )
    return out, diffs


def default_output(model_spec: str, checkpoint: Path, kind: str) -> Path:
    """Next to a local checkpoint; a registry model lands in ./<registered name>.onnx."""
    if spec.is_registry(model_spec):
        return Path(f"{kinds.registered_name(kind)}.onnx")
    return checkpoint.with_suffix(".onnx")
