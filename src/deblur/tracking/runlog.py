"""A training run's metrics and params, sent to MLflow in batches, through a server outage.

Decided: metrics are buffered. Training never waits on the tracking server: `metrics` and
`params` queue what they are given and send it with one `log_batch` per FLUSH_EVERY_S
seconds (per-step logging cost a request per point; a basic-auth server checks the
password on each). When the server stops answering, the queue keeps growing, one line says
since when and for how long it is retried, and everything reaches the server when it is
back. A server gone longer than the patience (DEBLUR_TRACKING_PATIENCE_S, default 120 s)
sets `lost`: the stage then stops after its step with its resume state written, and says so
in one line. MLflow's own retries are cut to none per attempt here, so an attempt on a dead
server costs a refused connection, not MLflow's minutes of backoff.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from deblur import environ
from deblur.errors import DeblurError

FLUSH_EVERY_S = 15.0
RETRY_EVERY_S = 5.0  # while the server is unreachable
MAX_BATCH = 1000  # MLflow's cap on metrics per log_batch (and 100 params)
PATIENCE_ENV = "DEBLUR_TRACKING_PATIENCE_S"
DEFAULT_PATIENCE_S = 120.0


class TrackingLost(DeblurError):
    """The tracking server has not answered for longer than the patience."""


def patience() -> float:
    raw = os.environ.get(PATIENCE_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_PATIENCE_S
    except ValueError:
        raise DeblurError(f"{PATIENCE_ENV}={raw!r}: give seconds, e.g. 120") from None


@contextmanager
def one_attempt(timeout_s: int = 10) -> Iterator[None]:
    """MLflow requests inside make one attempt each (its default: 7 with backoff)."""
    keys = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
    }
    with environ.scoped(keys):
        yield


def unreachable(exc: BaseException) -> bool:
    """A failure that says nothing about the request (server down, restarting, 5xx)."""
    from deblur.tracking.access import status_of

    status = status_of(exc)
    if status is not None and status >= 500:
        return True
    if isinstance(exc, OSError):
        return True
    text = str(exc)
    words = ("Max retries exceeded", "Connection refused", "Connection aborted", "timed out")
    return type(exc).__module__.split(".")[0] in ("mlflow", "requests", "urllib3") and any(
        w in text for w in words
    )


def end_active_run(status: str) -> None:
    """End MLflow's active run as ``status``, in one attempt; a dead server is not waited on
    (the run stays RUNNING there, and the stage's next start closes it: close_stale)."""
    import mlflow

    with one_attempt():
        try:
            mlflow.end_run(status)  # pops the run first, so a failure here leaves none active
        except Exception as exc:
            if not unreachable(exc):
                raise


def close_stale(c, run_ids: list[str], echo: Callable[[str], None]) -> None:
    """Runs an earlier start of this stage left RUNNING (a SIGKILL, a lost server): FAILED.

    ``c`` is an MlflowClient (tracking.client()).
    """
    for run_id in run_ids:
        try:
            run = c.get_run(run_id)
        except Exception as exc:  # deleted, or another store: nothing to close
            if unreachable(exc):
                raise
            continue
        if run.info.status == "RUNNING":
            c.set_terminated(run_id, "FAILED")
            echo(f"closed run {run_id[:8]} ({run.info.run_name}), left RUNNING, as FAILED")


class RunLog:
    """What a run logs while it trains: queued, sent in batches, kept through an outage.

    ``client`` is an MlflowClient (tracking.client()), ``uri`` the store it talks to.
    """

    def __init__(
        self,
        client,
        run_id: str,
        uri: str,
        echo: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.echo, self.clock = echo, clock
        self.patience = patience()
        self.metrics_q: list = []
        self.params_q: list = []
        self.tags_q: list = []
        self.last_try = -FLUSH_EVERY_S
        self.down_since: float | None = None  # clock() of the first failed attempt
        self.lost = False
        self.sent = 0
        self.tag_also: list[str] = []  # runs that get the tags too (the pipeline run)

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.metrics_q += [Metric(k, float(v), now, step) for k, v in values.items()]
        self.flush()

    def params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        for key, value in values.items():
            text = json.dumps(value) if isinstance(value, list) else str(value)
            self.params_q.append(Param(key, text))
        self.flush()

    def tags(self, values: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.tags_q += [RunTag(k, str(v)) for k, v in values.items()]
        self.flush()

    def pending(self) -> int:
        return len(self.metrics_q) + len(self.params_q) + len(self.tags_q)

    def flush(self, wait: bool = False) -> None:
        """Send what is queued if FLUSH_EVERY_S passed (now, with ``wait``; then retried
        until sent or the patience is spent: TrackingLost)."""
        full = len(self.metrics_q) >= MAX_BATCH
        every = FLUSH_EVERY_S if self.down_since is None else RETRY_EVERY_S
        if not self.pending() or (not wait and not full and self.clock() - self.last_try < every):
            return
        while True:
            self.last_try = self.clock()
            try:
                self._send()
            except Exception as exc:
                if not unreachable(exc):
                    raise
                self._failing()
                if not wait:
                    return
                if self.lost:
                    raise self.lost_error(f"{self.pending()} values not sent") from None
                time.sleep(1.0)
                continue
            if self.down_since is not None:
                away = self.clock() - self.down_since
                self.echo(f"tracking server {self.uri} is back after {away:.0f} s; queue sent")
                self.down_since = None
            return

    def _send(self) -> None:
        c = self.client
        with one_attempt():
            while self.tags_q or self.params_q:
                tags, params = self.tags_q[:100], self.params_q[:100]
                c.log_batch(self.run_id, params=params, tags=tags)
                for other in self.tag_also if tags else []:
                    c.log_batch(other, tags=tags)
                del self.tags_q[: len(tags)], self.params_q[: len(params)]
            while self.metrics_q:
                batch = self.metrics_q[:MAX_BATCH]
                c.log_batch(self.run_id, metrics=batch)
                del self.metrics_q[: len(batch)]
                self.sent += len(batch)

    def _failing(self) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            since = datetime.now().strftime("%H:%M:%S")
            self.echo(
                f"tracking server {self.uri} unreachable since {since}; retrying for "
                f"{self.patience:.0f} s ({PATIENCE_ENV}), training goes on, metrics kept"
            )
        if now - self.down_since > self.patience:
            self.lost = True

    def lost_error(self, doing: str) -> TrackingLost:
        away = self.clock() - (self.down_since or self.clock())
        return TrackingLost(
            f"tracking server {self.uri} unreachable for {away:.0f} s (patience "
            f"{self.patience:.0f} s, {PATIENCE_ENV}); {doing}"
        )
