"""A registered model behind `mlflow models serve`, over HTTP, on two image sizes.

The REST request is MLflow's tensor form, ``{"inputs": N x 3 x H x W nested lists}``; the
answer is ``{"predictions": ...}`` of the same shape (mlflow/pyfunc/scoring_server).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from servers import free_port, running
from tiny_models import random_image, save_tiny

from deblur import config, infer, tracking

BIN = Path(sys.executable).parent
START_TIMEOUT = 120  # importing mlflow and torch in a fresh process, on a busy machine


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """deblur-gan v1 @champion in a fresh SQLite store, from a tiny checkpoint.

    -> (the store's folder, the model). Registering takes seconds: once for the module.
    """
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        model = save_tiny(ckpt := root / "models" / "gan.pt", "gan")
        with tracking.stage_run("train-gan", config.parse({}), sections=("seed",)):
            mv = tracking.register_trained("gan", ckpt)
        tracking.client().set_registered_model_alias("deblur-gan", "champion", mv.version)
    return root, model


@pytest.fixture
def champion(store, monkeypatch):
    """The store as this test's cwd and tracking URI, with no models/ to fall back on."""
    root, model = store
    monkeypatch.chdir(root / "models")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return model


def invoke(url: str, batch: np.ndarray) -> np.ndarray:
    body = json.dumps({"inputs": batch.tolist()}).encode()
    req = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return np.asarray(json.load(resp)["predictions"], dtype=np.float32)


def test_demo_page_serves_the_champion(champion):
    from deblur.serve.app import find_model

    served = find_model("gan", torch.device("cpu"))
    assert served.source == "deblur-gan v1 @champion (MLflow registry)"
    image = random_image(29, 31)
    np.testing.assert_array_equal(
        infer.deblur_image(served.model, image), infer.deblur_image(champion, image)
    )
    assert find_model("ae", torch.device("cpu")).model is None  # no champion, no models/ae.pt


def test_champion_serves_any_image_size(champion, store):
    root = store[0]
    log = root / f"serve-{os.getpid()}.log"  # a file, not a pipe nobody drains
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/deblur-gan@champion"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # mlflow execs `uvicorn` by name: the venv's, as an activated venv would find it.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with running(cmd, url, "/ping", log, timeout=START_TIMEOUT, env=env, cwd=root):
        # 24x32 is the logged input example's size; 37x53 is not, nor a multiple of 4.
        for h, w in [(24, 32), (37, 53)]:
            images = [random_image(h, w, seed) for seed in (1, 2)]
            batch = np.stack([im.transpose(2, 0, 1) for im in images]).astype(np.float32) / 255
            got = invoke(url, batch)
            assert got.shape == (2, 3, h, w)
            for image, result in zip(images, got, strict=True):
                want = infer.deblur_image(champion, image).transpose(2, 0, 1)
                assert np.abs(result - want).max() < 1e-5, (h, w)
