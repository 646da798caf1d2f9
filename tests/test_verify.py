"""`deblur verify`: workspace metrics against a git revision's and the README's results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deblur import config, verify
from deblur.errors import DeblurError

PARAMS = config.parse({}).verify  # tolerances: PSNR 0.2 dB, SSIM 0.005

EVAL = {
    "gan": {"psnr": 26.3353, "ssim": 0.7645, "gain_db": 0.6734, "ssim_gain": 0.0091,
            "images": 32},
    "ae": {"psnr": 26.2713, "ssim": 0.7653, "gain_db": 0.6094, "ssim_gain": 0.0099,
           "images": 32},
    "baseline": {"psnr": 25.6198, "ssim": 0.7518, "gain_db": -0.0421, "ssim_gain": -0.0036,
                 "images": 32},
    "blurry": {"psnr": 25.6619, "ssim": 0.7554, "images": 32},
}  # fmt: skip
# run-info/evaluate.json: the timings (and ids) no DVC metric holds.
INFO = {
    "mlflow_run_id": "abc",
    "device": "cpu",
    "timings": {"gan": {"ms_per_mp": 1295.43}, "ae": {"ms_per_mp": 689.79},
                "baseline": {"ms_per_mp": 89.12}},
}  # fmt: skip
DATA = {"pairs": 128, "test": {"pairs": 32, "psnr_blur": 25.6619, "blur_lapvar": 0.001404}}

# The README's format, as verify parses it: a table under '## Results' with these columns.
README = """# deblur

## Results

Some prose.

| model | params | PSNR (dB) | SSIM | ms / MP | protocol | source |
| --- | ---: | ---: | ---: | ---: | --- | --- |
| GAN (this project) | 2.13M | 26.34 | 0.7645 | 1295 | full | measured (synthetic) |
| Autoencoder (this project) | 1.82M | 26.27 | 0.7653 | 690 | full | measured (synthetic) |
| unsharp mask (radius=1, amount=0.5) | 0 | 25.62 | 0.7518 | 89 | full | measured (synthetic) |
| blurry input | 0 | 25.66 | 0.7554 | 0 | full | measured (synthetic) |
| Kupyn et al. | – | 28.70 | 0.9580 |  | full | reported (GoPro, seed slides) |

## Next section
"""


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def write(root: Path, eval_json=EVAL, data_json=DATA, readme=README, info=INFO) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    (root / "run-info").mkdir(exist_ok=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    (root / "metrics" / "data.json").write_text(json.dumps(data_json))
    (root / "run-info" / "evaluate.json").write_text(json.dumps(info))
    (root / "README.md").write_text(readme)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A git repo whose HEAD holds EVAL, DATA and README; the workspace equal to it."""
    write(tmp_path)
    (tmp_path / "params.yaml").write_text(
        "verify:\n  psnr_tolerance: 0.2\n  ssim_tolerance: 0.005\n"
    )
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "published")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def moved(eval_json: dict, kind: str, figure: str, delta: float) -> dict:
    out = json.loads(json.dumps(eval_json))
    out[kind][figure] = round(out[kind][figure] + delta, 4)
    return out


def failed(rows) -> list[str]:
    return [r.figure for r in rows if r.failed]


def test_equal_metrics_pass(repo):
    rows = verify.verify(PARAMS)
    assert failed(rows) == []
    assert verify.failure(rows, "HEAD", PARAMS) is None
    shown = {r.figure: r for r in rows}
    assert shown["timing.gan.ms_per_mp"].check == "shown"  # timings are never compared
    assert shown["timing.gan.ms_per_mp"].workspace == 1295.43
    assert shown["README gan.ms_per_mp"].check == "shown"
    assert shown["README gan.ms_per_mp"].committed == 1295.43  # read from run-info
    assert shown["README gan.psnr"].check == "ok"
    assert not [f for f in shown if "mlflow_run_id" in f or "device" in f]


@pytest.mark.parametrize("delta", [0.25, -0.25])
def test_a_psnr_moved_either_way_fails_naming_it(repo, delta):
    write(repo, eval_json=moved(EVAL, "gan", "psnr", delta))
    rows = verify.verify(PARAMS)
    assert failed(rows) == ["eval.gan.psnr"]
    assert "eval.gan.psnr moved" in verify.failure(rows, "HEAD", PARAMS)


@pytest.mark.parametrize("delta", [0.006, -0.006])
def test_an_ssim_moved_either_way_fails(repo, delta):
    write(repo, eval_json=moved(EVAL, "ae", "ssim", delta))
    assert failed(verify.verify(PARAMS)) == ["eval.ae.ssim"]


def test_within_tolerance_and_timings_pass(repo):
    within = moved(moved(EVAL, "gan", "psnr", 0.15), "ae", "ssim", -0.004)
    slower = json.loads(json.dumps(INFO))
    slower["timings"]["gan"]["ms_per_mp"] = 9999.0
    write(repo, eval_json=within, info=slower)
    assert failed(verify.verify(PARAMS)) == []
    (repo / "run-info" / "evaluate.json").unlink()  # timings are shown only: none is no fault
    assert failed(verify.verify(PARAMS)) == []


