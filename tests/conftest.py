"""Shared test fixtures: paths to the recorded Binance data in ../shared.

Tests that need the recordings use the `shared_data` fixture, which skips with a
reason when ../shared is not beside the checkout; everything else still runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The throw-away PostgreSQL cluster fixtures (pg_url, ...), for every test module.
pytest_plugins = ["pg_fixture"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_BINANCE = REPO_ROOT.parent / "shared" / "data" / "binance"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory ../shared/data/binance, or skip when it is absent."""
    if not SHARED_BINANCE.is_dir():
        pytest.skip(f"recorded Binance data not found at {SHARED_BINANCE}")
    return SHARED_BINANCE


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    """Path of a fresh (not yet created) SQLite database file under tmp_path."""
    return tmp_path / "market.db"
