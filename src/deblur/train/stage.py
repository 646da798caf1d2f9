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
from deblur.tracking import access, flavour, runlog, runs, store
from deblur.train import checkpoint, distributed, preempt
from deblur.train import data as train_data
from deblur.train import resume as train_resume
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
        with preempt.on_sigterm():
            return _run(kind, train, seed, protocol, world, resume, stop_after)
    except DeblurError:
        distributed.end_launcher(world)  # torchrun would bury this rank's one line
        raise
    except Exception as exc:
        refused = access.refusal(exc, store.tracking_uri())
        if refused is not None:
            distributed.end_launcher(world)
            raise DeblurError(refused) from None
        if distributed.peer_failed(world):  # a peer said why, in one line: add nothing
            raise SystemExit(1) from None
        if world.size > 1 and distributed.is_peer_loss(exc):  # a peer on another node
            distributed.end_launcher(world)
            raise DeblurError(
                f"train {kind}: rank {world.rank} lost its peers (a process on another node "
                "ended; its own log says why); both nodes stop, rerun them together"
            ) from None
        raise
    finally:
        distributed.shutdown(world)


def _run(kind, train, seed, protocol, world, resume, stop_after) -> dict[str, Any]:
    logged = logged_params(kind, train, seed, protocol)
    mark = ""
    if world.main:
        store.setup()  # an unreachable server should fail now, not after the data loads
        paths.train_metrics(kind).unlink(missing_ok=True)  # never leave an earlier run's
        runlog.close_stale(store.client(), _recorded_runs(kind), tqdm.write)
        mark = train_resume.fingerprint(logged)
    data = train_data.build(kind, train, protocol, seed, world)
    trainer = Trainer(kind, getattr(train, kind), seed, world, data)
    payload = _resume_payload(kind, world, mark, resume)
    if payload is not None:
        trainer.restore(payload, payload.get("timings") or read_info(kind).get("epochs", []))
        if world.main:
            tqdm.write(
                f"{kind}: resumed from step {trainer.state.step} (epoch "
                f"{trainer.state.epoch + 1} of {trainer.cfg.epochs})"
            )
    elif world.main:  # a fresh run: part-way checkpoints of an earlier one would lie
        shutil.rmtree(paths.curve_dir(kind), ignore_errors=True)
        train_resume.clear(kind)
    if world.main:
        paths.curve_dir(kind).mkdir(parents=True, exist_ok=True)  # a DVC out, even if empty
        if payload is not None:
            train_resume.put_back_curve(kind)
    if not world.main:
        summary = _guarded(trainer, stop_after, None, mark, None)
        distributed.barrier(world)
        return summary
    with runs.stage_run(f"train-{kind}", logged) as mlflow_run:
        run_id = mlflow_run.info.run_id
        parent = mlflow_run.data.tags.get(runs.PARENT_TAG)
        _record_run(kind, run_id, parent)
        log = runlog.RunLog(store.client(), run_id, store.tracking_uri(), tqdm.write)
        log.tag_also = [parent] if parent else []
        trainer.should_stop = lambda: preempt.requested() or log.lost
        info = {"mlflow_run_id": run_id}
        summary = _guarded(trainer, stop_after, log, mark, info)
        try:
            log.flush(wait=True)
        except runlog.TrackingLost as exc:
            raise runlog.TrackingLost(f"{exc}; {_how_to_continue(kind)}") from None
        runs.log_artifacts([paths.train_plot(kind)])
        if trainer.state.epoch >= trainer.cfg.epochs:  # complete: a version to register
            mv = flavour.register_trained(kind, paths.checkpoint(kind))
            info["registered_version"] = int(mv.version)
            train_resume.clear(kind)
        fsutil.write_json(paths.train_metrics(kind), summary)
        write_info(trainer, info)
    distributed.barrier(world)
    return summary


def _resume_payload(kind: str, world, mark: str, resume: bool) -> dict[str, Any] | None:
    """What this run continues from, read on rank 0 and sent to the others (their disks
    need not hold it): --resume's models/ files, else a matching resume state, else None."""
    payload = None
    if world.main and resume:
        payload = checkpoint.load_state(kind)
    elif world.main:
        payload, why = train_resume.load(kind, mark)
        if why:
            tqdm.write(f"{kind}: not resuming: {why}; training from the start")
    return distributed.broadcast(world, payload)


def _how_to_continue(kind: str) -> str:
    return (
        f"resume state in {paths.resume_dir(kind)}; run `dvc repro` (or `deblur train "
        f"{kind}`) again to continue from it"
    )


