"""Preemption: SIGTERM finishes the step, writes the resume state and exits 143; the next
run (`dvc repro` included, which deletes the stage's outs) continues to the same weights;
after a SIGKILL the last epoch's state is used and the run left RUNNING is closed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from deblur import config, paths
from deblur.train import preempt
from deblur.train.loop import Trainer


def fit(kind: str, params: config.Params, **options):
    """The training stage as cli.py calls it."""
    from deblur.train.stage import run

    return run(kind, params.train, params.seed, params.preprocess.protocol, **options)


def _weights(kind: str) -> dict[str, torch.Tensor]:
    return torch.load(paths.checkpoint(kind), weights_only=True)["model"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _delete_outs(kind: str) -> None:
    """What `dvc repro` does to the stage's outs before it runs the stage again."""
    paths.checkpoint(kind).unlink(missing_ok=True)
    paths.train_state(kind).unlink(missing_ok=True)
    shutil.rmtree(paths.curve_dir(kind), ignore_errors=True)


def test_sigterm_mid_epoch_then_rerun_gives_the_uninterrupted_weights(
    trained_project, smoke_params, monkeypatch, capsys
):
    from mlflow import MlflowClient

    from deblur.tracking import store

    params = config.parse(smoke_params(epochs=3, curve=[0.34]))
    whole = fit("ae", params, device="cpu")
    reference = _weights("ae")
    assert not paths.resume_dir("ae").exists(), "a finished run leaves no resume state"
    _delete_outs("ae")

    real_step = Trainer.step

    def step_then_sigterm(self, blur, sharp):
        out = real_step(self, blur, sharp)
        if self.state.step == 4:  # the 5th step, mid-epoch 2 of 3-step epochs
            signal.raise_signal(signal.SIGTERM)  # the real signal, to this process
        return out

    monkeypatch.setattr(Trainer, "step", step_then_sigterm)
    paths.train_metrics("ae").write_text('{"stale": true}')
    with pytest.raises(preempt.Preempted) as stopped:
        fit("ae", params, device="cpu")
    monkeypatch.setattr(Trainer, "step", real_step)
    assert stopped.value.exit_code == 143
    assert "stopped after step 5" in str(stopped.value) and "dvc repro" in str(stopped.value)
    assert not paths.train_metrics("ae").exists(), "the earlier run's metrics were removed"
    assert (paths.resume_dir("ae") / "state.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler was restored"

    _delete_outs("ae")  # as dvc repro would
    capsys.readouterr()
    resumed = fit("ae", params, device="cpu")
    assert "ae: resumed from step 5" in capsys.readouterr().out
    assert _same(_weights("ae"), reference), "resumed weights differ from an uninterrupted run"
    assert resumed["steps"] == whole["steps"] == 9
    assert (paths.curve_dir("ae") / "33.pt").is_file(), "the curve copy was put back"

    store.setup()
    runs = MlflowClient().search_runs(
        [store.experiment_id(MlflowClient())], order_by=["attributes.start_time ASC"]
    )
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FINISHED"]


def test_a_resume_state_from_other_params_is_not_used(trained_project, smoke_params, capsys):

    fit("ae", config.parse(smoke_params(epochs=2)), device="cpu", stop_after=1)
    assert (paths.resume_dir("ae") / "state.pt").is_file()
    capsys.readouterr()
    summary = fit("ae", config.parse(smoke_params(epochs=2, lr=0.0005)), device="cpu")
    out = capsys.readouterr().out
    assert "not resuming" in out and "other params or data" in out
    assert "resumed from" not in out and summary["steps"] == 6


# ----------------------------------------------------------------- the real thing: dvc repro

DVC_YAML = """
stages:
  train-ae:
    cmd: {python} -m deblur train ae --device cpu
    params: [seed, train.ae]
    deps: [data/processed]
    outs: [models/ae.pt, models/ae.train.pt, models/curve/ae]
    metrics:
      - metrics/train_ae.json:
          cache: false
"""


def _dvc_project(prepared: Path, root: Path, raw: dict) -> dict[str, str]:
    shutil.copytree(prepared, root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=root, check=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _repro(root: Path, env: dict, kill_after: str | None = None, sig=signal.SIGTERM):
    """`dvc repro`; with ``kill_after``, ``sig`` goes to the stage's process once that text
    is in its output. -> (exit status, output, seconds from the signal to the exit)."""
    import psutil

    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.Popen(
        [str(dvc), "repro"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    sent: list[float] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if kill_after and not sent and kill_after in line:
                stage = [
                    p
                    for p in psutil.Process(proc.pid).children(recursive=True)
                    if "deblur" in " ".join(p.cmdline())
                ]
                assert stage, "the stage's process was not found"
                sent.append(time.monotonic())
                for p in stage:
                    p.send_signal(sig)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    ended = time.monotonic()
    return proc.returncode, "".join(lines), (ended - sent[0]) if sent else None


def _resumed_step(out: str) -> int:
    found = re.search(r"resumed from step (\d+)", out)
    assert found, out[-3000:]
    return int(found[1])


@pytest.mark.slow
def test_sigterm_then_dvc_repro_resumes_to_identical_weights(prepared, smoke_params, tmp_path):
    raw = smoke_params(epochs=3, steps_per_epoch=40, curve=[0.34])
    ref = tmp_path / "ref"
    env = _dvc_project(prepared, ref, raw)
    code, out, _ = _repro(ref, env)
    assert code == 0, out[-3000:]

    root = tmp_path / "cut"
    env = _dvc_project(prepared, root, raw)
    code, out, seconds = _repro(root, env, kill_after="ae epoch 1:")
    assert code != 0 and seconds is not None and seconds < 30, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SIGTERM" in errors[0] and "dvc repro" in errors[0], out[-3000:]
    assert "Traceback" not in out
    stopped = int(re.search(r"stopped after step (\d+)", errors[0])[1])
    assert 40 <= stopped < 120

    code, out, _ = _repro(root, env)
    assert code == 0, out[-3000:]
    assert _resumed_step(out) == stopped, "SIGTERM lost no step"
    ours = torch.load(root / "models" / "ae.pt", weights_only=True)["model"]
    theirs = torch.load(ref / "models" / "ae.pt", weights_only=True)["model"]
    assert _same(ours, theirs), "the continued run's weights differ from the uninterrupted run"
    assert json.loads((root / "run-info" / "train-ae.json").read_text())["complete"]


@pytest.mark.slow
def test_sigkill_loses_at_most_the_epoch_in_flight(prepared, smoke_params, tmp_path):
    from mlflow import MlflowClient

    raw = smoke_params(epochs=3, steps_per_epoch=40)
    root = tmp_path / "killed"
    env = _dvc_project(prepared, root, raw)
    code, out, _ = _repro(root, env, kill_after="ae epoch 1:", sig=signal.SIGKILL)
    assert code != 0

    code, out, _ = _repro(root, env)
    assert code == 0, out[-3000:]
    assert _resumed_step(out) >= 40, "the state of the last finished epoch was used"
    assert "left RUNNING, as FAILED" in out

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("deblur").experiment_id],
        "attributes.run_name = 'train-ae'",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
