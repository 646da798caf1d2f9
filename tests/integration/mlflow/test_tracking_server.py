"""A team's setup: a real `mlflow server` on 127.0.0.1 with a database and an artifact root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.servers import free_port, running

BIN = Path(sys.executable).parent


@pytest.fixture
def server(tmp_path):
    port = free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}"]
    cmd += ["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running(cmd, url, "/health", tmp_path / "server.log"):
        yield url


def test_train_evaluate_promote_predict_through_a_tracking_server(
    prepared,
    smoke_params,
    server,
    tmp_path,
    monkeypatch,
):
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(prepared, root)
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(yaml.safe_dump(smoke_params(epochs=1)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}

    def deblur(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "deblur", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    for step in (["train", "ae"], ["train", "gan"], ["evaluate"]):
        proc = deblur(*step)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (root / "mlflow.db").exists(), "runs went to the server, not a local store"

    promoted = deblur("promote", "ae")
    assert promoted.returncode == 0 and "moved @champion to v1" in promoted.stdout

    photo = root / "in"
    photo.mkdir()
    src = next((root / "data" / "raw").rglob("blur/*.png"))
    shutil.copy(src, photo / "photo.png")
    out = deblur(
        "predict", str(photo), "-o", str(root / "out"), "--model", "models:/deblur-ae@champion"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (root / "out" / "photo.png").is_file()

    # Without --model, predict takes the GAN champion: no local checkpoint is needed.
    assert deblur("promote", "gan").returncode == 0
    (root / "models" / "gan.pt").unlink()
    default = deblur("predict", str(photo), "-o", str(root / "out2"))
    assert default.returncode == 0, default.stderr[-2000:]
    assert (root / "out2" / "photo.png").is_file()
