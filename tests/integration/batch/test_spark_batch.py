"""`deblur batch` on real Spark (pyspark's JVM on 127.0.0.1): local[2] and a standalone
master + worker started here, the registry's model through mlflow.pyfunc.spark_udf.

Every test starts a JVM and loads models in Spark's Python workers: slow, each of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.disks import small_tmpfs
from support.mlflow_runs import private_copy
from support.tiny_models import random_image, save_tiny

from deblur.batch import manifest
from deblur.errors import DeblurError
from deblur.predict import predict
from deblur.tracking import flavour, registry, runs, store

# No Java: skipped here, but under CI=true the test runs and fails (`make setup` installs it).
pytestmark = pytest.mark.skipif(
    shutil.which("java") is None and os.environ.get("CI") != "true", reason="no Java runtime"
)
JOB_TIMEOUT = 300


@pytest.fixture(scope="module")
def registered_store(tmp_path_factory):
    """deblur-gan v1 @champion and a different v2 in a fresh SQLite store."""
    root = tmp_path_factory.mktemp("batch-registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for seed in (0, 1):
            save_tiny(ckpt := root / "models" / f"gan{seed}.pt", "gan", seed=seed)
            with runs.stage_run("train-gan", {"seed": 0}):
                mv = flavour.register_trained("gan", ckpt)
            if seed == 0:
                store.client().set_registered_model_alias("deblur-gan", "champion", mv.version)
    return root


@pytest.fixture
def champion_project(registered_store, tmp_path, monkeypatch):
    return private_copy(registered_store, tmp_path, monkeypatch)


def mixed_folder(root: Path) -> dict[str, str]:
    """Subfolders, 16-bit gray, RGBA, a truncated PNG, a text file named .png and a .txt
    -> {name relative to root: what the manifest should say}."""
    (root / "day1" / "cam2").mkdir(parents=True)
    Image.fromarray(random_image(40, 56, 1)).save(root / "rgb.png")
    Image.fromarray(random_image(36, 52, 2)).convert("RGBA").save(root / "day1" / "rgba.png")
    gray = random_image(30, 44, 3)[..., 0].astype(np.uint16) * 257
    Image.fromarray(gray).save(root / "day1" / "cam2" / "gray16.png")
    Image.fromarray(random_image(33, 47, 4)).save(root / "day1" / "cam2" / "shot.jpg", quality=95)
    whole = (root / "rgb.png").read_bytes()
    (root / "day1" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (root / "day1" / "cam2" / "letter.png").write_text("not an image at all")
    (root / "notes.txt").write_text("shot list")
    return {
        "rgb.png": "written",
        "day1/rgba.png": "written",
        "day1/cam2/gray16.png": "written",
        "day1/cam2/shot.jpg": "written",
        "day1/cut.png": "failed",
        "day1/cam2/letter.png": "failed",
        "notes.txt": "skipped",
    }


def frames(root: Path, n: int, h: int = 48, w: int = 64) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        Image.fromarray(random_image(h, w, i)).save(path := root / f"f{i:03d}.png")
        files.append(path)
    return files


def batch_cmd(inputs: list[Path], out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "deblur", "batch", *map(str, inputs), "-o", str(out), *args]


def env() -> dict[str, str]:
    """The user's terminal: no PYTHONWARNINGS asking to see library warnings."""
    e = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    e.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    return e


def run_batch(inputs, out, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        batch_cmd(inputs, out, *args),
        capture_output=True,
        text=True,
        env=env(),
        cwd=cwd,
        timeout=JOB_TIMEOUT,
    )


def predicted(inputs: Path, out: Path, model: str) -> Path:
    """What `deblur predict -r` writes for the same folder (bad files skipped)."""
    # the bad files: predict says so at the end (a DeblurError), as batch does
    with contextlib.suppress(DeblurError):
        predict([inputs], out, model, device="cpu", progress=False, recursive=True)
    return out


