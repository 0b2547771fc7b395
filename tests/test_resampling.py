"""Tests for resampling.py: bars against pandas resample on the recorded trades."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import BAR_COLUMNS
from resampling import (
    align_pair,
    align_pair_arrays,
    format_interval,
    parse_interval,
    resample_bars,
    ticks_to_bars,
)

DERIVED = "derived"
PREFIX = "usdm_trade_frames_"
FILES = {
    "2024-08-08": PREFIX + "btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz",
    "2024-07-18": PREFIX + "btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz",
    "2023-04-04": PREFIX + "btcusdt_20230404T2358_20230405T0007.jsonl.gz",
}


def load_trades(path: Path) -> dict[str, pd.DataFrame]:
    """Parse recorded combined-stream @trade frames into per-symbol MARKET ticks."""
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if not line.strip():
                continue
            data = json.loads(line)["data"]
            if data["X"] != "MARKET":
                continue
            rows.append(
                (data["s"], data["t"], data["T"], float(data["p"]), float(data["q"]))
            )
    frame = pd.DataFrame(rows, columns=["symbol", "trade_id", "ts_ms", "price", "qty"])
    return {
        sym: g.drop(columns="symbol").sort_values("trade_id").reset_index(drop=True)
        for sym, g in frame.groupby("symbol")
    }


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """All three recordings, parsed once per module."""
    return {k: load_trades(shared_data / DERIVED / v) for k, v in FILES.items()}


def pandas_bars(ticks: pd.DataFrame, interval_s: int) -> pd.DataFrame:
    """Reference bars from pandas resample (epoch origin, labelled by bucket start)."""
    df = ticks.assign(
        ts=pd.to_datetime(ticks["ts_ms"], unit="ms", utc=True),
        notional=ticks["price"] * ticks["qty"],
    ).set_index("ts")
    rs = df.resample(f"{interval_s}s", origin="epoch", label="left", closed="left")
    out = pd.DataFrame(
        {
            "open": rs["price"].first(),
            "high": rs["price"].max(),
            "low": rs["price"].min(),
            "close": rs["price"].last(),
            "volume": rs["qty"].sum(),
            "quote_volume": rs["notional"].sum(),
            "trades": rs["price"].count(),
        }
    )
    out = out[out["trades"] > 0].reset_index()
    out["vwap"] = out["quote_volume"] / out["volume"]
    out["ts"] = out["ts"].dt.as_unit("ms")
    out["trades"] = out["trades"].astype("int64")
    return out[list(BAR_COLUMNS)]


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Exact on ts/OHLC/trades, 1e-12 relative on sums (summation order differs)."""
    assert list(got.columns) == list(BAR_COLUMNS)
    assert len(got) == len(want)
    assert (got["ts"].to_numpy() == want["ts"].to_numpy()).all()
    for col in ("open", "high", "low", "close", "trades"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    for col in ("volume", "quote_volume", "vwap"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12, atol=0)


@pytest.mark.parametrize("day", list(FILES))
@pytest.mark.parametrize("interval_s", [1, 60, 300])
def test_bars_equal_pandas_resample_on_recorded_trades(recorded, day, interval_s):
    """Bars from the real trades equal pandas resample at 1s, 1m and 5m."""
    for ticks in recorded[day].values():
        got = ticks_to_bars(ticks, interval_s)
        assert_bars_equal(got, pandas_bars(ticks, interval_s))
        assert str(got["ts"].dtype) == "datetime64[ms, UTC]"


@pytest.mark.parametrize("day", list(FILES))
@pytest.mark.parametrize("interval_s", [60, 300, 3600])
def test_bars_from_1s_bars_equal_bars_from_ticks(recorded, day, interval_s):
    """Resampling 1 s bars gives the bars built straight from the ticks."""
    for ticks in recorded[day].values():
        assert_bars_equal(
            resample_bars(ticks_to_bars(ticks, 1), interval_s),
            ticks_to_bars(ticks, interval_s),
        )


def test_midnight_hole_2023_has_no_bars_and_matches_pandas(recorded):
    """The 5 s funding-time hole after 2023-04-05 00:00 UTC produces no 1 s rows."""
    ticks = recorded["2023-04-04"]["BTCUSDT"]
    bars = ticks_to_bars(ticks, 1)
    start = pd.Timestamp("2023-04-04 23:59:55", tz="UTC")
    end = pd.Timestamp("2023-04-05 00:00:10", tz="UTC")
    around = bars[(bars["ts"] >= start) & (bars["ts"] < end)]
    seconds = set(around["ts"].dt.strftime("%H:%M:%S"))
    assert {"00:00:00", "00:00:01", "00:00:02", "00:00:03"}.isdisjoint(seconds)
    assert "23:59:59" in seconds and "00:00:04" in seconds
    minute = ticks_to_bars(ticks, 60)
    midnight = minute[minute["ts"] == pd.Timestamp("2023-04-05", tz="UTC")].iloc[0]
    first_after = ticks[ticks["ts_ms"] >= 1680652800000].iloc[0]
    assert midnight["open"] == first_after["price"]
    assert_bars_equal(bars, pandas_bars(ticks, 1))


def test_insurance_fund_trade_is_not_in_market_bars(recorded):
    """The 28 722.5 insurance-fund print is filtered before the bars are built."""
    bars = ticks_to_bars(recorded["2023-04-04"]["BTCUSDT"], 60)
    assert bars["high"].max() < 28_722.5


def test_open_close_follow_trade_id_not_arrival_order():
    """Open and close come from the lowest and highest trade id, whatever the order."""
    ticks = pd.DataFrame(
        {
            "ts_ms": [1_000, 1_000, 1_500, 1_200],
            "trade_id": [11, 10, 13, 12],
            "price": [2.0, 1.0, 4.0, 3.0],
            "qty": [1.0, 1.0, 1.0, 1.0],
        }
    )
    bar = ticks_to_bars(ticks, 1).iloc[0]
    assert (bar["open"], bar["close"], bar["high"], bar["low"]) == (1.0, 4.0, 4.0, 1.0)
    assert bar["vwap"] == pytest.approx(2.5)


def test_ticks_with_datetime_ts_column_and_empty_input():
    """A tz-aware ts column works like ts_ms, and no ticks give an empty bar frame."""
    ticks = pd.DataFrame(
        {
            "ts": pd.to_datetime([59_999, 60_000], unit="ms", utc=True),
            "price": [1.0, 2.0],
            "qty": [1.0, 3.0],
        }
    )
    bars = ticks_to_bars(ticks, 60)
    assert list(bars["ts"].dt.as_unit("ms").astype("int64")) == [0, 60_000]
    empty = ticks_to_bars(ticks.iloc[:0], 60)
    assert len(empty) == 0 and list(empty.columns) == list(BAR_COLUMNS)


def test_ticks_to_bars_rejects_missing_columns():
    """A frame without price/qty/time columns is a caller mistake."""
    with pytest.raises(ValueError, match="ticks must have columns ts"):
        ticks_to_bars(pd.DataFrame({"price": [1.0]}), 1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("15s", 15), ("1m", 60), ("5m", 300), ("2h", 7200), (" 1MIN ", 60)],
)
def test_parse_interval_accepts_units(text, seconds):
    """Intervals parse to seconds and format back to the shortest label."""
    assert parse_interval(text) == seconds
    assert parse_interval(format_interval(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1d", "m", "1.5m", "169h", None])
def test_parse_interval_rejects_bad_text(text):
    """Unknown units, zero and over a week are rejected with the text quoted."""
    with pytest.raises(ValueError, match="interval must"):
        parse_interval(text)


def test_resample_rejects_interval_not_multiple_of_source():
    """Resampling 1 m bars to 90 s cannot be exact and is refused."""
    ticks = pd.DataFrame(
        {"ts_ms": [0, 60_000, 120_000], "price": [1.0] * 3, "qty": [1.0] * 3}
    )
    with pytest.raises(
        ValueError, match=r"multiple of source_interval_s \(60\), got 90"
    ):
        resample_bars(ticks_to_bars(ticks, 60), 90, source_interval_s=60)


def _bars(ts_s: list[int], closes: list[float]) -> pd.DataFrame:
    """Small bar frame with given bucket starts (seconds) and closes."""
    ticks = pd.DataFrame(
        {"ts_ms": [t * 1000 for t in ts_s], "price": closes, "qty": 1.0}
    )
    return ticks_to_bars(ticks, 1)


def test_align_pair_inner_join_by_default():
    """Without forward-fill only buckets where both legs traded remain."""
    out = align_pair(_bars([0, 1, 2, 5], [1, 2, 3, 4]), _bars([0, 2, 5], [10, 30, 40]))
    assert list(out.frame["y"]) == [1, 3, 4] and list(out.frame["x"]) == [10, 30, 40]
    assert (out.filled_y, out.filled_x, out.dropped) == (0, 0, 1)


def test_align_pair_forward_fill_is_bounded_in_buckets():
    """A close is carried forward at most max_ffill buckets; the fills are counted."""
    y = _bars([0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7])
    x = _bars([0, 4], [10, 50])
    out = align_pair(y, x, max_ffill=2)
    assert list(out.frame["x"]) == [10, 10, 10, 50, 50, 50]
    assert list(out.frame["x_filled"]) == [False, True, True, False, True, True]
    assert list(out.frame["x_trades"]) == [1, 0, 0, 1, 0, 0]
    assert (out.filled_x, out.filled_y, out.dropped, out.interval_s) == (4, 0, 1, 1)


def test_align_pair_rejects_negative_fill():
    """max_ffill below zero is a caller mistake."""
    with pytest.raises(ValueError, match="max_ffill must be an integer >= 0, got -1"):
        align_pair(_bars([0], [1]), _bars([0], [1]), max_ffill=-1)


def test_align_pair_arrays_hold_the_frame_columns():
    """align_pair_arrays gives align_pair's columns as arrays, with the same counts."""
    y = _bars([0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7])
    x = _bars([0, 4], [10, 50])
    frame = align_pair(y, x, max_ffill=2)
    arrays = align_pair_arrays(y, x, max_ffill=2)
    pd.testing.assert_frame_equal(arrays.frame(), frame.frame)
    assert arrays.ts.dtype == "datetime64[ms, UTC]"
    assert arrays.ts_ms.tolist() == [0, 1000, 2000, 4000, 5000, 6000]
    assert (arrays.filled_x, arrays.dropped, arrays.interval_s) == (4, 1, 1)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=40),
    st.lists(st.integers(0, 40), max_size=40),
    st.integers(0, 3),
)
def test_align_pair_equals_a_pandas_reindex(ts_y, ts_x, max_ffill):
    """Unsorted, duplicated or equal clocks align as a pandas union + bounded ffill."""
    rng = np.random.default_rng(len(ts_y) * 41 + len(ts_x))

    def bars(ts_s):
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(
                    np.array(ts_s, "int64") * 60_000, unit="ms", utc=True
                ),
                "close": rng.uniform(1, 2, len(ts_s)),
                "trades": rng.integers(1, 9, len(ts_s)),
                "quote_volume": rng.uniform(1, 2, len(ts_s)),
            }
        )

    by = bars(ts_y)
    bx = by.copy() if rng.random() < 0.3 else bars(ts_x)
    out = align_pair(by, bx, max_ffill=max_ffill, interval_s=60).frame

    def leg(b):  # last row of a duplicated bucket, on the union clock, ffilled
        last = b.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
        return last.set_index("ts")

    ly, lx = leg(by), leg(bx)
    clock = ly.index.union(lx.index)
    grid = pd.date_range("1970-01-01", periods=41, freq="1min", tz="UTC")

    def filled(close):
        on_grid = close.reindex(grid)
        return (on_grid.ffill(limit=max_ffill) if max_ffill else on_grid).reindex(clock)

    ry, rx = filled(ly["close"]), filled(lx["close"])
    keep = ry.notna() & rx.notna()
    assert out["ts"].tolist() == clock[keep.to_numpy()].tolist()
    np.testing.assert_array_equal(out["y"], ry[keep].to_numpy())
    np.testing.assert_array_equal(out["x"], rx[keep].to_numpy())
    trades = ly["trades"].reindex(clock[keep.to_numpy()]).fillna(0).astype("int64")
    np.testing.assert_array_equal(out["y_trades"], trades.to_numpy())


tick_lists = st.lists(
    st.tuples(
        st.integers(0, 10_000_000),
        st.floats(0.01, 1e5, allow_nan=False),
        st.floats(1e-6, 1e3, allow_nan=False),
    ),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(tick_lists, st.sampled_from([1, 5, 60, 300]))
def test_bar_invariants_hold_for_random_ticks(rows, interval_s):
    """low <= open, close <= high; volume and trade counts equal the ticks' totals."""
    ticks = pd.DataFrame(rows, columns=["ts_ms", "price", "qty"])
    bars = ticks_to_bars(ticks, interval_s)
    assert len(bars) == ticks["ts_ms"].floordiv(interval_s * 1000).nunique()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert bars["trades"].sum() == len(ticks)
    assert bars["volume"].sum() == pytest.approx(ticks["qty"].sum(), rel=1e-9)
    assert bars["ts"].is_monotonic_increasing
    again = resample_bars(ticks_to_bars(ticks, 1), interval_s)
    assert len(again) == len(bars)
    np.testing.assert_allclose(again["quote_volume"], bars["quote_volume"], rtol=1e-12)
