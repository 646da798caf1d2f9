"""A team's tracking server: PostgreSQL 15 behind MLflow's basic-auth app, on 127.0.0.1.

Anonymous, read-only and writing users run train, evaluate, promote and runs: what is
refused is one line naming the user (or the missing login), what it may not do and the
fix, never a traceback; the writer's work lands, also from two trainings at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from support.team_servers import USERS, grant_team, mlflow_server, postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team-server")
    with postgres() as pg, mlflow_server(folder, f"{pg}/mlflow", auth_db=f"{pg}/auth") as url:
        grant_team(url)
        yield url


def _workspace(prepared: Path, root: Path, raw: dict) -> Path:
    shutil.copytree(prepared, root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def deblur(root: Path, url: str, user: str | None, *args: str, password: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = url
    if user:
        env["MLFLOW_TRACKING_USERNAME"] = user
        env["MLFLOW_TRACKING_PASSWORD"] = password or USERS.get(user, "no-such-password")
    return subprocess.run(
        [sys.executable, "-m", "deblur", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line(proc) -> str:
    """The refusal: exit 1, exactly one stderr line, starting error:, no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_who_may_do_what_on_the_team_server(team_server, prepared, smoke_params, tmp_path):
    root = _workspace(prepared, tmp_path / "w", smoke_params(epochs=1))

    # Anonymous: nothing, each refusal names the missing login and the two variables; a
    # wrong password is named as such. (Refusals run side by side: they are independent.)
    anonymous = [(None, "train", "ae"), (None, "promote", "ae"), (None, "runs")]
    procs = _side_by_side(root, team_server, [*anonymous, ("intruder", "runs")])
    for args, proc in zip(anonymous, procs, strict=False):
        line = one_line(proc)
        assert "needs a login" in line and "MLFLOW_TRACKING_USERNAME" in line, (args, line)
    assert "refused the login of user intruder" in one_line(procs[-1])

    # The writer trains both, evaluates and promotes.
    for args in (["train", "ae"], ["train", "gan"], ["evaluate"]):
        proc = deblur(root, team_server, "writer", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    promoted = deblur(root, team_server, "writer", "promote", "ae")
    assert promoted.returncode == 0 and "moved @champion to v1" in promoted.stdout

    # The viewer reads, and may do nothing else; nor may anonymous evaluate the models.
    calls = [
        ("viewer", "runs"),
        ("viewer", "train", "ae"),
        ("viewer", "evaluate"),
        ("viewer", "promote", "gan"),
        (None, "evaluate"),
    ]
    listed, train, evaluate, promote, anon = _side_by_side(root, team_server, calls)
    assert listed.returncode == 0 and "v1" in listed.stdout, listed.stderr[-3000:]
    assert one_line(train) == (
        "error: user viewer may not start a run in the experiment (needs EDIT on the "
        "experiment); ask its owner to grant it"
    )
    assert "user viewer may not start a run" in one_line(evaluate)
    assert one_line(promote) == (
        "error: user viewer may not move @champion of deblur-gan (needs EDIT on the "
        "registered model); ask its owner to grant it"
    )
    assert "needs a login" in one_line(anon)


def _side_by_side(root: Path, url: str, calls: list[tuple]) -> list:
    """(user, *args) each, at once -> their CompletedProcess, in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda c: deblur(root, url, c[0], *c[1:]), calls))


def test_two_trainings_at_once_both_land(team_server, prepared, smoke_params, tmp_path):
    from mlflow import MlflowClient

    roots = [_workspace(prepared, tmp_path / f"w{i}", smoke_params(epochs=1)) for i in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda r: deblur(r, team_server, "writer", "train", "gan"), roots))
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    ids = [yaml.safe_load((r / "run-info" / "train-gan.json").read_text()) for r in roots]
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        "viewer",
        USERS["viewer"],
    )
    try:
        client = MlflowClient(team_server, team_server)
        for summary in ids:
            run = client.get_run(summary["mlflow_run_id"])
            assert run.info.status == "FINISHED"
            assert len(client.get_metric_history(run.info.run_id, "val_psnr")) == 1
        versions = {int(s["registered_version"]) for s in ids}
        assert len(versions) == 2, "each training registered its own version"
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
