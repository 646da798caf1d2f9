"""`deblur bench --batch`: the same folder of 720p frames through `deblur predict`,
`deblur batch --master local[2]` and `deblur batch` on a standalone master + worker
(deblur.batch.cluster, 127.0.0.1), each as the command a user runs, in a subprocess.

Each path runs twice, on ``small`` frames and on ``frames`` frames: the difference is the
steady state (seconds per frame -> frames/s and MP/s), the rest is start-up (Python
imports, the JVM, the model's download and first load), reported apart. Also one 20 MP
photo through batch on local[1]: the peak RSS of Spark's Python workers (what an
executor's Python memory must hold) and of the JVM, sampled from /proc.

Nothing here is a test: the numbers depend on the machine and what else runs on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deblur import models
from deblur.bench.inference import bench_model
from deblur.bench.timing import say
from deblur.config import Params
from deblur.errors import DeblurError

FRAME = (720, 1280)
PHOTO_20MP = (3648, 5472)
SAMPLE_S = 0.1


def _frames(folder: Path, n: int, size: tuple[int, int]) -> Path:
    """n smooth frames (noise would be a codec benchmark, not a model one)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    for i in range(n):
        base = np.stack([np.sin(7 * x + 3 * y + i), np.cos(5 * y - 2 * x), np.sin(4 * (x + y))])
        image = np.round((0.5 + 0.4 * base.transpose(1, 2, 0)) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"frame{i:04d}.png", compress_level=1)
    return folder


