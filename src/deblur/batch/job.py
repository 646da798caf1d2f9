"""`deblur batch`: the run, from the inputs on the driver to the manifest in OUT.

The driver lists the inputs (plan), resolves the model once (model), starts Spark
(session) and reads the files still to do with the ``binaryFile`` source. Each row goes
through ``mlflow.pyfunc.spark_udf`` of that one model with ``errors="rows"`` (a bad file
is a row with its error, not a failed task), then to the executors' writer (write), and
only the small manifest rows come back to the driver. The pixels are deblur.pyfunc's,
which reads, tiles and writes with predict's own functions: the same files.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path

from tqdm import tqdm

from deblur.batch import manifest
from deblur.batch import model as models
from deblur.batch import plan as plans
from deblur.batch import session as sessions
from deblur.batch.write import SCHEMA, SKIPPED, write_results
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE
from deblur.tracking import store

RESULT = "image string, error string, ms double"
_GLOB = str.maketrans({c: f"\\{c}" for c in "\\*?[]{}"})


def _hadoop_path(path: Path) -> str:
    """A file's own name for Spark: Hadoop reads *?[]{} in a path as a glob."""
    return str(path).translate(_GLOB)


def _previous_versions(out_dir: Path) -> dict[str, str]:
    """output -> model_version, from the manifest an earlier run left (if any)."""
    path = out_dir / manifest.NAME
    if not path.is_file():
        return {}
    try:
        return {r["output"]: r["model_version"] for r in manifest.read(path) if r["output"]}
    except (OSError, KeyError, ValueError):
        return {}


def _progress(total: int, counter, stop: threading.Event, show: bool) -> None:
    """Frames finished, from the writer's accumulator (merged as each task ends)."""
    with tqdm(total=total, desc="batch", unit="img", disable=not show) as bar:
        while not stop.wait(0.5):
            bar.update(min(counter.value, total) - bar.n)
        bar.update(min(counter.value, total) - bar.n)


def score(
    spark,
    resolved: models.Resolved,
    todo: dict[Path, Path],
    tile: int,
    overlap: int,
    progress: bool,
) -> list[dict]:
    """The Spark job: each file in ``todo`` deblurred into its output -> manifest rows."""
    import mlflow
    from pyspark.sql import functions as F

    params = {"tile": tile, "overlap": overlap, "errors": "rows"}
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "env_manager=local does not recreate...": the same venv
    try:
        udf = mlflow.pyfunc.spark_udf(
            spark, resolved.uri, result_type=RESULT, env_manager="local", params=params
        )
    finally:
        quiet.setLevel(level)
    sc = spark.sparkContext
    # Enough tasks to share the cores out evenly and keep a retried task's work small.
    spark.conf.set("spark.sql.files.minPartitionNum", str(4 * sc.defaultParallelism))
    targets = sc.broadcast({str(src): str(dst) for src, dst in todo.items()})
    counter = sc.accumulator(0)
    files = spark.read.format("binaryFile").load([_hadoop_path(p) for p in todo])
    scored = files.select("path", udf(F.base64("content")).alias("r"))
    scored = scored.select("path", "r.image", "r.error", "r.ms")
    rows = scored.mapInPandas(partial(write_results, targets=targets, done=counter), SCHEMA)
    stop = threading.Event()
    bar = threading.Thread(target=_progress, args=(len(todo), counter, stop, progress))
    bar.start()
    try:
        return [r.asDict() for r in rows.collect()]
    finally:
        stop.set()
        bar.join()


def _failure(exc: Exception, master: str, log: Path) -> DeblurError:
    text = str(exc).strip()
    reason = next((line for line in text.splitlines() if "Exception" in line), text[:200])
    return DeblurError(
        f"the Spark job on {master} failed ({reason.strip()[:240]}); see {log}. "
        "Rerun the same command: the frames already written are skipped"
    )


def run(
    inputs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    spec: str,
    master: str = "local[*]",
    recursive: bool = False,
    overwrite: bool = False,
    tile: int = TILE,
    overlap: int = OVERLAP,
    conf: dict[str, str] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Deblur every input into ``out_dir`` on Spark; write the manifest; return its rows.

    A DeblurError at the end (non-zero exit) when any file failed; every other file is
    written, and a rerun of the same command skips what is written.
    """
    if tile <= overlap:
        raise DeblurError(f"tile ({tile}) must be larger than overlap ({overlap})")
    start = time.perf_counter()
    # MLflow draws a bar per artifact file as spark_udf fetches the model (83 lines).
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    out = Path(out_dir)
    todo = plans.plan(inputs, out, recursive, overwrite)
    resolved = models.resolve(spec)
    print(
        f"model: {resolved.label}; {len(todo.todo)} to deblur on {master}, "
        f"{len(todo.done)} already written",
        file=sys.stderr,
    )
    rows: list[dict] = []
    if todo.todo:
        spark, log = sessions.start(master, store.tracking_uri(), conf)
        try:
            rows = score(spark, resolved, todo.todo, tile, overlap, progress)
        except DeblurError:
            raise
        except Exception as exc:
            from py4j.protocol import Py4JError

            if (
                not isinstance(exc, Py4JError | ConnectionError)
                and "pyspark" not in type(exc).__module__
            ):
                raise
            raise _failure(exc, master, log) from None
        finally:
            spark.stop()
    for row in rows:
        row["model_version"] = resolved.version
    before = _previous_versions(out)
    rows += [
        {
            "input": str(src),
            "output": str(dst),
            "status": SKIPPED,
            "error": manifest.ALREADY,
            "model_version": before.get(str(dst), ""),
        }
        for src, dst in todo.done.items()
    ]
    rows += [
        {"input": str(p.resolve()), "status": SKIPPED, "error": manifest.NOT_IMAGE}
        for p in todo.found.ignored
    ]
    out.mkdir(parents=True, exist_ok=True)
    try:
        path = manifest.write(out, rows)
    except OSError as exc:  # a full disk: the photos' own error below says more
        manifest.check(rows, out)
        raise DeblurError(f"cannot write {out / manifest.NAME} ({exc.strerror})") from None
    if todo.found.unsearched:
        names = ", ".join(p.name for p in todo.found.unsearched[:5])
        print(f"subfolders not searched (pass --recursive): {names}", file=sys.stderr)
    print(
        manifest.summary(rows, time.perf_counter() - start, resolved.label, path), file=sys.stderr
    )
    manifest.check(rows, out)
    return rows
