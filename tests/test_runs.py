"""Pipeline runs in MLflow: stage runs grouped under one parent, and `deblur runs` comparing them.

A real SQLite store per test; the stage runs are opened as the stages open them
(tracked.stage_run, deblur.evaluate.log.log_evaluation).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deblur import config, fsutil, runs, textable
from deblur.evaluate.log import log_evaluation
from deblur.tracking import registry, store
from deblur.tracking import runs as tracked


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for var in ("DEBLUR_PIPELINE_RUN", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def scores(gan_psnr: float, ae_psnr: float) -> dict:
    def model(psnr, ms):
        return {"psnr": psnr, "ssim": 0.76, "gain_db": psnr - 25.66, "ms_per_mp": ms, "images": 4}

    return {
        "gan": model(gan_psnr, 1300.0),
        "ae": model(ae_psnr, 690.0),
        "blurry": {"psnr": 25.66, "ssim": 0.75, "images": 4},
    }


def dump(params: config.Params) -> dict:
    return params.model_dump(mode="json", by_alias=True)


def pipeline(params, metrics: dict, tags: dict | None = None) -> str:
    """What one `dvc repro` logs: both trainings and evaluate. Returns evaluate's id."""
    empty = pd.DataFrame({"model": ["gan"], "psnr": [1.0]})
    for kind in ("gan", "ae"):
        with tracked.stage_run(f"train-{kind}", {"train": dump(params)["train"]}):
            tracked.log_epoch({"val_psnr": 25.0}, step=1)
    run_id, _ = log_evaluation(dump(params), empty, empty, metrics, tags or {})
    return run_id


def test_one_pipeline_run_nests_its_stage_runs(tracking_store, monkeypatch):
    monkeypatch.setenv("DEBLUR_PIPELINE_RUN", "ci-1")
    params = config.parse({"train": {"gan": {"lr": 0.0005}}})
    pipeline(params, scores(26.3, 26.2))
    c = store.client()
    exp = c.get_experiment_by_name("deblur")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    everything = c.search_runs([exp.experiment_id])
    parents = [r for r in everything if r.data.tags.get(tracked.ROLE_TAG) == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in everything if r is not parent]
    assert sorted(r.info.run_name for r in children) == ["evaluate", "train-ae", "train-gan"]
    assert {r.data.tags[tracked.PARENT_TAG] for r in children} == {parent.info.run_id}
    assert {r.data.tags[tracked.PIPELINE_TAG] for r in everything} == {"ci-1"}
    assert parent.info.status == "FINISHED"
    # The parent is the compare view's row: every param, the test metrics, commit, versions.
    assert parent.data.params["train.gan.lr"] == "0.0005"
    assert parent.data.metrics["gan.psnr"] == pytest.approx(26.3)
    assert parent.data.tags[tracked.RESULTS_TAG] == "true" and "git.commit" in parent.data.tags


def test_a_failed_stage_fails_its_pipeline_run(tracking_store, monkeypatch):
    monkeypatch.setenv("DEBLUR_PIPELINE_RUN", "ci-2")
    params = config.parse({})
    with pytest.raises(RuntimeError), tracked.stage_run("train-gan", dump(params)):
        raise RuntimeError("diverged")
    parent = store.client().get_run(tracked.pipeline_parent("ci-2"))
    assert parent.info.run_name.startswith("repro ")
    store.client().set_terminated(parent.info.run_id, "FAILED")  # undo pipeline_parent's reopen
    statuses = {
        r.info.run_name: r.info.status
        for r in store.client().search_runs([parent.info.experiment_id])
    }
    assert statuses["train-gan"] == "FAILED"


def test_a_stage_run_by_hand_stands_alone_and_holds_its_results(tracking_store):
    params = config.parse({})
    run_id, _ = log_evaluation(dump(params), pd.DataFrame(), pd.DataFrame(), scores(26, 26), {})
    run = store.client().get_run(run_id)
    assert tracked.PARENT_TAG not in run.data.tags
    assert run.data.tags[tracked.RESULTS_TAG] == "true"
    assert run.data.params["train.gan.lr"] == "0.001"
    assert [r.run_id for r in runs.collect()] == [run_id]


