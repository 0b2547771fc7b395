"""Which bars a view reads: the closed window at a clock, from 1 s bars or stored
coarser bars (exchange klines, imports). Used by the dashboard (``app.py``) and the
alert monitor (``alerts.py``), so an alert sees the bars the trader sees.

I/O only through ``storage``'s read functions; no Streamlit, no analytics.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

import resampling
import storage

# The auto lookback: 3 windows of bars, at least 15 minutes, at most a day and
# 20 000 bars; a bar counts as closed CLOSE_GRACE_MS after its end (flush + lag).
AUTO_LOOKBACK_WINDOWS = 3
MIN_AUTO_LOOKBACK_S = 15 * 60
MAX_LOOKBACK_S = 24 * 3600
MAX_BARS = 20_000
CLOSE_GRACE_MS = 500


def closed_end_ms(clock_ms: int, interval_s: int) -> int:
    """End (exclusive) of the newest closed bar: ``floor((now - grace) / i) * i``."""
    step = interval_s * 1000
    return ((int(clock_ms) - CLOSE_GRACE_MS) // step) * step


def auto_lookback_s(interval_s: int, window: int) -> int:
    """Seconds the auto lookback reads: 3 windows of bars, 15 min to 24 h, <= 20 000
    bars."""
    wanted = max(AUTO_LOOKBACK_WINDOWS * window * interval_s, MIN_AUTO_LOOKBACK_S)
    return min(wanted, MAX_LOOKBACK_S, MAX_BARS * interval_s)


def window_start_ms(end_ms: int, interval_s: int, lookback_s: int) -> int:
    """Start of the window, aligned to a bar boundary so the first bar is whole."""
    step = interval_s * 1000
    lookback_s = min(lookback_s, MAX_LOOKBACK_S, MAX_BARS * interval_s)
    return ((end_ms - lookback_s * 1000) // step) * step


def _stored_source(
    db_path: os.PathLike[str] | str, symbol: str, interval_s: int
) -> int | None:
    """Largest stored coarser interval that divides `interval_s`, or None."""
    fits = [
        i for i in storage.list_bar_intervals(db_path, symbol) if interval_s % i == 0
    ]
    return max(fits) if fits else None


def read_bars_any(
    db_path: os.PathLike[str] | str,
    symbol: str,
    interval_s: int,
    start_ms: int | None,
    end_ms: int | None,
) -> pd.DataFrame:
    """Bars at `interval_s` from 1 s bars, or from stored coarser bars where no 1 s
    bar falls in a bucket (imported klines/OHLCV, exchange history).

    Buckets are UTC-aligned; rows with bucket start in ``[start_ms, end_ms)``. In a
    bucket that has both, the stored bar wins when it counts more trades than the
    bucket's 1 s bars: at the seam where live data begins mid-bucket (or a hole
    not yet refilled), the 1 s bars hold only part of the bucket and the exchange's
    kline is the complete one. Stored bars without trade counts (OHLCV files)
    never displace 1 s bars.
    """
    width = interval_s * 1000
    lo = None if start_ms is None else -(-int(start_ms) // width) * width
    hi = None if end_ms is None else -(-int(end_ms) // width) * width
    from_1s = storage.read_bars_agg(db_path, symbol, interval_s, lo, hi)
    stored_i = _stored_source(db_path, symbol, interval_s)
    if stored_i is None:
        return from_1s
    stored = storage.read_bars(db_path, symbol, stored_i, lo, hi)
    if stored_i != interval_s and len(stored):
        stored = resampling.resample_bars(stored, interval_s)
    if len(from_1s) == 0:
        return stored
    if len(stored) == 0:
        return from_1s
    own_trades = from_1s.set_index("ts")["trades"]
    theirs = stored["trades"].to_numpy(dtype="float64")
    mine = stored["ts"].map(own_trades).to_numpy(dtype="float64")
    shared = np.isfinite(mine)
    complete = shared & (np.nan_to_num(theirs) > mine)  # the seam: kline is whole
    stored = stored.loc[~shared | complete]
    from_1s = from_1s.loc[~from_1s["ts"].isin(stored["ts"])]
    both = pd.concat([from_1s, stored], ignore_index=True)
    return both.sort_values("ts", ignore_index=True)


def read_window_bars(
    db_path: os.PathLike[str] | str,
    symbol: str,
    interval_s: int,
    start_ms: int,
    end_ms: int,
) -> pd.DataFrame:
    """Bars of ``symbol`` at ``interval_s`` over ``[start_ms, end_ms)``.

    Reads ``bars_1s`` for the window and resamples. When the 1 s bars do not reach
    back to the window's first bar and coarser bars are stored for the symbol
    (imported klines or OHLCV, exchange history), reads through ``read_bars_any``,
    which fills buckets without 1 s bars from stored bars whose interval divides
    ``interval_s``. An empty frame when the database does not exist.
    """
    if not storage.db_exists(db_path):
        return resampling.empty_bars()
    bars = storage.read_bars_1s(db_path, symbol, start_ms, end_ms)
    reaches_start = len(bars) > 0 and (
        int(bars["ts"].iloc[:1].dt.as_unit("ms").astype("int64").iloc[0])
        < start_ms + interval_s * 1000
    )
    if not reaches_start and storage.list_bar_intervals(db_path, symbol):
        return read_bars_any(db_path, symbol, interval_s, start_ms, end_ms)
    if len(bars) == 0:
        return resampling.empty_bars()
    if interval_s == 1:
        return bars
    return resampling.resample_bars(bars, interval_s)
