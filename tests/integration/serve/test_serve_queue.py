"""Admission, deadlines, dropped clients and the job API, over real HTTP on 127.0.0.1.

The model behind the server is a real tiny network behind a gate: each forward pass (one
tile) waits for a permit from the test, so which job runs, how far it got and what never
ran are facts the test controls and reads back, not timings.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from PIL import Image
from support.servers import in_thread
from support.tiny_models import random_image, save_tiny
from torch import nn

from deblur import infer
from deblur.config import ServeConfig
from deblur.data.images import to_uint8
from deblur.serve import app as serve_app
from deblur.serve import models as serve_models

TILE, OVERLAP = 64, 16


class Gated(nn.Module):
    """A real model whose every forward pass first takes a permit from the test."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.permits = threading.Semaphore(0)
        self.calls = 0

    def forward(self, x):
        assert self.permits.acquire(timeout=120), "the test never let this tile run"
        self.calls += 1
        return self.model(x)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tiny(tmp_path):
    return save_tiny(tmp_path / "gan.pt", "gan")


@pytest.fixture
def gated(tiny):
    return Gated(tiny)


def app_with(model: nn.Module, **limits):
    served = {"gan": serve_models.Served("gan", "gated tiny", model)}
    return serve_app.create_app(
        served, tile=TILE, overlap=OVERLAP, limits=ServeConfig(**limits), warm=False
    )


def submit(url: str, image: np.ndarray, name: str = "photo.png", path: str = "/api/jobs"):
    files = {"file": (name, png(image))}
    return requests.post(url + path, files=files, data={"model": "gan"}, timeout=60)


