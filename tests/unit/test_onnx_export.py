"""ONNX export: free batch/height/width, same numbers as PyTorch, usable by `deblur predict`."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from support.tiny_models import random_image, save_tiny

from deblur import predict as predicting
from deblur import spec
from deblur.data.images import write_png
from deblur.errors import DeblurError
from deblur.export import export_onnx
from deblur.spec import OnnxModel


@pytest.mark.parametrize("kind", ["gan", "ae"])
def test_round_trip_matches_pytorch(tmp_path, kind):
    model = save_tiny(ckpt := tmp_path / f"{kind}.pt", kind)
    path, diffs = export_onnx(str(ckpt), tmp_path / "out" / f"{kind}.onnx")
    assert path.is_file() and len(diffs) == 2
    assert max(d for _, d in diffs) < 1e-4

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]

    # Sizes the export never saw: a multiple of 4, tiny sides (edge padding), a batch of 3.
    onnx_model = OnnxModel(path)
    for shape in [(1, 3, 32, 48), (3, 3, 2, 5), (1, 3, 41, 9)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.inference_mode():
            want, got = model(x), onnx_model(x)
        assert got.shape == x.shape
        assert (got - want).abs().max().item() < 1e-4, shape


def test_predict_with_onnx_gives_the_same_pngs(tmp_path):
    save_tiny(ckpt := tmp_path / "gan.pt", "gan")
    onnx_path, _ = export_onnx(str(ckpt))
    assert onnx_path == tmp_path / "gan.onnx"
    for name, size in [("photo.png", (70, 90)), ("sliver.png", (3, 2))]:
        write_png(tmp_path / "in" / name, random_image(*size))
    for model, out in [(ckpt, "pt"), (onnx_path, "onnx")]:
        predicting.predict([tmp_path / "in"], tmp_path / out, spec=str(model), tile=64, overlap=16)
    for name in ["photo.png", "sliver.png"]:
        a = np.asarray(Image.open(tmp_path / "pt" / name), dtype=int)
        b = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, name


def test_export_cli_reports_the_check(tmp_path):
    save_tiny(tmp_path / "models" / "ae.pt", "ae")
    proc = subprocess.run(
        [sys.executable, "-m", "deblur", "export", "--format", "onnx", "--model", "ae"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("max |onnx - torch|") == 2
    assert "wrote models/ae.onnx" in proc.stdout
    assert (tmp_path / "models" / "ae.onnx").is_file()


def test_bad_inputs_are_user_errors(tmp_path):
    save_tiny(ckpt := tmp_path / "gan.pt", "gan")
    onnx_path, _ = export_onnx(str(ckpt))
    with pytest.raises(DeblurError, match="already ONNX"):
        export_onnx(str(onnx_path))
    (junk := tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(DeblurError, match="not a loadable ONNX model"):
        spec.load(junk)
    with pytest.raises(DeblurError, match="missing.onnx not found"):
        spec.load(tmp_path / "missing.onnx")
