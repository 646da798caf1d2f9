"""What one `dvc repro` logs to MLflow, opened as the stages open it, and registry versions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from deblur import config, fsutil
from deblur.evaluate.log import log_evaluation
from deblur.tracking import runs, store


def scores(gan_psnr: float, ae_psnr: float) -> dict:
    def model(psnr, ms):
        return {"psnr": psnr, "ssim": 0.76, "gain_db": psnr - 25.66, "ms_per_mp": ms, "images": 4}

    return {
        "gan": model(gan_psnr, 1300.0),
        "ae": model(ae_psnr, 690.0),
        "blurry": {"psnr": 25.66, "ssim": 0.75, "images": 4},
    }


def dump(params: config.Params) -> dict:
    return params.model_dump(mode="json", by_alias=True)


def pipeline(params, metrics: dict, tags: dict | None = None) -> str:
    """What one `dvc repro` logs: both trainings and evaluate. Returns evaluate's id."""
    empty = pd.DataFrame({"model": ["gan"], "psnr": [1.0]})
    for kind in ("gan", "ae"):
        with runs.stage_run(f"train-{kind}", {"train": dump(params)["train"]}):
            runs.log_epoch({"val_psnr": 25.0}, step=1)
    run_id, _ = log_evaluation(dump(params), empty, empty, metrics, tags or {})
    return run_id


def registered(kind: str, checkpoint: Path) -> str:
    """A registry version tagged with the checkpoint's digest, as training registers it."""
    c = store.client()
    name = f"deblur-{kind}"
    if not c.search_registered_models(f"name='{name}'"):
        c.create_registered_model(name)
    mv = c.create_model_version(name, source=str(checkpoint.parent))
    c.set_model_version_tag(name, mv.version, "checkpoint_sha256", fsutil.sha256(checkpoint))
    return str(mv.version)


def private_copy(tracking_root: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of a tracking store's project folder as the cwd and tracking URI, with an
    empty registry-model cache: a test may change aliases without touching the original."""
    root = tmp_path / "project"
    shutil.copytree(tracking_root, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root
