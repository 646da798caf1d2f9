"""`deblur bench --serve` at tiny sizes: the table's shape and counts, never its timings."""

from __future__ import annotations

import os
import subprocess
import sys

from support.tiny_models import save_tiny


def test_bench_serve_prints_one_row_per_level(tmp_path):
    for kind in ("gan", "ae"):
        save_tiny(tmp_path / "models" / f"{kind}.pt", kind)
    # Two clients, one waiting place: the second must either wait or get a 503; never lost.
    (tmp_path / "params.yaml").write_text("serve:\n  max_waiting: 1\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "deblur", "bench", "--serve", "--quick", "--clients", "1,3"]
    out = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=True
    ).stdout.splitlines()
    assert out[0].split() == [
        "size", "clients", "ok", "503", "other", "MP/s", "p50", "s", "p95", "s", "peak", "RSS", "MB"
    ]  # fmt: skip
    rows = [line.split() for line in out[1:-1]]
    assert [(r[0], r[1]) for r in rows] == [("tiny", "1"), ("tiny", "3"), ("small", "1"),
                                            ("small", "3")]  # fmt: skip
    for _size, clients, ok, busy, other, *_ in rows:
        assert int(ok) + int(busy) + int(other) == int(clients)
        assert int(other) == 0 and int(ok) >= min(int(clients), 2)  # one runs, one waits
    assert out[-1].startswith("idle RSS ")
