"""The tests' own shape: no test module imports another (or conftest); what several share
lives in tests/support/ as helpers and fixtures, so a test module can move or go alone."""

from __future__ import annotations

import ast
from pathlib import Path

from support.repo import REPO

TESTS = REPO / "tests"


def modules_under(root: Path = TESTS) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.name.startswith("test_"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (imports inside functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def cross_imports(path: Path) -> list[str]:
    """The imports of ``path`` that reach into another test module or a conftest."""
    return sorted(
        name
        for name in imported(path)
        if name.split(".")[0] == "tests"
        or any(part.startswith("test_") or part == "conftest" for part in name.split("."))
    )


def test_no_test_module_imports_another():
    offenders = {
        p.relative_to(TESTS).as_posix(): bad for p in modules_under() if (bad := cross_imports(p))
    }
    assert not offenders, f"move what they share into tests/support/: {offenders}"


def test_support_imports_no_test_module():
    support = sorted((TESTS / "support").glob("*.py"))
    assert support, "tests/support/ is where shared helpers live"
    assert not {p.name: bad for p in support if (bad := cross_imports(p))}


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    """The walk above would be worthless if it only read the top of a file."""
    (tmp_path / "test_a.py").write_text("def test_x():\n    from test_b import helper\n")
    (tmp_path / "test_b.py").write_text("from tests.conftest import TINY\n")
    (tmp_path / "test_c.py").write_text("from support.params import TINY\nimport json\n")
    found = {p.name: cross_imports(p) for p in modules_under(tmp_path)}
    assert found == {
        "test_a.py": ["test_b", "test_b.helper"],
        "test_b.py": ["tests.conftest", "tests.conftest.TINY"],
        "test_c.py": [],
    }
