"""`deblur bench --tracking`: what MLflow logging costs a training step, per store.

Three stores, each started here on 127.0.0.1 in a temporary folder: the local SQLite file
(no server), `mlflow server` on SQLite, and the same server behind the basic-auth app
(which checks the password on every request; with auth_cache_ttl_seconds=60 it checks it
once a minute). For each: the latency of one logging call (a log_batch of one metric, the
median of ``calls``), and the overhead per training step of the stage's logging, a point
of the loss curve every LOG_EVERY steps, done two ways: one call per point (how training
logged before runlog.py) and runlog.RunLog's batches, sent every FLUSH_EVERY_S seconds, at
``step_s`` seconds per step (the default GAN's step on 2 CPU cores; the clock is modelled,
the calls are real).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deblur import environ
from deblur.bench.serve import free_port, stop, wait_ready
from deblur.bench.timing import say
from deblur.errors import DeblurError
from deblur.tracking import runlog

LOG_EVERY = 10  # train/loop.py's cadence of the per-step loss curve
ADMIN, PASSWORD = "admin", "bench-admin-password"


def _server(folder: Path, auth_ttl: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--artifacts-destination", str(folder / "artifacts")]
    if auth_ttl is not None:
        ini = folder / "auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {auth_ttl}\n"
        )
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "deblur-bench",
        }
        cmd += ["--app-name", "basic-auth"]
    log = folder / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
    except DeblurError:
        stop(proc)
        raise DeblurError(f"mlflow server did not start; see {log}") from None
    return proc, url


def _measure(uri: str, calls: int, steps: int, step_s: float) -> dict[str, float]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri, uri)
    experiment = client.create_experiment(f"bench-{time.time_ns()}")
    run_id = client.create_run(experiment).info.run_id
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        client.log_batch(run_id, metrics=[Metric("x", float(i), int(time.time() * 1000), i)])
        latencies.append(time.perf_counter() - start)
    per_call = statistics.median(latencies)

    now = [0.0]
    log = runlog.RunLog(client, run_id, uri, echo=say, clock=lambda: now[0])
    spent = 0.0
    for step in range(1, steps + 1):
        now[0] += step_s  # the modelled training step
        if step % LOG_EVERY == 0:
            start = time.perf_counter()
            log.metrics({"step_loss": 0.1}, step)
            spent += time.perf_counter() - start
    start = time.perf_counter()
    log.flush(wait=True)
    spent += time.perf_counter() - start
    return {
        "call_ms": 1000 * per_call,
        "per_step_ms_unbatched": 1000 * per_call / LOG_EVERY,
        "per_step_ms_batched": 1000 * spent / steps,
    }


def bench_tracking(calls: int = 30, steps: int = 800, step_s: float = 0.3) -> dict[str, Any]:
    """Each store -> call_ms, per_step_ms_unbatched, per_step_ms_batched."""
    home = Path(tempfile.mkdtemp(prefix="deblur-bench-tracking-"))
    results: dict[str, Any] = {}
    say("tracking: local SQLite file")
    results["sqlite"] = _measure(f"sqlite:///{home / 'local.db'}", calls, steps, step_s)
    for name, ttl in (("server", None), ("server+auth", 0), ("server+auth ttl 60", 60)):
        folder = home / name.replace(" ", "-").replace("+", "-")
        folder.mkdir()
        say(f"tracking: {name}")
        proc, url = _server(folder, ttl)
        logins = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        try:
            with environ.scoped(logins if ttl is not None else {}):
                results[name] = _measure(url, calls, steps, step_s)
        finally:
            stop(proc)
    results["step_s"] = step_s
    results["load"] = round(os.getloadavg()[0], 2)
    return results


def text(results: dict[str, Any]) -> str:
    lines = [
        f"tracking overhead, {results['step_s']} s per step, loss point every {LOG_EVERY} "
        f"steps (load {results['load']})",
        f"{'store':<20} {'ms/call':>8} {'ms/step, a call per point':>26} {'ms/step, batched':>17}",
    ]
    for name, r in results.items():
        if isinstance(r, dict):
            lines.append(
                f"{name:<20} {r['call_ms']:>8.1f} {r['per_step_ms_unbatched']:>26.2f} "
                f"{r['per_step_ms_batched']:>17.3f}"
            )
    return "\n".join(lines)
