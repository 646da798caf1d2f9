"""The `evaluate` run in MLflow: scores, timings, tables, the curve, registry tags, and the
pipeline run's row that `deblur runs` and the MLflow compare view show."""

from __future__ import annotations

import time
from typing import Any

from deblur import paths
from deblur.config import flatten
from deblur.kinds import registered_name
from deblur.tracking import registry, runs, store


def _numbers(tree: dict) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(tree).items() if isinstance(v, int | float)}


def log_evaluation(
    tracked: dict[str, Any],
    results,
    per_image,
    scores: dict[str, Any],
    version_tags: dict[str, dict],
    curve=None,
) -> tuple[str, dict[str, str]]:
    """The run: ``scores`` (eval.json's figures and run-info's timings, nested as in
    eval.json), both tables, and ``version_tags[kind]`` (the test scores) tagged on the
    registered version built from each scored models/<kind>.pt. The quality curve
    (evaluate/curve.py) becomes metric histories over training steps, e.g.
    ``curve.gan.psnr_gain``, which MLflow's charts draw against the step.

    The pipeline run it belongs to (else the evaluate run itself) gets the row the MLflow
    compare view and `deblur runs` show: ``tracked`` (every param of the pipeline, nested),
    the test metrics, the git commit, the DVC experiment name and the registry version of
    each scored model. Returns the run id and {kind: registered version scored}.
    """
    import mlflow

    with runs.stage_run("evaluate", tracked) as run:
        numbers = _numbers(scores)
        mlflow.log_metrics(numbers)
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
        target = runs.parent_of(run) or run.info.run_id
        _log_results(target, tracked, numbers, scored, run)
        return run.info.run_id, scored


def _log_curve(curve) -> None:
    import mlflow

    values = [c for c in curve.columns if c not in ("model", "percent", "step")]
    for row in curve.dropna(subset=["step"]).itertuples(index=False):
        for name in values:
            mlflow.log_metric(f"curve.{row.model}.{name}", getattr(row, name), step=int(row.step))


def _log_results(target: str, tracked: dict, numbers: dict[str, float], scored: dict, run):
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
        c.log_batch(target, metrics=[Metric(k, v, now, 0) for k, v in numbers.items()])
        runs.log_params(flatten(tracked), run_id=target)
