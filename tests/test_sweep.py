"""The README's sweep recipe end to end: `make sweep` (dvc exp run --queue + dvc queue start
-j 2) on the smoke profile, recorded in a real `mlflow server`, listed by `deblur runs`."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from servers import free_port, running
from test_pipeline import BIN, scratch, sh  # noqa: F401 (scratch: a fixture)

pytestmark = pytest.mark.slow


def test_a_two_point_grid_is_listed_by_deblur_runs(scratch, tmp_path):  # noqa: F811
    root, env = scratch
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    server += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    server += ["--artifacts-destination", str(tmp_path / "artifacts")]
    venv = Path(sys.executable).parent.parent
    built_from = b"".join((root / f).read_bytes() for f in ("requirements.lock", "pyproject.toml"))
    stamp = hashlib.sha256(built_from).hexdigest()[:16]
    if (venv / ".deblur-requirements").read_text().strip() != stamp:
        pytest.skip(f"{venv} is not built from these requirements: `make setup` would reinstall it")
    with running(server, url, "/health", tmp_path / "server.log", timeout=120):
        make = ["make", "sweep", f"VENV={venv}", f"MLFLOW_PORT={port}"]
        make.append("SWEEP=-S train.gan.lr=0.0005,0.002")
        swept = sh(make, root, env, timeout=1800)
        listed = sh(
            [str(BIN / "deblur"), "runs", "--json"], root, {**env, "MLFLOW_TRACKING_URI": url}
        )
        tree = stage_runs(url)
    rows = json.loads(listed.stdout)
    assert len(rows) == 2, swept.stdout[-3000:]
    assert sorted(r["params"]["train.gan.lr"] for r in rows) == ["0.0005", "0.002"]
    assert len({r["experiment"] for r in rows}) == 2 and all(r["experiment"] for r in rows)
    for r in rows:
        assert set(r["models"]) == {"gan", "ae"}
        assert all(r["models"][k]["psnr"] > 0 for k in r["models"])
        assert r["models"]["gan"]["version"] is not None  # the version it scored
    assert "train.gan.lr" in swept.stdout  # dvc exp show --only-changed
    # Each experiment's stage runs nest under its pipeline run, none astray in Default (the
    # report stage reads files only and logs no run).
    assert tree == {r["run_id"]: ["evaluate", "train-ae", "train-gan"] for r in rows}


def stage_runs(url: str) -> dict[str, list[str]]:
    """{parent run id: sorted names of its stage runs}, over every experiment of the server."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    ids = [e.experiment_id for e in client.search_experiments()]
    tree: dict[str, list[str]] = {}
    for run in client.search_runs(ids):
        parent = run.data.tags.get("mlflow.parentRunId")
        if run.data.tags.get("deblur.role") != "pipeline":
            tree.setdefault(parent, []).append(run.info.run_name)
    return {k: sorted(v) for k, v in tree.items()}