def _guarded(trainer: Trainer, stop_after, log, mark: str, info) -> dict[str, Any]:
    """_epochs, and what an early stop leaves: the resume state and one line on why."""
    kind = trainer.kind
    try:
        return _epochs(trainer, stop_after, log, mark, info)
    except preempt.Stop:
        if trainer.world.main:
            train_resume.save(trainer, mark)
        where = f"stopped after step {trainer.state.step}; {_how_to_continue(kind)}"
        if log is not None and log.lost:
            raise log.lost_error(where) from None
        raise preempt.Preempted(f"train {kind}: SIGTERM: {where}") from None


def _recorded_runs(kind: str) -> list[str]:
    record = paths.resume_dir(kind) / "runs.json"
    try:
        return [r for r in json.loads(record.read_text()) if isinstance(r, str)]
    except (OSError, ValueError, TypeError):
        return []


def _record_run(kind: str, run_id: str, parent: str | None) -> None:
    """The run (and pipeline run) now in flight, for the next start to close if a SIGKILL
    or a lost server leaves them RUNNING."""
    paths.resume_dir(kind).mkdir(parents=True, exist_ok=True)
    ids = [run_id] + ([parent] if parent else [])
    fsutil.write_text(paths.resume_dir(kind) / "runs.json", json.dumps(ids))


def _world_tags(world) -> dict[str, str]:
    """The world a run trained on; the hosts come from every rank (a collective)."""
    names = distributed.hosts(world)
    return {
        "world.size": str(world.size),
        "world.nodes": str(world.nodes),
        "world.local_size": str(world.local_size),
        "world.hosts": ",".join(dict.fromkeys(names)),
    }


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


def curve_epochs(cfg) -> dict[int, int]:
    """epoch -> percent of training, for each share of ``cfg.curve`` that falls on an epoch
    before the last (checkpoints are written at epoch ends; the last is models/<kind>.pt)."""
    marks = {}
    for share in cfg.curve:
        epoch = round(share * cfg.epochs)
        if 1 <= epoch < cfg.epochs:
            marks[epoch] = round(100 * epoch / cfg.epochs)
    return marks


def _save(trainer: Trainer, info: dict[str, Any], mark: str) -> None:
    trainer.save()
    write_info(trainer, info)
    frame = pd.DataFrame(trainer.state.history)
    fsutil.write_text(paths.train_plot(trainer.kind), frame.to_csv(index=False))
    percent = curve_epochs(trainer.cfg).get(trainer.state.epoch)
    if percent is not None:  # a copy of the checkpoint just written, for the quality curve
        with fsutil.atomic_path(paths.curve_checkpoint(trainer.kind, percent)) as tmp:
            shutil.copyfile(paths.checkpoint(trainer.kind), tmp)
        train_resume.keep_curve(trainer.kind, paths.curve_checkpoint(trainer.kind, percent))
    train_resume.save(trainer, mark)  # what a SIGKILL during the next epoch resumes from


def _epochs(trainer: Trainer, stop_after, log, mark: str, info: dict | None) -> dict[str, Any]:
    """The epochs; on rank 0 (``log``: the run's RunLog, ``info``: the run-info so far)
    files and MLflow after each."""
    cfg, world, state = trainer.cfg, trainer.world, trainer.state
    baseline = trainer.blurry_baseline() if world.main else {}
    tags = _world_tags(world)
    if log is not None:
        log.metrics(baseline, step=0)
        log.params({"model.params": models.count_params(trainer.model)})
        log.tags(tags)  # on the pipeline run too: what `deblur runs` shows per row
    on_steps = (lambda step, loss: log.metrics({"step_loss": loss}, step)) if log else None
    ran = 0
    while state.epoch < cfg.epochs and (stop_after is None or ran < stop_after):
        try:
            row = trainer.train_epoch(on_steps=on_steps)
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
            _save(trainer, info, mark)
            logged = {k: v for k, v in {**row, **timing}.items() if k != "epoch"}
            log.metrics(logged, step=state.epoch)
            tqdm.write(
                f"{trainer.kind} epoch {state.epoch}: loss {row['train_loss']:.4f}  "
                f"val PSNR {row['val_psnr']:.2f} dB (blurry {baseline['val_psnr_blurry']:.2f})  "
                f"SSIM {row['val_ssim']:.4f}  {timing['samples_per_s']:.1f} samples/s"
            )
        if distributed.any_rank(world, trainer.should_stop()):  # asked during validation
            raise preempt.Stop(state.step)
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
