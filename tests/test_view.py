"""Tests for pairdesk/view/window.py: the bars a view uses, shared by the dashboard
and the alert monitor, on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import alerts
import analytics
import storage
from pairdesk.view import window as view

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z


def write_klines(db: Path, symbol: str, closes: np.ndarray) -> None:
    """1 m klines (no 1 s bars, no ticks), as a REST warm start stores them."""
    frame = pd.DataFrame(
        {"ts_ms": T0 + 60_000 * np.arange(closes.size), "open": closes,
         "high": closes + 1, "low": closes - 1, "close": closes, "volume": 1.0,
         "quote_volume": closes, "trades": 10}
    )  # fmt: skip
    with storage.Writer(db) as w:
        w.write_bars(symbol, 60, frame)


def test_alerts_and_dashboard_see_the_same_bars_on_a_kline_only_database(tmp_path):
    """With only exchange klines stored, the alert metrics equal analytics on the
    view's bars (the monitor read 1 s bars only and saw nothing)."""
    db = tmp_path / "market.db"
    rng = np.random.default_rng(0)
    x = 3000 + np.cumsum(rng.normal(0, 2, 240))
    y = 20 * x + 1000 + rng.normal(0, 30, 240)
    write_klines(db, "BTCUSDT", y)
    write_klines(db, "ETHUSDT", x)
    params = analytics.PairParams(interval="1m", window=60)
    now = T0 + 240 * 60_000 + 1_000
    got = alerts.compute_metrics(db, params, now, alerts.MetricsCache())
    end = view.closed_end_ms(now, 60)
    start = view.window_start_ms(end, 60, view.auto_lookback_s(60, 60))
    bars = [
        view.read_window_bars(db, s, 60, start, end) for s in ("BTCUSDT", "ETHUSDT")
    ]
    assert len(bars[0]) == 180  # 3 windows of 60 bars
    want = analytics.pair_analytics(*bars, params)
    assert got["beta"] is not None
    assert got["beta"] == pytest.approx(want.latest.beta, rel=1e-12)
    assert got["eg_p"] == pytest.approx(want.coint.pvalue, rel=1e-12)


def test_window_arithmetic():
    """Closed end, aligned start and the auto lookback's bounds."""
    assert view.closed_end_ms(T0 + 60_499, 60) == T0
    assert view.closed_end_ms(T0 + 60_500, 60) == T0 + 60_000
    assert view.window_start_ms(T0 + 90_000, 60, 60) == T0
    assert view.auto_lookback_s(1, 60) == 15 * 60  # at least 15 minutes
    assert view.auto_lookback_s(60, 60) == 3 * 3600
    assert view.auto_lookback_s(3600, 60) == 24 * 3600  # at most a day


def test_missing_database_reads_as_no_bars(tmp_path):
    """A database file that does not exist gives an empty bar frame, not an error."""
    frame = view.read_window_bars(tmp_path / "none.db", "BTCUSDT", 60, T0, T0 + 60_000)
    assert frame.empty and list(frame.columns)[:2] == ["ts", "open"]
