"""The README's Python snippet for the registered model runs as printed, on a real registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tiny_models import save_tiny

from deblur.tracking import flavour, runs, store

README = Path(__file__).resolve().parents[1] / "README.md"


def _registry_snippet() -> str:
    """The one ```python block of README.md that loads the registered model."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    chosen = [b for b in blocks if "mlflow.pyfunc.load_model" in b]
    assert len(chosen) == 1, "README.md should show exactly one registered-model snippet"
    return chosen[0]


def test_the_readme_registry_snippet_deblurs_a_photo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    save_tiny(ckpt := tmp_path / "models" / "gan.pt", "gan")
    with runs.stage_run("train-gan", {"seed": 0}):
        mv = flavour.register_trained("gan", ckpt)
    store.client().set_registered_model_alias("deblur-gan", "champion", mv.version)
    # Not the input example's 32x24, and odd on both sides: the padding path runs too.
    pixels = np.random.default_rng(1).integers(0, 256, (53, 37, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)

    script = tmp_path / "snippet.py"
    script.write_text(_registry_snippet())
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(tmp_path / "sharp.png") as out:
        assert out.size == (37, 53)
        result = np.asarray(out.convert("RGB"))
    with Image.open(tmp_path / "photo.jpg") as src:
        assert not np.array_equal(result, np.asarray(src.convert("RGB"))), "the model ran"
