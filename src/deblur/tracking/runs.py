"""A stage's MLflow run, grouped per pipeline run, and what it logs.

One `dvc repro` / `dvc exp run` = one parent run ("pipeline run"); its stage runs nest
under it and share PIPELINE_TAG. RESULTS_TAG marks the run that holds a pipeline run's
test results, params and scored versions: the row `deblur runs` lists.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deblur.config import flatten, params_hash
from deblur.tracking import runlog, store

PIPELINE_TAG = "deblur.pipeline"
ROLE_TAG = "deblur.role"
RESULTS_TAG = "deblur.results"
PARENT_TAG = "mlflow.parentRunId"
PARAMS_PER_BATCH = 100  # MLflow caps one log_batch at 100 params


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _dvc_ancestor() -> str | None:
    """host:pid:start of the `dvc` process this one runs under (Linux /proc), or None.

    DVC runs each stage command as a child (through a shell), and tells it nothing that
    names the invocation; the dvc process itself, with its start time, does.
    """
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        if b"dvc" in [os.path.basename(a) for a in argv[:2]]:
            return f"{socket.gethostname()}:{pid}:{fields[19]}"  # stat field 22: start time
        pid = int(fields[1])  # stat field 4: the parent's pid
    return None


def pipeline_key() -> str | None:
    """What the stage runs of one `dvc repro` / `dvc exp run` share, or None outside DVC.

    DEBLUR_PIPELINE_RUN names it explicitly (a script that runs the stage commands itself);
    else the DVC experiment name and the dvc process; a stage run by hand stands alone.
    """
    explicit = os.environ.get("DEBLUR_PIPELINE_RUN", "").strip()
    if explicit:
        return explicit
    if not os.environ.get("DVC_STAGE"):
        return None
    parts = [os.environ.get("DVC_EXP_NAME", ""), _dvc_ancestor() or ""]
    return "|".join(parts) if any(parts) else None


def pipeline_parent(key: str) -> str:
    """The id of the parent run for ``key``: found, or created (named after the experiment)."""
    c = store.client()
    exp_id = store.experiment_id(c)
    found = c.search_runs(
        [exp_id],
        f"tags.`{PIPELINE_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        c.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    commit = git_commit()
    name = os.environ.get("DVC_EXP_NAME") or f"repro {commit[:7]}"
    tags = {
        PIPELINE_TAG: key,
        ROLE_TAG: "pipeline",
        "git.commit": commit,
        "dvc.exp": os.environ.get("DVC_EXP_NAME", ""),
    }
    return c.create_run(exp_id, run_name=name, tags=tags).info.run_id


def parent_of(run) -> str | None:
    return run.data.tags.get(PARENT_TAG)


@contextmanager
def stage_run(stage: str, logged: dict[str, Any]) -> Iterator[Any]:
    """An MLflow run named after the DVC stage, tagged with commit, stage and params hash.

    Inside a `dvc repro` or `dvc exp run` it nests under that invocation's pipeline run
    (pipeline_parent), which ends FINISHED or FAILED with it. Logs ``logged``, the stage's
    params as a nested mapping of JSON types (a stage's own sections). The run ends FAILED
    if the body raises, so a crashed training is visible as such in the UI.
    """
    import mlflow

    store.setup()
    tags = {
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "git.commit": git_commit(),
        "params.hash": params_hash(logged),
        "dvc.exp": os.environ.get("DVC_EXP_NAME", ""),
        ROLE_TAG: "stage",
    }
    key = pipeline_key()
    parent = pipeline_parent(key) if key else None
    if parent:
        tags |= {PIPELINE_TAG: key, PARENT_TAG: parent}
    status = "FAILED"
    try:
        run = mlflow.start_run(run_name=stage, tags=tags)
        try:
            log_params(flatten(logged))
            yield run
        except BaseException as exc:
            # KILLED for a signal (train/preempt.py), else FAILED; a dead server is not
            # waited on: the stage's next start closes the run (runlog.close_stale).
            status = getattr(exc, "run_status", "FAILED")
            runlog.end_active_run(status)
            raise
        mlflow.end_run("FINISHED")
        status = "FINISHED"
    finally:
        if parent:
            with runlog.one_attempt():
                try:
                    store.client().set_terminated(parent, status)
                except Exception as exc:
                    if not runlog.unreachable(exc):
                        raise


def log_params(values: dict[str, Any], run_id: str | None = None) -> None:
    """Params (a list as JSON) on ``run_id``, else the active run, in batches MLflow takes."""
    import mlflow
    from mlflow.entities import Param

    run_id = run_id or mlflow.active_run().info.run_id
    items = [Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in values.items()]
    c = store.client()
    for i in range(0, len(items), PARAMS_PER_BATCH):
        c.log_batch(run_id, params=items[i : i + PARAMS_PER_BATCH])


def log_epoch(metrics: dict[str, float], step: int) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(paths: list[str | os.PathLike], artifact_path: str | None = None) -> None:
    import mlflow

    for path in paths:
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif Path(path).exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
