"""What a user sees in `mlflow ui`: the deblur experiment opens on its runs table, one row per
pipeline run (the stage runs nested under it). A real MLflow server and headless Chromium."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from servers import free_port, running
from test_browser import CHROMIUM, CHROMIUM_ARGS, chromium  # noqa: F401 (a fixture)
from test_runs import pipeline, scores

from deblur import config
from deblur.tracking import store

pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> Path:
    """Two pipeline runs (two DVC experiments that differ in the GAN's learning rate)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    for name, lr, gan in (("sweep-slow", 0.0005, 26.4), ("sweep-fast", 0.002, 26.1)):
        monkeypatch.setenv("DEBLUR_PIPELINE_RUN", name)
        monkeypatch.setenv("DVC_EXP_NAME", name)
        pipeline(config.parse({"train": {"gan": {"lr": lr}}}), scores(gan, 26.2))
    return tmp_path


def test_the_experiment_opens_on_one_row_per_pipeline_run(chromium, tracking_store, tmp_path):  # noqa: F811
    exp_id = store.client().get_experiment_by_name(store.EXPERIMENT).experiment_id
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow, "ui", "--backend-store-uri", f"sqlite:///{tracking_store / 'mlflow.db'}"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with (
        running(cmd, url, "/health", tmp_path / "mlflow.log", timeout=120, cwd=tracking_store),
        chromium() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # MLflow 3.17's UI takes the view from this parameter (else the browser's last
            # choice, GenAI at first) before the experiment's kind tag: README gives this link.
            page.goto(f"{url}/#/experiments/{exp_id}?workflowType=machine_learning")
            page.wait_for_url("**/runs**", timeout=60_000)
            page.get_by_text("sweep-slow", exact=True).first.wait_for(timeout=60_000)
            assert page.get_by_text("sweep-fast", exact=True).count() >= 1
            # The stage runs are nested: collapsed under their pipeline run, not rows of their own.
            assert page.get_by_text("train-gan", exact=True).count() == 0
            shot = tmp_path / "mlflow_runs.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("DEBLUR_SCREENSHOT"):
        target = Path(os.environ["DEBLUR_SCREENSHOT"]) / "mlflow_runs.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
