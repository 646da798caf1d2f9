"""The real `deblur` console script on bad input: non-zero exit, one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEBLUR = Path(sys.executable).with_name("deblur")


def deblur(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    return subprocess.run(
        [str(DEBLUR), *args], capture_output=True, text=True, env=env, timeout=120
    )


def _params(project: Path, **data) -> None:
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"].update(data)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))


@pytest.mark.parametrize(
    ("args", "data", "code", "says"),
    [
        (["download"], {"source": "folder", "folder": "/nonexistent/gopro"}, 1, "not a folder"),
        (["download"], {"source": "gopro"}, 2, "data.sha256"),
        (["download"], {"synthetic": {"frames": 8}}, 2, "frames: must be odd"),
        (["download"], {"colour": "blue"}, 2, "unknown key 'data.colour'"),
        (["validate"], {}, 1, "run `deblur download`"),
        (["preprocess"], {}, 1, "run `deblur validate` first"),
    ],
)
def test_bad_input_exits_cleanly(project, args, data, code, says):
    _params(project, **data)
    result = deblur(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert says in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow  # ~15 s: Great Expectations takes seconds to import in a fresh process
def test_failed_validation_exits_cleanly(tiny_project):
    bad = sorted((tiny_project / "data" / "raw").rglob("blur/*.png"))[0]
    bad.write_bytes(bad.read_bytes()[:100])
    result = deblur("validate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert bad.relative_to(tiny_project).as_posix() in result.stderr
