"""Everything that talks to MLflow: the store, runs, the registered models and their aliases.

Nothing else in the package imports mlflow (but pyfunc.py, the logged model itself), so the
rules of docs/architecture.md's MLflow part live here once: where runs land (also from
`dvc exp run --temp/--queue`), how a run is tagged, how a model is registered so it accepts
any image size, and which version holds an alias (deblur.promote decides who gets one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deblur import access, fsutil, paths, runlog
from deblur.config import flatten
from deblur.errors import DeblurError
from deblur.kinds import registered_name

EXPERIMENT = "deblur"
CHAMPION, CHALLENGER = "champion", "challenger"
# MLflow 3 opens an experiment on its GenAI overview unless this tag says it trains models.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# One `dvc repro` / `dvc exp run` = one parent run ("pipeline run"); its stage runs nest
# under it and share PIPELINE_TAG. RESULTS_TAG marks the run that holds a pipeline run's
# test results, params and scored versions: the row `deblur runs` and the report list.
PIPELINE_TAG = "deblur.pipeline"
ROLE_TAG = "deblur.role"
RESULTS_TAG = "deblur.results"
PARENT_TAG = "mlflow.parentRunId"
# DVC runs `--temp` and `--queue` experiments in a copy under <workspace>/.dvc/tmp/exps/.
_EXP_COPY_MARKER = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"


# --------------------------------------------------------------------------- the store


def workspace_root(cwd: str | os.PathLike | None = None) -> Path:
    """The project root whose store runs belong in, even from inside a DVC experiment copy."""
    here = str(Path(cwd or os.getcwd()).resolve())
    if _EXP_COPY_MARKER in here + os.sep:
        return Path(here.split(_EXP_COPY_MARKER)[0])
    return Path(here)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the workspace's embedded ``sqlite:///.../mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{workspace_root() / 'mlflow.db'}"


def _check_reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DeblurError(
            f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); "
            "start it (make mlflow-server) or unset MLFLOW_TRACKING_URI to use ./mlflow.db"
        ) from None


_configured: str | None = None


class _NotActionable(logging.Filter):
    """MLflow's log lines a deblur user can do nothing about."""

    NOISE = ("CloudPickle",)  # models-from-code pickles nothing: its version is irrelevant

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in self.NOISE)


class _HideMlflow:
    """warnings.showwarning, less what MLflow's own files warn about."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}mlflow{os.sep}" not in str(filename):
            self.inner(message, category, filename, lineno, file, line)


def quiet_mlflow() -> None:
    """Keep MLflow's warnings about its own internals out of the user's terminal.

    Its UserWarnings (type hints on PythonModel.predict: ours is models-from-code and has a
    signature) and the CloudPickle version line on every log_model. A filter alone is not
    enough: log_model runs under MLflow's own `simplefilter("once", UserWarning)`, which
    comes first, so what reaches the display is screened too. Set each time: pytest and
    warnings.catch_warnings restore what they found.
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow(\.|$)")
    if not isinstance(warnings.showwarning, _HideMlflow):
        warnings.showwarning = _HideMlflow(warnings.showwarning)
    pyfunc = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _NotActionable) for f in pyfunc.filters):
        pyfunc.addFilter(_NotActionable())


def setup() -> str:
    """Point mlflow at the store (once per process) and make sure the experiment exists."""
    global _configured
    quiet_mlflow()
    import mlflow

    uri = tracking_uri()
    if _configured != uri:
        _check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment = mlflow.set_experiment(EXPERIMENT)
        # When another process created it at the same moment (two queue workers on a fresh
        # server), MLflow returns it without making it active: runs would land in Default.
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        key, kind = EXPERIMENT_KIND
        if experiment.tags.get(key) != kind:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, kind)
        _configured = uri
    return uri


def client():
    from mlflow import MlflowClient

    setup()
    return MlflowClient()


# --------------------------------------------------------------------------- runs


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


def _experiment_id(c) -> str:
    return c.get_experiment_by_name(EXPERIMENT).experiment_id


