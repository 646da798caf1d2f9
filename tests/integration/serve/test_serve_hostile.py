"""The demo server under hostile clients, over real HTTP on 127.0.0.1: slow headers and
bodies, uploads withheld, foreign hosts and origins, a missing token, signals, and a
bounded schemathesis run against its OpenAPI schema.

Each server here is uvicorn configured as `deblur serve` configures it
(serve_server.uvicorn_config: the header deadline and the idle timeout included), on a port
of its own, in a thread.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image
from support.servers import free_port, in_thread, running
from support.tiny_models import random_image, save_tiny

from deblur.config import ServeConfig
from deblur.serve import app as serve_app
from deblur.serve import models as serve_models
from deblur.serve import server as serve_server
from deblur.serve.guard import is_loopback

TILE, OVERLAP = 64, 16
BOUNDARY = "hostileboundary"


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models") / "gan.pt", "gan")


def make_app(tiny, token=None, **limits):
    served = {"gan": serve_models.Served("gan", "tiny", tiny)}
    return serve_app.create_app(
        served, tile=TILE, overlap=OVERLAP, limits=ServeConfig(**limits), warm=False, token=token
    )


def serving(app):
    """uvicorn as `deblur serve` runs it (its header deadline and idle timeout), in a thread."""
    return in_thread(app, serve_server.uvicorn_config(app))


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within ``seconds``, what it sent)."""
    sock.settimeout(0.2)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def upload_head(url: str, length: int, path: str = "/api/jobs") -> bytes:
    netloc = url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()


def withheld(url: str, length: int = 5_000_000) -> socket.socket:
    """An upload that sends its headers and a first piece of its body, then nothing."""
    sock = connect(url)
    sock.sendall(upload_head(url, length) + b"\x89PNG" + b"\0" * 60_000)
    return sock


def until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def post(url: str, headers: dict | None = None, path: str = "/api/jobs"):
    files = {"file": ("photo.png", png(random_image(24, 32)))}
    return requests.post(
        url + path, files=files, data={"model": "gan"}, headers=headers or {}, timeout=60
    )


# --------------------------------------------------------------------------- slow clients


def test_slow_headers_and_silent_connections_are_closed(tiny):
    with serving(make_app(tiny, header_timeout_s=0.5)) as url:
        silent = connect(url)
        trickle = connect(url)
        trickle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no end
        assert closed_within(silent, 10)[0]
        assert closed_within(trickle, 10)[0]
        assert requests.get(url + "/health", timeout=10).status_code == 200  # others served


def test_an_idle_kept_alive_connection_is_closed(tiny):
    with serving(make_app(tiny, idle_timeout_s=0.5, header_timeout_s=30)) as url:
        sock = connect(url)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        closed, got = closed_within(sock, 10)
        assert closed and got.startswith(b"HTTP/1.1 200")


def test_a_slow_body_is_408_and_its_upload_removed(tiny):
    app = make_app(tiny, body_timeout_s=1.0)
    folder = app.state.deblur.folder
    with serving(app) as url:
        sock = withheld(url)
        until(lambda: any(folder.rglob("upload")), "the upload to reach the disk")
        closed, got = closed_within(sock, 15)
        assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
        assert b"did not arrive within 1 s (serve.body_timeout_s)" in got
        assert not any(folder.rglob("upload"))


# --------------------------------------------------------------------------- uploads in flight


def test_uploads_in_flight_are_capped_with_503_and_retry_after(tiny):
    with serving(make_app(tiny, max_uploads=2)) as url:
        held = [withheld(url), withheld(url)]
        until(lambda: requests.get(url + "/health").json()["uploads"]["receiving"] == 2, "two")
        refused = post(url)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert "receiving 2 uploads, the most it takes" in refused.json()["detail"]
        for sock in held:
            sock.close()
        until(lambda: requests.get(url + "/health").json()["uploads"]["receiving"] == 0, "0")
        assert post(url).status_code == 202


def test_the_disk_budget_refuses_what_would_not_fit(tiny):
    # 64 MB: three 20 MB uploads in flight are counted whole (60 MB); a fourth would not fit.
    with serving(make_app(tiny, disk_mb=64, max_uploads=10)) as url:
        held = [withheld(url) for _ in range(3)]
        until(lambda: requests.get(url + "/health").json()["uploads"]["receiving"] == 3, "3")
        refused = post(url)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert "folder is full" in refused.json()["detail"]
        assert "serve.disk_mb" in refused.json()["detail"]
        for sock in held:
            sock.close()


# --------------------------------------------------------------------------- hosts and origins


def test_a_foreign_host_is_refused(tiny):
    with serving(make_app(tiny)) as url:
        rebound = requests.get(url + "/api/models", headers={"Host": "evil.example"}, timeout=10)
        assert rebound.status_code == 421
        assert "serve.allowed_hosts" in rebound.json()["detail"]
        assert post(url, {"Host": "evil.example:8000"}).status_code == 421
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert requests.get(url + "/health", headers={"Host": host}).status_code == 200
    with serving(make_app(tiny, allowed_hosts=["demo.lan"])) as url:
        assert requests.get(url + "/health", headers={"Host": "demo.lan"}).status_code == 200


