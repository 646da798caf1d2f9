"""The CI pipeline job's Markdown summary, written to $GITHUB_STEP_SUMMARY (else stdout).

`python -m deblur.ci_summary [--base REV]` after `make repro` and `deblur verify`: the
results this run produced, `deblur verify`'s comparison with REV and the README, `dvc
metrics diff` and `dvc params diff` against REV, and the promotion decision per model as
the registry holds it after `deblur promote`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from deblur import config, paths, textable, verify
from deblur.errors import DeblurError
from deblur.kinds import KINDS, LABELS
from deblur.tracking import registry, store

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _dvc() -> str:
    """The dvc beside this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else "dvc"


def _command(args: list[str]) -> str:
    """A command's stdout, or one line saying why there is none."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"_n/a: {' '.join(args[:3])} could not run ({exc})_"
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"_n/a: `{' '.join(args[1:])}` failed ({why})_"
    out = proc.stdout.strip()
    # dvc prints a header and its rule alone when nothing changed
    return out if len(out.splitlines()) > 2 else "_no change_"


RESULT_COLUMNS = (("psnr", ".2f"), ("ssim", ".4f"), ("gain_db", "+.2f"), ("ms_per_mp", ".0f"))


def results_section() -> str:
    metrics = json.loads(paths.EVAL_JSON.read_text()) if paths.EVAL_JSON.is_file() else {}
    if metrics:  # ms / MP: run-info's, not eval.json's
        metrics = verify.with_timings(metrics, verify.timings(None))
    body = [
        [LABELS.get(key, key)]
        + [
            f"{m[name]:{spec}}" if isinstance(m.get(name), int | float) else "–"
            for name, spec in RESULT_COLUMNS
        ]
        for key in (*KINDS, "baseline", "blurry")
        if isinstance(m := metrics.get(key), dict)
    ]
    if not body:
        return f"_n/a: {paths.EVAL_JSON} not found_"
    header = ["model", "PSNR (dB)", "SSIM", "gain (dB)", "ms / MP"]
    return textable.markdown(header, body, ["---"] + ["---:"] * len(RESULT_COLUMNS))


def verify_section(params, rev: str, regression_only: bool) -> str:
    try:
        rows = verify.verify(
            params.verify,
            rev,
            Path("README.md"),
            regression_only=regression_only,
            docs=verify.docs_pages(),
        )
    except DeblurError as exc:
        return f"**verify: {exc}**"
    failed = verify.failure(rows, rev, params.verify)
    verdict = f"**verify failed:** {failed}" if failed else f"verify: every figure matches `{rev}`"
    gate = " (merge gate: only a drop fails)" if regression_only else ""
    table = verify.markdown_table(rows, rev)
    return f"{verdict}{gate}\n\n<details><summary>all figures</summary>\n\n{table}\n\n</details>"


def promotion_section() -> str:
    """Per model: the newest version, and whether it holds @champion now."""
    if not store.exists():
        return "_n/a: no MLflow store_"
    lines = []
    for kind in KINDS:
        newest = next(iter(registry.versions(kind)), None)
        holder = registry.champion(kind)
        if newest is None:
            lines.append(f"- {LABELS[kind]}: no registered version")
        elif holder is not None and holder.version == newest.version:
            lines.append(f"- {LABELS[kind]}: v{newest.version} promoted to @champion")
        else:
            held = f"v{holder.version}" if holder is not None else "nobody"
            lines.append(
                f"- {LABELS[kind]}: @champion stays with {held}; v{newest.version} is @challenger"
            )
    return "\n".join(lines)


def build(params, base: str | None) -> str:
    rev = base or "HEAD"
    dvc = _dvc()
    diff_args = [base] if base else []
    parts = [
        "## deblur pipeline",
        "### Results (this run)",
        results_section(),
        "### Reproduction",
        verify_section(params, rev, regression_only=base is not None),
        f"### `dvc metrics diff {rev}`",
        _command([dvc, "metrics", "diff", "--md", *diff_args]),
        f"### `dvc params diff {rev}`",
        _command([dvc, "params", "diff", "--md", *diff_args]),
        "### Promotion",
        promotion_section(),
    ]
    return "\n\n".join(parts) + "\n"


def write(markdown: str) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY (GitHub renders it on the run's page), else print."""
    target = os.environ.get(SUMMARY_ENV, "").strip()
    if not target:
        sys.stdout.write(markdown)
        return None
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown)
    return Path(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deblur.ci_summary", description=__doc__)
    parser.add_argument("--base", help="Revision to diff against (the PR's base branch).")
    parser.add_argument("--params", type=Path, help="Params file instead of ./params.yaml.")
    args = parser.parse_args(argv)
    try:
        written = write(build(config.load(args.params), args.base))
    except DeblurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if written:
        print(f"wrote the summary to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