def pipeline_parent(key: str) -> str:
    """The id of the parent run for ``key``: found, or created (named after the experiment)."""
    c = client()
    exp_id = _experiment_id(c)
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
def stage_run(
    stage: str, params, sections: tuple[str, ...] = (), logged: dict | None = None
) -> Iterator[Any]:
    """An MLflow run named after the DVC stage, tagged with commit, stage and params hash.

    Inside a `dvc repro` or `dvc exp run` it nests under that invocation's pipeline run
    (pipeline_parent), which ends FINISHED or FAILED with it. Logs ``logged`` if given,
    else the params of ``sections`` (all when empty). The run ends FAILED if the body
    raises, so a crashed training is visible as such in the UI.
    """
    import mlflow

    setup()
    if logged is None:
        dump = params.model_dump(mode="json", by_alias=True)
        logged = {k: dump[k] for k in sections} if sections else dump
    tags = {
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "git.commit": git_commit(),
        "params.hash": params.section_hash(*sections),
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
            items = list(flatten(logged).items())
            for i in range(0, len(items), 100):  # MLflow caps one log_params batch at 100
                log_params(dict(items[i : i + 100]))
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
                    client().set_terminated(parent, status)
                except Exception as exc:
                    if not runlog.unreachable(exc):
                        raise


def log_params(values: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()})


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


# --------------------------------------------------------------------------- the model flavour


def model_signature():
    """Base64 image files in, base64 PNGs out (deblur.pyfunc), one string column each.

    Any image size goes through: a column of strings pins no height or width.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    column = Schema([ColSpec("string", "image")])
    return ModelSignature(inputs=column, outputs=column)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("torch", "numpy", "pandas", "pillow", "scikit-image", "pyyaml", "pydantic")
    ] + [f"mlflow=={version('mlflow')}"]


def _input_example():
    """A small image as the REST request carries it: what MLflow validates the model with."""
    import base64
    import io

    import pandas as pd
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode("ascii")]})


def log_model(kind: str, checkpoint: str | os.PathLike):
    """Log the checkpoint as a pyfunc model in the active run and register a new version."""
    import mlflow

    package = Path(__file__).parent  # the deblur package, shipped with the model as code
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package / "pyfunc.py"),  # models-from-code: nothing pickled
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(package)],
        signature=model_signature(),
        input_example=_input_example(),
        pip_requirements=_requirements(),
        registered_model_name=registered_name(kind),
    )
    return client().get_model_version(registered_name(kind), info.registered_model_version)


# --------------------------------------------------------------------------- registry


_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def cache_root() -> Path:
    """Where registry checkpoints are kept: $XDG_CACHE_HOME/deblur/models (~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "deblur" / "models"


def download_checkpoint(uri: str) -> Path:
    """``models:/deblur-gan@champion`` (or ``/3``, or ``runs:/...``) -> local checkpoint path.

    A registered version never changes, so its checkpoint is downloaded once into
    cache_root(), keyed by store, name and version: the next call (an alias resolves in
    one registry query) neither downloads nor prints. A cached file whose SHA-256 is not
    the one tagged at registration is fetched again.
    """
    from mlflow.exceptions import MlflowException

    setup()
    found = _REGISTERED.match(uri)
    if found is None:  # runs:/... and other forms: no version to key a cache on
        return _checkpoint_in(_download(uri, Path(tempfile.mkdtemp(prefix="deblur-model-"))), uri)
    name = found["name"]
    try:
        mv = (
            client().get_model_version_by_alias(name, found["alias"])
            if found["alias"]
            else client().get_model_version(name, found["version"])
        )
    except MlflowException as exc:
        access.raise_if_refused(exc, tracking_uri())
        raise DeblurError(
            f"model {uri} not found in {tracking_uri()} ({exc.error_code}); "
            "train and promote first, or pass a checkpoint path"
        ) from None
    store = hashlib.sha256(tracking_uri().encode()).hexdigest()[:16]
    home = cache_root() / store / name / str(mv.version)
    want = mv.tags.get("checkpoint_sha256")
    cached = sorted(home.glob("*.pt")) if home.is_dir() else []
    if cached and (want is None or fsutil.sha256(cached[0]) == want):
        return cached[0]
    home.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_dir(home) as tmp:
        got = _checkpoint_in(_download(f"models:/{name}/{mv.version}", tmp), uri)
        keep = tmp / got.name
        if got != keep:
            got.replace(keep)  # the checkpoint alone: the logged model's code stays behind
        for extra in [p for p in tmp.iterdir() if p != keep]:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return home / keep.name


def _download(uri: str, into: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    # MLflow draws a progress bar per file (52 for a logged model) unless told not to.
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    try:
        with _env(quiet):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))
    except MlflowException as exc:
        access.raise_if_refused(exc, tracking_uri())
        raise DeblurError(
            f"model {uri} not found in {tracking_uri()} ({exc.error_code}); "
            "train and promote first, or pass a checkpoint path"
        ) from None


