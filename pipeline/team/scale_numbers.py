"""The figures of docs/scale-out.md that `deblur bench --tracking` does not give: training
throughput of two torchrun agents on this machine against one process, and what a SIGTERM
and a SIGKILL cost a run. Prints numbers; run from the repository root:

    PYTHONPATH=src .venv/bin/python pipeline/team/scale_numbers.py

It builds a project in a temporary folder (the smoke profile's data, the default
autoencoder, crops of 128, 1 + 3 epochs of 20 steps), trains with the local SQLite store,
and reads samples per second from the stage's own metrics/train_ae.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent


def _params(epochs: int) -> dict:
    raw = yaml.safe_load((REPO / "pipeline" / "profiles" / "smoke.yaml").read_text())
    raw.pop("extends")
    raw["train"]["ae"] = {"epochs": epochs, "steps_per_epoch": 20, "batch_size": 4, "crop": 64}
    raw["train"]["gan"] = {"epochs": 1}
    return raw


def _project(root: Path, epochs: int) -> Path:
    shutil.copytree(REPO / "pipeline" / "expectations", root / "pipeline" / "expectations")
    (root / "params.yaml").write_text(yaml.safe_dump(_params(epochs)))
    for stage in ("download", "validate", "preprocess"):
        subprocess.run([PY, "-m", "deblur", stage], cwd=root, check=True, capture_output=True)
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return env | {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}


def _rate(root: Path) -> float:
    return json.loads((root / "run-info" / "train-ae.json").read_text())["samples_per_s"]


def throughput(base: Path) -> tuple[float, float]:
    one = _project(base / "one", 1)
    subprocess.run(
        [PY, "-m", "deblur", "train", "ae", "--device", "cpu"],
        cwd=one,
        env=_env(one),
        check=True,
        capture_output=True,
    )
    nodes = [shutil.copytree(one, base / f"node{r}") for r in (0, 1)]
    for node in nodes:
        shutil.rmtree(node / "models")
        (node / "mlflow.db").unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agents = []
    for rank, node in enumerate(nodes):
        cmd = [
            str(BIN / "torchrun"),
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--rdzv-conf",
            "timeout=60",
            "-m",
            "deblur",
            "train",
            "ae",
            "--device",
            "cpu",
        ]
        env = _env(nodes[0])  # one store: node 0's
        agents.append(
            subprocess.Popen(
                cmd, cwd=node, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    for agent in agents:
        assert agent.wait(timeout=900) == 0, "two-agent run failed"
    return _rate(one), _rate(nodes[0])


def interrupted(base: Path, sig: int) -> tuple[float, int, int]:
    """-> (seconds from the signal to the exit, the last step seen, the step resumed from)."""
    root = _project(base / f"sig{sig}", 3)
    cmd = [PY, "-m", "deblur", "train", "ae", "--device", "cpu"]
    proc = subprocess.Popen(
        cmd, cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        if "ae epoch 1:" in line:
            break
    time.sleep(1.5)  # into epoch 2
    sent = time.monotonic()
    proc.send_signal(sig)
    rest = proc.stdout.read()
    proc.wait()
    took = time.monotonic() - sent
    stopped = re.search(r"stopped after step (\d+)", rest)
    again = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
    resumed = int(re.search(r"resumed from step (\d+)", again.stdout + again.stderr)[1])
    return took, int(stopped[1]) if stopped else -1, resumed


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="deblur-scale-"))
    try:
        one, two = throughput(base)
        print(f"samples/s: one process {one:.1f}, two agents (world 2) {two:.1f}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            took, stopped, resumed = interrupted(base, sig)
            lost = "" if stopped < 0 else f", steps lost {stopped - resumed}"
            print(
                f"{signal.Signals(sig).name}: exit {took:.1f} s after the signal, "
                f"resumed from step {resumed} of 60 (20 per epoch){lost}"
            )
        print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
