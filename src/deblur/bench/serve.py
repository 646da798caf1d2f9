"""`deblur bench --serve`: the demo server under load, over loopback.

Starts `deblur serve` in a subprocess (this project's models and params), then for each
photo size and number of clients sends that many uploads at once to POST /api/deblur and
waits for every answer. Per level: throughput (megapixels per second of wall time, over
the answered uploads), p50/p95 latency of those, how many got 200 and 503 (and anything
else), and the server's peak RSS, sampled from /proc. Also the server's idle RSS before
the first level and after the last.

Nothing here is a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from deblur import textable
from deblur.bench.timing import say
from deblur.errors import DeblurError

SIZES = {"720p": (720, 1280), "20mp": (3648, 5472)}
QUICK_SIZES = {"tiny": (48, 64), "small": (96, 128)}
SAMPLE_S = 0.05


@dataclass
class Level:
    size: str
    clients: int
    megapixels: float
    wall_s: float = 0.0
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # of the 200s
    peak_rss_mb: float = 0.0

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    def row(self) -> dict:
        ok = self.count(200)
        lat = sorted(self.latencies)
        return {
            "size": self.size,
            "clients": self.clients,
            "ok": ok,
            "busy_503": self.count(503),
            "other": len(self.statuses) - ok - self.count(503),
            "mp_per_s": round(ok * self.megapixels / self.wall_s, 2) if self.wall_s else 0.0,
            "p50_s": round(statistics.median(lat), 2) if lat else None,
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None,
            "peak_rss_mb": round(self.peak_rss_mb),
        }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS of one process while a ``with`` block runs."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(SAMPLE_S)

    def __enter__(self):
        self.peak = rss_mb(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def photo(height: int, width: int) -> bytes:
    """A real photo (scikit-image's cat, resized) as JPEG: what a user uploads."""
    from skimage import data

    buf = io.BytesIO()
    cat = Image.fromarray(data.chelsea()).resize((width, height), Image.Resampling.BILINEAR)
    cat.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def one_upload(url: str, body: bytes, model: str) -> tuple[int, float]:
    import requests

    start = time.perf_counter()
    try:
        res = requests.post(
            url + "/api/deblur",
            files={"file": ("photo.jpg", body, "image/jpeg")},
            data={"model": model},
            timeout=3600,
        )
        status = res.status_code
    except requests.RequestException as exc:
        status = 0  # the connection broke: counted under "other"
        say(f"serve: a client's upload failed: {type(exc).__name__}: {str(exc)[:200]}")
    return status, time.perf_counter() - start


def run_level(url: str, pid: int, size: str, hw: tuple[int, int], clients: int, model: str):
    body = photo(*hw)
    level = Level(size, clients, hw[0] * hw[1] / 1e6)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    gate = threading.Barrier(clients + 1)

    def client():
        gate.wait()
        got = one_upload(url, body, model)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    with Sampler(pid) as sampler:
        gate.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        level.wall_s = time.perf_counter() - start
    level.peak_rss_mb = sampler.peak
    level.statuses = [s for s, _ in results]
    odd = sorted({s for s in level.statuses if s not in (200, 503)})
    if odd:
        say(f"serve: {clients} x {size}: answers other than 200 and 503: {odd}")
    level.latencies = [t for s, t in results if s == 200]
    return level


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a server process: politely, then for sure."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeblurError(f"`deblur serve` exited: {log.read_text()[-500:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise DeblurError(f"`deblur serve` did not answer within {timeout:.0f} s; see {log}")


def measure(clients: list[int], sizes: list[str], quick: bool = False, model: str = "gan") -> dict:
    """Start the server, run every (size, clients) level, stop it -> the report."""
    table = QUICK_SIZES if quick else SIZES
    unknown = [s for s in sizes if s not in table]
    if unknown:
        raise DeblurError(f"unknown size {unknown[0]}; choose from {', '.join(table)}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="deblur-bench-serve-")) / "serve.log"
    cmd = [sys.executable, "-m", "deblur", "serve", "--port", str(port), "--device", "cpu"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        wait_ready(url, proc, log)
        time.sleep(1.0)  # let start-up settle before the idle reading
        idle_before = rss_mb(proc.pid)
        levels = []
        for size in sizes:
            for n in clients:
                say(f"serve: {n} client(s) x {size}")
                levels.append(run_level(url, proc.pid, size, table[size], n, model))
        time.sleep(1.0)
        idle_after = rss_mb(proc.pid)
    finally:
        stop(proc)
    return {
        "model": model,
        "load_1min": round(os.getloadavg()[0], 2),
        "idle_rss_mb": {"before": round(idle_before), "after": round(idle_after)},
        "levels": [lv.row() for lv in levels],
    }


def table(report: dict) -> str:
    head = ["size", "clients", "ok", "503", "other", "MP/s", "p50 s", "p95 s", "peak RSS MB"]
    keys = ["size", "clients", "ok", "busy_503", "other", "mp_per_s", "p50_s", "p95_s"]
    rows = [
        [str(r[k]) if r[k] is not None else "-" for k in keys] + [str(r["peak_rss_mb"])]
        for r in report["levels"]
    ]
    idle = report["idle_rss_mb"]
    return (
        textable.text(head, rows, right=True)
        + f"\nidle RSS {idle['before']} MB before, {idle['after']} MB after "
        f"(model {report['model']}, 1-min load {report['load_1min']})"
    )


def run(clients: list[int], sizes: list[str], quick: bool = False, as_json: bool = False):
    import json

    report = measure(clients, sizes, quick=quick)
    print(json.dumps(report, indent=2) if as_json else table(report))
    return report
