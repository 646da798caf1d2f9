"""Admission and jobs: one image runs at a time, a bounded queue waits, the rest get 503.

One at a time because one image already keeps every core busy (torch's intra-op threads)
and a 20 MP photo holds over 1 GB of float buffers: two at once would each take twice as
long and hold twice the memory, for no more images per second. README's speed section has
the load benchmark. Everything a job needs is on disk until its turn (the upload) or until
it is fetched (the result), so memory does not grow with the queue.

A waiting job is refused once it has waited ``timeout_s``; a job whose client has gone
(a dropped connection, or a job nobody polls) is dropped before it runs, or stopped
between tiles if it is running. Finished jobs are forgotten ``keep_s`` after they end.
"""

from __future__ import annotations

import math
import secrets
import shutil
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deblur.serve.uploads import UploadError

# A job created through the job API whose page stops polling for this long is dropped.
# Browsers slow the timers of a hidden tab to one a minute after a while: more than that.
ABANDONED_S = 90.0
# The ms-per-megapixel estimate follows recent jobs: each new one weighs this much.
RATE_WEIGHT = 0.3


class Cancelled(Exception):
    """Raised between tiles to stop a job whose client has gone."""


@dataclass
class Job:
    task: str  # the model kind to deblur with, or "png" (decode to PNG only)
    name: str
    folder: Path
    width: int
    height: int
    polled: bool = False  # a job API job (its client polls) rather than a waiting request
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    state: str = "queued"  # queued | running | done | failed | cancelled
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    started: float | None = None
    ended: float | None = None
    tiles_done: int = 0
    tiles_total: int = 0
    error: UploadError | None = None
    ms: float = 0.0
    cancel: bool = False
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def upload(self) -> Path:
        return self.folder / "upload"

    @property
    def result(self) -> Path:
        return self.folder / "result.png"

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


