"""The shape of the package: no import cycles, each DVC stage depends on exactly the code it
runs, and every file a stage writes is named once (deblur.paths) and declared in dvc.yaml.

All of it read from the source (AST) and dvc.yaml, nothing imported, so a cycle hidden
behind an import inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from support.repo import REPO

from deblur import paths
from deblur.kinds import KINDS

ROOT = REPO
SRC = ROOT / "src"
PACKAGE = SRC / "deblur"
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())

# The module behind each stage's command (cli.py only parses options and calls it).
ENTRY = {
    "download": "deblur.data.download",
    "validate": "deblur.data.validate",
    "preprocess": "deblur.data.preprocess",
    "train-gan": "deblur.train.stage",
    "train-ae": "deblur.train.stage",
    "evaluate": "deblur.evaluate.stage",
    "report": "deblur.report.render",
}
# deblur/__init__.py holds the version string alone: no stage's result depends on it.
NOT_A_DEPENDENCY = {"deblur"}


def module_file(name: str) -> Path | None:
    base = SRC / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(name: str) -> set[str]:
    """The deblur modules ``name`` imports anywhere in its file, functions included."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from deblur.x import y` imports the submodule deblur.x.y when there is one.
            targets = [
                f"{base}.{a.name}" if module_file(f"{base}.{a.name}") else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] == "deblur" and module_file(t)}
    return found - {name}


def all_modules() -> list[str]:
    return sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def closure(name: str) -> set[str]:
    """``name`` and every deblur module it imports, directly or not, with their packages."""
    seen, todo = set(), [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += imports(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run first
    return seen - NOT_A_DEPENDENCY


# --------------------------------------------------------------------------- cycles


def test_no_import_cycle_anywhere_in_the_package():
    graph = {mod: imports(mod) for mod in all_modules()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for nxt in sorted(graph.get(mod, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[mod] = 2

    for mod in graph:
        if mod not in state:
            visit(mod)


def test_the_cycle_finder_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The walk above would be worthless if it only read top-level imports."""
    pkg = tmp_path / "deblur"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from deblur import b\n")
    (pkg / "b.py").write_text("from deblur.a import f\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert imports("deblur.a") == {"deblur.b"} and imports("deblur.b") == {"deblur.a"}


@pytest.mark.parametrize(
    "module", [m for m in all_modules() if m.startswith("deblur.tracking")] + ["deblur.export"]
)
def test_tracking_and_export_import_nothing_of_inference(module):
    inference = {
        "deblur.infer",
        "deblur.predict",
        "deblur.pyfunc",
        "deblur.serve.app",
        "deblur.serve.models",
    }
    assert not closure(module) & inference


def test_no_stage_imports_bench_serve_export_or_predict():
    tools = ("deblur.bench", "deblur.serve", "deblur.export", "deblur.predict", "deblur.cli")
    for stage, entry in ENTRY.items():
        reached = [m for m in closure(entry) if m.startswith(tools)]
        assert not reached, f"{stage} imports {reached}"


# --------------------------------------------------------------------------- DVC deps


def covered(module: str, deps: list[str]) -> bool:
    rel = module_file(module).relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_stage_code_deps_are_what_its_command_imports(stage):
    """Each stage lists the code it runs (so editing it reruns the stage) and no more (so
    editing predict, serve, export or bench reruns nothing)."""
    deps = [d for d in DVC["stages"][stage]["deps"] if d.startswith("src/")]
    runs = closure(ENTRY[stage])
    missing = sorted(m for m in runs if not covered(m, deps))
    assert not missing, f"{stage} runs {missing} but dvc.yaml does not list them"
    for dep in deps:
        target = ROOT / dep
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        assert files, f"{stage}: dep {dep} does not exist"
        extra = [f.relative_to(ROOT).as_posix() for f in files if module_name(f) not in runs]
        assert not extra, f"{stage} lists {extra}, which its command never imports"


def test_the_report_reads_files_only():
    """The report is a function of its deps: it runs no model and reads no MLflow tracking store, so
    its code deps hold none of them, and its data deps are earlier stages' files and its
    templates (no checkpoint, no dataset)."""
    reached = closure(ENTRY["report"])
    never = ("deblur.infer", "deblur.spec", "deblur.models", "deblur.runs", "deblur.tracking")
    assert not [m for m in reached if m.startswith(never)], sorted(reached)
    report = DVC["stages"]["report"]
    data = [d for d in report["deps"] if not d.startswith("src/")]
    written = declared(exclude="report")
    made = set().union(*written.values())
    assert set(data) - made == {paths.TEMPLATES.as_posix()}, data
    # and every file the report shows is a dep: each metric and plot of the DAG
    assert written["metrics"] | written["plots"] <= set(data)
    assert not [d for d in data if d.startswith((paths.MODELS.as_posix(), paths.DATA.as_posix()))]


def test_the_stage_entry_points_are_what_cli_calls():
    cli = (PACKAGE / "cli.py").read_text()
    for entry in set(ENTRY.values()):
        package, _, leaf = entry.rpartition(".")
        assert f"from {package} import {leaf}" in cli or f"from {entry} import run" in cli, entry


# --------------------------------------------------------------------------- paths


def declared(exclude: str | None = None) -> dict[str, set[str]]:
    """dvc.yaml's outs, metrics and plots of every stage (but ``exclude``), as path strings."""
    found: dict[str, set[str]] = {"outs": set(), "metrics": set(), "plots": set()}
    for name, stage in DVC["stages"].items():
        if name == exclude:
            continue
        for field in found:
            for entry in stage.get(field, []):
                found[field].add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return found


def test_dvc_yaml_declares_exactly_the_files_paths_names():
    named = {
        "outs": {
            paths.RAW,
            paths.MANIFEST,
            paths.PROCESSED,
            paths.RESULTS_CSV,
            paths.PER_IMAGE_CSV,
            paths.SAMPLES,
            paths.REPORT_MD,
            paths.REPORT_HTML,
            paths.FIGURES,
            *(paths.checkpoint(k) for k in KINDS),
            *(paths.train_state(k) for k in KINDS),
            *(paths.curve_dir(k) for k in KINDS),
        },
        "metrics": {paths.DATA_JSON, paths.EVAL_JSON, *(paths.train_metrics(k) for k in KINDS)},
        "plots": {paths.CURVE_CSV, *(paths.train_plot(k) for k in KINDS)},
    }
    got = declared()
    for field, want in named.items():
        assert got[field] == {p.as_posix() for p in want}, field


def test_stage_outputs_are_spelt_only_in_paths_py():
    """A file name a stage writes appears in no other module: renaming it is one edit."""
    names = ["eval.json", "data.json", "results.csv", "per_image.csv", "train_{kind}", "train_"]
    for path in PACKAGE.rglob("*.py"):
        if path.name == "paths.py":
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        strings = [
            node.value
            for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        # Docstrings may mention a file for the reader; code must not spell it.
        docs = {
            ast.get_docstring(n, clean=False)
            for n in ast.walk(ast.parse(code))
            if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Module | ast.AsyncFunctionDef)
        }
        spelt = [s for s in strings if s not in docs and any(n in s for n in names[:4])]
        assert not spelt, f"{path.relative_to(ROOT)} spells {spelt}; use deblur.paths"
