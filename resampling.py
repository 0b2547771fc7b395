"""Pure resampling: ticks to bars, bars to coarser bars, two symbols on one clock.

Every function takes pandas objects and returns new ones; nothing here does I/O or
reads a clock. Bar frames follow docs/architecture.md's contract: columns
``BAR_COLUMNS``, ``ts`` is the tz-aware UTC bucket start (``datetime64[ms, UTC]``),
one row per non-empty bucket, sorted by ``ts``, default RangeIndex.

Buckets are aligned to the UTC epoch: a bar of ``interval_s`` seconds starts at a
multiple of ``interval_s`` seconds since 1970-01-01T00:00:00Z (so 1 m bars start on the
minute and 1 h bars on the hour, like pandas ``resample(origin="epoch")``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models import BAR_COLUMNS

INTERVAL_PATTERN = re.compile(r"^\s*(\d{1,7})\s*(s|sec|m|min|h)\s*$", re.IGNORECASE)
UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
MAX_INTERVAL_S = 7 * 24 * 3600
TICK_COLUMNS_REQUIRED = ("price", "qty")


def parse_interval(text: str) -> int:
    """Parse a bar interval such as ``"1s"``, ``"15s"``, ``"1m"``, ``"5m"``, ``"2h"``.

    Parameters
    ----------
    text : str
        A positive integer followed by a unit: ``s`` (seconds), ``m`` or ``min``
        (minutes), ``h`` (hours); case and surrounding spaces are ignored.

    Returns
    -------
    int
        The interval in seconds, between 1 and 604 800 (one week).

    Raises
    ------
    ValueError
        When the text does not match ``<N>s|m|h`` or N is 0 or above one week.
    """
    match = INTERVAL_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"interval must look like 1s, 15s, 1m, 5m or 2h (number then s/m/h), "
            f"got {text!r}"
        )
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]
    if not 1 <= seconds <= MAX_INTERVAL_S:
        raise ValueError(
            f"interval must be between 1s and 168h, got {text!r} ({seconds} s)"
        )
    return seconds


def format_interval(interval_s: int) -> str:
    """Shortest label for seconds: 3600 -> "1h", 300 -> "5m", 15 -> "15s"."""
    _check_interval_s(interval_s)
    if interval_s % 3600 == 0:
        return f"{interval_s // 3600}h"
    if interval_s % 60 == 0:
        return f"{interval_s // 60}m"
    return f"{interval_s}s"


def pandas_alias(interval_s: int) -> str:
    """The pandas 3 frequency alias for an interval in seconds (e.g. ``"60s"``)."""
    _check_interval_s(interval_s)
    return f"{interval_s}s"


def empty_bars() -> pd.DataFrame:
    """An empty bar frame with the contract's columns and dtypes."""
    frame = pd.DataFrame({col: pd.Series(dtype="float64") for col in BAR_COLUMNS})
    frame["ts"] = pd.Series(dtype="datetime64[ms, UTC]")
    frame["trades"] = pd.Series(dtype="int64")
    return frame


