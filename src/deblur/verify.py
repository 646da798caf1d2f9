"""`deblur verify`: do the figures this workspace produced match the published ones?

Three sources side by side: the workspace's metrics/eval.json and metrics/data.json (what
the pipeline just produced), the same files committed at a git revision, and the tables of
README.md and docs/*.md that quote them. A quality figure (PSNR, SSIM, their gains) may
move by params.verify's tolerance (what two CPUs differ by); counts must be equal. Timings
(ms per megapixel) are no DVC metric: they come from run-info/evaluate.json (paths.run_info)
and are shown, never compared (they belong to a machine). Each quoted number must be the
committed figure as the table rounds it.

The README's table is the one under '## Results'. A docs page marks each table that quotes
eval.json with an HTML comment on a line of its own just above it:

    <!-- verify: eval.json -->
    | model | source | PSNR (dB) | SSIM | ms / MP |
    | --- | --- | ---: | ---: | ---: |
    | GAN (this project) | measured (this run, synthetic) | 26.44 | 0.7667 | 1298 |

Its columns are named as README_COLUMNS names them (any of them; "model" is required); a
row is keyed by its model's label (deblur.evaluate.tables.LABELS, the baseline's any other
label), and with a "source" column only rows whose source begins "measured" are checked.

With ``regression_only`` (the merge gate) only a model that got worse than the revision by
more than the tolerance fails; anything else is shown.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deblur import paths, textable
from deblur.config import VerifyConfig, flatten
from deblur.errors import DeblurError
from deblur.evaluate import tables
from deblur.kinds import KINDS

MISSING_EXIT = 2  # a metrics file or the README table is missing or malformed
# Figures that describe a machine, not a result.
TIMING = ("ms_per_mp", "ms", "seconds", "samples_per_s")
# Data figures that are neither counts nor PSNR/SSIM (blur statistics, megapixels): the
# rendering is float arithmetic too, so they may differ in the last digits across CPUs.
RELATIVE = 0.01
HIGHER_IS_BETTER = ("psnr", "ssim", "gain_db", "ssim_gain")
# README's results table: its columns by heading, and the eval.json figure each one holds.
README_COLUMNS = {"PSNR (dB)": "psnr", "SSIM": "ssim", "ms / MP": "ms_per_mp"}
# Marks a table of a docs page that quotes eval.json (the module docstring shows one).
MARKER = f"<!-- verify: {paths.EVAL_JSON.name} -->"
DOCS_MARKER = re.compile(rf"^\s*<!--\s*verify:\s*{re.escape(paths.EVAL_JSON.name)}\s*-->\s*$")
EVAL_STAGE = "evaluate"  # whose run-info holds the timings


@dataclass
class Row:
    figure: str  # eval.gan.psnr, data.test.pairs, README gan.psnr
    workspace: object
    committed: object
    readme: object = None
    check: str = "ok"  # ok | shown | MOVED | WORSE | DIFFERS | MISSING

    @property
    def failed(self) -> bool:
        return self.check in ("MOVED", "WORSE", "DIFFERS", "MISSING")


# --------------------------------------------------------------------------- inputs


def _parse(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeblurError(
            f"{where} is not valid JSON ({exc.msg}, line {exc.lineno}); rerun `dvc repro`",
            MISSING_EXIT,
        ) from None
    if not isinstance(data, dict):
        raise DeblurError(f"{where} holds no metrics object; rerun `dvc repro`", MISSING_EXIT)
    return data


def workspace_metrics(path: Path) -> dict:
    if not path.is_file():
        raise DeblurError(
            f"{path} not found; run `make repro` (or `dvc repro`) first", MISSING_EXIT
        )
    return _parse(path.read_text(), str(path))


def committed_metrics(rev: str, path: Path) -> dict:
    """``path`` as committed at ``rev`` (`git show REV:./path`)."""
    proc = _git_show(rev, path)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise DeblurError(
            f"{path} at {rev}: {reason}; commit it there or pass --against REV", MISSING_EXIT
        )
    return _parse(proc.stdout, f"{path} at {rev}")


def timings(rev: str | None) -> dict:
    """run-info/evaluate.json's timings, nested as eval.json ({'gan': {'ms_per_mp': ..}}),
    in the workspace (``rev`` None) or at ``rev``; {} where there are none: they are shown
    only, so a missing or unreadable file is no failure."""
    path = paths.run_info(EVAL_STAGE)
    if rev is None:
        text = path.read_text() if path.is_file() else ""
    else:
        proc = _git_show(rev, path)
        text = proc.stdout if proc.returncode == 0 else ""
    try:
        found = json.loads(text).get("timings", {}) if text else {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


def _git_show(rev: str, path: Path) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            ["git", "show", f"{rev}:./{path.as_posix()}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError as exc:
        raise DeblurError(f"cannot run git ({exc.strerror}); install git", MISSING_EXIT) from None
    return proc


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def readme_table(text: str, where: str = "README.md") -> dict[str, dict[str, str]]:
    """The measured rows of the table under '## Results': {eval key: {figure: cell}}.

    A row is keyed like metrics/eval.json: the learned models and the blurry input by their
    label (deblur.evaluate.tables.LABELS), the one other measured row is the baseline.
    """
    section = re.search(r"^## Results\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    lines = [ln for ln in (section.group(1) if section else "").splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        raise DeblurError(
            f"{where} has no results table under '## Results'; restore it (see README format)",
            MISSING_EXIT,
        )
    return quoted_table(lines, where, ["model", "source", *README_COLUMNS])


def quoted_table(lines: list[str], where: str, needed: list[str]) -> dict[str, dict[str, str]]:
    """A Markdown table's measured rows: {eval key: {figure: cell}} for each README_COLUMNS
    column it has; ``needed``: the headings it must have."""
    header = _cells(lines[0])
    absent = [h for h in needed if h not in header]
    if absent:
        raise DeblurError(
            f"{where}: results table lacks the column(s) {', '.join(absent)}", MISSING_EXIT
        )
    keys = {label: key for key, label in tables.LABELS.items()}
    columns = {col: fig for col, fig in README_COLUMNS.items() if col in header}
    out: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = dict(zip(header, _cells(line), strict=False))
        if "source" in header and not cells.get("source", "").startswith("measured"):
            continue
        key = keys.get(cells["model"], "baseline")
        out[key] = {fig: cells.get(col, "") for col, fig in columns.items()}
    if not out:
        raise DeblurError(f"{where}: the results table has no measured rows", MISSING_EXIT)
    return out


def docs_tables(text: str, where: str) -> list[dict[str, dict[str, str]]]:
    """Every table of a docs page marked DOCS_MARKER, as quoted_table() reads it."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not DOCS_MARKER.match(line):
            continue
        rest = lines[i + 1 :]
        while rest and not rest[0].strip():
            rest = rest[1:]
        table = []
        for row in rest:
            if not row.lstrip().startswith("|"):
                break
            table.append(row.strip())
        if len(table) < 3 or not any(c in _cells(table[0]) for c in README_COLUMNS):
            raise DeblurError(
                f"{where}:{i + 1}: a '{MARKER}' marker with no table of "
                f"{', '.join(README_COLUMNS)} columns under it; add the table or drop the marker",
                MISSING_EXIT,
            )
        found.append(quoted_table(table, f"{where}:{i + 1}", ["model"]))
    return found


