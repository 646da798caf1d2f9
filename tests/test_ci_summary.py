"""The CI summary: a real git + DVC repo and MLflow store, GITHUB_STEP_SUMMARY pointed at a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_verify import EVAL, git, moved, write

SRC = Path(__file__).resolve().parents[1] / "src"
BIN = Path(sys.executable).parent
DVC_YAML = {
    "stages": {
        "evaluate": {
            "cmd": "true",
            "params": ["seed", "verify"],
            "metrics": [{"metrics/eval.json": {"cache": False}}],
        }
    }
}


@pytest.fixture
def pr(tmp_path) -> Path:
    """A repo whose base commit published EVAL; the workspace holds a PR's new results."""
    write(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "verify": {}}))
    git(tmp_path, "init", "-q")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=tmp_path, check=True)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    write(tmp_path, eval_json=moved(EVAL, "gan", "psnr", -0.5))  # the PR made the GAN worse
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 7, "verify": {}}))
    return tmp_path


def summarize(root: Path, *args: str, summary: Path | None = None, store: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    env |= {"PYTHONPATH": str(SRC), "DVC_NO_ANALYTICS": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    if summary:
        env["GITHUB_STEP_SUMMARY"] = str(summary)
    return subprocess.run(
        [sys.executable, "-m", "deblur.ci_summary", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )


def test_summary_goes_to_the_step_summary_file(pr, tmp_path):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    proc = summarize(pr, "--base", "HEAD", summary=summary)
    assert proc.returncode == 0, proc.stderr
    text = summary.read_text()
    assert text.startswith("earlier step\n## deblur pipeline")  # appended, as GitHub expects
    assert "| GAN | 25.84 | 0.7645 | +0.67 | 1295 |" in text  # this run's results
    assert "**verify failed:**" in text and "eval.gan.psnr worse" in text  # the merge gate
    assert "(merge gate: only a drop fails)" in text
    metrics_diff = text[text.index("### `dvc metrics diff HEAD`") :]
    assert "gan.psnr" in metrics_diff and "26.3353" in metrics_diff and "25.8353" in metrics_diff
    params_diff = text[text.index("### `dvc params diff HEAD`") :]
    assert "| params.yaml | seed" in params_diff.replace("  ", " ")
    assert "### Promotion" in text and "no MLflow store" in text


def test_summary_reports_the_promotion_decision(pr, tmp_path, monkeypatch):
    from test_runs import registered

    from deblur import fsutil
    from deblur.tracking import registry

    monkeypatch.chdir(pr)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pr / 'mlflow.db'}")
    for text in ("v1", "v2"):
        fsutil.write_text("models/gan.pt", text)
        registered("gan", pr / "models" / "gan.pt")
    registry.set_alias("gan", registry.CHAMPION, "1")
    fsutil.write_text("models/ae.pt", "v1")
    registered("ae", pr / "models" / "ae.pt")
    registry.set_alias("ae", registry.CHAMPION, "1")

    proc = summarize(pr)  # no GITHUB_STEP_SUMMARY: printed
    assert proc.returncode == 0, proc.stderr
    assert "- GAN: @champion stays with v1; v2 is @challenger" in proc.stdout
    assert "- Autoencoder: v1 promoted to @champion" in proc.stdout
    assert "**verify failed:**" in proc.stdout and "eval.gan.psnr moved" in proc.stdout


def test_summary_survives_missing_metrics(pr, tmp_path):
    (pr / "metrics" / "eval.json").unlink()
    proc = summarize(pr, summary=tmp_path / "s.md")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "s.md").read_text()
    assert "_n/a: metrics/eval.json not found_" in text
    assert "**verify: metrics/eval.json not found" in text
