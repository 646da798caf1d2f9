"""Training: the stage's outputs, MLflow contents, resume, the NaN stop, torchrun + gloo."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from support.servers import free_port

from deblur import config, models, paths
from deblur.data.images import png_bytes
from deblur.errors import DeblurError


def fit(kind: str, params: config.Params, **options):
    """The training stage as cli.py calls it: the train section, the seed, the protocol."""
    from deblur.train.stage import run

    return run(kind, params.train, params.seed, params.preprocess.protocol, **options)


def trainer_for(kind: str, params: config.Params, world):
    """A Trainer over ``kind``'s own section of ``params``."""
    from deblur.train.loop import Trainer

    return Trainer(kind, getattr(params.train, kind), params.seed, world)


def write_params(root: Path, raw: dict) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_ae_writes_outputs_and_tracks_run(trained_project, smoke_params):
    from mlflow import MlflowClient

    from deblur.tracking import registry, store

    params = config.parse(smoke_params())
    summary = fit("ae", params, device="cpu")

    assert summary["epochs"] == 2 and summary["steps"] == 6
    assert all(isinstance(v, int | float) for v in summary.values())  # a DVC metric: numbers
    curves = pd.read_csv(paths.PLOTS / "train_ae.csv")
    assert list(curves["epoch"]) == [1, 2]
    assert {"train_loss", "val_psnr", "val_ssim", "lr"} <= set(curves.columns)
    assert not {"seconds", "samples_per_s"} & set(curves.columns)  # timings: run-info
    info = json.loads(paths.run_info("train-ae").read_text())
    assert info["complete"] and [e["epoch"] for e in info["epochs"]] == [1, 2]
    assert info["seconds"] > 0 and info["samples_per_s"] > 0
    payload = torch.load(paths.checkpoint("ae"), weights_only=True)
    assert payload["kind"] == "ae" and "train" not in payload  # inference reads weights only
    state = torch.load(paths.train_state("ae"), weights_only=True)
    assert state["train"]["epoch"] == 2 and state["step"] == payload["meta"]["steps"] == 6
    model = models.load(paths.checkpoint("ae"))
    assert not model.training

    store.setup()
    run = MlflowClient().get_run(info["mlflow_run_id"])
    assert run.info.run_name == "train-ae" and run.info.status == "FINISHED"
    assert run.data.tags["dvc.stage"] and "params.hash" in run.data.tags
    assert run.data.params["train.ae.lr"] == str(params.train.ae.lr)
    history = MlflowClient().get_metric_history(run.info.run_id, "val_psnr")
    assert [m.step for m in history] == [1, 2]
    per_step = MlflowClient().get_metric_history(run.info.run_id, "step_loss")
    assert [m.step for m in per_step] == [3, 6]  # 3 steps per epoch, flushed at epoch ends
    mv = registry.version_of_checkpoint("ae", paths.checkpoint("ae"))
    assert mv is not None and int(mv.version) == info["registered_version"] == 1


def test_registered_model_accepts_any_size(trained_project, smoke_params):
    import mlflow

    from deblur.tracking import store

    fit("ae", config.parse(smoke_params(epochs=1)), device="cpu")
    store.setup()
    loaded = mlflow.pyfunc.load_model("models:/deblur-ae/1")
    for h, w in [(24, 32), (37, 53)]:  # base64 image files in, base64 PNGs out (pyfunc.py)
        x = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        y = loaded.predict(pd.DataFrame({"image": [base64.b64encode(png_bytes(x)).decode()]}))
        out = Image.open(io.BytesIO(base64.b64decode(y["image"][0])))
        assert out.size == (w, h) and out.mode == "RGB"


def test_resume_matches_uninterrupted(trained_project, smoke_params, tmp_path):

    params = config.parse(smoke_params(epochs=3))
    fit("gan", params, device="cpu")
    whole = torch.load(paths.checkpoint("gan"), weights_only=True)

    paths.checkpoint("gan").unlink()
    fit("gan", params, device="cpu", stop_after=1)
    assert torch.load(paths.train_state("gan"), weights_only=True)["train"]["epoch"] == 1
    fit("gan", params, device="cpu", resume=True)
    resumed = torch.load(paths.checkpoint("gan"), weights_only=True)

    assert torch.load(paths.train_state("gan"), weights_only=True)["train"]["epoch"] == 3
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(trained_project, smoke_params, monkeypatch):
    from deblur.train import losses

    calls = {"n": 0}
    real_forward = losses.Content.forward

    def poisoned(self, pred, target):
        calls["n"] += 1
        loss = real_forward(self, pred, target)
        return loss * float("nan") if calls["n"] > 4 else loss  # epoch 2 of 3-step epochs

    monkeypatch.setattr(losses.Content, "forward", poisoned)
    with pytest.raises(DeblurError, match="NaN"):
        fit("ae", config.parse(smoke_params(epochs=3)), device="cpu")
    kept = torch.load(paths.checkpoint("ae"), weights_only=True)
    assert kept["meta"]["epochs"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values())


