"""The tracking store: its URI (the workspace's even from a DVC experiment copy), the one
experiment, MLflow's own warnings kept out of the terminal, and the client."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from deblur.errors import DeblurError

EXPERIMENT = "deblur"
# MLflow 3 opens an experiment on its GenAI overview unless this tag says it trains models.
EXPERIMENT_TYPE_TAG = ("mlflow.experimentKind", "custom_model_development")
# DVC runs `--temp` and `--queue` experiments in a copy under <workspace>/.dvc/tmp/exps/.
_EXP_COPY_MARKER = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"


def workspace_root(cwd: str | os.PathLike | None = None) -> Path:
    """The project root whose tracking store runs belong in, even from a DVC experiment copy."""
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


def exists() -> bool:
    """False for a SQLite tracking store not created yet: asking it anything would create it."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


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
    """Point mlflow at the tracking store (once per process); make sure the experiment exists."""
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
        key, value = EXPERIMENT_TYPE_TAG
        if experiment.tags.get(key) != value:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        _configured = uri
    return uri


def client():
    from mlflow import MlflowClient

    setup()
    return MlflowClient()


def experiment_id(c=None) -> str:
    return (c or client()).get_experiment_by_name(EXPERIMENT).experiment_id