def pixels(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as img:
        return img.mode, np.asarray(img)


def same_files(a: Path, b: Path) -> list[str]:
    """The PNGs under a and b: same names, modes and pixels -> their relative names."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*.png"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*.png"))
    for name in names:
        (ma, pa), (mb, pb) = pixels(a / name), pixels(b / name)
        assert ma == mb, name
        np.testing.assert_array_equal(pa, pb, err_msg=name)
    return names


def quiet(stderr: str) -> None:
    """Nothing of Spark, the JVM, pandas or MLflow reaches the user's terminal."""
    for noise in ("WARN", "Traceback", "FutureWarning", "log4j", "Downloading artifacts"):
        assert noise not in stderr, stderr


def rows_by_input(path: Path, root: Path) -> dict[str, dict]:
    rows = manifest.read(path)
    names = [str(Path(r["input"]).relative_to(root.resolve())) for r in rows]
    assert len(names) == len(set(names)), "one row per input"
    return dict(zip(names, rows, strict=True))


@pytest.mark.slow
def test_local_batch_mirrors_the_tree_with_predicts_pixels_and_a_manifest(
    champion_project, tmp_path
):
    expected = mixed_folder(photos := tmp_path / "photos")
    out = tmp_path / "out"
    done = run_batch([photos], out, "--master", "local[2]", "-r")
    assert done.returncode != 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 6 images failed"), done.stderr
    assert "cut.png" in last and "letter.png" in last
    assert "deblur-gan v1 (models:/deblur-gan@champion)" in done.stderr
    quiet(done.stderr)

    want = predicted(photos, tmp_path / "predicted", "models:/deblur-gan/1")
    names = same_files(out, want)
    assert names == sorted(
        ["rgb.png", "day1/rgba.png", "day1/cam2/gray16.png", "day1/cam2/shot.png"]
    )
    assert pixels(out / "day1/cam2/gray16.png")[0] == "I;16"
    assert pixels(out / "day1/rgba.png")[0] == "RGBA"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    rows = rows_by_input(out / manifest.NAME, photos)
    assert {k: r["status"] for k, r in rows.items()} == expected
    scored = [r for r in rows.values() if r["status"] != "skipped"]
    assert {r["model_version"] for r in scored} == {"1"}
    assert all(float(r["ms"]) > 0 for r in scored)
    assert "truncated" in rows["day1/cut.png"]["error"]
    assert "not an image" in rows["day1/cam2/letter.png"]["error"]
    assert rows["rgb.png"]["output"] == str((out / "rgb.png").resolve())

    # A rerun skips what is written: one output removed is the only one deblurred again.
    (out / "day1" / "rgba.png").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = run_batch([photos], out, "--master", "local[2]", "-r")
    assert again.returncode != 0
    assert "1 to deblur" not in again.stderr  # the two bad files are tried again too
    assert "3 to deblur on local[2], 3 already written" in again.stderr, again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    rows = rows_by_input(out / manifest.NAME, photos)
    assert rows["day1/rgba.png"]["status"] == "written"
    for name in ("rgb.png", "day1/cam2/gray16.png", "day1/cam2/shot.jpg"):
        assert rows[name]["status"] == "skipped" and "already written" in rows[name]["error"]
        assert rows[name]["model_version"] == "1"  # from the first run's manifest
    same_files(out, want)


@pytest.mark.slow
def test_the_alias_moved_mid_job_leaves_the_version_unchanged(champion_project, tmp_path):
    files = frames(tmp_path / "frames", 16)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        batch_cmd([files[0].parent], out, "--master", "local[2]"),
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        first = proc.stderr.readline()  # printed once the alias is resolved
        assert first.startswith("model: deblur-gan v1"), first
        store.client().set_registered_model_alias("deblur-gan", "champion", "2")
        rest = proc.stderr.read()
        assert proc.wait(JOB_TIMEOUT) == 0, rest
    finally:
        proc.kill()
    assert registry.resolve_version("models:/deblur-gan@champion") == ("deblur-gan", "2")
    rows = manifest.read(out / manifest.NAME)
    assert len(rows) == 16 and {r["model_version"] for r in rows} == {"1"}
    same_files(out, predicted(files[0].parent, tmp_path / "v1", "models:/deblur-gan/1"))
    v2 = predicted(files[0].parent, tmp_path / "v2", "models:/deblur-gan/2")
    assert not np.array_equal(pixels(out / "f000.png")[1], pixels(v2 / "f000.png")[1])


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A Spark master and one worker (2 cores) on 127.0.0.1, stopped at the end."""
    from deblur.batch import cluster

    running = cluster.start(tmp_path_factory.mktemp("spark"), cores=2, memory="2g")
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_a_standalone_cluster_gives_the_same_outputs(champion_project, standalone, tmp_path):
    mixed_folder(photos := tmp_path / "photos")
    out = tmp_path / "out"
    done = run_batch([photos], out, "--master", standalone.url, "-r")
    assert done.returncode != 0 and "error: 2 of 6 images failed" in done.stderr, done.stderr
    quiet(done.stderr)
    same_files(out, predicted(photos, tmp_path / "predicted", "models:/deblur-gan/1"))
    statuses = [r["status"] for r in manifest.read(out / manifest.NAME)]
    assert sorted(statuses) == ["failed"] * 2 + ["skipped"] + ["written"] * 4


def _executors(worker_pid: int) -> list[int]:
    """The executor JVMs the worker launched (its children running the executor backend)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == worker_pid and b"CoarseGrainedExecutorBackend" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_killed_executor_still_ends_with_every_frame_once(champion_project, standalone, tmp_path):
    files = frames(tmp_path / "frames", 24, 360, 640)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        batch_cmd([files[0].parent], out, "--master", standalone.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not list(out.glob("f*.png")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        executors = _executors(standalone.worker_pid())
        assert len(executors) == 1, executors
        written = len(list(out.glob("f*.png")))
        assert written < len(files), "the job ended before the kill: give it more frames"
        os.kill(executors[0], signal.SIGKILL)
        rest = proc.stderr.read()
        assert proc.wait(JOB_TIMEOUT) == 0, rest
    finally:
        proc.kill()
    assert _executors(standalone.worker_pid()) != executors  # a new one took over
    rows = manifest.read(out / manifest.NAME)
    assert sorted(Path(r["input"]).name for r in rows) == [f.name for f in files]
    assert {r["status"] for r in rows} == {"written"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f.name for f in files] + [manifest.NAME]
    )  # every frame once, no temporary file left
    same_files(out, predicted(files[0].parent, tmp_path / "predicted", "models:/deblur-gan/1"))


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root, as in CI's container); unmounted afterwards."""
    with small_tmpfs(tmp_path / "small", "256k") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_what_was_written(champion_project, small_disk, tmp_path):
    files = frames(tmp_path / "frames", 12, 120, 160)  # ~55 KB each: 4 fit in 256 KiB
    out = small_disk / "out"
    done = run_batch([files[0].parent], out, "--master", "local[2]")
    assert done.returncode != 0
    quiet(done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on device writing {out.resolve()}/f"), last
    assert "photos not attempted" in last and "rerun the same command" in last
    kept = sorted(out.glob("f*.png"))
    assert 0 < len(kept) < len(files)
    for path in kept:  # whole files, each one predict's
        with Image.open(path) as img:
            img.load()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
