"""Hostile uploads against the demo server, over real HTTP on 127.0.0.1.

Each kind of bad request gets its status and a one-line JSON message, never a 500.
"""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import zlib
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from PIL import Image
from support.servers import in_thread
from support.tiny_models import save_tiny

from deblur.serve import app as serve_app
from deblur.serve import models as serve_models

CAP = 2 * 2**20
MB = 2**20


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height``, and almost no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    model = save_tiny(tmp_path_factory.mktemp("models") / "gan.pt", "gan")
    served = {"gan": serve_models.Served("gan", "tiny", model)}
    return serve_app.create_app(served, tile=64, overlap=16, max_bytes=CAP, warm=False)


@pytest.fixture(scope="module")
def url(app):
    with in_thread(app) as base:
        yield base


def post(url, data: bytes, name="photo.png", path="/api/deblur"):
    return requests.post(
        url + path, files={"file": (name, data)}, data={"model": "gan"}, timeout=60
    )


@pytest.mark.parametrize(("size", "mp"), [((60000, 60000), "3600 MP"), ((10000, 10000), "100 MP")])
@pytest.mark.parametrize("path", ["/api/deblur", "/api/jobs", "/api/png"])
def test_a_decompression_bomb_is_413_not_500(url, size, mp, path):
    res = post(url, png_header(*size), name="bomb.png", path=path)
    assert res.status_code == 413
    assert res.json()["detail"] == (
        f"bomb.png declares an image too large to decode ({mp}); the limit is 24 MP"
    )


def test_the_byte_cap_holds_while_streaming(url, app):
    """A chunked body with no Content-Length: the cap must stop the read itself."""
    where = urlparse(url)
    boundary = "capboundary"
    head = (
        f"POST /api/deblur HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    block = b"\xab" * (64 * 1024)
    sent, answer = 0, b""
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        try:
            while sent < 64 * MB:  # far past the cap: stops when the server answers
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: it answered first (read below)
        sock.settimeout(30)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"connection: close" in status.lower()
    assert json.loads(body)["detail"] == "big.png is larger than the 2.0 MB upload limit"
    tally = requests.get(url + "/health", timeout=10).json()["last_upload"]
    assert tally["read"] <= CAP + MB and tally["written"] <= CAP  # the server's own count
    assert sent < 32 * MB  # the client was stopped, not drained
    assert not list(app.state.folder.iterdir())  # the partial upload is deleted


def test_a_declared_size_over_the_cap_is_refused_before_the_body(url):
    res = post(url, b"\0" * (3 * MB), name="huge.png")
    assert res.status_code == 413
    assert res.json()["detail"] == "huge.png is 3.0 MB; the upload limit is 2.0 MB"


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        (
            {"data": b"just bytes", "headers": {"Content-Type": "image/png"}},
            415,
            "expected a multipart/form-data upload; send the photo as multipart/form-data "
            "field `file` (curl -F file=@photo.jpg)",
        ),
        (
            {"files": {"model": (None, "gan")}},  # multipart, but only a text field
            422,
            "no file in the form; send the photo as multipart/form-data field `file` "
            "(curl -F file=@photo.jpg)",
        ),
        (
            {"files": {"picture": ("a.png", b"x")}},
            400,
            "one file, in field `file`, please; send the photo as multipart/form-data field "
            "`file` (curl -F file=@photo.jpg)",
        ),
        (
            {"files": {"file": ("a.png", b"x")}, "data": {"model": "m" * 1000}},
            400,
            "form field `model` is too long",
        ),
    ],
    ids=["not-multipart", "no-file", "wrong-field", "long-field"],
)
def test_malformed_forms_are_4xx_with_a_message(url, kwargs, status, detail):
    res = requests.post(url + "/api/deblur", timeout=30, **kwargs)
    assert res.status_code == status
    assert res.json() == {"detail": detail}


def test_unknown_jobs_and_routes_are_json_404(url):
    res = requests.get(url + "/api/jobs/abc", timeout=10)
    assert res.status_code == 404
    assert res.json() == {"detail": "no job abc: unknown, or its result has expired"}
    assert requests.delete(url + "/api/jobs/abc", timeout=10).status_code == 404
    res = requests.get(url + "/api/nothing", timeout=10)
    assert res.status_code == 404 and res.json() == {"detail": "Not Found"}
    res = requests.put(url + "/api/deblur", timeout=10)
    assert res.status_code == 405 and res.json() == {"detail": "Method Not Allowed"}


def test_uploads_side_by_side_each_get_the_whole_cap(url):
    """Two uploads of 1.5 MB interleaved: 3 MB in flight together, each under the 2 MB cap."""
    where = urlparse(url)
    pixels = np.random.default_rng(0).integers(0, 256, (720, 700, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")  # noise: ~1.5 MB, no compression
    boundary = "sidebyside"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n\r\n'
        ).encode()
        + buf.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert 1.3 * MB < len(body) < CAP
    head = (
        f"POST /api/png HTTP/1.1\r\nHost: {where.netloc}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = [socket.create_connection((where.hostname, where.port)) for _ in range(2)]
    half = len(body) * 4 // 5
    for sock in socks:  # both well under way before either ends
        sock.sendall(head + body[:half])
    for sock in socks:
        sock.sendall(body[half:])
    for sock in socks:
        sock.settimeout(60)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