def ticks_to_bars(ticks: pd.DataFrame, interval_s: int) -> pd.DataFrame:
    """Aggregate trades into UTC-aligned OHLCV bars labelled by their start.

    Parameters
    ----------
    ticks : DataFrame
        One row per trade with ``ts`` (tz-aware or naive-UTC datetimes) or ``ts_ms``
        (integer ms since the epoch), ``price`` and ``qty``; optional ``trade_id``.
        Rows with a non-finite price or qty, or qty <= 0, are ignored.
    interval_s : int
        Bar length in seconds (>= 1).

    Returns
    -------
    DataFrame
        ``BAR_COLUMNS``: ``open``/``close`` are the prices of the first/last trade of
        the bucket (by ``trade_id`` when given, else by time then input order),
        ``high``/``low`` the extremes, ``volume`` = sum(qty), ``quote_volume`` =
        sum(price * qty), ``trades`` = count, ``vwap`` = quote_volume / volume.
        Empty buckets produce no row. No minimum data: zero ticks give zero bars.

    Raises
    ------
    ValueError
        When a required column is missing or ``interval_s`` is not a positive int.
    """
    _check_interval_s(interval_s)
    missing = [c for c in TICK_COLUMNS_REQUIRED if c not in ticks.columns]
    if missing or ("ts" not in ticks.columns and "ts_ms" not in ticks.columns):
        raise ValueError(
            "ticks must have columns ts (or ts_ms), price and qty, got "
            f"{list(ticks.columns)}"
        )
    ts_ms = _to_epoch_ms(ticks["ts_ms"] if "ts_ms" in ticks.columns else ticks["ts"])
    price = ticks["price"].to_numpy(dtype="float64")
    qty = ticks["qty"].to_numpy(dtype="float64")
    keep = np.isfinite(price) & np.isfinite(qty) & (qty > 0) & (ts_ms != _NAT_MS)
    if "trade_id" in ticks.columns:
        order_key = ticks["trade_id"].to_numpy(dtype="int64")[keep]
    else:
        order_key = None
    ts_ms, price, qty = ts_ms[keep], price[keep], qty[keep]
    if ts_ms.size == 0:
        return empty_bars()
    width = interval_s * 1000
    bucket = np.floor_divide(ts_ms, width) * width
    if order_key is None:
        order = np.lexsort((np.arange(ts_ms.size), ts_ms))
    else:
        order = np.lexsort((order_key, bucket))
    bucket, price, qty = bucket[order], price[order], qty[order]
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], bucket.size] - 1
    volume = np.add.reduceat(qty, starts)
    quote_volume = np.add.reduceat(price * qty, starts)
    return _bar_frame(
        bucket[starts],
        price[starts],
        np.maximum.reduceat(price, starts),
        np.minimum.reduceat(price, starts),
        price[ends],
        volume,
        quote_volume,
        np.diff(np.r_[starts, bucket.size]),
    )


def resample_bars(
    bars: pd.DataFrame, interval_s: int, *, source_interval_s: int | None = None
) -> pd.DataFrame:
    """Aggregate bars into coarser UTC-aligned bars (e.g. 1 s bars into 1 m bars).

    Parameters
    ----------
    bars : DataFrame
        A bar frame (``BAR_COLUMNS``) whose interval divides ``interval_s``;
        ``vwap`` may be absent (it is recomputed).
    interval_s : int
        Target bar length in seconds.
    source_interval_s : int, optional
        The source bars' length; when given, ``interval_s`` must be a multiple of it
        (a 1 m bar cannot be split into 90 s bars). Without it the bars are bucketed
        by their start time.

    Returns
    -------
    DataFrame
        ``open`` = first bar's open, ``close`` = last bar's close, ``high`` = max,
        ``low`` = min, ``volume``, ``quote_volume`` and ``trades`` summed, ``vwap`` =
        quote_volume / volume. Equal to :func:`ticks_to_bars` on the same trades up
        to the rounding of floating-point sums taken in a different order (about
        1e-15 relative). No minimum data.

    Raises
    ------
    ValueError
        When a column is missing, or ``interval_s`` is not a multiple of
        ``source_interval_s``.
    """
    _check_interval_s(interval_s)
    needed = [c for c in BAR_COLUMNS if c != "vwap"]
    missing = [c for c in needed if c not in bars.columns]
    if missing:
        raise ValueError(f"bars must have columns {needed}, missing {missing}")
    if len(bars) == 0:
        return empty_bars()
    ts_ms = _to_epoch_ms(bars["ts"])
    order = np.argsort(ts_ms, kind="stable")
    ts_ms = ts_ms[order]
    width = interval_s * 1000
    if source_interval_s is not None:
        _check_interval_s(source_interval_s)
        if interval_s % source_interval_s:
            raise ValueError(
                f"interval_s must be a multiple of source_interval_s "
                f"({source_interval_s}), got {interval_s}"
            )
    col = {c: bars[c].to_numpy(dtype="float64")[order] for c in needed if c != "ts"}
    bucket = np.floor_divide(ts_ms, width) * width
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], bucket.size] - 1
    return _bar_frame(
        bucket[starts],
        col["open"][starts],
        np.maximum.reduceat(col["high"], starts),
        np.minimum.reduceat(col["low"], starts),
        col["close"][ends],
        np.add.reduceat(col["volume"], starts),
        np.add.reduceat(col["quote_volume"], starts),
        np.add.reduceat(col["trades"], starts).astype("int64"),
    )


