"""data.folder is a DVC dependency of the download stage: real DVC in a scratch repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from support.params import TINY
from support.repo import REPO

ROOT = REPO
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def scratch_repo(root: Path, data: dict) -> dict:
    """The repo's tracked files (no data or models) in a new git repo, params TINY + ``data``."""
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listed, cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        if (ROOT / rel).is_file() and not rel.startswith(("data/", "models/")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, root / rel)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    params["data"].update(data)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.lock").unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], root, env)
    run([*git, "add", "-A"], root, env)
    run([*git, "commit", "-qm", "scratch"], root, env)
    return env


def test_a_change_in_data_folder_makes_download_out_of_date(tmp_path, _tiny_raw):
    own = tmp_path / "my photos"  # outside the repo, with a space: as users name folders
    shutil.copytree(_tiny_raw, own)
    repo = tmp_path / "repo"
    env = scratch_repo(repo, {"source": "folder", "name": "mine", "folder": str(own)})
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "download"], repo, env)
    assert sorted((repo / "data" / "raw" / "mine" / "train").iterdir())
    assert "up to date" in run([dvc, "status", "download"], repo, env)

    scene = sorted((own / "train").iterdir())[0]
    added = scene / "blur" / "000099.png"
    shutil.copyfile(scene / "blur" / sorted(os.listdir(scene / "blur"))[0], added)
    status = run([dvc, "status", "download"], repo, env)
    assert "changed deps" in status and str(own) in status, status

    added.unlink()
    assert "up to date" in run([dvc, "status", "download"], repo, env)
    changed = sorted((own / "test").rglob("sharp/*.png"))[0]
    changed.write_bytes(sorted(_tiny_raw.rglob("train/*/sharp/*.png"))[0].read_bytes())
    assert "modified" in run([dvc, "status", "download"], repo, env)
    removed = sorted((own / "train").rglob("sharp/*.png"))[-1]
    removed.unlink()
    assert str(own) in run([dvc, "status", "download"], repo, env)


def test_default_params_depend_on_the_placeholder(tmp_path):
    repo = tmp_path / "repo"
    env = scratch_repo(repo, {})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["source"] == "synthetic"
    placeholder = repo / params["data"]["folder"]
    assert placeholder.is_dir(), "dvc.yaml's ${data.folder} needs the default to exist"
    # Parsed, with the placeholder as a dependency that exists (a missing one shows "deleted").
    status = run([str(BIN / "dvc"), "status", "download"], repo, env)
    assert [line for line in status.splitlines() if "own-data" in line and "deleted" in line] == []
