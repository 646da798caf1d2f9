"""The `evaluate` stage: models/*.pt + the test split -> the tables, eval.json, the curve, MLflow.

protocol.py scores; this module picks what is scored, writes the stage's files and logs
the run (as train/stage.py does for training).
"""

from __future__ import annotations

from deblur import device as devices
from deblur import fsutil, paths, spec
from deblur import models as zoo
from deblur.data.dataset import PairStore
from deblur.evaluate import tables
from deblur.evaluate.curve import score_curve
from deblur.evaluate.protocol import evaluate, evaluate_options, tracks
from deblur.kinds import KINDS
from deblur.metrics import METRICS
from deblur.tracking.stages import log_evaluation


def write_outputs(per_image, results, metrics, curve) -> None:
    fsutil.write_text(paths.PER_IMAGE_CSV, per_image.to_csv(index=False))
    fsutil.write_text(paths.CURVE_CSV, curve.to_csv(index=False))
    fsutil.write_text(paths.RESULTS_CSV, results.to_csv(index=False))
    fsutil.write_json(paths.EVAL_JSON, metrics)


def version_tags(metrics: dict) -> dict[str, dict[str, float]]:
    """What `deblur promote` compares: test_<metric> of each scored model."""
    return {
        kind: {f"test_{name}": metrics[kind][name] for name in METRICS}
        for kind in KINDS
        if kind in metrics
    }


def open_stores(params):
    """(test, train) pairs of data/processed: test at full resolution under either protocol,
    train as preprocessed (the GAN's squares when preprocess.protocol is resize)."""
    test = PairStore(root=paths.PROCESSED, split="test")
    kind = "gan" if params.preprocess.protocol == "resize" else None
    return test, PairStore(root=paths.PROCESSED, split="train", kind=kind)


def run(params, device: str = "auto") -> dict:
    """The DVC stage: models/*.pt + the test split -> reports/*.csv, metrics/eval.json, MLflow."""
    dev = devices.resolve(device)
    loaded = {kind: spec.load(kind, device=dev) for kind in KINDS}
    test, train = open_stores(params)
    per_image, labels = evaluate(loaded, test, train, params, dev)
    summary = tables.summarize(per_image)
    curve = score_curve(summary, tracks(params), test, params, dev)
    n_params = {kind: zoo.count_params(model) for kind, model in loaded.items()}
    results = tables.results_table(summary, labels, n_params, params.data.name)
    metrics = tables.eval_metrics(summary, tracks(params), str(dev))
    optional = evaluate_options(loaded, test, params, dev)
    if not optional.empty:
        metrics["options"] = tables.option_metrics(tables.summarize(optional), summary)
    write_outputs(per_image, results, metrics, curve)
    print(results.to_string(index=False))
    for key, scores in metrics.get("options", {}).items():
        print(f"option {key}: " + ", ".join(f"{k} {v}" for k, v in scores.items()))
    run_id = log_evaluation(params, results, per_image, metrics, version_tags(metrics), curve)
    if isinstance(run_id, str):  # so the report can name the run behind its numbers
        metrics["mlflow_run_id"] = run_id
        fsutil.write_json(paths.EVAL_JSON, metrics)
    return metrics
