"""A team's setup: a real `mlflow server` on 127.0.0.1 with a database and an artifact root."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(1)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