def _checkpoint_in(local: Path, uri: str) -> Path:
    # A logged model keeps its checkpoint under artifacts/; a run path may point at it directly.
    found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
    if not found:
        raise DeblurError(f"{uri} holds no deblur checkpoint; pass a models:/deblur-... URI")
    return found[0]


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tag_version(kind: str, version: str | int, metrics: dict[str, float]) -> None:
    c = client()
    for key, value in metrics.items():
        c.set_model_version_tag(registered_name(kind), str(version), key, f"{value:.6g}")


def versions(kind: str) -> list:
    """Every registered version of a model, newest first."""
    name = registered_name(kind)
    found = client().search_model_versions(f"name='{name}'")
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def version_of_checkpoint(kind: str, checkpoint: str | os.PathLike):
    """The newest registered version built from exactly this checkpoint file, or None."""
    digest = fsutil.sha256(checkpoint)
    return next((mv for mv in versions(kind) if mv.tags.get("checkpoint_sha256") == digest), None)


def alias_holder(kind: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(registered_name(kind), alias)
    except MlflowException as exc:
        access.raise_if_refused(exc, tracking_uri())
        return None


def store_exists() -> bool:
    """False for a SQLite store not created yet: asking it anything would create it empty."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def champion(kind: str):
    """The version holding @champion, or None (no store yet, or no champion in it)."""
    return alias_holder(kind, CHAMPION) if store_exists() else None


def set_alias(kind: str, alias: str, version: str | int) -> None:
    name = registered_name(kind)
    with access.acting(f"move @{alias} of {name}", "EDIT on the registered model"):
        client().set_registered_model_alias(name, alias, str(version))


# --------------------------------------------------------------------------- stage hooks


def register_trained(kind: str, checkpoint: str | os.PathLike):
    """Log + register the checkpoint from inside the training run; tag it with its digest.

    The tag ties the version to the exact models/<kind>.pt file that `deblur evaluate`
    scores (the training state beside it, paths.train_state, stays out of the registry).
    """
    name = registered_name(kind)
    with access.acting(f"register a new version of {name}", "EDIT on the registered model"):
        mv = log_model(kind, Path(checkpoint))
    client().set_model_version_tag(
        registered_name(kind), mv.version, "checkpoint_sha256", fsutil.sha256(checkpoint)
    )
    return mv


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

    with stage_run("evaluate", params) as run:
        scores = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        mlflow.log_metrics(scores)
        mlflow.log_table(data=results, artifact_file="results.json")
        mlflow.log_table(data=per_image, artifact_file="per_image.json")
        if curve is not None:
            _log_curve(curve)
        scored: dict[str, str] = {}
        for kind, tags in version_tags.items():
            ckpt = paths.checkpoint(kind)
            mv = version_of_checkpoint(kind, ckpt) if ckpt.exists() else None
            if mv is not None:
                tag_version(kind, mv.version, tags)
                client().set_model_version_tag(
                    registered_name(kind), mv.version, "evaluate_run_id", run.info.run_id
                )
                scored[kind] = str(mv.version)
        _log_results(parent_of(run) or run.info.run_id, params, scores, scored, run)
        return run.info.run_id


def _log_curve(curve) -> None:
    import mlflow

    values = [c for c in curve.columns if c not in ("model", "percent", "step", "seconds")]
    for row in curve.dropna(subset=["step"]).itertuples(index=False):
        for name in values:
            mlflow.log_metric(f"curve.{row.model}.{name}", getattr(row, name), step=int(row.step))


def _log_results(target: str, params, scores: dict[str, float], scored: dict, run) -> None:
    from mlflow.entities import Metric, Param, RunTag

    c = client()
    now = int(time.time() * 1000)
    tags = {
        RESULTS_TAG: "true",
        "git.commit": run.data.tags.get("git.commit", ""),
        "dvc.exp": run.data.tags.get("dvc.exp", ""),
        "evaluate_run_id": run.info.run_id,
        **{f"registry.{kind}": version for kind, version in scored.items()},
    }
    c.log_batch(target, tags=[RunTag(k, v) for k, v in tags.items()])
    if target != run.info.run_id:  # the evaluate run logged both already
        c.log_batch(target, metrics=[Metric(k, v, now, 0) for k, v in scores.items()])
        logged = flatten(params.model_dump(mode="json", by_alias=True))
        items = [
            Param(k, json.dumps(v) if isinstance(v, list) else str(v)) for k, v in logged.items()
        ]
        for i in range(0, len(items), 100):  # MLflow caps one batch at 100 params
            c.log_batch(target, params=items[i : i + 100])


def log_report(params, files: list[str | os.PathLike]) -> str:
    """The `report` run: the rendered report and its figures as artifacts."""
    with stage_run("report", params, sections=("evaluate",)) as run:
        log_artifacts(files, artifact_path="report")
        return run.info.run_id