def test_a_cross_origin_write_is_refused_and_a_same_origin_one_is_not(tiny):
    with serving(make_app(tiny)) as url:
        evil = post(url, {"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "another site" in evil.json()["detail"]
        assert post(url, {"Origin": "null"}).status_code == 403
        assert post(url, {"Sec-Fetch-Site": "cross-site"}).status_code == 403
        job = requests.get(url + "/health").json()  # reads from anywhere stay readable
        assert job["status"] == "ok"
        same = post(url, {"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 202
        gone = requests.delete(
            url + same.headers["Location"], headers={"Origin": "https://evil.example"}
        )
        assert gone.status_code == 403
        assert post(url).status_code == 202  # curl and scripts send no Origin


# --------------------------------------------------------------------------- the token


def test_a_token_is_checked_on_every_api_call(tiny):
    token = "t0ken-for-the-test"
    with serving(make_app(tiny, token=token)) as url:
        bearer = {"Authorization": f"Bearer {token}"}
        for method, path in [("GET", "/api/models"), ("GET", "/api/jobs/x")]:
            bare = requests.request(method, url + path, timeout=10)
            assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == "Bearer"
        assert post(url).status_code == 401
        assert post(url, {"Authorization": "Bearer wrong"}).status_code == 401
        job = post(url, bearer)
        assert job.status_code == 202
        assert requests.get(url + job.headers["Location"], headers=bearer).status_code == 200
        assert requests.get(url + "/api/models", headers=bearer).status_code == 200
        for open_path in ("/", "/health", "/static/app.js", "/openapi.json"):
            assert requests.get(url + open_path, timeout=10).status_code == 200


def test_binding_beyond_loopback_without_a_token_warns_in_one_line():
    assert serve_server.exposure_warning("127.0.0.1", None) is None
    assert serve_server.exposure_warning("::1", None) is None
    assert serve_server.exposure_warning("0.0.0.0", "secret") is None
    line = serve_server.exposure_warning("0.0.0.0", None)
    assert line.startswith("warning: serving on 0.0.0.0 without a token: anyone who can reach")
    assert "--token" in line and "DEBLUR_SERVE_TOKEN" in line and "\n" not in line
    assert not is_loopback("192.168.1.20") and is_loopback("127.0.0.2")


# --------------------------------------------------------------------------- signals


@pytest.fixture
def project(tmp_path):
    (tmp_path / "models").mkdir()
    for kind in ("gan", "ae"):
        save_tiny(tmp_path / "models" / f"{kind}.pt", kind)
    (tmp_path / "tmp").mkdir()
    return tmp_path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_removes_the_servers_folder_with_the_photos_in_it(project, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    temp = project / "tmp"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(TMPDIR=str(temp), DEBLUR_SERVE_TOKEN="")
    cmd = [sys.executable, "-m", "deblur", "serve", "--port", str(port), "--device", "cpu"]
    log = project / "serve.log"
    with running(cmd, url, "/health", log, timeout=90, cwd=project, env=env) as proc:
        job = post(url)
        assert job.status_code == 202
        until(lambda: requests.get(url + job.headers["Location"]).json()["state"] == "done", "job")
        (folder,) = temp.glob("deblur-serve-*")
        assert list(folder.rglob("result.png")), "a user's result waits on disk"
        proc.send_signal(sig)
        code = proc.wait(30)
    assert code == 128 + sig
    assert not list(temp.glob("deblur-serve-*")), log.read_text()
    text = log.read_text()
    assert f"stopped ({sig.name}); removed {folder}" in text and "Traceback" not in text


def test_a_stopped_test_server_leaves_no_folder(tiny):
    app = make_app(tiny)
    folder = app.state.deblur.folder
    with serving(app) as url:
        assert post(url).status_code == 202
        assert folder.is_dir()
    assert not folder.exists()


# --------------------------------------------------------------------------- the contract


def test_the_schema_declares_the_forms_and_every_status(tiny):
    app = make_app(tiny)
    shutil.rmtree(app.state.deblur.folder)  # never served: its shutdown would not run
    spec = app.openapi()
    jobs = spec["paths"]["/api/jobs"]["post"]
    form = jobs["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and form["properties"]["file"]["format"] == "binary"
    assert form["properties"]["model"]["enum"] == ["gan", "ae"]
    declared = set(jobs["responses"])
    assert {"202", "400", "401", "403", "404", "408", "413", "415", "421", "422", "503"} <= declared
    png_form = spec["paths"]["/api/png"]["post"]["requestBody"]["content"]
    assert set(png_form["multipart/form-data"]["schema"]["properties"]) == {"file"}
    result = spec["paths"]["/api/jobs/{job_id}/result"]["get"]["responses"]
    assert {"200", "404", "409", "410"} <= set(result)
    assert "image/png" in result["200"]["content"]


@pytest.fixture(scope="module")
def fuzzed(tiny):
    with serving(make_app(tiny, max_waiting=2)) as url:
        yield url


def _contract():
    """The server's OpenAPI schema, at import (schemathesis parametrizes from it); the
    app built to produce it is discarded with its folder."""
    import schemathesis

    app = serve_app.create_app({"gan": serve_models.Served("gan", "none")}, warm=False)
    shutil.rmtree(app.state.deblur.folder)
    return schemathesis.openapi.from_dict(app.openapi())


def _contract_test():
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        status_code_conformance,
    )

    schema = _contract()

    @schema.parametrize()
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    def test_generated_requests_get_no_5xx_and_no_undocumented_status(case, fuzzed):
        """Bounded: 20 generated requests per operation (schemathesis, positive and
        negative data), each answered without a 5xx and with a status its schema lists."""
        case.call_and_validate(
            base_url=fuzzed,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance],
            timeout=60,
        )

    return test_generated_requests_get_no_5xx_and_no_undocumented_status


try:
    test_generated_requests_get_no_5xx_and_no_undocumented_status = _contract_test()
except ImportError:  # schemathesis is a dev dependency (requirements.lock has it)

    def test_generated_requests_get_no_5xx_and_no_undocumented_status():
        pytest.skip("needs schemathesis (make setup installs it)")