@dataclass(frozen=True, slots=True)
class AlignedPair:
    """Two symbols' bars on one clock.

    Attributes
    ----------
    frame : DataFrame
        Columns ``ts`` (UTC bucket start), ``y``, ``x`` (closes), ``y_trades``,
        ``x_trades`` (trade counts, 0 on a filled bar), ``y_notional``,
        ``x_notional`` (quote volume, 0 on a filled bar), ``y_filled``,
        ``x_filled`` (bool: the close was carried forward). One row per bucket
        where both legs have a close (real or filled), sorted by ``ts``.
    filled_y, filled_x : int
        How many ``y`` / ``x`` values were forward-filled.
    dropped : int
        Buckets present in one leg only that could not be filled and were dropped.
    max_ffill : int
        The fill limit used, in buckets.
    interval_s : int | None
        The bucket length used to count buckets (None when it could not be
        inferred because there was at most one distinct bucket).
    """

    frame: pd.DataFrame
    filled_y: int
    filled_x: int
    dropped: int
    max_ffill: int
    interval_s: int | None


@dataclass(frozen=True, slots=True)
class AlignedArrays:
    """Two symbols' bars on one clock, as numpy arrays (``align_pair`` without a frame).

    Attributes
    ----------
    ts : DatetimeIndex
        UTC bucket starts (``datetime64[ms, UTC]``), sorted.
    ts_ms : ndarray of int64
        The same instants in ms since the epoch.
    y, x : ndarray of float64
        Closes (real or carried forward).
    y_trades, x_trades : ndarray of int64
        Trade counts, 0 on a filled bar.
    y_notional, x_notional : ndarray of float64
        Quote volume, 0 on a filled bar.
    y_filled, x_filled : ndarray of bool
        Whether the close was carried forward.
    filled_y, filled_x, dropped, max_ffill, interval_s
        As in :class:`AlignedPair`.
    """

    ts: pd.DatetimeIndex
    ts_ms: np.ndarray
    y: np.ndarray
    x: np.ndarray
    y_trades: np.ndarray
    x_trades: np.ndarray
    y_notional: np.ndarray
    x_notional: np.ndarray
    y_filled: np.ndarray
    x_filled: np.ndarray
    filled_y: int
    filled_x: int
    dropped: int
    max_ffill: int
    interval_s: int | None

    def frame(self) -> pd.DataFrame:
        """The aligned columns as ``AlignedPair.frame``."""
        return pd.DataFrame({c: getattr(self, c) for c in ALIGNED_COLUMNS})


ALIGNED_COLUMNS = (
    "ts",
    "y",
    "x",
    "y_trades",
    "x_trades",
    "y_notional",
    "x_notional",
    "y_filled",
    "x_filled",
)


def align_pair(
    bars_y: pd.DataFrame,
    bars_x: pd.DataFrame,
    *,
    max_ffill: int = 0,
    interval_s: int | None = None,
) -> AlignedPair:
    """Put two symbols' bars on a common clock.

    Parameters
    ----------
    bars_y, bars_x : DataFrame
        Bar frames with at least ``ts`` and ``close`` (``trades`` and
        ``quote_volume`` are carried when present, else 0).
    max_ffill : int
        0 (default) is an inner join on ``ts``. N > 0 takes the union of buckets and
        forward-fills a missing close with that leg's last close when that close is at
        most N buckets old (``ts - ts_last <= N * interval_s``); rows still missing a
        leg (including before a leg's first bar) are dropped.
    interval_s : int, optional
        The bucket length; inferred as the gcd of the bucket-start differences of
        both legs when omitted.

    Returns
    -------
    AlignedPair
        The aligned frame and how many values were filled and buckets dropped.

    Raises
    ------
    ValueError
        When ``max_ffill`` is negative or a frame lacks ``ts``/``close``.
    """
    arrays = align_pair_arrays(
        bars_y, bars_x, max_ffill=max_ffill, interval_s=interval_s
    )
    return AlignedPair(
        frame=arrays.frame(),
        filled_y=arrays.filled_y,
        filled_x=arrays.filled_x,
        dropped=arrays.dropped,
        max_ffill=arrays.max_ffill,
        interval_s=arrays.interval_s,
    )


