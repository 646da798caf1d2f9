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
with Retry-After. Uploads are streamed to disk under a byte cap and a body deadline
(serve/uploads.py), at most ``serve.max_uploads`` at once within ``serve.disk_mb``
(serve/budget.py); Host, Origin and the token are checked first (serve/guard.py), and a
request's headers must arrive in time (serve/connections.py). docs/serving.md has it all.

The routes are module-level functions over one ``State`` (the app's ``state.deblur``),
which create_app builds.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from deblur import allocator
from deblur.config import ServeConfig
from deblur.data.images import to_uint8, write_png
from deblur.data.photo import MAX_PIXELS
from deblur.infer import OVERLAP, TILE, deblur_image, tile_count
from deblur.kinds import LABELS
from deblur.serve import schema, uploads
from deblur.serve.budget import Budget
from deblur.serve.guard import Guard, GuardMiddleware
from deblur.serve.models import Served, load_models, warm_up
from deblur.serve.queue import Job, Queue
from deblur.serve.uploads import ACCEPTED, MAX_BYTES, UploadError

STATIC = Path(__file__).parent / "static"
# How often a waiting request looks at its job and at its connection.
POLL_S = 0.1


# --------------------------------------------------------------------------- the state


@dataclass
class State:
    """Everything the routes share: the models, the limits, the folder, queue and guards."""

    served: dict[str, Served]
    tile: int
    overlap: int
    device: torch.device
    limits: ServeConfig
    max_bytes: int
    max_pixels: int
    folder: Path
    tally: uploads.Tally = field(default_factory=uploads.Tally)
    queue: Queue = field(init=False)  # set by create_app: its worker runs self.work
    budget: Budget = field(init=False)

    def work(self, job: Job, on_tile) -> None:
        """One job's work, on the queue's worker thread."""
        image = uploads.decode(job.upload, job.name)  # decoded only now, its turn
        job.upload.unlink(missing_ok=True)
        if job.task == "png":
            write_png(job.result, image)
            return
        h, w, _ = image.shape
        job.tiles_total = tile_count(h, w, self.tile, self.overlap)
        model = self.served[job.task].model
        out = deblur_image(model, image, self.tile, self.overlap, self.device, on_tile=on_tile)
        del image
        write_png(job.result, to_uint8(out))


def _state(request: Request) -> State:
    return request.app.state.deblur


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
    host: str = "127.0.0.1",
    token: str | None = None,
):
    """The FastAPI app; ``served`` defaults to the registry champions / models/*.pt.

    ``limits`` is params' serve section (its defaults when None). ``warm`` runs each model
    once on a small image first, so the first Retry-After and ETA have a rate to go on.
    ``host`` is the address it is bound to (allowed as a Host name), ``token`` the one
    every API call must carry (None: none). Its temporary folder goes when it shuts down.
    """
    device = torch.device(device)
    served = load_models(device) if served is None else served
    limits = limits or ServeConfig()
    folder = Path(tempfile.mkdtemp(prefix="deblur-serve-"))
    state = State(served, tile, overlap, device, limits, max_bytes, max_pixels, folder)
    queue = state.queue = Queue(
        state.work, limits.max_waiting, limits.timeout_s, limits.keep_s, on_idle=allocator.release
    )
    state.budget = Budget(
        folder, limits.max_uploads, limits.disk_mb * 2**20, max_bytes, queue.retry_after
    )
    if warm:
        warm_up(served, queue, tile, overlap, device)

    @asynccontextmanager
    async def lifespan(app):
        yield
        shutil.rmtree(folder, ignore_errors=True)  # users' photos do not outlive the server

    app = FastAPI(
        title="deblur",
        summary="Motion deblurring demo",
        docs_url="/api/docs",
        lifespan=lifespan,
    )
    app.state.deblur = state
    app.state.queue, app.state.tally, app.state.folder = queue, state.tally, folder
    app.add_middleware(GuardMiddleware, guard=Guard.of(host, list(limits.allowed_hosts), token))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(UploadError, upload_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, internal)
    app.include_router(router)
    return app


# --------------------------------------------------------------------------- errors


def upload_error(request: Request, exc: UploadError):
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)


def http_error(request: Request, exc: HTTPException):
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def invalid(request: Request, exc: RequestValidationError):
    detail = "; ".join(str(e.get("msg", e)) for e in exc.errors())
    return JSONResponse({"detail": f"invalid request: {detail}"}, status_code=422)


def internal(request: Request, exc: Exception):
    traceback.print_exception(exc, file=sys.stderr)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
        status_code=500,
    )


# --------------------------------------------------------------------------- uploads and jobs


def pick(st: State, kind: str) -> None:
    if kind not in st.served:
        raise UploadError(400, f"unknown model '{kind}'; choose one of {', '.join(st.served)}")
    if st.served[kind].model is None:
        raise UploadError(404, f"the {LABELS[kind]} is not available: {st.served[kind].missing}")


async def _refuse_unread(st: State, request: Request, err: UploadError) -> UploadError:
    """The refusal for a request whose body is not wanted: drained if small and quick (so
    the client reads the answer), else the connection is closed."""
    drained = await uploads.discard(request, st.max_bytes, st.limits.body_timeout_s)
    return UploadError(err.status, str(err), err.headers, close=not drained)


