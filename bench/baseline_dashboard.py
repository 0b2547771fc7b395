"""BASELINE, not the project's code: the naive dashboard refresh the benchmark beats.

This is the approach most public pair-trading dashboards of this kind take, written
plainly so the refresh benchmark can measure it in the same run as the real thing:
on every refresh, read EVERY stored tick with ``pandas.read_sql``, resample all of
them with pandas to the chosen interval, cut the window shown, then run the same
analytics and build the same figures as the dashboard. Its cost grows with the
history stored (and so does its memory: every tick becomes a row of a DataFrame).

The project's dashboard instead reads only the window's pre-aggregated 1 s bars and
extends them incrementally as bars close (see ``app.WindowBars``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sqlite3  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import pandas as pd  # noqa: E402

from models import BAR_COLUMNS  # noqa: E402


def read_all_ticks(db_path: Path) -> pd.DataFrame:
    """Every tick of the database, as most dashboards load it: one ``read_sql``."""
    conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return pd.read_sql(
            "SELECT symbol, trade_id, ts_ms, price, qty FROM ticks", conn
        )
    finally:
        conn.close()


def resample_all(ticks: pd.DataFrame, symbol: str, interval_s: int) -> pd.DataFrame:
    """All ticks of `symbol` resampled with pandas to bars (BAR_COLUMNS, non-empty)."""
    g = ticks[ticks["symbol"] == symbol].copy()
    g["ts"] = pd.to_datetime(g["ts_ms"], unit="ms", utc=True)
    g = g.sort_values("trade_id").set_index("ts")
    g["notional"] = g["price"] * g["qty"]
    r = g.resample(f"{interval_s}s")
    bars = r["price"].ohlc()
    bars["volume"] = r["qty"].sum()
    bars["quote_volume"] = r["notional"].sum()
    bars["trades"] = r["price"].count()
    bars = bars[bars["trades"] > 0]
    bars["vwap"] = bars["quote_volume"] / bars["volume"]
    bars = bars.reset_index()
    bars["ts"] = bars["ts"].dt.as_unit("ms")
    return bars[list(BAR_COLUMNS)]


def naive_refresh(
    db_path: Path,
    interval_s: int,
    start_ms: int,
    end_ms: int,
    params_json: str,
) -> tuple[object, list[str]]:
    """One naive refresh: all ticks -> resample all -> window -> analytics -> figures.

    Returns the ``PairAnalytics`` and the figures' JSON (what the browser receives).
    """
    import plotly.io as pio

    import analytics
    import charts

    params = analytics.PairParams.from_json(params_json)
    ticks = read_all_ticks(db_path)
    lo = pd.Timestamp(start_ms, unit="ms", tz="UTC")
    hi = pd.Timestamp(end_ms, unit="ms", tz="UTC")
    legs = {}
    for sym in (params.symbol_y, params.symbol_x):
        bars = resample_all(ticks, sym, interval_s)
        legs[sym] = bars[(bars["ts"] >= lo) & (bars["ts"] < hi)].reset_index(drop=True)
    result = analytics.pair_analytics(
        legs[params.symbol_y], legs[params.symbol_x], params, with_tests=True
    )
    figures = [
        charts.market_figure(legs),
        charts.pair_figure(
            result.table,
            symbol_y=params.symbol_y,
            symbol_x=params.symbol_x,
            z_entry=params.z_entry,
            z_exit=params.z_exit,
            z_stop=params.z_stop,
            band_k=params.z_entry,
        ),
    ]
    return result, [pio.to_json(f, validate=False) for f in figures]