# --------------------------------------------------------------------------- comparing


def _tolerance(name: str, cfg: VerifyConfig) -> float | None:
    """Absolute tolerance for a quality figure; None for others."""
    if "psnr" in name or name == "gain_db":
        return cfg.psnr_tolerance
    if "ssim" in name:
        return cfg.ssim_tolerance
    return None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(name: str, ws, ref, cfg: VerifyConfig) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf in TIMING:
        return "shown"
    if ws is None or ref is None:
        return "MISSING"
    if not (_is_number(ws) and _is_number(ref)):
        return "ok" if ws == ref else "MOVED"
    tol = _tolerance(leaf, cfg)
    if tol is not None:
        return "ok" if abs(ws - ref) <= tol + 1e-9 else "MOVED"
    if isinstance(ws, int) and isinstance(ref, int):
        return "ok" if ws == ref else "MOVED"
    return "ok" if math.isclose(ws, ref, rel_tol=RELATIVE, abs_tol=1e-12) else "MOVED"


def _regressed(name: str, ws, ref, cfg: VerifyConfig) -> str:
    """The merge gate: WORSE only for a learned model's quality figure that dropped."""
    kind, _, leaf = name.partition(".")[2].partition(".")
    if kind not in KINDS or leaf not in HIGHER_IS_BETTER:
        return "shown"
    if not (_is_number(ws) and _is_number(ref)):
        return "MISSING" if ref is not None else "shown"
    return "WORSE" if ws < ref - _tolerance(leaf, cfg) - 1e-9 else "ok"


