"""`deblur serve` as a process: the port checked, uvicorn's limits, the exposure warning,
and SIGTERM/SIGINT turned into a clean stop that removes the users' photos."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys

from deblur import device as devices
from deblur.config import ServeConfig
from deblur.errors import DeblurError
from deblur.kinds import LABELS
from deblur.serve.app import create_app
from deblur.serve.connections import protocol
from deblur.serve.guard import is_loopback
from deblur.serve.models import load_models

TOKEN_ENV = "DEBLUR_SERVE_TOKEN"


def _check_port(host: str, port: int) -> None:
    """Fail in one line on a bad host or a taken port, before loading any model (uvicorn
    would only find out after, and log a traceback)."""
    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror:
        raise DeblurError(f"--host {host} is neither an IP address nor a known name") from None
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise DeblurError(
            f"cannot listen on {host}:{port} ({reason}); pick another --port or --host"
        ) from None


def uvicorn_config(app, **kwargs):
    """uvicorn's settings for ``app``: its header deadline and idle timeout (serve params)."""
    import uvicorn

    limits = app.state.deblur.limits
    return uvicorn.Config(
        app,
        http=protocol(limits.header_timeout_s),
        timeout_keep_alive=limits.idle_timeout_s,
        log_level="warning",
        **kwargs,
    )


def exposure_warning(host: str, token: str | None) -> str | None:
    """The one line `deblur serve` prints when bound beyond loopback with no token."""
    if is_loopback(host) or token:
        return None
    return (
        f"warning: serving on {host} without a token: anyone who can reach this address "
        "can upload photos and spend this machine's CPU; pass --token (or set "
        f"{TOKEN_ENV})"
    )


class Stopped(Exception):
    """SIGTERM or SIGINT, once uvicorn has shut down: unwinds run() so its cleanup runs."""


def _stop(signum, frame):
    raise Stopped(signum)


def run(
    host: str,
    port: int,
    tile: int,
    overlap: int,
    device: str = "auto",
    limits: ServeConfig | None = None,
    token: str | None = None,
) -> None:
    """`deblur serve`: load the models, then serve until SIGTERM or Ctrl-C.

    uvicorn shuts down gracefully on either signal and then raises it again, which would
    kill the process before the temporary folder is removed: so both are turned into an
    exception here first, and the folder goes in ``finally`` whichever way it stops.
    """
    import uvicorn

    _check_port(host, port)
    token = token or os.environ.get(TOKEN_ENV) or None
    dev = devices.resolve(device)
    served = load_models(dev)
    for s in served.values():
        print(f"{LABELS[s.kind]:<12} {s.describe()['source']}")
    limits = limits or ServeConfig()
    app = create_app(
        served, tile=tile, overlap=overlap, device=dev, limits=limits, host=host, token=token
    )
    shown = f"[{host}]" if ":" in host else host
    page = f"http://{shown}:{port}" + (f"/#token={token}" if token else "")
    if warning := exposure_warning(host, token):
        print(warning, file=sys.stderr, flush=True)
    print(
        f"deblur demo on {page}  (one job at a time, {limits.max_waiting} may "
        f"wait up to {limits.timeout_s:g} s; Ctrl-C stops it)",
        flush=True,
    )
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(uvicorn_config(app, host=host, port=port)).run()
    except Stopped as stop:
        name = signal.Signals(stop.args[0]).name
        print(f"stopped ({name}); removed {app.state.folder}", flush=True)
        raise SystemExit(128 + stop.args[0]) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(app.state.folder, ignore_errors=True)
