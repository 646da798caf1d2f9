"""The whole DAG, end to end, with `dvc repro` in a scratch copy of the repo (smoke profile)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict]:
    """The repo's tracked files in a new git repo, params.yaml replaced by the smoke profile."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    # The smoke profile applied over params.yaml, as a user would: `deblur profile smoke -o`.
    subprocess.run(
        [str(BIN / "deblur"), "profile", "smoke", "-o", str(root / "params.yaml")],
        cwd=root,
        check=True,
        capture_output=True,
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "GX_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "scratch"],
    ):
        sh(cmd, root, env)
    return root, env


def test_dvc_repro_runs_the_dag_then_does_nothing(scratch):
    root, env = scratch
    first = sh([str(BIN / "dvc"), "repro"], root, env)
    for stage in ("download", "validate", "preprocess", "train-gan", "train-ae"):
        assert f"Running stage '{stage}'" in first.stdout, stage
    assert (root / "models" / "gan.pt").is_file() and (root / "models" / "ae.pt").is_file()
    data = json.loads((root / "metrics" / "data.json").read_text())
    assert data, "validate wrote its metrics"
    assert (root / "mlflow.db").is_file(), "runs land in the workspace store"

    second = sh([str(BIN / "dvc"), "repro"], root, env)
    assert "Running stage" not in second.stdout
    status = sh([str(BIN / "dvc"), "status"], root, env)
    assert "up to date" in status.stdout

    shown = sh([str(BIN / "dvc"), "metrics", "show", "--json"], root, env)
    assert "val_psnr" in shown.stdout


def test_dvc_remote_shares_outputs_without_rerunning(scratch, tmp_path):
    root, env = scratch
    dvc = str(BIN / "dvc")
    sh([dvc, "repro"], root, env)  # no-op when the first test ran; makes this one standalone
    remote = tmp_path / "remote"
    sh([dvc, "remote", "add", "-d", "shared", str(remote)], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], root, env)
    sh([dvc, "push"], root, env)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    sh([dvc, "pull"], clone, env)
    assert (clone / "models" / "gan.pt").read_bytes() == (root / "models" / "gan.pt").read_bytes()
    status = sh([dvc, "status"], clone, env)
    assert "up to date" in status.stdout, status.stdout


@pytest.mark.slow
def test_a_forced_rerun_reproduces_every_out_byte_for_byte(scratch):
    """Same code, same params, same machine: `dvc repro --force` reruns every stage and
    dvc.lock (every out's and metric's digest) stays the same; only run-info/ moves."""
    root, env = scratch
    dvc = str(BIN / "dvc")
    sh([dvc, "repro"], root, env)  # no-op when an earlier test ran
    lock = (root / "dvc.lock").read_text()
    info = {p.name: p.read_text() for p in (root / "run-info").glob("*.json")}
    assert set(info) == {"train-gan.json", "train-ae.json", "evaluate.json"}

    forced = sh([dvc, "repro", "--force"], root, env)
    assert forced.stdout.count("Running stage") == 7
    assert (root / "dvc.lock").read_text() == lock
    # What did change is kept apart: the runs' ids and timings.
    again = {p.name: json.loads(p.read_text()) for p in (root / "run-info").glob("*.json")}
    assert (
        again["evaluate.json"]["mlflow_run_id"]
        != json.loads(info["evaluate.json"])["mlflow_run_id"]
    )
    shown = sh([dvc, "metrics", "show", "--json"], root, env)
    assert "mlflow_run_id" not in shown.stdout and "ms_per_mp" not in shown.stdout
