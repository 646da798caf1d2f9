"""`deblur predict --model models:/...`: a registered version is downloaded once, quietly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest
from PIL import Image
from support.mlflow_runs import private_copy
from support.tiny_models import random_image, save_tiny

from deblur.tracking import flavour, registry, runs, store


@pytest.fixture(scope="module")
def registered_store(tmp_path_factory):
    """deblur-gan v1 @champion in a fresh SQLite tracking store (its artifacts under mlruns/)."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        save_tiny(ckpt := root / "models" / "gan.pt", "gan")
        with runs.stage_run("train-gan", {"seed": 0}):
            mv = flavour.register_trained("gan", ckpt)
        store.client().set_registered_model_alias("deblur-gan", "champion", mv.version)
    return root


@pytest.fixture
def champion_project(registered_store, tmp_path, monkeypatch):
    return private_copy(registered_store, tmp_path, monkeypatch)


def _artifacts(root):
    return [p for p in root.iterdir() if p.is_dir() and p.name in ("mlruns", "mlartifacts")]


def test_a_registered_version_is_downloaded_once(champion_project, tmp_path):
    first = registry.download_checkpoint("models:/deblur-gan@champion")
    assert first.is_relative_to(tmp_path / "cache")
    before = first.read_bytes()
    stores = _artifacts(champion_project)
    assert stores, "the store keeps its artifacts beside mlflow.db"
    for folder in stores:  # with the artifacts gone, only the cache can answer
        shutil.rmtree(folder)
    assert registry.download_checkpoint("models:/deblur-gan@champion") == first
    assert registry.download_checkpoint("models:/deblur-gan/1") == first
    assert first.read_bytes() == before


def test_a_damaged_cache_entry_is_fetched_again(champion_project):
    first = registry.download_checkpoint("models:/deblur-gan/1")
    good = first.read_bytes()
    first.write_bytes(b"half a file")
    again = registry.download_checkpoint("models:/deblur-gan/1")
    assert again.read_bytes() == good


def test_predict_from_the_registry_twice_prints_no_library_noise(champion_project):
    Image.fromarray(random_image(24, 32)).save(champion_project / "shot.png")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    env.pop("PYTHONWARNINGS", None)

    def predict(out: str) -> subprocess.CompletedProcess:
        cmd = ["predict", "shot.png", "-o", out, "-m", "models:/deblur-gan@champion"]
        return subprocess.run(
            [sys.executable, "-m", "deblur", *cmd, "--device", "cpu"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    runs = [predict("first"), predict("second")]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower(), proc.stderr
        assert "Downloading artifacts" not in proc.stderr, proc.stderr
    for folder in _artifacts(champion_project):
        shutil.rmtree(folder)
    third = predict("third")  # from the cache alone
    assert third.returncode == 0, third.stderr
    assert (champion_project / "third" / "shot.png").is_file()


def test_registering_a_model_prints_no_mlflow_noise(champion_project, capfd):
    save_tiny(ckpt := champion_project / "models" / "again.pt", "gan", seed=3)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with runs.stage_run("train-gan", {"seed": 0}):
            flavour.register_trained("gan", ckpt)
    from_mlflow = [str(w.message)[:80] for w in seen if "mlflow" in w.filename]
    assert from_mlflow == []
    err = capfd.readouterr().err
    assert "CloudPickle" not in err, err
