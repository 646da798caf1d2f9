"""The `evaluate` stage: models/*.pt + the test split -> the tables, eval.json, the curve,
the report's sample images, MLflow.

protocol.py scores; this module picks what is scored, writes the stage's files and logs
the run (log.py). Its DVC outs hold what the same code and params reproduce; the timings
(ms per megapixel), the device, the MLflow run id and the registry versions scored go to
run-info/evaluate.json (paths.run_info) and MLflow.
"""

from __future__ import annotations

from deblur import device as devices
from deblur import fsutil, paths, spec
from deblur import models as zoo
from deblur.data.dataset import PairStore
from deblur.evaluate import samples, tables
from deblur.evaluate.curve import score_curve
from deblur.evaluate.log import log_evaluation
from deblur.evaluate.protocol import evaluate, evaluate_options, tracks
from deblur.kinds import KINDS
from deblur.metrics import METRICS

STAGE = "evaluate"


def write_outputs(per_image, results, figures: dict, curve) -> None:
    fsutil.write_text(paths.PER_IMAGE_CSV, per_image[tables.PER_IMAGE_SAVED].to_csv(index=False))
    fsutil.write_text(paths.CURVE_CSV, curve.to_csv(index=False))
    fsutil.write_text(paths.RESULTS_CSV, results.to_csv(index=False))
    fsutil.write_json(paths.EVAL_JSON, figures)


def version_tags(metrics: dict) -> dict[str, dict[str, float]]:
    """What `deblur promote` compares: test_<metric> of each scored model."""
    return {
        kind: {f"test_{name}": metrics[kind][name] for name in METRICS}
        for kind in KINDS
        if kind in metrics
    }


def open_stores(protocol: str):
    """(test, train) pairs of data/processed: test at full resolution under either protocol,
    train as preprocessed (the GAN's squares when ``protocol``, preprocess.protocol, is
    resize)."""
    test = PairStore(root=paths.PROCESSED, split="test")
    kind = "gan" if protocol == "resize" else None
    return test, PairStore(root=paths.PROCESSED, split="train", kind=kind)


def run(ev, preprocess, dataset: str, tracked: dict, device: str = "auto") -> dict:
    """The DVC stage: models/*.pt + the test split -> reports/*.csv, metrics/eval.json,
    plots/curve.csv, reports/samples/, run-info/evaluate.json and the MLflow run.

    ``ev`` is params' evaluate section, ``preprocess`` its preprocess section, ``dataset``
    data.name; ``tracked`` is every param of the pipeline (nested), for the MLflow row of
    the pipeline run only. Returns eval.json's figures.
    """
    dev = devices.resolve(device)
    loaded = {kind: spec.load(kind, device=dev) for kind in KINDS}
    test, train = open_stores(preprocess.protocol)
    protocols = tracks(ev.protocol, preprocess.resize)
    per_image, labels = evaluate(loaded, test, train, ev, protocols, dev)
    summary = tables.summarize(per_image)
    curve = score_curve(summary, protocols, test, ev, dev)
    n_params = {kind: zoo.count_params(model) for kind, model in loaded.items()}
    results = tables.results_table(summary, labels, n_params, dataset)
    scores = tables.eval_metrics(summary, protocols)
    optional = evaluate_options(loaded, test, ev, protocols, dev)
    if not optional.empty:
        scores["options"] = tables.option_metrics(tables.summarize(optional), summary)
    figures, timings = tables.split_timings(scores)
    samples.write(loaded, test, per_image, ev)
    write_outputs(per_image, results, figures, curve)
    print(results.to_string(index=False))
    for key, option in scores.get("options", {}).items():
        print(f"option {key}: " + ", ".join(f"{k} {v}" for k, v in option.items()))
    run_id, scored = log_evaluation(
        tracked, results, per_image, scores, version_tags(figures), curve
    )
    info = {
        "mlflow_run_id": run_id,
        "registry": scored,
        "device": str(dev),
        "protocol": tables.protocol_label(protocols),
        "timings": timings,
    }
    fsutil.write_json(paths.run_info(STAGE), info)
    return figures
