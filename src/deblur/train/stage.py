"""The `train-gan` / `train-ae` stage: data, Trainer, epochs, and everything they leave.

Per epoch, rank 0 writes models/<kind>.pt (and its --resume state), a row of
plots/train_<kind>.csv and the epoch's metrics in MLflow; at the end metrics/train_<kind>.json
and, for a complete run, a new registered version of the model. Those are DVC outs and hold
only what the same code and params reproduce; the epochs' timings, the MLflow run id and
the registered version go to run-info/train-<kind>.json (paths.run_info) and MLflow.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pandas as pd
from tqdm import tqdm

from deblur import fsutil, models, paths
from deblur.errors import DeblurError
from deblur.tracking import flavour, runs, store
from deblur.train import checkpoint, distributed
from deblur.train import data as train_data
from deblur.train.loop import TIMINGS, Trainer


def logged_params(kind: str, train, seed: int, protocol: str) -> dict[str, Any]:
    """What a training run depends on: dvc.yaml's params of the stage, as MLflow logs them."""
    dump = train.model_dump(mode="json")
    return {
        "seed": seed,
        "preprocess": {"protocol": protocol},
        "train": {
            "val_fraction": dump["val_fraction"],
            "num_workers": dump["num_workers"],
            kind: dump[kind],
        },
    }


