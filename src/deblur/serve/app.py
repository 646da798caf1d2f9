"""The demo web page: upload a photo, pick a model, compare before and after, download.

Each model is the registry's champion when the MLflow store has one, else the pipeline's
checkpoint in models/; both are loaded once, at start-up. Every request goes through
deblur.infer.deblur_image, the path behind `deblur predict` and the evaluation tables, so
the page shows exactly what the reported numbers measure.

API: ``POST /api/deblur`` (multipart ``file`` + ``model``) -> PNG; ``POST /api/png`` -> the
upload itself as an upright PNG (for inputs a browser cannot show, such as TIFF);
``GET /api/models``; ``GET /health``.
"""

from __future__ import annotations

import io
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError

from deblur import device as devices
from deblur import paths, spec
from deblur.data.images import png_bytes, to_uint8
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image
from deblur.kinds import KINDS, LABELS

STATIC = Path(__file__).parent / "static"
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 24_000_000
# PIL's format name -> the file suffix the decoder is given (PIL sniffs the content anyway).
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
ACCEPTED = "PNG, JPEG, WebP, BMP or TIFF"


class UploadError(Exception):
    """A request the user can fix: its HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    """One model choice on the page: where it comes from, and the loaded model if any."""

    kind: str
    source: str  # for people: "deblur-gan v3 @champion (MLflow registry)"
    model: torch.nn.Module | None = None
    missing: str = ""  # why it is not available

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "label": LABELS[self.kind],
            "available": self.model is not None,
            "source": self.source if self.model is not None else self.missing,
        }


# --------------------------------------------------------------------------- models


def find_model(kind: str, device: torch.device) -> Served:
    """What spec.choose picks (the champion, else models/<kind>.pt), loaded; else unavailable."""
    chosen = spec.choose(kind)
    if chosen is None:
        path = paths.checkpoint(kind)
        return Served(kind, "", missing=f"no champion and no {path}; run `deblur train {kind}`")
    model_spec, source = chosen
    return Served(kind, source, spec.load(model_spec, device=device))


def load_models(device: torch.device) -> dict[str, Served]:
    served = {kind: find_model(kind, device) for kind in KINDS}
    if all(s.model is None for s in served.values()):
        raise DeblurError(
            "no model to serve: the registry has no champion and models/gan.pt and "
            "models/ae.pt do not exist; run `make repro` (or `dvc repro`) first"
        )
    return served


# --------------------------------------------------------------------------- uploads


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def check_upload(name: str, data: bytes) -> str:
    """Size, type and pixel count of an upload, from its header only; -> the file suffix."""
    if len(data) > MAX_BYTES:
        raise UploadError(413, f"{name} is larger than the {_megabytes(MAX_BYTES)} upload limit")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header, decodes nothing
            kind, (w, h) = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise UploadError(415, f"{name} is not an image; upload a {ACCEPTED} file") from None
    if kind not in FORMATS:
        raise UploadError(415, f"{name} is a {kind} file; upload a {ACCEPTED} file")
    if w * h > MAX_PIXELS:
        raise UploadError(
            413,
            f"{name} is {w}x{h} ({w * h / 1e6:.1f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP, "
            "downscale it first",
        )
    return FORMATS[kind]


def decode_upload(name: str, data: bytes) -> np.ndarray:
    """The upload as uint8 HxWx3 RGB, upright, through the project's one image reader."""
    from deblur.data.images import read_rgb

    suffix = check_upload(name, data)
    with tempfile.TemporaryDirectory(prefix="deblur-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_rgb(path)
        except DeblurError as exc:  # its message names the temporary file: name the upload
            message = str(exc).replace(str(path), name).split("; ")[0]
            raise UploadError(422, f"{message}; the file looks damaged") from None


def result_name(name: str) -> str:
    """photo.jpg -> photo-deblurred.png, ASCII only (it travels in an HTTP header)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return f"{stem[:80]}-deblurred.png"


# --------------------------------------------------------------------------- the app


def create_app(
    served: dict[str, Served] | None = None,
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str | torch.device = "cpu",
):
    """The FastAPI app; ``served`` defaults to the registry champions / models/*.pt."""
    device = torch.device(device)
    served = load_models(device) if served is None else served
    # One image at a time: a 24 MP request holds about 1 GB of float buffers.
    busy = threading.Lock()
    app = FastAPI(title="deblur", summary="Motion deblurring demo", docs_url="/api/docs")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadError)
    def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    def read(request: Request, file: UploadFile) -> tuple[str, np.ndarray]:
        name = Path(file.filename or "upload").name
        # The declared size makes the clearer message (how large it is); the bounded read
        # below catches a missing or lying header.
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_BYTES + 64 * 1024:
            raise UploadError(
                413,
                f"{name} is {_megabytes(declared)}; the upload limit is {_megabytes(MAX_BYTES)}",
            )
        return name, decode_upload(name, file.file.read(MAX_BYTES + 1))

    def pick(kind: str) -> Served:
        if kind not in served:
            raise UploadError(400, f"unknown model '{kind}'; choose one of {', '.join(served)}")
        if served[kind].model is None:
            raise UploadError(404, f"the {LABELS[kind]} is not available: {served[kind].missing}")
        return served[kind]

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health():
        return {"status": "ok", "models": [k for k, s in served.items() if s.model is not None]}

    @app.get("/api/models")
    def list_models():
        return {
            "models": [s.describe() for s in served.values()],
            "limits": {"bytes": MAX_BYTES, "pixels": MAX_PIXELS, "types": ACCEPTED},
        }

    @app.post("/api/deblur", response_class=Response)
    def deblur(request: Request, file: UploadFile = File(...), model: str = Form("gan")):
        choice = pick(model)
        name, image = read(request, file)
        with busy:
            start = time.perf_counter()
            out = deblur_image(choice.model, image, tile, overlap, device)
            ms = (time.perf_counter() - start) * 1e3
        headers = {
            "Content-Disposition": f'inline; filename="{result_name(name)}"',
            "X-Deblur-Model": choice.source.encode("ascii", "replace").decode(),
            "X-Deblur-Milliseconds": f"{ms:.0f}",
        }
        return Response(png_bytes(to_uint8(out)), media_type="image/png", headers=headers)

    @app.post("/api/png", response_class=Response)
    def as_png(request: Request, file: UploadFile = File(...)):
        _, image = read(request, file)
        return Response(png_bytes(image), media_type="image/png")

    return app


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


def run(host: str, port: int, tile: int, overlap: int, device: str = "auto") -> None:
    """`deblur serve`: load the models, then serve until Ctrl-C."""
    import uvicorn

    _check_port(host, port)
    dev = devices.resolve(device)
    served = load_models(dev)
    for s in served.values():
        print(f"{LABELS[s.kind]:<12} {s.describe()['source']}")
    print(f"deblur demo on http://{host}:{port}  (Ctrl-C stops it)", flush=True)
    app = create_app(served, tile=tile, overlap=overlap, device=dev)
    uvicorn.run(app, host=host, port=port, log_level="warning")