def _run(cmd: list[str]) -> float:
    """Wall seconds of one command; a DeblurError with its last line if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DeblurError(f"bench: {' '.join(cmd[2:4])} failed: {last}")
    return time.perf_counter() - start


def _deblur(*args: str) -> list[str]:
    return [sys.executable, "-m", "deblur", *args]


def _path(name: str, command, small: Path, many: Path, n_small: int, n: int, mp: float) -> dict:
    say(f"batch bench: {name}, {n_small} then {n} frames")
    t_small, t_many = command(small), command(many)
    per_frame = (t_many - t_small) / (n - n_small)
    return {
        "path": name,
        "frames": n,
        "wall_s": round(t_many, 1),
        "startup_s": round(t_small - n_small * per_frame, 1),
        "frames_per_s": round(1 / per_frame, 3),
        "mp_per_s": round(mp / per_frame, 3),
    }


def _tree_rss(root: int) -> tuple[float, float]:
    """(MB of all Python processes, MB of all JVMs) among ``root``'s descendants."""
    parents, info = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
            rss = next(
                int(line.split()[1]) / 1024
                for line in (entry / "status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, ValueError, IndexError, StopIteration):
            continue
        parents[int(entry.name)] = ppid
        info[int(entry.name)] = (b"java" in cmd.split(b"\0")[0], rss)
    python = java = 0.0
    for pid, (is_java, rss) in info.items():
        up, seen = parents.get(pid), 0
        while up not in (None, 0, 1, root) and seen < 64:
            up, seen = parents.get(up), seen + 1
        if up == root and pid != root:
            if is_java:
                java += rss
            else:
                python += rss
    return python, java


def _peak_memory(cmd: list[str]) -> dict:
    """Run ``cmd``; the peak RSS of its Python workers and of its JVM while it runs."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]
    stop = threading.Event()

    def sample():
        while not stop.wait(SAMPLE_S):
            python, java = _tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], python), max(peak[1], java)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with proc.stderr:
        err = proc.stderr.read()
    proc.wait()
    stop.set()
    thread.join()
    if proc.returncode != 0:
        raise DeblurError(f"bench: batch on a 20 MP photo failed: {err.strip()[-300:]}")
    return {"python_workers_peak_mb": round(peak[0]), "jvm_peak_mb": round(peak[1])}


def measure(params: Params, frames: int = 16, quick: bool = False, memory: bool = True) -> dict:
    from deblur.batch import cluster

    size = (72, 128) if quick else FRAME
    frames = 4 if quick else frames
    n_small = 2 if quick else 4
    model, ckpt, source = bench_model("gan", params)
    tile, overlap = str(params.evaluate.tile), str(params.evaluate.overlap)
    with tempfile.TemporaryDirectory(prefix="deblur-bench-batch-") as tmp:
        tmp = Path(tmp)
        if ckpt is None:
            ckpt = tmp / "gan.pt"
            arch = models.arch_config("gan", params.train.gan)
            torch.save(models.checkpoint_dict("gan", model, arch), ckpt)
        small = _frames(tmp / "small", n_small, size)
        many = _frames(tmp / "many", frames, size)
        mp = size[0] * size[1] / 1e6
        common = ["-m", str(ckpt), "--tile", tile, "--overlap", overlap]
        runs = iter(range(10**6))

        def predict(folder: Path) -> float:
            out = tmp / f"out{next(runs)}"
            return _run(_deblur("predict", str(folder), "-o", str(out), *common, "--device", "cpu"))

        def batch(master: str):
            def go(folder: Path) -> float:
                out = tmp / f"out{next(runs)}"
                return _run(
                    _deblur("batch", str(folder), "-o", str(out), *common, "--master", master)
                )

            return go

        rows = [_path("predict", predict, small, many, n_small, frames, mp)]
        rows.append(_path("batch local[2]", batch("local[2]"), small, many, n_small, frames, mp))
        say("batch bench: starting a standalone master + worker (2 cores) on 127.0.0.1")
        start = time.perf_counter()
        spark = cluster.start(tmp / "spark", cores=2, memory="4g")
        daemons_s = time.perf_counter() - start
        try:
            row = _path("batch standalone", batch(spark.url), small, many, n_small, frames, mp)
        finally:
            spark.stop()
        row["daemons_s"] = round(daemons_s, 1)
        rows.append(row)
        peak = {}
        if memory:
            photo = (360, 548) if quick else PHOTO_20MP
            say(f"batch bench: one {photo[1]}x{photo[0]} photo through batch on local[1]")
            big = _frames(tmp / "big", 1, photo)
            out = tmp / "big-out"
            cmd = _deblur("batch", str(big), "-o", str(out), *common, "--master", "local[1]")
            peak = {"photo": f"{photo[1]}x{photo[0]}", **_peak_memory(cmd)}
    return {
        "machine": {"cores": os.cpu_count(), "load_1min_before": round(os.getloadavg()[0], 2)},
        "model": source,
        "frame": f"{size[1]}x{size[0]}",
        "paths": rows,
        "memory": peak,
    }


def table(report: dict) -> str:
    lines = [
        f"batch bench: {report['frame']} frames, GAN ({report['model']}), "
        f"{report['machine']['cores']} cores, load {report['machine']['load_1min_before']}",
        f"{'path':<18} {'frames':>6} {'frames/s':>9} {'MP/s':>7} {'start-up s':>10} {'wall s':>7}",
    ]
    for r in report["paths"]:
        lines.append(
            f"{r['path']:<18} {r['frames']:>6} {r['frames_per_s']:>9.3f} {r['mp_per_s']:>7.3f} "
            f"{r['startup_s']:>10.1f} {r['wall_s']:>7.1f}"
        )
    for r in report["paths"]:
        if "daemons_s" in r:
            lines.append(f"standalone master + worker start: {r['daemons_s']} s (not counted)")
    base = report["paths"][0]["mp_per_s"]
    for r in report["paths"][1:]:
        lines.append(f"{r['path']}: {r['mp_per_s'] / base:.2f}x predict's steady MP/s")
    m = report["memory"]
    if m:
        lines.append(
            f"one {m['photo']} photo on local[1]: Python workers peak {m['python_workers_peak_mb']}"
            f" MB RSS, JVM peak {m['jvm_peak_mb']} MB RSS"
        )
    return "\n".join(lines)


def run(params: Params, frames: int = 16, quick: bool = False, as_json: bool = False) -> dict:
    report = measure(params, frames=frames, quick=quick)
    print(json.dumps(report, indent=2) if as_json else table(report))
    return report
