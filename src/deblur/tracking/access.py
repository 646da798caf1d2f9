"""A tracking server's refusal (HTTP 401 or 403 from MLflow's basic-auth app) -> one line.

MLflow raises an MlflowException that names the REST endpoint and the status, under ~40
lines of traceback. `refusal` turns it into what a user can act on: who was refused (the
MLFLOW_TRACKING_USERNAME, or no login at all), what they may not do, the permission it
needs and who can give it. Callers that know more than the endpoint (the registered model
and the alias being moved) say so with `acting`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from deblur.errors import DeblurError

# endpoint (after /api/2.0/mlflow/) -> (what was refused, the permission it needs)
_EXPERIMENT = "EDIT on the experiment"
_MODEL = "EDIT on the registered model"
ACTIONS: dict[str, tuple[str, str]] = {
    "experiments/create": ("create the experiment", "an account that may create experiments"),
    "experiments/set-experiment-tag": ("tag the experiment", _EXPERIMENT),
    "runs/create": ("start a run in the experiment", _EXPERIMENT),
    "runs/update": ("end a run of the experiment", _EXPERIMENT),
    "runs/log-batch": ("log to a run of the experiment", _EXPERIMENT),
    "runs/log-metric": ("log to a run of the experiment", _EXPERIMENT),
    "runs/log-parameter": ("log to a run of the experiment", _EXPERIMENT),
    "runs/set-tag": ("tag a run of the experiment", _EXPERIMENT),
    "runs/log-inputs": ("log to a run of the experiment", _EXPERIMENT),
    "runs/log-model": ("log a model in the experiment", _EXPERIMENT),
    "logged-models": ("log a model in the experiment", _EXPERIMENT),
    "registered-models/create": ("register a model", "an account that may create models"),
    "model-versions/create": ("register a new version of the model", _MODEL),
    "model-versions/set-tag": ("tag a version of the registered model", _MODEL),
    "registered-models/alias": ("move an alias of the registered model", _MODEL),
}
_READ = ("read the tracking store", "READ on the experiment and registered models")

_REFUSED = re.compile(r"endpoint (?:/ajax-api|/api)/[\d.]+/mlflow/(?P<endpoint>\S+) failed")
_acting: ContextVar[tuple[str, str] | None] = ContextVar("deblur_acting", default=None)


@contextmanager
def acting(what: str, needs: str) -> Iterator[None]:
    """Name the action under way, e.g. ("move @champion of deblur-gan", "EDIT on the
    registered model"), for a refusal inside it."""
    token = _acting.set((what, needs))
    try:
        yield
    except Exception as exc:
        # The refusal is turned into its line further up, once this context is gone.
        if status_of(exc) in (401, 403) and not hasattr(exc, "deblur_action"):
            exc.deblur_action = (what, needs)
        raise
    finally:
        _acting.reset(token)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an MlflowException carries, or None for anything else."""
    get = getattr(exc, "get_http_status_code", None)
    if get is None or type(exc).__module__.split(".")[0] != "mlflow":
        return None
    try:
        return int(get())
    except (TypeError, ValueError):
        return None


def _action(exc: BaseException) -> tuple[str, str]:
    named = getattr(exc, "deblur_action", None) or _acting.get()
    if named is not None:
        return named
    found = _REFUSED.search(str(exc))
    endpoint = found["endpoint"] if found else ""
    for prefix, action in ACTIONS.items():
        if endpoint.startswith(prefix):
            return action
    return _READ


def refusal(exc: BaseException, uri: str | None = None) -> str | None:
    """The one line for a 401/403 from the tracking server, or None if ``exc`` is not one."""
    status = status_of(exc)
    if status not in (401, 403):
        return None
    what, needs = _action(exc)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "").strip()
    where = f" at {uri}" if uri else ""
    if status == 401 and not user:
        return (
            f"the tracking server{where} needs a login to {what}; set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD (ask its admin for an account)"
        )
    if status == 401:
        return (
            f"the tracking server{where} refused the login of user {user} (wrong password or "
            "no such user); check MLFLOW_TRACKING_PASSWORD or ask its admin"
        )
    return f"user {user or 'anonymous'} may not {what} (needs {needs}); ask its owner to grant it"


def raise_if_refused(exc: BaseException, uri: str | None = None) -> None:
    """Inside an ``except MlflowException``: a refusal is not 'not found', say what it is."""
    line = refusal(exc, uri)
    if line is not None:
        raise DeblurError(line) from None