def test_the_dvc_process_names_the_pipeline_run(tmp_path):
    """Stage commands run as children of one `dvc` process share a key; another dvc, not."""
    probe = "from deblur.tracking.runs import pipeline_key; print(pipeline_key())"
    fake = tmp_path / "dvc"  # stands in for dvc: runs two stage commands the way dvc does
    fake.write_text(
        "#!/bin/sh\n"
        f"DVC_STAGE=train-gan '{sys.executable}' -c '{probe}'\n"
        f"DVC_STAGE=evaluate '{sys.executable}' -c '{probe}'\n"
        f"'{sys.executable}' -c '{probe}'\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_STAGE", "DEBLUR_PIPELINE_RUN")}
    env.pop("DVC_EXP_NAME", None)

    def invoke(**extra) -> list[str]:
        out = subprocess.run(
            [str(fake)], env={**env, **extra}, capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    first, second = invoke(), invoke(DVC_EXP_NAME="warm-lark")
    assert first[0] == first[1] != "None" and first[2] == "None"  # by hand: no pipeline run
    assert second[0] == second[1] != first[0] and second[0].startswith("warm-lark|")


def registered(kind: str, checkpoint: Path) -> str:
    """A registry version tagged with the checkpoint's digest, as training registers it."""
    c = store.client()
    name = f"deblur-{kind}"
    if not c.search_registered_models(f"name='{name}'"):
        c.create_registered_model(name)
    mv = c.create_model_version(name, source=str(checkpoint.parent))
    c.set_model_version_tag(name, mv.version, "checkpoint_sha256", fsutil.sha256(checkpoint))
    return str(mv.version)


def test_runs_compares_three_pipeline_runs(tracking_store, monkeypatch):
    for i, (lr, gan, ae) in enumerate(
        [(0.001, 26.1, 26.0), (0.0005, 26.4, 26.2), (0.002, 25.9, 26.3)]
    ):
        fsutil.write_text("models/gan.pt", f"weights {lr}")
        version = registered("gan", tracking_store / "models" / "gan.pt")
        monkeypatch.setenv("DEBLUR_PIPELINE_RUN", f"sweep-{i}")
        params = config.parse({"train": {"gan": {"lr": lr}}})
        pipeline(params, scores(gan, ae), {"gan": {"test_psnr": gan}})
    registry.set_alias("gan", registry.CHAMPION, "2")

    rows = runs.collect()
    assert len(rows) == 3
    assert [r.params["train.gan.lr"] for r in rows] == ["0.002", "0.0005", "0.001"]  # newest first
    assert runs.differing(rows) == ["train.gan.lr"]
    assert [r.models["gan"]["version"] for r in rows] == [version, "2", "1"]
    assert [r.models["gan"]["champion"] for r in rows] == [False, True, False]
    assert "version" in rows[0].models["ae"] and rows[0].models["ae"]["version"] is None

    data = runs.as_json(rows)
    assert data[1]["params"] == {"train.gan.lr": "0.0005"}
    assert data[1]["models"]["gan"]["psnr"] == pytest.approx(26.4)
    assert set(data[1]["models"]["ae"]) >= {"psnr", "ssim", "gain_db", "ms_per_mp", "version"}
    assert [r["run_id"] for r in runs.as_json(runs.collect(limit=2))] == [
        r["run_id"] for r in data[:2]
    ]

    header, body = runs.table(rows)
    assert header[:4] == ["when (UTC)", "commit", "experiment", "train.gan.lr"]
    assert "v2 @champion" in body[1] and "26.40" in body[1]
    text = textable.text(header, body)
    assert len(text.splitlines()) == 4

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cli = subprocess.run(
        [sys.executable, "-m", "deblur", "runs", "--json", "--limit", "2"],
        cwd=tracking_store,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert [r["params"]["train.gan.lr"] for r in listed] == ["0.002", "0.0005"]

    # The Experiments page: the chart and the same rows, one self-contained file.
    page = subprocess.run(
        [sys.executable, "-m", "deblur", "runs", "--html"],
        cwd=tracking_store,
        env=env,
        capture_output=True,
        text=True,
    )
    assert page.returncode == 0, page.stderr
    html = (tracking_store / "reports" / "runs.html").read_text()
    elsewhere = subprocess.run(
        [sys.executable, "-m", "deblur", "runs", "--html", "-o", "page.html", "--limit", "1"],
        cwd=tracking_store,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        elsewhere.returncode == 0
        and "1 pipeline run(s)" in (tracking_store / "page.html").read_text()
    )
    assert "3 pipeline run(s)" in html and '<img src="data:image/png;base64,' in html
    assert "<th>train.gan.lr</th>" in html and html.count("<td>0.0005</td>") == 1
    assert "v2 @champion" in html


def test_runs_without_a_store(tracking_store):
    assert runs.collect() == []
    assert "no pipeline runs" in runs.show(None, json_out=False)
    with pytest.raises(runs.DeblurError, match="no pipeline runs"):
        runs.write_page(tracking_store / "runs.html", None)
    assert not (tracking_store / "mlflow.db").exists()  # asking did not create an empty store