def align_pair_arrays(
    bars_y: pd.DataFrame | Leg,
    bars_x: pd.DataFrame | Leg,
    *,
    max_ffill: int = 0,
    interval_s: int | None = None,
) -> AlignedArrays:
    """:func:`align_pair` returning numpy arrays instead of a DataFrame.

    Same parameters, rules and errors as :func:`align_pair` (either leg may also be
    a :class:`Leg` from :func:`leg_arrays`); cost O(n) when both
    legs are sorted (the usual case), O(n log n) otherwise. This is the form
    ``analytics.pair_analytics`` uses, so that the pandas work is done once.
    """
    if isinstance(max_ffill, bool) or not isinstance(max_ffill, (int, np.integer)):
        raise ValueError(f"max_ffill must be an integer >= 0, got {max_ffill!r}")
    if max_ffill < 0:
        raise ValueError(f"max_ffill must be an integer >= 0, got {max_ffill!r}")
    if interval_s is not None:
        _check_interval_s(interval_s)
    ts_y, cols_y = _leg_arrays(bars_y, "y")
    ts_x, cols_x = _leg_arrays(bars_x, "x")
    same_clock = ts_y.size == ts_x.size and np.array_equal(ts_y, ts_x)
    all_ms = ts_y if same_clock else _sorted_union(ts_y, ts_x)
    if interval_s is None:
        step = _spacing_ms(all_ms, is_unique=True)
        interval_s = None if step is None else max(1, step // 1000)
    out: dict[str, np.ndarray] = {}
    filled = {}
    if same_clock:
        # Both legs on the same buckets: nothing to join, fill or drop.
        keep_ms = all_ms.copy()  # may be a view of the caller's frame
        for name, cols in (("y", cols_y), ("x", cols_x)):
            out[name] = cols["close"].copy()
            out[f"{name}_trades"] = _count_column(cols["trades"])
            out[f"{name}_notional"] = cols["notional"].copy()
            out[f"{name}_filled"] = np.zeros(keep_ms.size, dtype=bool)
            filled[name] = 0
        dropped = 0
    else:
        limit_ms = 0 if interval_s is None else max_ffill * interval_s * 1000
        picks = {
            name: _leg_picks(leg_ts, all_ms, limit_ms)
            for name, leg_ts in (("y", ts_y), ("x", ts_x))
        }
        keep = (picks["y"][1] | picks["y"][2]) & (picks["x"][1] | picks["x"][2])
        keep_ms = all_ms[keep]
        for name, cols in (("y", cols_y), ("x", cols_x)):
            safe, have, can = (a[keep] for a in picks[name])
            if cols["close"].size:
                out[name] = cols["close"][safe]
                trades = np.where(have, cols["trades"][safe], 0.0)
                notional = np.where(have, cols["notional"][safe], 0.0)
            else:
                out[name] = trades = notional = np.zeros(0)
            out[f"{name}_trades"] = _count_column(trades)
            out[f"{name}_notional"] = notional
            out[f"{name}_filled"] = can
            filled[name] = int(can.sum())
        dropped = int(all_ms.size - keep_ms.size)
    ts = pd.DatetimeIndex(keep_ms.astype("datetime64[ms]")).tz_localize("UTC")
    return AlignedArrays(
        ts=ts,
        ts_ms=keep_ms,
        filled_y=filled["y"],
        filled_x=filled["x"],
        dropped=dropped,
        max_ffill=int(max_ffill),
        interval_s=interval_s,
        **out,
    )


@dataclass(frozen=True, slots=True)
class Leg:
    """One symbol's bars as the arrays alignment needs (``leg_arrays``): a caller
    that aligns one symbol against many converts its frame once."""

    ts_ms: np.ndarray
    cols: dict[str, np.ndarray]


def leg_arrays(bars: pd.DataFrame, name: str = "bars") -> Leg:
    """The ms clock (sorted, last row of a duplicated bucket kept) and the close,
    trade-count and quote-volume columns of a bar frame, for ``align_pair_arrays``."""
    return Leg(*_leg_arrays(bars, name))


def _leg_arrays(
    bars: pd.DataFrame | Leg, name: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One leg's ms timestamps (sorted, last row of a duplicate kept) and columns."""
    if isinstance(bars, Leg):
        return bars.ts_ms, bars.cols
    if "ts" not in bars.columns or "close" not in bars.columns:
        raise ValueError(
            f"bars_{name} must have columns ts and close, got {list(bars.columns)}"
        )
    ts_ms = _to_epoch_ms(bars["ts"])
    n = ts_ms.size
    cols = {
        "close": bars["close"].to_numpy("float64"),
        "trades": (
            bars["trades"].to_numpy("float64") if "trades" in bars else np.zeros(n)
        ),
        "notional": (
            bars["quote_volume"].to_numpy("float64")
            if "quote_volume" in bars
            else np.zeros(n)
        ),
    }
    if n < 2 or bool(np.all(ts_ms[1:] > ts_ms[:-1])):
        return ts_ms, cols  # already sorted and unique: the usual case
    order = np.argsort(ts_ms, kind="stable")
    ts_ms = ts_ms[order]
    last_of_dup = np.r_[ts_ms[1:] != ts_ms[:-1], True]
    return ts_ms[last_of_dup], {k: v[order][last_of_dup] for k, v in cols.items()}


def _sorted_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted unique values of two int arrays (``np.union1d`` without hashing)."""
    both = np.concatenate([a, b])
    both.sort(kind="stable")
    if both.size < 2:
        return both
    return both[np.r_[True, both[1:] != both[:-1]]]


def _leg_picks(
    leg_ts: np.ndarray, all_ms: np.ndarray, limit_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clock bucket: the leg's last row at or before it, whether that row is on
    the bucket, and whether it may be carried forward to it."""
    pos = np.searchsorted(leg_ts, all_ms, side="right") - 1
    safe = np.maximum(pos, 0)
    seen = (pos >= 0) & (leg_ts.size > 0)
    prev_ms = leg_ts[safe] if leg_ts.size else np.zeros_like(all_ms)
    have = seen & (prev_ms == all_ms)
    can = seen & ~have & (all_ms - prev_ms <= limit_ms)
    return safe, have, can


def _count_column(values: np.ndarray) -> np.ndarray:
    """Trade counts as int64 (NaN counts as 0)."""
    return np.nan_to_num(values).astype("int64")


_NAT_MS = np.iinfo("int64").min


def _check_interval_s(interval_s: int) -> None:
    """Raise ValueError unless interval_s is a positive integer."""
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, (int, np.integer))
        or interval_s < 1
    ):
        raise ValueError(f"interval_s must be an integer >= 1, got {interval_s!r}")


