"""DVC: the seconds of a `dvc repro` with nothing to do (never a real run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from deblur.bench.timing import say, timed


def bench_dvc(repeats: int) -> tuple[float | None, str | None]:
    """(seconds of a no-op `dvc repro`, None) or (None, why it was not timed)."""
    if not Path("dvc.lock").is_file():
        return None, "skipped: no dvc.lock here (the pipeline has not run)"
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    # Time `dvc repro` only when `dvc status` says it has nothing to do: bench must never
    # start a real pipeline run. The status call doubles as the warm-up.
    status = subprocess.run([dvc, "status", "--json"], capture_output=True, text=True)
    if status.returncode != 0:
        return None, f"skipped: dvc status failed ({(status.stderr.strip() or '?')[:120]})"
    changed = json.loads(status.stdout or "{}")
    if changed:
        return None, f"skipped: pipeline not up to date ({len(changed)} stage(s) changed)"

    def repro() -> None:
        subprocess.run([dvc, "repro"], check=True, capture_output=True)

    say("dvc repro (no-op)")
    try:
        return round(timed(repro, repeats, warmup=False), 2), None
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.decode(errors="replace").strip().splitlines()
        return None, f"skipped: dvc repro failed ({(reason or ['?'])[-1][:120]})"
