"""Everything that talks to MLflow: the store, runs, the registered models and their aliases.

Nothing else in the package imports mlflow (but pyfunc.py, the logged model itself), so the
rules of docs/architecture.md's MLflow part live here once: where runs land (also from
`dvc exp run --temp/--queue`), how a run is tagged, how a model is registered so it accepts
any image size, and which version holds an alias (deblur.promote decides who gets one).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from deblur import fsutil
from deblur.config import flatten
from deblur.errors import DeblurError
from deblur.kinds import registered_name

EXPERIMENT = "deblur"
CHAMPION, CHALLENGER = "champion", "challenger"
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


def setup() -> str:
    """Point mlflow at the store (once per process) and make sure the experiment exists."""
    global _configured
    import mlflow

    uri = tracking_uri()
    if _configured != uri:
        _check_reachable(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        mlflow.set_experiment(EXPERIMENT)
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


@contextmanager
def stage_run(
    stage: str, params, sections: tuple[str, ...] = (), logged: dict | None = None
) -> Iterator[Any]:
    """An MLflow run named after the DVC stage, tagged with commit, stage and params hash.

    Logs ``logged`` if given, else the params of ``sections`` (all when empty). The run
    ends FAILED if the body raises, so a crashed training is visible as such in the UI.
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
    }
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        items = list(flatten(logged).items())
        for i in range(0, len(items), 100):  # MLflow caps one log_params batch at 100
            log_params(dict(items[i : i + 100]))
        yield run


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

    import deblur

    package = Path(deblur.__file__).parent
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


def download_checkpoint(uri: str) -> Path:
    """``models:/deblur-gan@champion`` (or ``runs:/...``) -> local path of its checkpoint."""
    import mlflow
    from mlflow.exceptions import MlflowException

    setup()
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="deblur-model-")
            )
        )
    except MlflowException as exc:
        raise DeblurError(
            f"model {uri} not found in {tracking_uri()} ({exc.error_code}); "
            "train and promote first, or pass a checkpoint path"
        ) from None
    # A logged model keeps its checkpoint under artifacts/; a run path may point at it directly.
    found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
    if not found:
        raise DeblurError(f"{uri} holds no deblur checkpoint; pass a models:/deblur-... URI")
    return found[0]


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
    except MlflowException:
        return None


def store_exists() -> bool:
    """False for a SQLite store not created yet: asking it anything would create it empty."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def champion(kind: str):
    """The version holding @champion, or None (no store yet, or no champion in it)."""
    return alias_holder(kind, CHAMPION) if store_exists() else None


def set_alias(kind: str, alias: str, version: str | int) -> None:
    client().set_registered_model_alias(registered_name(kind), alias, str(version))


# --------------------------------------------------------------------------- stage hooks


def register_trained(kind: str, checkpoint: str | os.PathLike):
    """Log + register the checkpoint from inside the training run; tag it with its digest.

    The tag ties the version to the exact models/<kind>.pt file that `deblur evaluate`
    scores (the training state beside it, paths.train_state, stays out of the registry).
    """
    mv = log_model(kind, Path(checkpoint))
    client().set_model_version_tag(
        registered_name(kind), mv.version, "checkpoint_sha256", fsutil.sha256(checkpoint)
    )
    return mv


def log_evaluation(
    params, results, per_image, metrics: dict[str, Any], version_tags: dict[str, dict]
) -> str:
    """The `evaluate` run: scores, both tables, and ``version_tags[kind]`` (the test scores)
    tagged on the registered version built from each scored models/<kind>.pt."""
    import mlflow

    from deblur import paths

    with stage_run("evaluate", params, sections=("evaluate",)) as run:
        mlflow.log_metrics(
            {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        )
        mlflow.log_table(data=results, artifact_file="results.json")
        mlflow.log_table(data=per_image, artifact_file="per_image.json")
        for kind, tags in version_tags.items():
            ckpt = paths.checkpoint(kind)
            mv = version_of_checkpoint(kind, ckpt) if ckpt.exists() else None
            if mv is not None:
                tag_version(kind, mv.version, tags)
                client().set_model_version_tag(
                    registered_name(kind), mv.version, "evaluate_run_id", run.info.run_id
                )
        return run.info.run_id


def log_report(params, files: list[str | os.PathLike]) -> str:
    """The `report` run: the rendered report and its figures as artifacts."""
    with stage_run("report", params, sections=("evaluate",)) as run:
        log_artifacts(files, artifact_path="report")
        return run.info.run_id