def _to_epoch_ms(values: pd.Series) -> np.ndarray:
    """Integer ms since the epoch from int ms or datetimes (naive means UTC; NaT is
    the int64 minimum)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        # tz-aware or naive (= UTC) datetimes: the int64 ms behind the array, no copy
        # through Series accessors.
        return np.asarray(values.array.as_unit("ms").asi8)
    return values.to_numpy(dtype="int64")


def _spacing_ms(ts_ms: np.ndarray, *, is_unique: bool = False) -> int | None:
    """The gcd of the positive differences of ms timestamps, or None.

    ``is_unique`` says ts_ms is already sorted and free of duplicates.
    """
    diffs = np.diff(ts_ms if is_unique else np.unique(ts_ms))
    if diffs.size == 0:
        return None
    return int(np.gcd.reduce(diffs.astype("int64")))


def _bar_frame(
    ts_ms: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    quote_volume: np.ndarray,
    trades: np.ndarray,
) -> pd.DataFrame:
    """Assemble a contract bar frame from column arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(volume > 0, volume, 1.0)
        vwap = np.where(volume > 0, quote_volume / safe, close)
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(ts_ms, unit="ms", utc=True).as_unit("ms"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "quote_volume": quote_volume,
            "trades": trades.astype("int64"),
            "vwap": vwap,
        }
    )


def bars_per_year(interval_s: int) -> float:
    """Bars in a 365-day year of round-the-clock trading: 31 536 000 / interval_s."""
    _check_interval_s(interval_s)
    return 365 * 24 * 3600 / interval_s


__all__ = [
    "AlignedArrays",
    "AlignedPair",
    "Leg",
    "align_pair",
    "align_pair_arrays",
    "bars_per_year",
    "empty_bars",
    "format_interval",
    "leg_arrays",
    "pandas_alias",
    "parse_interval",
    "resample_bars",
    "ticks_to_bars",
]