@pytest.mark.parametrize("adversarial", ["bce", "lsgan", "wgan-gp"])
def test_each_adversarial_loss_moves_the_generator_toward_the_target(smoke_params, adversarial):
    """A few steps on one batch, adversarial term on: the generator's output gets closer to
    the sharp target (finite losses alone would pass for a generator that never learns)."""
    from deblur.train.distributed import World

    raw = smoke_params(epochs=1)
    # A long schedule: the smoke profile's 4-step cosine would have decayed the rate at once.
    raw["train"]["gan"].update(adversarial=adversarial, adv_weight=0.05, warmup_steps=0)
    raw["train"]["gan"].update(lr=2e-3, steps_per_epoch=1000)
    trainer = trainer_for("gan", config.parse(raw), World(0, 1, torch.device("cpu")))
    gen = torch.Generator().manual_seed(0)
    # A target a few steps can reach: the blurry batch with its contrast stretched.
    blur = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 32, 32, generator=gen), 5, 1, 2)
    sharp = ((blur - 0.5) * 2.0 + 0.5).clamp(0, 1)

    def distance() -> float:
        with torch.no_grad():
            return float((trainer.model(blur) - sharp).abs().mean())

    before = distance()
    for _ in range(15):
        parts = trainer.step(blur, sharp)
    assert distance() < 0.8 * before
    assert torch.isfinite(parts["adv"]) and torch.isfinite(parts["d_loss"])


def test_an_unknown_loss_is_refused_not_replaced():
    """The loss tables answer an unknown name with the names they have (no silent WGAN)."""
    from deblur import config as cfg
    from deblur.errors import DeblurError
    from deblur.train import losses

    with pytest.raises(DeblurError, match="bce, lsgan, wgan-gp"):
        losses.adversarial("hinge")
    with pytest.raises(DeblurError, match="l1, charbonnier"):
        losses.Content(cfg.parse({}).train.gan.model_copy(update={"content_loss": "l2"}))
    # params.yaml accepts exactly the names the tables have.
    fields = cfg.GanTrainConfig.model_fields
    assert set(fields["adversarial"].annotation.__args__) == set(losses.ADVERSARIAL)
    assert set(fields["content_loss"].annotation.__args__) == set(losses.PIXEL)


def test_unreachable_tracking_server_is_one_line(trained_project, smoke_params, monkeypatch):
    write_params(trained_project, smoke_params(epochs=1))
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "deblur", "train", "ae"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "http://127.0.0.1:9" in proc.stderr and "unreachable" in proc.stderr


def train_ae_on_two_processes(**env: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m deblur train ae` on the CPU, one thread a process."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "deblur", "train", "ae", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


def test_torchrun_two_process_gloo(trained_project, smoke_params):
    from mlflow import MlflowClient

    from deblur.tracking import store

    write_params(trained_project, smoke_params(epochs=1))
    proc = train_ae_on_two_processes()
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((paths.METRICS / "train_ae.json").read_text())
    assert summary["world_size"] == 2
    assert json.loads(paths.run_info("train-ae").read_text())["complete"]
    store.setup()
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("deblur").experiment_id]
    )
    assert len(runs) == 1, "rank 0 alone logs"


def test_torchrun_failure_on_one_rank_is_one_line(trained_project, smoke_params):
    # Rank 0 alone talks to MLflow: with the server down it fails while rank 1 has gone on
    # into the first collective. Before, rank 1's gloo traceback and torchrun's report
    # followed rank 0's line: about 100 lines.
    write_params(trained_project, smoke_params(epochs=1))
    dead = f"http://127.0.0.1:{free_port()}"
    proc = train_ae_on_two_processes(MLFLOW_TRACKING_URI=dead)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) <= 3, "\n".join(lines[:40])
    assert any(dead in line and "unreachable" in line for line in lines)
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr


def test_perceptual_loss_reads_only_a_local_file(tmp_path):
    from deblur.train import losses

    raw = {"train": {"ae": {"perceptual_weight": 0.1, "vgg_weights": str(tmp_path / "no.pth")}}}
    with pytest.raises(DeblurError, match="not found"):
        losses.Content(config.parse(raw).train.ae)
    bogus = tmp_path / "bogus.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)
    raw["train"]["ae"]["vgg_weights"] = str(bogus)
    with pytest.raises(DeblurError, match="not a VGG19 state dict"):
        losses.Content(config.parse(raw).train.ae)


def test_warmup_cosine_schedule_shape():
    from deblur.train.loop import warmup_cosine

    f = warmup_cosine(warmup=10, total=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.51, abs=0.01)  # half-way down the cosine
    assert f(110) == pytest.approx(0.02) and f(500) == pytest.approx(0.02)


def test_resume_refuses_a_state_from_another_step(trained_project, smoke_params):
    # A crash between writing the state and the weights leaves them a step apart.
    from deblur.errors import DeblurError
    from deblur.train import checkpoint

    params = config.parse(smoke_params(epochs=1))
    fit("ae", params, device="cpu")
    state = torch.load(paths.train_state("ae"), weights_only=True)
    torch.save({**state, "step": state["step"] - 1}, paths.train_state("ae"))
    with pytest.raises(DeblurError, match="another step"):
        checkpoint.load_state("ae")
    paths.train_state("ae").unlink()
    with pytest.raises(DeblurError, match="train without --resume"):
        checkpoint.load_state("ae")
