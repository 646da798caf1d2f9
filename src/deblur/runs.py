"""`deblur runs`: every pipeline run in the tracking store, one row each, newest first.

A pipeline run is the run deblur.evaluate.log marked with the test results (the parent of
one `dvc repro` / `dvc exp run`, or a lone evaluate run): its params, commit, DVC
experiment name, per-model test metrics and the registry version each model was scored as.
Only the params that differ between the rows are shown, so a sweep reads as its grid.
`deblur runs --html` writes the same rows with the quality-against-speed chart as one page
(reports/runs.html, which the report links to): the store is no DVC dependency, so the
view over every run is this command's, not the report stage's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from deblur import fsutil, textable
from deblur.errors import DeblurError
from deblur.kinds import KINDS, LABELS
from deblur.tracking import registry, store
from deblur.tracking.runs import RESULTS_TAG

# Per model, what a row shows: (metrics key in the run, column heading, format).
FIGURES = {
    "psnr": ("PSNR", ".2f"),
    "ssim": ("SSIM", ".4f"),
    "gain_db": ("gain dB", "+.2f"),
    "ms_per_mp": ("ms/MP", ".0f"),
}


@dataclass
class PipelineRun:
    run_id: str
    when: datetime
    commit: str
    experiment: str
    params: dict[str, str]
    models: dict[str, dict] = field(default_factory=dict)


def _model(kind: str, run, champions: dict[str, str | None]) -> dict | None:
    found = {k: run.data.metrics.get(f"{kind}.{k}") for k in FIGURES}
    if all(v is None for v in found.values()):
        return None
    version = run.data.tags.get(f"registry.{kind}")
    return {
        **found,
        "version": version,
        "champion": version is not None and version == champions[kind],
    }


def collect(limit: int | None = None) -> list[PipelineRun]:
    """The pipeline runs of the store, newest first; [] when there is no store yet."""
    if not store.exists():
        return []
    c = store.client()
    exp = c.get_experiment_by_name(store.EXPERIMENT)
    found = c.search_runs(
        [exp.experiment_id],
        f"tags.`{RESULTS_TAG}` = 'true'",
        max_results=limit or 1000,
        order_by=["attributes.start_time DESC"],
    )
    champions = {}
    for kind in KINDS:
        holder = registry.champion(kind)
        champions[kind] = str(holder.version) if holder is not None else None
    rows = []
    for run in found:
        models = {k: m for k in KINDS if (m := _model(k, run, champions)) is not None}
        rows.append(
            PipelineRun(
                run_id=run.info.run_id,
                when=datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
                commit=run.data.tags.get("git.commit", ""),
                experiment=run.data.tags.get("dvc.exp", "") or run.info.run_name or "",
                params=dict(run.data.params),
                models=models,
            )
        )
    return rows


def differing(rows: list[PipelineRun]) -> list[str]:
    """The param keys whose value is not the same in every row (missing counts as a value)."""
    keys = sorted({k for r in rows for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in rows}) > 1]


def as_json(rows: list[PipelineRun]) -> list[dict]:
    keys = differing(rows)
    return [
        {
            "run_id": r.run_id,
            "when": r.when.isoformat(timespec="seconds"),
            "commit": r.commit,
            "experiment": r.experiment,
            "params": {k: r.params.get(k) for k in keys},
            "models": r.models,
        }
        for r in rows
    ]


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[PipelineRun]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells): when, commit, experiment, differing params, per model."""
    keys = differing(rows)
    kinds = [k for k in KINDS if any(k in r.models for r in rows)]
    header = ["when (UTC)", "commit", "experiment", *keys]
    for kind in kinds:
        header += [f"{LABELS[kind]} {label}" for label, _ in FIGURES.values()]
        header.append(f"{LABELS[kind]} version")
    body = []
    for r in rows:
        cells = [r.when.strftime("%Y-%m-%d %H:%M"), r.commit[:7], r.experiment]
        cells += [r.params.get(k, "–") for k in keys]
        for kind in kinds:
            m = r.models.get(kind, {})
            cells += [_fmt(m.get(key), spec) for key, (_, spec) in FIGURES.items()]
            version = m.get("version")
            cells.append(
                "–"
                if version is None
                else f"v{version}" + (" @champion" if m.get("champion") else "")
            )
        body.append(cells)
    return header, body


