"""A real PostgreSQL 15 and MLflow's basic-auth server on 127.0.0.1 for the team tests.

PostgreSQL refuses to run as root, so as root its initdb and pg_ctl run as an unprivileged
account (postgres, else nobody) from a folder in the system temp directory that the account
owns (pytest's tmp_path parent is mode 0700, unreachable for it). Each server is ended by
its own PID. Not collected as tests.
"""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.servers import free_port, running

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BIN = Path(sys.executable).parent
ADMIN, ADMIN_PASSWORD = "admin", "admin-password-for-tests"
USERS = {"writer": "writer-password-1", "viewer": "viewer-password-1"}


def _account() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: None (this user) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL")


def _as(account, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    extra = {"user": account.pw_uid, "group": account.pw_gid} if account else {}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **extra, **kw)


@contextmanager
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL cluster -> its URI base ``postgresql+psycopg://pg@127.0.0.1:PORT``."""
    if not (PG_BIN / "initdb").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_BIN}/initdb missing: `make setup` installs postgresql-15")
        pytest.skip(f"{PG_BIN} missing (Debian's postgresql-15; make setup installs it)")
    account = _account()
    home = Path(tempfile.mkdtemp(prefix="deblur-pg-", dir=tempfile.gettempdir()))
    if account:
        os.chown(home, account.pw_uid, account.pw_gid)
    data, port = home / "data", free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    init = _as(
        account, [str(PG_BIN / "initdb"), "-D", str(data), "-U", "pg", "-A", "trust"], env=env
    )
    assert init.returncode == 0, init.stderr[-2000:]
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w"]
    started = _as(account, [*pg_ctl, "-o", opts, "start"], env=env)
    assert started.returncode == 0, started.stderr + (home / "log").read_text()[-2000:]
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        for db in ("mlflow", "auth"):
            made = _as(
                account,
                [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "pg", db],
            )
            assert made.returncode == 0, made.stderr
        yield f"postgresql+psycopg://pg@127.0.0.1:{port}"
    finally:
        _as(account, [*pg_ctl, "-m", "fast", "stop"], env=env)
        _end_pid(pid)
        shutil.rmtree(home, ignore_errors=True)


def _end_pid(pid: int) -> None:
    """The postmaster, by its PID, if pg_ctl stop left it."""
    for sig in (15, 9):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def auth_ini(path: Path, database_uri: str, ttl: int = 0) -> Path:
    ini = configparser.ConfigParser()
    ini["mlflow"] = {
        "default_permission": "READ",
        "database_uri": database_uri,
        "admin_username": ADMIN,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(ttl),
    }
    with path.open("w") as f:
        ini.write(f)
    return path


def server_env(ini: Path | None) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    if ini is not None:
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,  # 12+ characters, or it will not start
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "deblur-tests-csrf-key",
        }
    return env


@contextmanager
def mlflow_server(
    folder: Path, backend: str, auth_db: str | None = None, port: int | None = None
) -> Iterator[str]:
    """`mlflow server` (with the basic-auth app when ``auth_db``) -> its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    ini = auth_ini(folder / "auth.ini", auth_db) if auth_db else None
    port = port or free_port()
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", backend]
    cmd += ["--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if ini is not None:
        cmd += ["--app-name", "basic-auth"]
    url = f"http://127.0.0.1:{port}"
    with running(
        cmd, url, "/health", folder / f"server-{port}.log", timeout=240, env=server_env(ini)
    ):
        yield url


def grant_team(url: str) -> None:
    """The README's team setup: a writer with EDIT on the experiment and both registered
    models, a viewer with the default READ."""
    import mlflow
    from mlflow.server.auth.client import AuthServiceClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        ADMIN,
        ADMIN_PASSWORD,
    )
    try:
        admin = AuthServiceClient(url)
        for user, password in USERS.items():
            admin.create_user(user, password)
        client = mlflow.MlflowClient(url, url)
        # deblur tags its experiment on first use; tagged here, a viewer never needs to
        experiment = client.create_experiment(
            "deblur", tags={"mlflow.experimentKind": "custom_model_development"}
        )
        admin.grant_user_permission("writer", "experiment", experiment, "EDIT")
        for name in ("deblur-gan", "deblur-ae"):
            client.create_registered_model(name)
            admin.grant_user_permission("writer", "registered_model", name, "EDIT")
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