async def admit(request: Request, png: bool = False, polled: bool = False) -> Job:
    """Stream the upload to disk, check its header, queue it: -> its job."""
    st = _state(request)
    queue = st.queue
    if queue.full():  # refuse before writing a byte of the body
        raise await _refuse_unread(st, request, queue.busy_error())
    try:
        st.budget.check()
    except UploadError as err:
        raise await _refuse_unread(st, request, err) from None
    job_dir = Path(tempfile.mkdtemp(dir=st.folder))
    try:
        with st.budget.slot():
            form = await uploads.receive(
                request, job_dir / "upload", st.tally, st.max_bytes, st.limits.body_timeout_s
            )
        task = "png" if png else form.fields.get("model", "gan")
        if not png:
            pick(st, task)
        _, w, h = uploads.check_header(form.path, form.name, st.max_pixels)
        job = Job(task, form.name, job_dir, w, h, polled=polled)
        queue.submit(job)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job


async def wait(request: Request, job: Job) -> bool:
    """Until ``job`` ends; False (and the job dropped) if the client has gone first."""
    queue = _state(request).queue
    while not job.finished.is_set():
        if await request.is_disconnected():
            queue.cancel(job)
            return False
        queue.sweep()
        await asyncio.sleep(POLL_S)
    return True


def answer(st: State, job: Job, headers: dict) -> Response:
    if job.state != "done":
        st.queue.forget(job)
        raise job.error or UploadError(499, f"{job.name} was cancelled")
    return FileResponse(
        job.result,
        media_type="image/png",
        headers=headers,
        background=BackgroundTask(st.queue.forget, job),
    )


def result_headers(st: State, job: Job) -> dict:
    return {
        "Content-Disposition": f'inline; filename="{uploads.result_name(job.name)}"',
        "X-Deblur-Model": st.served[job.task].source.encode("ascii", "replace").decode(),
        "X-Deblur-Milliseconds": f"{job.ms:.0f}",
    }


def known(st: State, job_id: str) -> Job:
    job = st.queue.get(job_id)
    if job is None or not job.polled:
        raise UploadError(404, f"no job {job_id}: unknown, or its result has expired")
    return job


# --------------------------------------------------------------------------- routes

router = APIRouter()


@router.get("/", include_in_schema=False)
def index():
    return FileResponse(STATIC / "index.html")


@router.get("/health", responses=schema.errors())
def health(request: Request):
    st = _state(request)
    queue = st.queue
    with queue.cond:
        running, waiting = queue.running, len(queue.waiting)
    return {
        "status": "ok",
        "models": [k for k, s in st.served.items() if s.model is not None],
        "queue": {
            "running": running is not None,
            "stopping": running is not None and running.cancel,
            "waiting": waiting,
            **queue.counts,
        },
        "uploads": {"receiving": st.budget.receiving, "refused": st.budget.refused},
        "last_upload": {"read": st.tally.read, "written": st.tally.written},
    }


@router.get("/api/models", responses=schema.errors(401))
def list_models(request: Request):
    st = _state(request)
    return {
        "models": [s.describe() for s in st.served.values()],
        "limits": {
            "bytes": st.max_bytes,
            "pixels": st.max_pixels,
            "types": ACCEPTED,
            "max_waiting": st.limits.max_waiting,
            "max_uploads": st.limits.max_uploads,
            "timeout_s": st.limits.timeout_s,
        },
    }


@router.post(
    "/api/deblur",
    response_class=Response,
    responses={200: schema.PNG, **schema.errors(*schema.UPLOAD_ERRORS, 404, 499)},
    openapi_extra=schema.upload_form(),
)
async def deblur(request: Request):
    """The deblurred PNG of the uploaded photo, when its turn comes."""
    st = _state(request)
    job = await admit(request)
    if not await wait(request, job):
        st.queue.forget(job)
        return Response(status_code=499)
    return answer(st, job, result_headers(st, job))


@router.post(
    "/api/png",
    response_class=Response,
    responses={200: schema.PNG, **schema.errors(*schema.UPLOAD_ERRORS, 499)},
    openapi_extra=schema.upload_form(model=False),
)
async def as_png(request: Request):
    """The upload itself as an upright PNG (for TIFF, which browsers cannot show)."""
    st = _state(request)
    job = await admit(request, png=True)
    if not await wait(request, job):
        st.queue.forget(job)
        return Response(status_code=499)
    return answer(st, job, {})


@router.post(
    "/api/jobs",
    status_code=202,
    responses={202: schema.JOB_JSON, **schema.errors(*schema.UPLOAD_ERRORS, 404)},
    openapi_extra=schema.upload_form(),
)
async def new_job(request: Request):
    """Queue the photo; poll GET /api/jobs/{id} for its progress."""
    job = await admit(request, polled=True)
    return JSONResponse(
        _state(request).queue.status(job),
        status_code=202,
        headers={"Location": f"/api/jobs/{job.id}"},
    )


@router.get("/api/jobs/{job_id}", responses={200: schema.JOB_JSON, **schema.errors(401, 404)})
def job_status(job_id: str, request: Request):
    st = _state(request)
    return st.queue.status(known(st, job_id))


@router.get(
    "/api/jobs/{job_id}/result",
    response_class=Response,
    responses={200: schema.PNG, **schema.errors(401, 404, 409, 410, 413, 415, 422, 500, 503)},
)
def job_result(job_id: str, request: Request):
    st = _state(request)
    job = known(st, job_id)
    if job.state in ("queued", "running"):
        raise UploadError(409, f"job {job_id} is {job.state}; poll GET /api/jobs/{job_id}")
    if job.state != "done":
        raise job.error or UploadError(410, f"job {job_id} was cancelled")
    return FileResponse(job.result, media_type="image/png", headers=result_headers(st, job))


@router.delete("/api/jobs/{job_id}", status_code=204, responses=schema.errors(401, 403, 404))
def cancel_job(job_id: str, request: Request):
    st = _state(request)
    job = known(st, job_id)
    st.queue.cancel(job)
    if job.ended is not None:  # finished already: its result is not wanted any more
        st.queue.forget(job)
    return Response(status_code=204)
