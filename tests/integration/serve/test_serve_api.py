"""The demo web app's API, over real HTTP against uvicorn in a thread.

(Starlette's TestClient needs the httpx2 package, which the lock does not carry; a real
server on 127.0.0.1 with `requests` tests the same app, multipart parsing included.)
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time

import numpy as np
import pytest
import requests
import torch
import uvicorn
from PIL import Image
from support.tiny_models import random_image, save_tiny

from deblur import infer
from deblur.data.images import to_uint8
from deblur.errors import DeblurError
from deblur.serve import app as serve_app
from deblur.serve import models as serve_models
from deblur.serve import server as serve_server


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project with tiny models/gan.pt and models/ae.pt and no MLflow tracking store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return {kind: save_tiny(tmp_path / "models" / f"{kind}.pt", kind) for kind in ("gan", "ae")}


def start(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


@pytest.fixture
def url(project):
    base, server, thread = start(serve_app.create_app(tile=64, overlap=16))
    yield base
    server.should_exit = True
    thread.join(10)


def post(url: str, data: bytes, name: str = "photo.png", model: str = "gan", path="/api/deblur"):
    return requests.post(
        url + path, files={"file": (name, data)}, data={"model": model}, timeout=60
    )


def test_health_and_models(url):
    health = requests.get(url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["models"] == ["gan", "ae"]
    assert health["queue"] == {
        "running": False,
        "stopping": False,
        "waiting": 0,
        "ran": 0,
        "refused": 0,
        "expired": 0,
        "cancelled": 0,
    }
    info = requests.get(url + "/api/models", timeout=10).json()
    assert [(m["kind"], m["available"]) for m in info["models"]] == [("gan", True), ("ae", True)]
    assert info["models"][0]["source"] == "models/gan.pt (pipeline checkpoint)"
    assert info["limits"]["bytes"] == 20 * 2**20 and info["limits"]["pixels"] == 24_000_000


@pytest.mark.parametrize("kind", ["gan", "ae"])
def test_upload_returns_the_deblurred_png(url, project, kind):
    image = random_image(45, 70)
    res = post(url, encode(image), name="my photo.png", model=kind)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/png"
    assert 'filename="my_photo-deblurred.png"' in res.headers["content-disposition"]
    assert res.headers["x-deblur-model"] == f"models/{kind}.pt (pipeline checkpoint)"
    got = np.asarray(Image.open(io.BytesIO(res.content)))
    want = to_uint8(infer.deblur_image(project[kind], image, tile=64, overlap=16))
    np.testing.assert_array_equal(got, want)  # the one inference path, bit for bit


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF"])
def test_every_accepted_format_decodes(url, fmt):
    res = post(url, encode(random_image(30, 41), fmt), name=f"x.{fmt.lower()}")
    assert res.status_code == 200, res.text
    assert Image.open(io.BytesIO(res.content)).size == (41, 30)


def test_upload_as_png_for_browsers_that_cannot_show_it(url):
    image = random_image(20, 30)
    res = post(url, encode(image, "TIFF"), name="scan.tif", path="/api/png")
    assert res.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(res.content))), image)


def test_wrong_type_is_415_with_a_message(url):
    res = post(url, encode(random_image(8, 8), "GIF"), name="anim.gif")
    assert res.status_code == 415
    assert (
        res.json()["detail"] == "anim.gif is a GIF file; upload a PNG, JPEG, WebP, BMP or TIFF file"
    )
    res = post(url, b"hello, not an image", name="notes.txt")
    assert res.status_code == 415 and "notes.txt is not an image" in res.json()["detail"]


def test_too_large_is_413_with_a_message(url):
    res = post(url, b"\0" * (21 * 2**20), name="huge.png")
    assert res.status_code == 413
    assert re.fullmatch(
        r"huge\.png is 21\.0 MB; the upload limit is 20\.0 MB", res.json()["detail"]
    )
    # 25 MP of one colour compresses to a few kB: only the pixel limit can stop it.
    big = encode(np.zeros((5000, 5000, 3), np.uint8))
    res = post(url, big, name="wide.png")
    assert res.status_code == 413
    assert "5000x5000 (25.0 MP); the limit is 24 MP" in res.json()["detail"]


def test_damaged_image_is_422_naming_the_upload(url):
    data = encode(random_image(40, 40))
    res = post(url, data[: len(data) // 2], name="cut.png")
    assert res.status_code == 422
    detail = res.json()["detail"]
    assert detail.startswith("image cut.png cannot be decoded") and "/tmp" not in detail


def test_unknown_or_missing_model_is_4xx_with_a_message(url, project):
    res = post(url, encode(random_image(8, 8)), model="vgg")
    assert res.status_code == 400
    assert res.json()["detail"] == "unknown model 'vgg'; choose one of gan, ae"

    missing = serve_models.Served("ae", "", missing="no champion and no models/ae.pt")
    served = {"gan": serve_models.Served("gan", "tiny", project["gan"]), "ae": missing}
    base, server, thread = start(serve_app.create_app(served))
    try:
        res = post(base, encode(random_image(8, 8)), model="ae")
        assert res.status_code == 404
        assert res.json()["detail"].startswith("the Autoencoder is not available: no champion")
        info = requests.get(base + "/api/models", timeout=10).json()
        assert info["models"][1] == {
            "kind": "ae",
            "label": "Autoencoder",
            "available": False,
            "source": "no champion and no models/ae.pt",
        }
    finally:
        server.should_exit = True
        thread.join(10)


def test_page_is_served_and_self_contained(url):
    html = requests.get(url + "/", timeout=10).text
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for text in [html] + [requests.get(url + a, timeout=10).text for a in assets]:
        assert "://" not in text  # no CDN, no web font: the page works offline


def test_no_model_at_all_and_taken_port_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DeblurError, match="no model to serve.*make repro"):
        serve_models.load_models(torch.device("cpu"))
    assert not (tmp_path / "mlflow.db").exists()  # looking for a registry created none
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(DeblurError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_server.run("127.0.0.1", port, tile=64, overlap=16, device="cpu")
