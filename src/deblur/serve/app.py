"""The demo web page: upload a photo, pick a model, compare before and after, download.

Each model is the registry's champion when the MLflow tracking store has one, else the pipeline's
checkpoint in models/; both are loaded once, at start-up. Every request goes through
deblur.infer.deblur_image, the path behind `deblur predict` and the evaluation tables, so
the page shows exactly what the reported numbers measure.

API (every error is JSON ``{"detail": "one line"}`` with its status):

- ``POST /api/deblur`` (multipart ``file`` + ``model``) -> the PNG, when its turn comes;
- ``POST /api/jobs`` (same form) -> 202 ``{"id", ...}``; ``GET /api/jobs/{id}`` -> state,
  queue position, tiles done of total, ETA; ``GET /api/jobs/{id}/result`` -> the PNG;
  ``DELETE /api/jobs/{id}`` cancels. The page uses these, to show progress;
- ``POST /api/png`` -> the upload itself as an upright PNG (for TIFF, which browsers
  cannot show); ``GET /api/models``; ``GET /health``.

Admission (serve/queue.py): one job runs, ``serve.max_waiting`` wait, the rest get 503
with Retry-After. Uploads are streamed to disk under a byte cap (serve/uploads.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from deblur import allocator, paths, spec
from deblur import device as devices
from deblur.config import ServeConfig
from deblur.data.images import to_uint8, write_png
from deblur.errors import DeblurError
from deblur.infer import OVERLAP, TILE, deblur_image, tile_count
from deblur.kinds import KINDS, LABELS
from deblur.serve import uploads
from deblur.serve.queue import Job, Queue
from deblur.serve.uploads import ACCEPTED, MAX_BYTES, MAX_PIXELS, UploadError

STATIC = Path(__file__).parent / "static"
# How often a waiting request looks at its job and at its connection.
POLL_S = 0.1
WARM_SIDE = 256


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


# --------------------------------------------------------------------------- the app


def create_app(
    served: dict[str, Served] | None = None,
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str | torch.device = "cpu",
    limits: ServeConfig | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    warm: bool = True,
):
    """The FastAPI app; ``served`` defaults to the registry champions / models/*.pt.

    ``limits`` is params' serve section (its defaults when None). ``warm`` runs each model
    once on a small image first, so the first Retry-After and ETA have a rate to go on.
    """
    device = torch.device(device)
    served = load_models(device) if served is None else served
    limits = limits or ServeConfig()
    folder = Path(tempfile.mkdtemp(prefix="deblur-serve-"))
    tally = uploads.Tally()

    def work(job: Job, on_tile) -> None:
        image = uploads.decode(job.upload, job.name)  # decoded only now, its turn
        job.upload.unlink(missing_ok=True)
        if job.task == "png":
            write_png(job.result, image)
            return
        h, w, _ = image.shape
        job.tiles_total = tile_count(h, w, tile, overlap)
        out = deblur_image(served[job.task].model, image, tile, overlap, device, on_tile=on_tile)
        del image
        write_png(job.result, to_uint8(out))

    queue = Queue(
        work, limits.max_waiting, limits.timeout_s, limits.keep_s, on_idle=allocator.release
    )
    if warm:
        _warm_up(served, queue, tile, overlap, device)
    app = FastAPI(title="deblur", summary="Motion deblurring demo", docs_url="/api/docs")
    app.state.queue, app.state.tally, app.state.folder = queue, tally, folder
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadError)
    def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        detail = "; ".join(str(e.get("msg", e)) for e in exc.errors())
        return JSONResponse({"detail": f"invalid request: {detail}"}, status_code=422)

    @app.exception_handler(Exception)
    def internal(request: Request, exc: Exception):
        traceback.print_exception(exc, file=sys.stderr)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
            status_code=500,
        )

    def pick(kind: str) -> None:
        if kind not in served:
            raise UploadError(400, f"unknown model '{kind}'; choose one of {', '.join(served)}")
        if served[kind].model is None:
            raise UploadError(404, f"the {LABELS[kind]} is not available: {served[kind].missing}")

    async def admit(request: Request, png: bool = False, polled: bool = False) -> Job:
        """Stream the upload to disk, check its header, queue it: -> its job."""
        if queue.full():  # refuse before writing a byte of the body
            err = queue.busy_error()
            drained = await uploads.discard(request, max_bytes)
            raise UploadError(err.status, str(err), err.headers, close=not drained)
        job_dir = Path(tempfile.mkdtemp(dir=folder))
        try:
            form = await uploads.receive(request, job_dir / "upload", tally, max_bytes)
            task = "png" if png else form.fields.get("model", "gan")
            if not png:
                pick(task)
            _, w, h = uploads.check_header(form.path, form.name, max_pixels)
            job = Job(task, form.name, job_dir, w, h, polled=polled)
            queue.submit(job)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        return job

    async def wait(request: Request, job: Job) -> bool:
        """Until ``job`` ends; False (and the job dropped) if the client has gone first."""
        while not job.finished.is_set():
            if await request.is_disconnected():
                queue.cancel(job)
                return False
            queue.sweep()
            await asyncio.sleep(POLL_S)
        return True

    def answer(job: Job, headers: dict) -> Response:
        if job.state != "done":
            queue.forget(job)
            raise job.error or UploadError(499, f"{job.name} was cancelled")
        return FileResponse(
            job.result,
            media_type="image/png",
            headers=headers,
            background=BackgroundTask(queue.forget, job),
        )

    def result_headers(job: Job) -> dict:
        return {
            "Content-Disposition": f'inline; filename="{uploads.result_name(job.name)}"',
            "X-Deblur-Model": served[job.task].source.encode("ascii", "replace").decode(),
            "X-Deblur-Milliseconds": f"{job.ms:.0f}",
        }

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health():
        with queue.cond:
            running, waiting = queue.running, len(queue.waiting)
        return {
            "status": "ok",
            "models": [k for k, s in served.items() if s.model is not None],
            "queue": {
                "running": running is not None,
                "stopping": running is not None and running.cancel,
                "waiting": waiting,
                **queue.counts,
            },
            "last_upload": {"read": tally.read, "written": tally.written},
        }

    @app.get("/api/models")
    def list_models():
        return {
            "models": [s.describe() for s in served.values()],
            "limits": {
                "bytes": max_bytes,
                "pixels": max_pixels,
                "types": ACCEPTED,
                "max_waiting": limits.max_waiting,
                "timeout_s": limits.timeout_s,
            },
        }

    @app.post("/api/deblur", response_class=Response)
    async def deblur(request: Request):
        job = await admit(request)
        if not await wait(request, job):
            queue.forget(job)
            return Response(status_code=499)
        return answer(job, result_headers(job))

    @app.post("/api/png", response_class=Response)
    async def as_png(request: Request):
        job = await admit(request, png=True)
        if not await wait(request, job):
            queue.forget(job)
            return Response(status_code=499)
        return answer(job, {})

    @app.post("/api/jobs", status_code=202)
    async def new_job(request: Request):
        job = await admit(request, polled=True)
        return JSONResponse(
            queue.status(job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"}
        )

    def known(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None or not job.polled:
            raise UploadError(404, f"no job {job_id}: unknown, or its result has expired")
        return job

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        return queue.status(known(job_id))

    @app.get("/api/jobs/{job_id}/result", response_class=Response)
    def job_result(job_id: str):
        job = known(job_id)
        if job.state in ("queued", "running"):
            raise UploadError(409, f"job {job_id} is {job.state}; poll GET /api/jobs/{job_id}")
        if job.state != "done":
            raise job.error or UploadError(410, f"job {job_id} was cancelled")
        return FileResponse(job.result, media_type="image/png", headers=result_headers(job))

    @app.delete("/api/jobs/{job_id}", status_code=204)
    def cancel_job(job_id: str):
        job = known(job_id)
        queue.cancel(job)
        if job.ended is not None:  # finished already: its result is not wanted any more
            queue.forget(job)
        return Response(status_code=204)

    return app


def _warm_up(served: dict[str, Served], queue: Queue, tile: int, overlap: int, device) -> None:
    """One small pass per model: first-call costs paid, and a first ms-per-MP estimate."""
    import time

    image = np.full((WARM_SIDE, WARM_SIDE, 3), 128, np.uint8)
    for kind, s in served.items():
        if s.model is None:
            continue
        deblur_image(s.model, image, tile, overlap, device)
        start = time.perf_counter()
        deblur_image(s.model, image, tile, overlap, device)
        queue.learn(kind, (time.perf_counter() - start) * 1e3, WARM_SIDE**2 / 1e6)
    allocator.release()


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


def run(
    host: str,
    port: int,
    tile: int,
    overlap: int,
    device: str = "auto",
    limits: ServeConfig | None = None,
) -> None:
    """`deblur serve`: load the models, then serve until Ctrl-C."""
    import uvicorn

    _check_port(host, port)
    dev = devices.resolve(device)
    served = load_models(dev)
    for s in served.values():
        print(f"{LABELS[s.kind]:<12} {s.describe()['source']}")
    app = create_app(served, tile=tile, overlap=overlap, device=dev, limits=limits)
    limits = limits or ServeConfig()
    print(
        f"deblur demo on http://{host}:{port}  (one job at a time, {limits.max_waiting} may "
        f"wait up to {limits.timeout_s:g} s; Ctrl-C stops it)",
        flush=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        shutil.rmtree(app.state.folder, ignore_errors=True)