class Queue:
    """FIFO of jobs behind one worker thread; ``work(job, on_tile)`` does a job's work."""

    def __init__(
        self,
        work: Callable[[Job, Callable[[int, int], None]], None],
        max_waiting: int,
        timeout_s: float,
        keep_s: float,
        on_idle: Callable[[], object] | None = None,
    ):
        self.work, self.on_idle = work, on_idle
        self.max_waiting, self.timeout_s, self.keep_s = max_waiting, timeout_s, keep_s
        self.cond = threading.Condition()
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None
        self.jobs: dict[str, Job] = {}
        self.rates: dict[str, float] = {}  # ms per megapixel, per task
        self.counts = {"ran": 0, "refused": 0, "expired": 0, "cancelled": 0}
        threading.Thread(target=self._loop, name="deblur-worker", daemon=True).start()

    # ----------------------------------------------------------------- estimates

    def learn(self, task: str, ms: float, megapixels: float) -> None:
        rate = ms / max(megapixels, 1e-3)
        old = self.rates.get(task)
        self.rates[task] = rate if old is None else (1 - RATE_WEIGHT) * old + RATE_WEIGHT * rate

    def _estimate(self, job: Job) -> float:
        """Seconds ``job`` has left: from its tiles once it runs, else from the rate."""
        rate = self.rates.get(job.task) or max(self.rates.values(), default=1000.0)
        whole = rate * job.megapixels / 1e3
        if job.state != "running" or job.started is None:
            return whole
        if job.tiles_done:
            elapsed = time.monotonic() - job.started
            return elapsed / job.tiles_done * (job.tiles_total - job.tiles_done)
        return whole

    def _ahead(self, job: Job | None) -> list[Job]:
        """Jobs that run before ``job`` ends, ``job`` included (all queued work for None)."""
        line = ([self.running] if self.running else []) + list(self.waiting)
        if job is None:
            return line
        return line[: line.index(job) + 1] if job in line else []

    def eta_s(self, job: Job | None = None) -> float:
        with self.cond:
            return sum(self._estimate(j) for j in self._ahead(job))

    def retry_after(self) -> int:
        """Whole seconds until the work queued now is done: when a retry will be let in."""
        return max(1, math.ceil(self.eta_s()))

    def position(self, job: Job) -> int:
        """0 while it runs, 1 for the first in line, ...; -1 once it is no longer queued."""
        with self.cond:
            if job is self.running:
                return 0
            return self.waiting.index(job) + 1 if job in self.waiting else -1

    # ----------------------------------------------------------------- admission

    def full(self) -> bool:
        with self.cond:
            self._sweep()
            return self._full()

    def _full(self) -> bool:
        # Counted as running + waiting: a job not yet picked up by the worker still waits.
        return len(self.waiting) + (self.running is not None) > self.max_waiting

    def busy_error(self) -> UploadError:
        """The 503 a request gets when the queue is full (counted as a refusal)."""
        self.counts["refused"] += 1
        wait = self.retry_after()
        return UploadError(
            503,
            f"the server is busy ({len(self.waiting)} waiting, the most it queues); "
            f"try again in about {wait} s",
            headers={"Retry-After": str(wait)},
        )

    def submit(self, job: Job) -> None:
        """Queue ``job``, or raise a 503 with Retry-After when the queue is full."""
        with self.cond:
            self._sweep()
            if self._full():
                raise self.busy_error()
            self.jobs[job.id] = job
            self.waiting.append(job)
            self.cond.notify_all()

    def get(self, job_id: str) -> Job | None:
        with self.cond:
            self._sweep()
            job = self.jobs.get(job_id)
            if job is not None:
                job.seen = time.monotonic()
            return job

    def cancel(self, job: Job) -> None:
        """The client has gone: drop it if waiting, stop it at its next tile if running."""
        with self.cond:
            job.cancel = True
            if job in self.waiting:
                self.waiting.remove(job)
                self._end(job, "cancelled")
                self.counts["cancelled"] += 1

    def forget(self, job: Job) -> None:
        with self.cond:
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def _end(self, job: Job, state: str, error: UploadError | None = None) -> None:
        job.state, job.error, job.ended = state, error, time.monotonic()
        job.upload.unlink(missing_ok=True)
        job.finished.set()

    def sweep(self) -> None:
        with self.cond:
            self._sweep()

    def _sweep(self) -> None:
        """Refuse jobs waiting past the deadline, drop abandoned ones, forget old results."""
        now = time.monotonic()
        for job in list(self.waiting):
            if job.polled and now - job.seen > ABANDONED_S:
                self.waiting.remove(job)
                self._end(job, "cancelled")
                self.counts["cancelled"] += 1
            elif now - job.created > self.timeout_s:
                self.waiting.remove(job)
                wait = max(1, math.ceil(sum(self._estimate(j) for j in self._ahead(None))))
                self._end(
                    job,
                    "failed",
                    UploadError(
                        503,
                        f"{job.name} waited {self.timeout_s:g} s in the queue without starting "
                        f"(serve.timeout_s); the server is busy, try again in about {wait} s",
                        headers={"Retry-After": str(wait)},
                    ),
                )
                self.counts["expired"] += 1
        running = self.running
        if running is not None and running.polled and now - running.seen > ABANDONED_S:
            running.cancel = True
        for job in list(self.jobs.values()):
            if job.ended is not None and now - job.ended > self.keep_s:
                self.jobs.pop(job.id, None)
                shutil.rmtree(job.folder, ignore_errors=True)

    # ----------------------------------------------------------------- the worker

    def _loop(self) -> None:
        while True:
            with self.cond:
                self._sweep()
                while not self.waiting:
                    self.cond.wait(timeout=1.0)
                    self._sweep()
                job = self.running = self.waiting.popleft()
                job.state, job.started = "running", time.monotonic()
            self._run(job)
            with self.cond:
                self.running = None
                idle = not self.waiting
            if idle and self.on_idle is not None:
                self.on_idle()

    def _run(self, job: Job) -> None:
        def on_tile(done: int, total: int) -> None:
            job.tiles_done, job.tiles_total = done, total
            if job.cancel:
                raise Cancelled

        try:
            self.work(job, on_tile)
        except Cancelled:
            with self.cond:
                self._end(job, "cancelled")
                self.counts["cancelled"] += 1
            return
        except UploadError as exc:
            with self.cond:
                self._end(job, "failed", exc)
            return
        except Exception as exc:  # a bug or a broken model: the request still gets an answer
            traceback.print_exc(file=sys.stderr)
            error = UploadError(500, f"deblurring {job.name} failed ({type(exc).__name__}: {exc})")
            with self.cond:
                self._end(job, "failed", error)
            return
        ms = (time.monotonic() - (job.started or time.monotonic())) * 1e3
        with self.cond:
            job.ms = ms
            self.learn(job.task, ms, job.megapixels)
            self.counts["ran"] += 1
            self._end(job, "cancelled" if job.cancel else "done")

    def status(self, job: Job) -> dict:
        """What GET /api/jobs/{id} answers."""
        with self.cond:
            eta = sum(self._estimate(j) for j in self._ahead(job))
            position = (
                0
                if job is self.running
                else (self.waiting.index(job) + 1 if job in self.waiting else -1)
            )
        body = {
            "id": job.id,
            "state": job.state,
            "model": job.task,
            "name": job.name,
            "width": job.width,
            "height": job.height,
            "position": position,
            "tiles": {"done": job.tiles_done, "total": job.tiles_total},
            "eta_s": round(eta, 2) if job.state in ("queued", "running") else 0.0,
        }
        if job.state == "done":
            body["ms"] = round(job.ms)
            body["result"] = f"/api/jobs/{job.id}/result"
        if job.error is not None:
            body["error"] = str(job.error)
            body["status"] = job.error.status
        return body