def compare_metrics(
    prefix: str, ws: dict, ref: dict, cfg: VerifyConfig, regression_only: bool = False
) -> list[Row]:
    ws_flat, ref_flat = flatten(ws), flatten(ref)
    rows = []
    for key in dict.fromkeys([*ref_flat, *ws_flat]):
        a, b = ws_flat.get(key), ref_flat.get(key)
        name = f"{prefix}.{key}"
        check = _regressed(name, a, b, cfg) if regression_only else _check(name, a, b, cfg)
        rows.append(Row(name, a, b, check=check))
    return rows


def _decimals(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


def compare_readme(
    readme: dict[str, dict[str, str]], committed: dict, source: str = "README"
) -> list[Row]:
    """Each quoted quality number against the committed figure rounded as the table shows
    it (``committed``: eval.json with the timings put in); ``source`` names the table."""
    rows = []
    for key, cells in readme.items():
        for fig, cell in cells.items():
            name = f"{source} {key}.{fig}"
            ref = committed.get(key, {}).get(fig) if isinstance(committed.get(key), dict) else None
            try:
                shown = float(cell)
            except ValueError:
                rows.append(Row(name, None, ref, cell or None, "shown"))
                continue
            if fig in TIMING:
                check = "shown"
            elif ref is None:
                check = "MISSING"
            else:
                check = "ok" if round(ref, _decimals(cell)) == round(shown, 4) else "DIFFERS"
            rows.append(Row(name, None, ref, shown, check))
    return rows


def with_timings(tree: dict, extra: dict) -> dict:
    """``tree`` with ``extra``'s nested keys put in (eval.json and its timings as one)."""
    out = dict(tree)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = with_timings(out[key], value) if both else value
    return out


def verify(
    cfg: VerifyConfig,
    rev: str = "HEAD",
    readme: Path | None = Path("README.md"),
    regression_only: bool = False,
    docs: list[Path] = (),
) -> list[Row]:
    """Every compared figure, in order: eval.json, data.json, the timings (shown), then
    README's table and each marked table of the ``docs`` pages. ``cfg``: params' verify."""
    rows: list[Row] = []
    committed_eval = {}
    for prefix, path in (("eval", paths.EVAL_JSON), ("data", paths.DATA_JSON)):
        ws = workspace_metrics(path)
        ref = committed_metrics(rev, path)
        committed_eval = ref if prefix == "eval" else committed_eval
        rows += compare_metrics(prefix, ws, ref, cfg, regression_only)
    committed_timings = timings(rev)
    rows += compare_metrics("timing", timings(None), committed_timings, cfg, regression_only)
    quoted = with_timings(committed_eval, committed_timings)
    tables_rows: list[Row] = []
    if readme is not None:
        if not readme.is_file():
            raise DeblurError(f"{readme} not found; pass --readme PATH", MISSING_EXIT)
        tables_rows += compare_readme(readme_table(readme.read_text(), str(readme)), quoted)
    for page in docs:
        for table in docs_tables(page.read_text(), str(page)):
            tables_rows += compare_readme(table, quoted, page.as_posix())
    if regression_only:  # the gate judges models only
        for row in tables_rows:
            row.check = "shown" if row.failed else row.check
    return rows + tables_rows


def docs_pages(folder: Path = Path("docs")) -> list[Path]:
    """The docs pages verify reads for marked tables: docs/*.md."""
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


# --------------------------------------------------------------------------- showing


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _delta(row: Row) -> str:
    if _is_number(row.workspace) and _is_number(row.committed):
        return f"{row.workspace - row.committed:+.4g}"
    return ""


def cells(rows: list[Row], rev: str) -> tuple[list[str], list[list[str]]]:
    header = ["figure", "this run", rev, "README", "Δ", "check"]
    body = [
        [r.figure, _fmt(r.workspace), _fmt(r.committed), _fmt(r.readme), _delta(r), r.check]
        for r in rows
    ]
    return header, body


def text_table(rows: list[Row], rev: str) -> str:
    return textable.text(*cells(rows, rev))


def markdown_table(rows: list[Row], rev: str) -> str:
    aligns = ["---", "---:", "---:", "---:", "---:", "---"]
    return textable.markdown(*cells(rows, rev), aligns)


def failure(rows: list[Row], rev: str, cfg: VerifyConfig) -> str | None:
    """One line naming every failed figure, or None when all passed."""
    bad = [r for r in rows if r.failed]
    if not bad:
        return None
    named = ", ".join(
        f"{r.figure} {r.check.lower()} ({_fmt(r.workspace if r.readme is None else r.readme)}"
        f" vs {_fmt(r.committed)})"
        for r in bad
    )
    tol = f"PSNR ±{cfg.psnr_tolerance} dB, SSIM ±{cfg.ssim_tolerance}"
    return f"{len(bad)} figure(s) differ from {rev} (tolerance {tol}): {named}"
