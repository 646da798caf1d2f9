"""Shared fixtures: tiny params, and a project folder with a tiny rendered dataset in it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from deblur import config

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Registry models the tests load are cached in a temporary folder, not ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


REPO = Path(__file__).resolve().parents[1]

# Small enough to render, validate and preprocess in a second or two.
TINY = {
    "seed": 0,
    "data": {
        "synthetic": {
            "train_scenes": 3,
            "test_scenes": 2,
            "pairs_per_scene": 2,
            "height": 48,
            "width": 64,
            "frames": 5,
            "noise": 0.002,  # at 48x64 some crops are smooth enough for noise to rival blur
        }
    },
    "validate": {"min_train_pairs": 2, "min_test_pairs": 2},
    "train": {"val_fraction": 0.34},
}


@pytest.fixture
def tiny_params() -> config.Params:
    return config.parse(TINY)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project root (params.yaml = TINY, the expectation suites), as the cwd."""
    shutil.copytree(REPO / "pipeline" / "expectations", tmp_path / "pipeline" / "expectations")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def _tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY synthetic dataset, rendered once per session (read-only: copy it)."""
    from deblur.data import synthetic

    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    params = config.parse(TINY)
    synthetic.render(params.data.synthetic, params.seed, root, workers=1)
    return root


@pytest.fixture
def tiny_project(project: Path, _tiny_raw: Path) -> Path:
    """``project`` with the TINY dataset in data/raw/synthetic, as `deblur download` makes it."""
    shutil.copytree(_tiny_raw, project / "data" / "raw" / "synthetic")
    return project


# ----------------------------------------------------------------- trained-model fixtures

SMOKE = REPO / "pipeline" / "profiles" / "smoke.yaml"


def _smoke_raw(**train_overrides) -> dict:
    """The smoke profile as a dict, trimmed to a few seconds of training per model."""
    raw = config.load_raw(SMOKE)
    for kind in ("gan", "ae"):
        raw["train"][kind].update(epochs=2, steps_per_epoch=3, batch_size=2, crop=32)
        raw["train"][kind].update(train_overrides)
    raw["train"]["num_workers"] = 0
    return raw


@pytest.fixture(scope="session")
def smoke_params():
    """A factory: smoke_params(epochs=1, ...) -> params dict with those training overrides."""
    return _smoke_raw


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A smoke-profile project with data/processed built by the real data stages (read-only)."""
    from deblur.data import download, preprocess, validate

    root = tmp_path_factory.mktemp("prepared")
    old = os.getcwd()
    os.chdir(root)
    try:
        shutil.copytree(REPO / "pipeline", root / "pipeline")
        params = config.parse(_smoke_raw())
        download.run(params.data, params.seed)
        validate.run(params.validate_, params.data.name)
        preprocess.run(params.preprocess)
    finally:
        os.chdir(old)
    return root


@pytest.fixture
def trained_project(prepared, tmp_path, monkeypatch) -> Path:
    """A private copy of ``prepared`` as the cwd, with its own MLflow store."""
    root = tmp_path / "proj"
    shutil.copytree(prepared, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return root