def show(limit: int | None, json_out: bool) -> str:
    rows = collect(limit)
    if json_out:
        return json.dumps(as_json(rows), indent=2)
    if not rows:
        return f"no pipeline runs in {store.tracking_uri()} yet; run `dvc repro` first"
    return textable.text(*table(rows))


def points(rows: list[PipelineRun]) -> list[dict]:
    """One point per model per pipeline run that has both a gain and a timing."""
    out = []
    for r in rows:
        label = r.experiment or r.commit[:7]
        for kind, m in r.models.items():
            if m.get("gain_db") is not None and m.get("ms_per_mp") is not None:
                out.append(
                    {
                        "kind": kind,
                        "label": label,
                        "ms_per_mp": m["ms_per_mp"],
                        "gain_db": m["gain_db"],
                        "champion": bool(m.get("champion")),
                    }
                )
    return out


def pareto(pts: list[dict]) -> list[int]:
    """Indices of the points no other point matches or beats on both speed and gain,
    fastest first."""
    order = sorted(range(len(pts)), key=lambda i: (pts[i]["ms_per_mp"], -pts[i]["gain_db"]))
    front, best = [], float("-inf")
    for i in order:
        if pts[i]["gain_db"] > best:
            front.append(i)
            best = pts[i]["gain_db"]
    return front


# --------------------------------------------------------------------------- the Experiments page


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deblur: every pipeline run</title>
<style>
  body {{ font: 15px/1.5 system-ui, sans-serif; color: #222; max-width: 1200px;
         margin: 2rem auto; padding: 0 1rem; }}
  table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
  th, td {{ padding: .3rem .6rem; border-bottom: 1px solid #e5e5e5; text-align: left; }}
  th {{ background: #f6f6f6; }}
  .note {{ color: #666; font-size: .9rem; }}
  img {{ max-width: 100%; }}
</style></head><body>
<h1>Every pipeline run: quality against speed</h1>
<p class="note">{count} pipeline run(s) in <code>{store}</code>: test PSNR gain over the blurry
input against ms per megapixel, one point per model per run. The dashed line is the Pareto
front (nothing is both faster and better); a ring marks each registry champion. Timings are
each run's own machine's.</p>
{figure}
<table>
<tr>{header}</tr>
{rows}
</table>
<p class="note">The same rows: <code>deblur runs</code>; the runs themselves: the MLflow UI.</p>
</body></html>
"""


def _chart(rows: list[PipelineRun]) -> str:
    """The quality-vs-speed chart as an inline PNG, or "" with no point to draw."""
    import base64
    import tempfile
    from pathlib import Path

    from deblur.report import figures

    pts = points(rows)
    if not pts:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiments.png"
        figures.experiments(pts, pareto(pts), path)
        data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="quality against speed">'


def page(rows: list[PipelineRun]) -> str:
    """The Experiments view over ``rows`` as one self-contained HTML page."""
    from html import escape

    header, body = table(rows)
    return PAGE.format(
        count=len(rows),
        store=escape(store.tracking_uri()),
        figure=_chart(rows),
        header="".join(f"<th>{escape(h)}</th>" for h in header),
        rows="\n".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body
        ),
    )


def write_page(path, limit: int | None) -> int:
    """Write page() of the newest ``limit`` pipeline runs to ``path``; the number of rows."""
    rows = collect(limit)
    if not rows:
        raise DeblurError(f"no pipeline runs in {store.tracking_uri()} yet; run `dvc repro` first")
    fsutil.write_text(path, page(rows))
    return len(rows)