def test_inference_options_are_figures_like_any_other_but_never_gate_a_merge(repo):
    # eval.json's "options" (evaluate.flips): kept apart from the per-model keys the README
    # table and the gate read. The gate passes a change that adds them (HEAD has none)...
    options = {"gan_flips": {"psnr": 26.39, "ssim": 0.7656, "images": 32,
                             "psnr_vs_plain": 0.0547, "ssim_vs_plain": 0.0011}}  # fmt: skip
    write(repo, eval_json={**EVAL, "options": options})
    assert failed(verify.verify(PARAMS, regression_only=True)) == []
    # ... while a full verify names what the revision lacks, as for any new figure.
    assert set(failed(verify.verify(PARAMS))) == {
        f"eval.options.gan_flips.{k}" for k in ("psnr", "ssim", "images", "psnr_vs_plain",
                                                "ssim_vs_plain")
    }  # fmt: skip
    git(repo, "commit", "-qam", "with options")
    timed = json.loads(json.dumps({**EVAL, "options": options}))
    timed["options"]["gan_flips"]["psnr"] += 0.25
    write(repo, eval_json=timed)
    assert failed(verify.verify(PARAMS)) == ["eval.options.gan_flips.psnr"]
    assert failed(verify.verify(PARAMS, regression_only=True)) == []


def test_a_data_count_that_changed_fails(repo):
    write(repo, data_json={**DATA, "pairs": 127})
    assert failed(verify.verify(PARAMS)) == ["data.pairs"]


def test_a_readme_number_not_the_committed_one_fails(repo):
    write(repo, readme=README.replace("| 26.27 | 0.7653 |", "| 26.30 | 0.7653 |"))
    rows = verify.verify(PARAMS)
    assert failed(rows) == ["README ae.psnr"]
    assert "README ae.psnr differs (26.3 vs 26.2713)" in verify.failure(rows, "HEAD", PARAMS)


def test_no_regression_fails_only_on_a_drop(repo):
    better = moved(EVAL, "gan", "psnr", 0.5)
    better["pairs"] = 1  # not a model figure: shown, not judged
    write(repo, eval_json=better, readme=README.replace("26.34", "99.99"))
    assert failed(verify.verify(PARAMS, regression_only=True)) == []
    write(repo, eval_json=moved(EVAL, "gan", "psnr", -0.15))  # within tolerance
    assert failed(verify.verify(PARAMS, regression_only=True)) == []
    write(repo, eval_json=moved(EVAL, "ae", "gain_db", -0.3))
    assert failed(verify.verify(PARAMS, regression_only=True)) == ["eval.ae.gain_db"]


def test_against_an_older_revision(repo):
    write(repo, eval_json=moved(EVAL, "gan", "psnr", 1.0))
    git(repo, "commit", "-qam", "better")
    assert failed(verify.verify(PARAMS, rev="HEAD")) == ["README gan.psnr"]
    assert failed(verify.verify(PARAMS, rev="HEAD~1", readme=None)) == ["eval.gan.psnr"]


DOC = """# Quality

Figures from a 2-core x86_64 VM.

<!-- verify: eval.json -->
| model | PSNR (dB) | SSIM |
| --- | ---: | ---: |
| GAN (this project) | 26.34 | 0.7645 |
| blurry input | 25.66 | 0.7554 |

An unmarked table is prose: | GAN (this project) | 99.99 |

| model | PSNR (dB) |
| --- | ---: |
| GAN (this project) | 99.99 |
"""


def test_a_marked_docs_table_is_checked_like_the_readme(repo):
    page = repo / "docs" / "quality.md"
    page.parent.mkdir()
    page.write_text(DOC)
    rows = verify.verify(PARAMS, docs=verify.docs_pages(repo / "docs"))
    checked = {r.figure: r.check for r in rows if r.figure.startswith(page.as_posix())}
    assert checked == {f"{page.as_posix()} {k}.{f}": "ok" for k in ("gan", "blurry")
                       for f in ("psnr", "ssim")}  # fmt: skip
    page.write_text(DOC.replace("| 26.34 | 0.7645 |", "| 26.30 | 0.7645 |"))
    rows = verify.verify(PARAMS, docs=[page])
    assert failed(rows) == [f"{page.as_posix()} gan.psnr"]
    assert failed(verify.verify(PARAMS, regression_only=True, docs=[page])) == []
    page.write_text("<!-- verify: eval.json -->\n\nno table here\n")
    with pytest.raises(DeblurError, match="marker with no table"):
        verify.verify(PARAMS, docs=[page])


def test_cli_verify_reads_the_docs_pages(repo):
    (repo / "docs").mkdir()
    (repo / "docs" / "quality.md").write_text(DOC.replace("| 25.66 |", "| 25.70 |"))
    bad = deblur(repo, "verify")
    assert bad.returncode == 1 and "docs/quality.md blurry.psnr" in bad.stderr


def test_readme_table_parsing():
    table = verify.readme_table(README)
    assert set(table) == {"gan", "ae", "baseline", "blurry"}
    assert table["gan"] == {"psnr": "26.34", "ssim": "0.7645", "ms_per_mp": "1295"}
    with pytest.raises(DeblurError, match="no results table under '## Results'"):
        verify.readme_table("# deblur\n\n## Results\n\nnothing yet\n")


def deblur(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "deblur", *args], cwd=root, env=env, capture_output=True, text=True
    )


def test_cli_exit_codes(repo):
    ok = deblur(repo, "verify")
    assert ok.returncode == 0, ok.stderr
    assert "README gan.psnr" in ok.stdout and "every figure matches HEAD" in ok.stdout

    write(repo, eval_json=moved(EVAL, "gan", "ssim", -0.01))
    bad = deblur(repo, "verify")
    assert bad.returncode == 1
    assert (
        bad.stderr.startswith("error: 1 figure(s) differ from HEAD")
        and "eval.gan.ssim" in bad.stderr
    )
    assert "Traceback" not in bad.stderr

    (repo / "metrics" / "eval.json").write_text("{not json")
    broken = deblur(repo, "verify")
    assert broken.returncode == 2
    assert broken.stderr.count("\n") == 1 and "metrics/eval.json is not valid JSON" in broken.stderr

    (repo / "metrics" / "eval.json").unlink()
    missing = deblur(repo, "verify")
    assert missing.returncode == 2 and "metrics/eval.json not found" in missing.stderr
