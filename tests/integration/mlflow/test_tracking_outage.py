"""The tracking server going away mid-training. Decided: metrics are buffered (runlog.py).
Back within the patience: nothing lost. Never back: one line when logging starts failing,
then the stage stops with one line and its resume state; the next start closes the run
left RUNNING as FAILED and continues."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest
import yaml
from support.servers import free_port
from support.team_procs import Watched
from support.team_servers import mlflow_server

pytestmark = pytest.mark.slow
OUTAGE_S = 60  # how long the server stays away in the case that comes back


def _workspace(prepared, root, raw):
    shutil.copytree(prepared, root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def _train(root, url, patience: float):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"MLFLOW_TRACKING_URI": url, "PYTHONUNBUFFERED": "1"}
    env["DEBLUR_TRACKING_PATIENCE_S"] = str(patience)
    cmd = [sys.executable, "-m", "deblur", "train", "ae", "--device", "cpu"]
    return Watched(cmd, cwd=root, env=env)


def _client(url):
    from mlflow import MlflowClient

    return MlflowClient(url, url)


def test_a_server_that_comes_back_loses_nothing(prepared, smoke_params, tmp_path):
    root = _workspace(prepared, tmp_path / "w", smoke_params(epochs=4, steps_per_epoch=40))
    port, backend = free_port(), f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
    with mlflow_server(tmp_path / "server", backend, port=port) as url:
        training = _train(root, url, patience=300)
        training.wait_for("ae epoch 1:")
    # the server is gone (ended by its PID) for a minute while training goes on
    gone = time.monotonic()
    training.wait_for("unreachable since", timeout=120)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - gone)))
    with mlflow_server(tmp_path / "server", backend, port=port) as url:
        assert training.wait(timeout=600) == 0, training.tail
        assert "is back after" in training.out
        summary = yaml.safe_load((root / "run-info" / "train-ae.json").read_text())
        client = _client(url)
        run = client.get_run(summary["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_psnr")] == [
            1,
            2,
            3,
            4,
        ]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "step_loss")]
        assert steps == list(range(10, 161, 10)), "every point of the per-step curve arrived"
        assert summary["registered_version"] == 1


def test_a_server_that_never_returns_stops_with_one_line(prepared, smoke_params, tmp_path):
    root = _workspace(prepared, tmp_path / "w", smoke_params(epochs=4, steps_per_epoch=40))
    port, backend = free_port(), f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}"
    with mlflow_server(tmp_path / "server", backend, port=port) as url:
        training = _train(root, url, patience=5)
        training.wait_for("ae epoch 1:")
    gone = time.monotonic()
    code = training.wait(timeout=300)
    took = time.monotonic() - gone
    assert code == 1 and took < 60, (code, took, training.tail)
    assert "Traceback" not in training.out
    assert sum("unreachable since" in line for line in training.lines) == 1, training.tail
    (error,) = training.errors()
    assert "unreachable for" in error and "resume state in models/resume/ae" in error, error
    assert (root / "models" / "resume" / "ae" / "state.pt").is_file()

    with mlflow_server(tmp_path / "server", backend, port=port) as url:
        again = _train(root, url, patience=5)
        assert again.wait(timeout=600) == 0, again.tail
        assert "left RUNNING, as FAILED" in again.out and "resumed from step" in again.out
        client = _client(url)
        runs = client.search_runs(
            [client.get_experiment_by_name("deblur").experiment_id],
            order_by=["attributes.start_time ASC"],
        )
        assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