def run(
    kind: str,
    train,
    seed: int,
    protocol: str = "crop",
    device: str = "auto",
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train `kind` to the end (or `stop_after` epochs, as an interruption would).

    ``train`` is params' train section, ``protocol`` preprocess.protocol. Returns the final
    metrics written to metrics/train_<kind>.json.
    """
    world = distributed.init(device)
    try:
        return _run(kind, train, seed, protocol, world, resume, stop_after)
    except DeblurError:
        distributed.end_launcher(world)  # torchrun would bury this rank's one line
        raise
    except Exception:
        if distributed.peer_failed(world):  # a peer said why, in one line: add nothing
            raise SystemExit(1) from None
        raise
    finally:
        distributed.shutdown(world)


def _run(kind, train, seed, protocol, world, resume, stop_after) -> dict[str, Any]:
    if world.main:
        store.setup()  # an unreachable server should fail now, not after the data loads
    data = train_data.build(kind, train, protocol, seed, world)
    trainer = Trainer(kind, getattr(train, kind), seed, world, data)
    if resume:
        trainer.restore(checkpoint.load_state(kind), read_info(kind).get("epochs", []))
    elif world.main:  # a fresh run: part-way checkpoints of an earlier one would lie
        shutil.rmtree(paths.curve_dir(kind), ignore_errors=True)
    if world.main:
        paths.curve_dir(kind).mkdir(parents=True, exist_ok=True)  # a DVC out, even if empty
    if world.main:
        logged = logged_params(kind, train, seed, protocol)
        with runs.stage_run(f"train-{kind}", logged) as mlflow_run:
            info = {"mlflow_run_id": mlflow_run.info.run_id}
            summary = _epochs(trainer, stop_after, info)
            runs.log_artifacts([paths.train_plot(kind)])
            if trainer.state.epoch >= trainer.cfg.epochs:  # complete: a version to register
                mv = flavour.register_trained(kind, paths.checkpoint(kind))
                info["registered_version"] = int(mv.version)
            fsutil.write_json(paths.train_metrics(kind), summary)
            write_info(trainer, info)
    else:
        summary = _epochs(trainer, stop_after, None)
    distributed.barrier(world)
    return summary


def read_info(kind: str) -> dict[str, Any]:
    """run-info/train-<kind>.json, or {} (none yet, or unreadable: only timings are lost)."""
    try:
        return json.loads(paths.run_info(f"train-{kind}").read_text())
    except (OSError, ValueError):
        return {}


def write_info(trainer: Trainer, info: dict[str, Any]) -> None:
    """What varies between two runs with the same inputs: the run's ids and its timings."""
    state = trainer.state
    fsutil.write_json(
        paths.run_info(f"train-{trainer.kind}"),
        {
            **info,
            "complete": state.epoch >= trainer.cfg.epochs,
            "device": str(trainer.device),
            "seconds": round(state.seconds, 2),
            "samples_per_s": state.timings[-1]["samples_per_s"] if state.timings else None,
            "epochs": state.timings,
        },
    )


def _log_steps(step: int, loss: float) -> None:
    runs.log_epoch({"step_loss": loss}, step=step)


def curve_epochs(cfg) -> dict[int, int]:
    """epoch -> percent of training, for each share of ``cfg.curve`` that falls on an epoch
    before the last (checkpoints are written at epoch ends; the last is models/<kind>.pt)."""
    marks = {}
    for share in cfg.curve:
        epoch = round(share * cfg.epochs)
        if 1 <= epoch < cfg.epochs:
            marks[epoch] = round(100 * epoch / cfg.epochs)
    return marks


def _save(trainer: Trainer, info: dict[str, Any]) -> None:
    trainer.save()
    write_info(trainer, info)
    frame = pd.DataFrame(trainer.state.history)
    fsutil.write_text(paths.train_plot(trainer.kind), frame.to_csv(index=False))
    percent = curve_epochs(trainer.cfg).get(trainer.state.epoch)
    if percent is not None:  # a copy of the checkpoint just written, for the quality curve
        with fsutil.atomic_path(paths.curve_checkpoint(trainer.kind, percent)) as tmp:
            shutil.copyfile(paths.checkpoint(trainer.kind), tmp)


def _epochs(trainer: Trainer, stop_after: int | None, info: dict | None) -> dict[str, Any]:
    """The epochs; on rank 0 (``info``: the run-info so far) files and MLflow after each."""
    cfg, world, state = trainer.cfg, trainer.world, trainer.state
    baseline = trainer.blurry_baseline() if world.main else {}
    if world.main:
        runs.log_epoch(baseline, step=0)
        runs.log_params({"model.params": models.count_params(trainer.model)})
    ran = 0
    while state.epoch < cfg.epochs and (stop_after is None or ran < stop_after):
        try:
            row = trainer.train_epoch(on_steps=_log_steps if world.main else None)
        except FloatingPointError as exc:
            last = f"epoch {state.epoch}" if state.epoch else "none yet"
            raise DeblurError(
                f"train {trainer.kind}: loss is NaN/inf at step {exc.args[0]}; lower "
                f"train.{trainer.kind}.lr or raise grad_clip (last good checkpoint kept: {last})"
            ) from None
        state.epoch += 1
        ran += 1
        state.seconds += row["seconds"]
        timing = {k: row.pop(k) for k in TIMINGS}
        state.timings.append({"epoch": state.epoch, "step": state.step, **timing})
        if world.main:
            row.update(trainer.validate())
            row = {"epoch": state.epoch, "step": state.step, **row}
            state.history.append(row)
            _save(trainer, info)
            logged = {k: v for k, v in {**row, **timing}.items() if k != "epoch"}
            runs.log_epoch(logged, step=state.epoch)
            tqdm.write(
                f"{trainer.kind} epoch {state.epoch}: loss {row['train_loss']:.4f}  "
                f"val PSNR {row['val_psnr']:.2f} dB (blurry {baseline['val_psnr_blurry']:.2f})  "
                f"SSIM {row['val_ssim']:.4f}  {timing['samples_per_s']:.1f} samples/s"
            )
        distributed.barrier(world)
    last = state.history[-1] if state.history else {}
    # Numbers only, and only what the same code and params reproduce (timings: run-info).
    return {
        "epochs": state.epoch,
        "steps": state.step,
        "train_loss": last.get("train_loss"),
        "val_psnr": last.get("val_psnr"),
        "val_ssim": last.get("val_ssim"),
        "params": models.count_params(trainer.model),
        "world_size": world.size,
        **baseline,
    }
