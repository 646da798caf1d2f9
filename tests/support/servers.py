"""Starting and stopping real servers on 127.0.0.1 for the tests (not collected as tests)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deblur.bench.serve import free_port, stop  # noqa: F401  (free_port: for the tests)


@contextmanager
def running(
    cmd: list[str], url: str, probe: str, log: Path, timeout: float = 120, **popen
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` until ``url + probe`` answers 200; stop it afterwards, whatever happens.

    Output goes to ``log`` (a file, not a pipe nobody drains) and is shown if it dies.
    """
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + probe, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url}{probe} did not answer within {timeout:.0f} s")
            time.sleep(0.5)
        yield proc
    finally:
        stop(proc)


@contextmanager
def in_thread(app, settings=None) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn in a thread on a free loopback port -> its URL.

    ``settings``: a uvicorn.Config for ``app`` (default: uvicorn's, quiet). The app's
    objects stay inspectable from the test (they share the process).
    """
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(settings or uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
