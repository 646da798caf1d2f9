"""The evaluate and report stages' logging, kept apart from the tracking package's own jobs
until it moves into deblur.evaluate and deblur.report (their stages own what they log)."""

from __future__ import annotations

import os
import time
from typing import Any

from deblur import paths
from deblur.config import flatten
from deblur.kinds import registered_name
from deblur.tracking import registry, runs, store


def log_evaluation(
    params,
    results,
    per_image,
    metrics: dict[str, Any],
    version_tags: dict[str, dict],
    curve=None,
) -> str:
    """The `evaluate` run: scores, both tables, and ``version_tags[kind]`` (the test scores)
    tagged on the registered version built from each scored models/<kind>.pt. The quality
    curve (evaluate/curve.py) becomes metric histories over training steps, e.g.
    ``curve.gan.psnr_gain``, which MLflow's charts draw against the step.

    The pipeline run it belongs to (else the evaluate run itself) gets the row the MLflow
    compare view and `deblur runs` show: every param, the test metrics, the git commit, the
    DVC experiment name and the registry version of each scored model.
    """
    import mlflow

    with runs.stage_run("evaluate", params) as run:
        scores = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        mlflow.log_metrics(scores)
        mlflow.log_table(data=results, artifact_file="results.json")
        mlflow.log_table(data=per_image, artifact_file="per_image.json")
        if curve is not None:
            _log_curve(curve)
        scored: dict[str, str] = {}
        for kind, tags in version_tags.items():
            ckpt = paths.checkpoint(kind)
            mv = registry.version_of_checkpoint(kind, ckpt) if ckpt.exists() else None
            if mv is not None:
                registry.tag_version(kind, mv.version, tags)
                store.client().set_model_version_tag(
                    registered_name(kind), mv.version, "evaluate_run_id", run.info.run_id
                )
                scored[kind] = str(mv.version)
        _log_results(runs.parent_of(run) or run.info.run_id, params, scores, scored, run)
        return run.info.run_id


def _log_curve(curve) -> None:
    import mlflow

    values = [c for c in curve.columns if c not in ("model", "percent", "step", "seconds")]
    for row in curve.dropna(subset=["step"]).itertuples(index=False):
        for name in values:
            mlflow.log_metric(f"curve.{row.model}.{name}", getattr(row, name), step=int(row.step))


def _log_results(target: str, params, scores: dict[str, float], scored: dict, run) -> None:
    from mlflow.entities import Metric, RunTag

    c = store.client()
    now = int(time.time() * 1000)
    tags = {
        runs.RESULTS_TAG: "true",
        "git.commit": run.data.tags.get("git.commit", ""),
        "dvc.exp": run.data.tags.get("dvc.exp", ""),
        "evaluate_run_id": run.info.run_id,
        **{f"registry.{kind}": version for kind, version in scored.items()},
    }
    c.log_batch(target, tags=[RunTag(k, v) for k, v in tags.items()])
    if target != run.info.run_id:  # the evaluate run logged both already
        c.log_batch(target, metrics=[Metric(k, v, now, 0) for k, v in scores.items()])
        runs.log_params(flatten(params.model_dump(mode="json", by_alias=True)), target)


def log_report(params, files: list[str | os.PathLike]) -> str:
    """The `report` run: the rendered report and its figures as artifacts."""
    with runs.stage_run("report", params, sections=("evaluate",)) as run:
        runs.log_artifacts(files, artifact_path="report")
        return run.info.run_id
