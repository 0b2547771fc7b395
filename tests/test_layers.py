"""Layer rules of docs/architecture.md, checked on every import statement (module-level
and inside functions) of the project's modules: the numbers are pure, storage knows no
layer above it, nothing below the UI imports Streamlit or plotly.

import-linter needs packages; while the layers are flat modules this test states the
same contracts (issue 19 moves them into ``pairdesk/`` and import-linter)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NUMBERS = ["analytics.py", "resampling.py", "unitroot.py", "models.py"] + [
    str(p.relative_to(REPO)) for p in (REPO / "pairdesk" / "numbers").glob("*.py")
]
STORAGE = ["storage.py", "storage_pg.py"]
VENUES = [str(p.relative_to(REPO)) for p in (REPO / "pairdesk" / "venues").glob("*.py")]
BELOW_UI = NUMBERS + STORAGE + VENUES + [
    "alerts.py", "datafiles.py", "fakerest.py", "ingestion.py", "replay.py", "rest.py"
]  # fmt: skip
PROJECT = {
    "alerts", "analytics", "app", "charts", "datafiles", "fakerest", "ingestion",
    "models", "pairdesk", "replay", "resampling", "rest", "storage", "storage_pg",
    "unitroot",
}  # fmt: skip
RULES = [
    (
        "numbers are pure",
        NUMBERS,
        PROJECT - {"analytics", "resampling", "unitroot", "models", "pairdesk"}
        | {"streamlit", "plotly", "websockets", "psycopg", "sqlite3", "urllib"},
    ),
    (
        "storage knows no layer above it",
        STORAGE,
        PROJECT - {"models", "storage", "storage_pg"} | {"streamlit", "websockets"},
    ),
    (
        "venues know no storage, numbers or screen",
        VENUES,
        PROJECT - {"models", "pairdesk"}
        | {"streamlit", "plotly", "sqlite3", "psycopg"},
    ),
    ("only the UI imports streamlit and plotly", BELOW_UI, {"app", "charts",
                                                           "streamlit", "plotly"}),
]  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module a file imports, anywhere in it."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    ("rule", "files", "forbidden"), RULES, ids=[r[0] for r in RULES]
)
def test_layer_rule(rule, files, forbidden):
    """No file of the layer imports a module its layer must not know."""
    bad = {
        f: sorted(imported_roots(REPO / f) & forbidden)
        for f in files
        if imported_roots(REPO / f) & forbidden
    }
    assert not bad, f"{rule}: {bad}"


def test_the_rules_catch_a_forbidden_import(tmp_path):
    """The checker sees an import hidden inside a function."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import storage\n    from app import x\n")
    assert {"storage", "app"} <= imported_roots(src)