def until(check, what: str, timeout: float = 60):
    """Poll ``check`` until it returns something truthy (a guard against hangs, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def status(url: str, job_id: str) -> dict:
    return requests.get(f"{url}/api/jobs/{job_id}", timeout=10).json()


def health(url: str) -> dict:
    return requests.get(url + "/health", timeout=10).json()["queue"]


def raw_post(url: str, body: bytes, boundary: str, path: str = "/api/deblur") -> socket.socket:
    """Send a whole request on a socket of our own, to close it without reading the answer."""
    where = urlparse(url)
    sock = socket.create_connection((where.hostname, where.port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def multipart(data: bytes, boundary: str = "deblurtestboundary", name="photo.png") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ngan\r\n'
            f"--{boundary}--\r\n"
        ).encode()
    )


def test_job_api_reports_position_and_tile_progress(tiny, gated):
    image, other = random_image(150, 150, 1), random_image(40, 50, 2)
    total = infer.tile_count(150, 150, TILE, OVERLAP)
    assert total == 9
    with in_thread(app_with(gated)) as url:
        first = submit(url, image)
        assert first.status_code == 202 and first.headers["location"].startswith("/api/jobs/")
        job = first.json()["id"]
        second = submit(url, other).json()["id"]

        running = until(lambda: (s := status(url, job))["state"] == "running" and s, "a start")
        assert running["position"] == 0 and running["tiles"] == {"done": 0, "total": total}
        queued = status(url, second)
        assert queued["state"] == "queued" and queued["position"] == 1
        assert queued["eta_s"] >= running["eta_s"] > 0  # the second waits for the first
        res = requests.get(f"{url}/api/jobs/{job}/result", timeout=10)
        assert res.status_code == 409 and "is running; poll GET /api/jobs/" in res.json()["detail"]

        seen = []
        for step in (1, 3, total - 4):  # let tiles through a few at a time: progress moves
            gated.permits.release(step)
            done = sum(seen[-1:]) + step if seen else step
            until(lambda d=done: status(url, job)["tiles"]["done"] == d, f"{done} tiles")
            seen.append(done)
        assert seen == [1, 4, total]
        gated.permits.release(1)  # the second job's one tile

        finished = until(lambda: (s := status(url, job))["state"] == "done" and s, "the end")
        assert finished["result"] == f"/api/jobs/{job}/result" and finished["position"] == -1
        res = requests.get(url + finished["result"], timeout=10)
        assert res.status_code == 200 and res.headers["content-type"] == "image/png"
        got = np.asarray(Image.open(io.BytesIO(res.content)))
        want = to_uint8(infer.deblur_image(tiny, image, TILE, OVERLAP))
        np.testing.assert_array_equal(got, want)
        until(lambda: status(url, second)["state"] == "done", "the second job")
        assert gated.calls == total + 1


def test_finished_results_expire(gated):
    gated.permits.release(100)
    app = app_with(gated, keep_s=0.2)
    with in_thread(app) as url:
        job = submit(url, random_image(30, 30)).json()["id"]
        until(lambda: status(url, job).get("state") == "done", "the job")

        def expired():
            res = requests.get(f"{url}/api/jobs/{job}/result", timeout=10)
            return [res] if res.status_code == 404 else None  # a 404 Response is falsy

        gone = until(expired, "expiry")[0]
        assert gone.json()["detail"] == f"no job {job}: unknown, or its result has expired"
        assert not list(app.state.folder.iterdir())  # its upload and result are deleted

    with in_thread(app_with(gated)) as url:  # kept until fetched or deleted
        job = submit(url, random_image(30, 30)).json()["id"]
        until(lambda: status(url, job).get("state") == "done", "the job")
        assert requests.delete(f"{url}/api/jobs/{job}", timeout=10).status_code == 204
        assert requests.get(f"{url}/api/jobs/{job}/result", timeout=10).status_code == 404


def test_a_full_queue_answers_503_with_retry_after(gated):
    with in_thread(app_with(gated, max_waiting=1)) as url:
        running = submit(url, random_image(30, 30)).json()["id"]
        until(lambda: status(url, running)["state"] == "running", "the first job to start")
        waiting = submit(url, random_image(30, 30))
        assert waiting.status_code == 202 and waiting.json()["position"] == 1

        refused = submit(url, random_image(30, 30), path="/api/deblur")
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["detail"].startswith("the server is busy (1 waiting, the most it")
        assert refused.json()["detail"].endswith(f"about {refused.headers['retry-after']} s")
        assert submit(url, random_image(30, 30)).status_code == 503  # the job API too
        # A body of some size is read and dropped, so the client gets the 503, not a reset.
        files = {"file": ("big.png", np.random.default_rng(0).bytes(3 * 2**20))}
        big = requests.post(url + "/api/deblur", files=files, timeout=60)
        assert big.status_code == 503 and "retry-after" in big.headers

        gated.permits.release(2)
        until(lambda: status(url, waiting.json()["id"])["state"] == "done", "the queue to drain")
        assert health(url)["refused"] == 3 and gated.calls == 2
        gated.permits.release(1)
        assert submit(url, random_image(30, 30), path="/api/deblur").status_code == 200


def test_a_request_waiting_past_the_deadline_is_refused(gated):
    with in_thread(app_with(gated, timeout_s=0.3)) as url:
        running = submit(url, random_image(30, 30)).json()["id"]
        until(lambda: status(url, running)["state"] == "running", "the first job to start")
        late = submit(url, random_image(30, 30), name="late.png", path="/api/deblur")
        assert late.status_code == 503 and int(late.headers["retry-after"]) >= 1
        assert late.json()["detail"].startswith(
            "late.png waited 0.3 s in the queue without starting (serve.timeout_s); "
            "the server is busy, try again in about"
        )
        gated.permits.release(10)
        until(lambda: status(url, running)["state"] == "done", "the first job")
        assert gated.calls == 1 and health(url)["expired"] == 1


def test_a_disconnected_clients_job_never_runs(gated):
    with in_thread(app_with(gated)) as url:
        running = submit(url, random_image(30, 30)).json()["id"]
        until(lambda: status(url, running)["state"] == "running", "the first job to start")
        sock = raw_post(url, multipart(png(random_image(30, 30))), "deblurtestboundary")
        until(lambda: health(url)["waiting"] == 1, "the second request to queue")
        sock.close()  # the client gives up while its request waits
        until(lambda: health(url)["cancelled"] == 1, "the server to notice")
        assert health(url)["waiting"] == 0
        gated.permits.release(10)
        until(lambda: status(url, running)["state"] == "done", "the first job")
        assert gated.calls == 1 and health(url)["ran"] == 1  # the gone client's never ran


def test_a_running_job_stops_between_tiles_when_its_client_goes(gated):
    total = infer.tile_count(150, 150, TILE, OVERLAP)
    with in_thread(app_with(gated)) as url:
        sock = raw_post(url, multipart(png(random_image(150, 150))), "deblurtestboundary")
        until(lambda: health(url)["running"], "the request to start")
        gated.permits.release(1)
        sock.close()
        until(lambda: health(url)["stopping"], "the server to notice")
        gated.permits.release(1)  # the tile under way may finish; no other may start
        until(lambda: health(url)["cancelled"] == 1, "the job to stop")
        assert gated.calls == 2 < total

        # The same through the job API: DELETE stops it between tiles.
        job = submit(url, random_image(150, 150)).json()["id"]
        until(lambda: status(url, job)["state"] == "running", "the job to start")
        assert requests.delete(f"{url}/api/jobs/{job}", timeout=10).status_code == 204
        gated.permits.release(total)
        gone = until(lambda: (s := status(url, job))["state"] == "cancelled" and s, "the stop")
        assert gone["tiles"]["done"] == 1 and gated.calls == 3


def test_a_broken_model_is_a_json_500(tiny):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("weights on fire")

    with in_thread(app_with(Broken())) as url:
        res = submit(url, random_image(20, 20), name="x.png", path="/api/deblur")
        assert res.status_code == 500
        assert res.json()["detail"] == "deblurring x.png failed (RuntimeError: weights on fire)"
        job = submit(url, random_image(20, 20), name="x.png").json()["id"]
        until(lambda: status(url, job)["state"] == "failed", "the job to fail")
        assert status(url, job)["status"] == 500
        res = requests.get(f"{url}/api/jobs/{job}/result", timeout=10)
        assert res.status_code == 500 and "weights on fire" in res.json()["detail"]
        assert requests.get(f"{url}/api/jobs/nope", timeout=10).status_code == 404
