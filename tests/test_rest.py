"""Tests of rest.py against a local Binance-like REST server on 127.0.0.1.

Klines, trades and aggregate trades are built from the real recorded trades in
../shared/data/binance/derived_csv (fakerest.py); the live side runs the real
ingestion service against the replay WebSocket server over loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import email.utils
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import datafiles
import storage
from analytics import PairParams, pair_analytics
from fakerest import (
    FakeBinanceRest,
    FakeTrade,
    agg_trades_from_trades,
    klines_from_trades,
    read_trades_csv,
)
from ingestion import IngestionConfig, IngestionService
from models import Gap, Tick
from replay import start_replay_in_thread
from rest import (
    DAY_MS,
    MAX_RESPONSE_BYTES,
    MAX_RETRY_AFTER_S,
    MINUTE_MS,
    GapFill,
    RateLimiter,
    RestBannedError,
    RestClient,
    RestSync,
    RestUnavailableError,
    RestWaitError,
    add_cli_arguments,
    agg_trades_to_bars_1s,
    check_symbols_against,
    exchange_history_end_ms,
    klines_to_bars,
    missing_minute_ranges,
    rate_limit_per_minute,
    sync_from_args,
    trades_to_ticks,
)

BTC_0808 = "BTCUSDT-trades-2024-08-08-span.csv"
BTC_0718 = "BTCUSDT-trades-2024-07-18-span.csv"
ETH_0718 = "ETHUSDT-trades-2024-07-18-span.csv"
FAST = {
    "flush_interval_s": 0.05,
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "lease_retry_s": 0.1,
    "heartbeat_s": 0.2,
    "open_timeout_s": 5.0,
}


# ------------------------------------------------------------------------ helpers


def trades_of(shared: Path, name: str, n: int | None = None) -> list[FakeTrade]:
    """Recorded trades of one derived CSV, sorted by id (first n)."""
    trades = read_trades_csv(shared / "derived_csv" / name)
    return trades[:n] if n is not None else trades


def write_csv(path: Path, trades: list[FakeTrade]) -> Path:
    """Write trades in Binance's public-data trades layout (with header)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"])
        for t in trades:
            w.writerow(
                [t.id, t.price, t.qty, "0", t.time, str(t.is_buyer_maker).lower()]
            )
    return path


def ticks_of(symbol: str, trades: list[FakeTrade]) -> list[Tick]:
    return [
        Tick(symbol, t.id, t.time, float(t.price), float(t.qty), t.is_buyer_maker)
        for t in trades
    ]


def wait_for(pred: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `pred` until true or the timeout (never asserts on speed)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_bars(trades: list[FakeTrade], width_ms: int) -> pd.DataFrame:
    """Bars by pandas groupby over trades (independent of rest.py and storage)."""
    df = pd.DataFrame(
        {
            "id": [t.id for t in trades],
            "t": [t.time for t in trades],
            "p": [float(t.price) for t in trades],
            "q": [float(t.qty) for t in trades],
        }
    ).sort_values("id")
    df["b"] = df["t"] - df["t"] % width_ms
    df["pq"] = df["p"] * df["q"]
    g = df.groupby("b", sort=True)
    return pd.DataFrame(
        {
            "ts_ms": g["b"].first().to_numpy(),
            "open": g["p"].first().to_numpy(),
            "high": g["p"].max().to_numpy(),
            "low": g["p"].min().to_numpy(),
            "close": g["p"].last().to_numpy(),
            "volume": g["q"].sum().to_numpy(),
            "quote_volume": g["pq"].sum().to_numpy(),
            "trades": g["p"].size().to_numpy(),
        }
    )


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same buckets, exact OHLC and counts, sums to float rounding."""
    got_ms = got["ts"].dt.as_unit("ms").astype("int64").to_numpy()
    want_ms = (
        want["ts_ms"].to_numpy()
        if "ts_ms" in want
        else want["ts"].dt.as_unit("ms").astype("int64").to_numpy()
    )
    np.testing.assert_array_equal(got_ms, want_ms)
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    np.testing.assert_array_equal(
        got["trades"].to_numpy(np.int64), want["trades"].to_numpy(np.int64)
    )
    for c in ("volume", "quote_volume"):
        np.testing.assert_allclose(
            got[c].to_numpy(), want[c].to_numpy(), rtol=1e-9, err_msg=c
        )


class Clock:
    """A settable ms clock."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def run_until(
    sync: RestSync, service: object, pred: Callable[[], bool], timeout: float = 30.0
) -> None:
    """Run sync.run(service) until `pred` holds, then cancel it."""
    task = asyncio.create_task(sync.run(service))
    try:
        end = time.monotonic() + timeout
        while not pred() and time.monotonic() < end and not task.done():
            await asyncio.sleep(0.02)
        if task.done():
            task.result()
        assert pred(), sync.status()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def stub_service(db: Path, *symbols: str) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(symbols=symbols, db_path=db))


# ---------------------------------------------------------------- pure helpers


def test_klines_to_bars_matches_pandas_groupby(shared_data: Path) -> None:
    """Klines built from recorded trades convert to the bars pandas computes."""
    trades = trades_of(shared_data, BTC_0808)
    bars = klines_to_bars(klines_from_trades(trades))
    want = reference_bars(trades, MINUTE_MS)
    assert str(bars["ts"].dtype) == "datetime64[ms, UTC]"
    assert_bars_equal(bars, want)
    np.testing.assert_allclose(
        bars["vwap"], want["quote_volume"] / want["volume"], rtol=1e-12
    )


def test_klines_to_bars_drops_empty_and_rejects_short_rows() -> None:
    """A kline without trades gives no row; a short row is refused by name."""
    rows = [
        [0, "1", "2", "0.5", "1.5", "3", 59_999, "4.5", 2, "0", "0", "0"],
        [60_000, "1.5", "1.5", "1.5", "1.5", "0", 119_999, "0", 0, "0", "0", "0"],
    ]
    bars = klines_to_bars(rows)
    assert len(bars) == 1 and bars["vwap"].iloc[0] == pytest.approx(1.5)
    assert klines_to_bars([]).columns.tolist() == list(bars.columns)
    with pytest.raises(ValueError, match="kline 0 has 3 fields, need at least 9"):
        klines_to_bars([[0, "1", "2"]])


def test_agg_trades_fill_equals_tick_bars_with_straddling_aggregates(
    shared_data: Path,
) -> None:
    """Aggregates clipped to a gap, minus known edge quantities, give the gap's bars."""
    trades = trades_of(shared_data, BTC_0808, 3000)
    aggs = agg_trades_from_trades(trades)
    # pick gap edges inside multi-trade aggregates so both edges straddle
    multi = [a for a in aggs if a["l"] - a["f"] >= 2]
    first = next(a for a in multi if a["f"] > trades[500].id)
    last = next(a for a in multi if a["f"] > trades[2000].id)
    lo_id, hi_id = first["f"] + 1, last["l"] - 1
    by_id = {t.id: t for t in trades}
    known = {
        i: float(by_id[i].qty)
        for i in (*range(first["f"], lo_id), *range(hi_id + 1, last["l"] + 1))
    }
    bars = agg_trades_to_bars_1s(aggs, lo_id, hi_id, known)
    inside = [t for t in trades if lo_id <= t.id <= hi_id]
    assert_bars_equal(bars, reference_bars(inside, 1000))
    assert bars["first_id"].iloc[0] == lo_id and bars["last_id"].iloc[-1] == hi_id
    with pytest.raises(ValueError, match="to_id must be >= from_id, got 5..4"):
        agg_trades_to_bars_1s(aggs, 5, 4)


def test_trades_to_ticks_reads_binance_rows() -> None:
    """Trade rows become ticks sorted by id; a row without a key is refused."""
    rows = [
        {
            "id": 2,
            "price": "10.5",
            "qty": "0.1",
            "quoteQty": "1.05",
            "time": 7,
            "isBuyerMaker": True,
        },
        {
            "id": 1,
            "price": "10.0",
            "qty": "0.2",
            "quoteQty": "2",
            "time": 5,
            "isBuyerMaker": False,
        },
    ]
    ticks = trades_to_ticks("btcusdt", rows)
    assert ticks == [
        Tick("BTCUSDT", 1, 5, 10.0, 0.2, False),
        Tick("BTCUSDT", 2, 7, 10.5, 0.1, True),
    ]
    with pytest.raises(ValueError, match="bad trade row"):
        trades_to_ticks("BTCUSDT", [{"id": 1}])


def test_missing_minute_ranges_and_rate_limit_parsing() -> None:
    """Missing minutes come out as runs; the REQUEST_WEIGHT limit scales to a minute."""
    have = [60_000, 120_000, 300_000]
    assert missing_minute_ranges(have, 0, 420_000) == [
        (0, 60_000),
        (180_000, 300_000),
        (360_000, 420_000),
    ]
    info = {
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 2400,
            },
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": 300,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 10,
            },
        ]
    }
    assert rate_limit_per_minute(info) == 1800  # 300 per 10 s is stricter
    assert rate_limit_per_minute({}) is None


def test_rate_limiter_keeps_the_window_under_budget() -> None:
    """Weights beyond the budget wait until old weight leaves the 60 s window."""
    now = [1000.0]
    lim = RateLimiter(100, share=0.5, clock=lambda: now[0])
    assert lim.budget == 50
    assert lim.reserve(20) == 0.0
    now[0] += 10
    assert lim.reserve(20) == 0.0
    now[0] += 5
    assert lim.reserve(20) == pytest.approx(45.0)  # first 20 leaves at t=1060
    assert lim.used() == 40
    now[0] += 45
    assert lim.reserve(20) == 0.0
    lim.pause(3.0)
    assert lim.reserve(1) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="weight 51 exceeds the budget of 50"):
        lim.reserve(51)
    with pytest.raises(ValueError, match="share must be in"):
        RateLimiter(10, share=0)


# ---------------------------------------------------------------- symbol check


def test_transient_errors_recover_and_the_skipped_check_is_retried(
    db_path: Path,
) -> None:
    """HTTP 500s leave the check skipped and REST unavailable; once the server
    answers again, the warm start completes and the symbols get checked."""
    storage.Writer(db_path).close()
    with FakeBinanceRest() as server:
        server.fail(500, times=3, path="/fapi/v1/exchangeInfo")
        server.fail(500, times=3, path="/fapi/v1/klines")
        sync = RestSync(server.url, gap_poll_s=0.05, retry_s=0.2)

        def recovered() -> bool:
            st = sync.status()
            return (
                st.state == "running"
                and st.symbol_check is not None
                and st.symbol_check.checked
                and len(st.warm_starts) == 1
            )

        asyncio.run(run_until(sync, stub_service(db_path, "BTCUSDT"), recovered))
        statuses = [r.status for r in server.requests_to("/fapi/v1/exchangeInfo")]
        assert statuses == [500, 500, 500, 200]
    assert sync.status().message == ""


def test_bad_symbol_refused_with_suggestion_and_limit_adopted() -> None:
    """A mistyped or delisted symbol is refused with close matches; the served
    REQUEST_WEIGHT limit is adopted."""
    with FakeBinanceRest(weight_limit=1200) as server:
        sync = RestSync(server.url)

        async def main() -> None:
            check = await sync.check_symbols(
                ["btcusdt", "BTCUSTD", "LUNAUSDT", "ETHUSDT"]
            )
            assert check.checked and check.valid == ("BTCUSDT", "ETHUSDT")
            bad = {p.symbol: p for p in check.invalid}
            assert bad["BTCUSTD"].suggestions[0] == "BTCUSDT"
            assert "not a USD-M futures symbol" in bad["BTCUSTD"].reason
            assert bad["LUNAUSDT"].reason == "not trading on Binance (status SETTLING)"
            assert "BTCUSTD: " in check.note and "did you mean BTCUSDT" in check.note
            assert "BTCUSDT_260925" not in check.available  # quarterly, not perpetual
            assert {"BTCUSDT", "ETHUSDT", "SOLUSDT"} <= set(check.available)

        asyncio.run(main())
        assert sync.client.limiter.limit == 1200
        assert sync.status().symbol_check is not None


def test_blocking_symbol_check_for_the_dashboard() -> None:
    """The blocking check (dashboard thread) refuses a typo with a suggestion and
    reports an unreachable server as skipped."""
    with FakeBinanceRest() as server:
        check = RestClient(server.url).check_symbols_blocking(["ETHUSTD"])
    assert check.checked and check.invalid[0].suggestions[0] == "ETHUSDT"
    gone = RestClient(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    check = gone.check_symbols_blocking(["ETHUSDT"])
    assert not check.checked and check.valid == ("ETHUSDT",)


def test_gaps_already_filled_in_the_database_cost_no_rest_call(db_path: Path) -> None:
    """A gap whose fill the database records is not filled again after a restart."""
    with storage.Writer(db_path) as w:
        w.write_batch([], [Gap("BTCUSDT", 10, 20, storage.now_ms() - 5_000)])
        assert w.mark_gap_filled(
            "BTCUSDT", 10, 20, by="trades", at_ms=storage.now_ms(), detail="earlier run"
        )
    with FakeBinanceRest() as server:
        sync = RestSync(server.url, gap_poll_s=0.05)
        asyncio.run(
            run_until(
                sync,
                stub_service(db_path, "BTCUSDT"),
                lambda: sync.status().state == "running",
            )
        )
        assert server.requests_to("/fapi/v1/trades") == []
    (fill,) = sync.status().gap_fills
    assert (fill.method, fill.detail) == ("trades", "earlier run")


def test_symbol_check_pure_reasons() -> None:
    """A quarterly contract is refused as not perpetual; malformed text is named."""
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL"},
            {
                "symbol": "ETHUSDT",
                "status": "TRADING",
                "contractType": "CURRENT_QUARTER",
            },
        ]
    }
    check = check_symbols_against(["ETHUSDT", "bt-c"], info)
    assert check.valid == ()
    assert check.invalid[0].reason == (
        "not a perpetual contract (contract type CURRENT_QUARTER)"
    )
    assert check.invalid[1].reason == "not a symbol (2-20 letters or digits)"


def test_symbol_check_skipped_with_note_without_rest() -> None:
    """With no REST server the check passes the symbols unchecked and says so."""
    sync = RestSync(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    sync.client  # noqa: B018

    async def main() -> None:
        check = await sync.check_symbols(["BTCUSDT", "ETHUSDT"])
        assert not check.checked and check.valid == ("BTCUSDT", "ETHUSDT")
        assert check.note.startswith("symbol check skipped (REST unavailable")

    asyncio.run(main())
    assert sync.status().state == "unavailable"


# ---------------------------------------------------------------- rate limits


def test_429_retry_after_is_waited_out() -> None:
    """A 429 with Retry-After pauses the client that long, then the call succeeds."""
    trades = [FakeTrade(i, "100.0", "1", 1_000 + i, False) for i in range(1, 11)]
    with FakeBinanceRest({"BTCUSDT": trades}) as server:
        server.fail(429, retry_after_s=1, path="/fapi/v1/trades")
        client = RestClient(server.url)
        rows = asyncio.run(client.trades("BTCUSDT", limit=5))
        assert [r["id"] for r in rows] == [6, 7, 8, 9, 10]
        served = server.requests_to("/fapi/v1/trades")
        assert [r.status for r in served] == [429, 200]
        assert served[1].t_monotonic - served[0].t_monotonic >= 1.0


def test_418_stops_all_rest_calls_until_the_ban_ends() -> None:
    """After a 418 no request reaches the server until the ban's end time."""
    wall = Clock(storage.now_ms())
    trades = [FakeTrade(i, "100.0", "1", 1_000 + i, False) for i in range(1, 11)]
    with FakeBinanceRest({"BTCUSDT": trades}) as server:
        server.fail(418, retry_after_s=120)
        client = RestClient(server.url, wall_ms=wall)

        async def main() -> None:
            with pytest.raises(RestBannedError, match="banned this IP until") as ban:
                await client.trades("BTCUSDT")
            for call in (client.exchange_info(), client.klines("BTCUSDT", 0, 1)):
                with pytest.raises(RestBannedError):
                    await call
            assert len(server.requests) == 1
            assert client.banned_until_ms == ban.value.until_ms
            wall.ms = ban.value.until_ms + 1
            assert client.banned_until_ms is None
            assert len(await client.trades("BTCUSDT")) == 10

        asyncio.run(main())
        assert [r.status for r in server.requests] == [418, 200]


# ------------------------------------------------------------------ warm start


def tiled_klines(shared: Path, name: str, t0: int, n: int) -> list[list]:
    """n consecutive 1 m klines from t0, cycling the recording's full minutes."""
    base = klines_from_trades(trades_of(shared, name))[1:-1]  # drop partial minutes
    rows = []
    for j in range(n):
        row = list(base[j % len(base)])
        row[0] = t0 + j * MINUTE_MS
        row[6] = row[0] + MINUTE_MS - 1
        rows.append(row)
    return rows


def test_warm_start_stores_exactly_the_served_klines_and_analytics_run(
    shared_data: Path, db_path: Path
) -> None:
    """Warm start fills `bars` with the served closed klines of the last 24 h, 1m/5m
    analytics run before any tick, and a restart fetches only the missing minutes."""
    end = 1_721_347_200_000  # 2024-07-19 00:00 UTC, minute-aligned
    start = end - DAY_MS
    n = DAY_MS // MINUTE_MS + 30
    klines = {
        "BTCUSDT": tiled_klines(shared_data, BTC_0718, start, n),
        "ETHUSDT": tiled_klines(shared_data, ETH_0718, start, n),
    }
    clock = Clock(end + 30_000)  # the minute starting at `end` is still open
    with FakeBinanceRest(klines=klines) as server:
        storage.Writer(db_path).close()
        sync = RestSync(server.url, clock_ms=clock, gap_poll_s=0.05)
        service = stub_service(db_path, "BTCUSDT", "ETHUSDT")
        asyncio.run(run_until(sync, service, lambda: sync.status().state == "running"))
        for sym, rows in klines.items():
            got = storage.read_bars(db_path, sym, 60, None, None)
            served = [r for r in rows if start <= r[0] < end]
            want = pd.DataFrame(
                {
                    "ts_ms": [r[0] for r in served],
                    **{
                        c: [float(r[i]) for r in served]
                        for c, i in (
                            ("open", 1),
                            ("high", 2),
                            ("low", 3),
                            ("close", 4),
                            ("volume", 5),
                            ("quote_volume", 7),
                        )
                    },
                    "trades": [int(r[8]) for r in served],
                }
            )
            assert len(got) == 1440
            assert_bars_equal(got, want)
            warm = {w.symbol: w for w in sync.status().warm_starts}[sym]
            assert (warm.stored, warm.requests, warm.history_end_ms) == (1440, 1, end)
        assert storage.db_stats(db_path).symbols[0].ticks == 0
        assert exchange_history_end_ms(db_path, "BTCUSDT", clock.ms) == end
        for interval, window, n_bars in (("1m", 60, 1440), ("5m", 30, 288)):
            width = 60 if interval == "1m" else 300
            by = datafiles.read_bars_any(db_path, "BTCUSDT", width, start, end)
            bx = datafiles.read_bars_any(db_path, "ETHUSDT", width, start, end)
            res = pair_analytics(by, bx, PairParams(interval=interval, window=window))
            assert res.n_bars == n_bars
            assert res.adf is not None and np.isfinite(res.adf.statistic)
            assert not [m for m in res.messages if m.startswith("insufficient")]
        # restart ten minutes later: only the ten new closed minutes are fetched
        clock.ms += 10 * MINUTE_MS
        sync2 = RestSync(server.url, clock_ms=clock, gap_poll_s=0.05)
        asyncio.run(
            run_until(sync2, service, lambda: sync2.status().state == "running")
        )
        last = server.requests_to("/fapi/v1/klines")[-2:]
        assert [r.params["startTime"] for r in last] == [str(end), str(end)]
        assert {w.stored for w in sync2.status().warm_starts} == {10}
        assert len(storage.read_bars(db_path, "BTCUSDT", 60, None, None)) == 1450


# ------------------------------------------------------------------ gap refill


def run_gap_scenario(
    shared: Path, tmp: Path, hole: slice, *, api_key: str | None = None
) -> tuple[RestSync, Path, list[FakeTrade], list[FakeTrade]]:
    """Stream 2 000 recorded trades with a hole through the real service while the
    REST server holds all of them; return once the gap is filled."""
    trades = trades_of(shared, BTC_0808, 2000)
    missing = trades[hole]
    streamed = [t for t in trades if t not in set(missing)]
    csv_path = write_csv(tmp / "BTCUSDT-trades-hole.csv", streamed)
    db = tmp / "live.db"
    clock = Clock(trades[-1].time + MINUTE_MS)
    with FakeBinanceRest({"BTCUSDT": trades}, api_key=api_key) as server:
        replay = start_replay_in_thread(files=[csv_path], speed=0)
        sync = RestSync(server.url, api_key=api_key, clock_ms=clock, gap_poll_s=0.05)
        config = IngestionConfig(
            symbols=("BTCUSDT",), db_path=db, base_url=replay.url, **FAST
        )
        service = IngestionService(config, tasks=[sync.run])
        service.start()
        try:
            done = wait_for(
                lambda: (
                    [g.method for g in sync.status().gap_fills] not in ([], ["pending"])
                )
            )
            assert done, sync.status()
            assert service.status().total_ticks == len(streamed)
        finally:
            service.stop()
            replay.stop()
    return sync, db, trades, missing


def uninterrupted_bars(tmp: Path, trades: list[FakeTrade]) -> pd.DataFrame:
    """bars_1s of a run that received every trade."""
    db = tmp / "uninterrupted.db"
    with storage.Writer(db) as w:
        w.write_batch(ticks_of("BTCUSDT", trades))
    return storage.read_bars_1s(db, "BTCUSDT", None, None)


def test_gap_inside_latest_trades_refilled_tick_for_tick(
    shared_data: Path, tmp_path: Path
) -> None:
    """A gap inside the latest 1 000 trades is refilled tick for tick and the bars
    equal those of an uninterrupted run."""
    sync, db, trades, missing = run_gap_scenario(
        shared_data, tmp_path, slice(1500, 1550)
    )
    (fill,) = sync.status().gap_fills
    assert (fill.from_id, fill.to_id) == (missing[0].id, missing[-1].id)
    assert (fill.method, fill.ticks_inserted) == ("trades", 50)
    (row,) = storage.read_gaps(db, "BTCUSDT").itertuples()
    assert (row.filled_by, row.fill_detail) == ("trades", fill.detail)
    stored = storage.read_ticks(db, "BTCUSDT", None, None)
    assert stored["trade_id"].tolist() == [t.id for t in trades]
    got = storage.read_bars_1s(db, "BTCUSDT", None, None)
    assert_bars_equal(got, uninterrupted_bars(tmp_path, trades))


def test_long_gap_without_key_filled_from_agg_trades_at_bar_level(
    shared_data: Path, tmp_path: Path
) -> None:
    """A gap older than the latest 1 000 trades, without an API key, is filled at
    bar level from aggTrades, says so, and leaves the ticks missing."""
    sync, db, trades, missing = run_gap_scenario(shared_data, tmp_path, slice(200, 900))
    (fill,) = sync.status().gap_fills
    assert fill.method == "aggTrades" and fill.ticks_inserted == 0
    assert fill.trades == 700 and "bar level from aggTrades" in fill.detail
    assert "ticks not restored" in fill.detail
    assert storage.read_gaps(db, "BTCUSDT")["filled_by"].tolist() == ["aggTrades"]
    assert len(storage.read_ticks(db, "BTCUSDT", None, None)) == 2000 - 700
    got = storage.read_bars_1s(db, "BTCUSDT", None, None)
    assert_bars_equal(got, uninterrupted_bars(tmp_path, trades))


def test_gap_with_api_key_refilled_from_historical_trades(
    shared_data: Path, db_path: Path
) -> None:
    """With an API key, a gap older than the latest page is refilled tick for tick
    from historicalTrades."""
    trades = trades_of(shared_data, BTC_0808, 3000)
    hole = trades[100:1200]
    kept = [t for t in trades if not (hole[0].id <= t.id <= hole[-1].id)]
    storage.Writer(db_path).close()
    with FakeBinanceRest({"BTCUSDT": trades}, api_key="k3y") as server:
        sync = RestSync(
            server.url, api_key="k3y", clock_ms=Clock(trades[-1].time), gap_poll_s=0.05
        )

        async def main() -> None:
            async def record_gap() -> None:
                while (
                    sync.status().state == "idle" or sync.status().state == "checking"
                ):
                    await asyncio.sleep(0.02)
                with storage.Writer(db_path) as w:
                    gap = Gap("BTCUSDT", hole[0].id, hole[-1].id, storage.now_ms())
                    w.write_batch(ticks_of("BTCUSDT", kept), [gap])

            writer = asyncio.create_task(record_gap())
            await run_until(
                sync,
                stub_service(db_path, "BTCUSDT"),
                lambda: any(g.method != "pending" for g in sync.status().gap_fills),
            )
            await writer

        asyncio.run(main())
        (fill,) = sync.status().gap_fills
        assert (fill.method, fill.ticks_inserted) == ("historicalTrades", 1100)
        hist = server.requests_to("/fapi/v1/historicalTrades")
        assert hist[0].params["fromId"] == str(hole[0].id) and hist[0].api_key == "k3y"
    stored = storage.read_ticks(db_path, "BTCUSDT", None, None)
    assert stored["trade_id"].tolist() == [t.id for t in trades]


def test_451_reported_once_while_live_stream_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 451 is reported once in plain words, REST is not retried, and the live
    stream keeps storing ticks."""
    caplog.set_level(logging.INFO, logger="rest")
    with FakeBinanceRest() as server:
        server.fail(451, times=None)
        replay = start_replay_in_thread(synthetic=True, seed=7, rate=200)
        sync = RestSync(server.url, gap_poll_s=0.05, retry_s=0.1)
        config = IngestionConfig(
            symbols=("BTCUSDT", "ETHUSDT"),
            db_path=tmp_path / "live.db",
            base_url=replay.url,
            **FAST,
        )
        service = IngestionService(config, tasks=[sync.run])
        service.start()
        try:
            assert wait_for(lambda: sync.status().state == "blocked")
            first = service.status().stored_ticks
            assert wait_for(lambda: service.status().stored_ticks > first + 50)
            time.sleep(0.5)  # several gap polls and warm-start retries
        finally:
            service.stop()
            replay.stop()
    assert len(server.requests) == 1
    status = sync.status()
    assert status.message.startswith(
        "Binance refused REST access from this location (HTTP 451)"
    )
    assert "the live stream is not affected" in status.message
    assert service.status().stored_ticks > 0
    reports = [r for r in caplog.records if "HTTP 451" in r.getMessage()]
    assert len(reports) == 1


def test_rest_sync_rejects_bad_arguments() -> None:
    """Bad settings are refused with the argument named."""
    with pytest.raises(ValueError, match="history_ms must be in 1..86400000"):
        RestSync("http://127.0.0.1:1", history_ms=2 * DAY_MS)
    with pytest.raises(ValueError, match="base_url: must be an http"):
        RestClient("ftp://example")
    with pytest.raises(ValueError, match="gap_poll_s must be a number > 0"):
        RestSync("http://127.0.0.1:1", gap_poll_s=0)
    assert GapFill("BTCUSDT", 1, 2, 0, "pending").ticks_inserted == 0


def test_cli_flags_build_the_sync_or_none() -> None:
    """--rest-url points the sync at a server, --no-rest turns REST off, and the
    API key comes from the environment."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--rest-url", "http://127.0.0.1:9/"])
    sync = sync_from_args(args, {"BINANCE_API_KEY": "k"})
    assert sync is not None and sync.client.base_url == "http://127.0.0.1:9"
    assert sync.client.api_key == "k"
    assert sync_from_args(parser.parse_args(["--no-rest"]), {}) is None
    default = sync_from_args(parser.parse_args([]), {})
    assert default is not None and default.client.base_url == "https://fapi.binance.com"
    assert default.client.api_key is None
    with pytest.raises(ValueError, match="base_url: must be an http"):
        sync_from_args(parser.parse_args(["--rest-url", "ws://x"]), {})


def test_headless_stream_refuses_a_mistyped_symbol_via_rest(tmp_path: Path) -> None:
    """``ingestion.py stream --rest-url`` refuses a mistyped symbol with a suggestion
    and exits 2 before connecting anywhere."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    with FakeBinanceRest() as server:
        proc = subprocess.run(
            [
                sys.executable,
                str(repo / "ingestion.py"),
                "stream",
                "--symbols",
                "btcusdt,ethusdx",
                "--db",
                str(tmp_path / "m.db"),
                "--url",
                f"ws://127.0.0.1:{free_port()}",
                "--rest-url",
                server.url,
                "--duration",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert server.requests_to("/fapi/v1/exchangeInfo")
    assert proc.returncode == 2, proc.stderr
    assert "ETHUSDX" in proc.stderr and "ETHUSDT" in proc.stderr
    assert not (tmp_path / "m.db").exists()


# ------------------------------------------------- hostile Retry-After and sizes


def _wait_of(server: FakeBinanceRest, header: str) -> float:
    """The delay a fresh client takes from one 429 with this Retry-After text."""
    server.fail(429, retry_after=header, path="/fapi/v1/trades")
    client = RestClient(server.url)
    with pytest.raises(RestWaitError, match="rate limited by Binance") as wait:
        client.try_request("/fapi/v1/trades", {"symbol": "BTCUSDT"}, 5)
    assert client.limiter.reserve(1) <= MAX_RETRY_AFTER_S
    return wait.value.delay_s


def test_retry_after_is_clamped_in_every_form() -> None:
    """A 429's Retry-After is held to 0..10 minutes whatever its text: huge, inf,
    negative, NaN (the default minute) or an HTTP date."""
    trades = [FakeTrade(i, "100.0", "1", 1_000 + i, False) for i in range(1, 11)]
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    with FakeBinanceRest({"BTCUSDT": trades}) as server:
        assert _wait_of(server, "1e300") == MAX_RETRY_AFTER_S == 600
        assert _wait_of(server, "inf") == MAX_RETRY_AFTER_S
        assert _wait_of(server, "-5") == 0
        assert _wait_of(server, "nan") == 60
        assert 25 <= _wait_of(server, soon) <= 31
        assert _wait_of(server, "Thu, 01 Jan 1970 00:00:00 GMT") == 0
        assert _wait_of(server, "soon") == 60


def test_418_with_an_infinite_retry_after_bans_for_ten_minutes_at_most() -> None:
    """A 418 with Retry-After inf (no end time in its message) bans REST for at
    most MAX_RETRY_AFTER_S instead of crashing with OverflowError."""
    with FakeBinanceRest() as server:
        server.fail(418, retry_after="inf")
        client = RestClient(server.url)
        before = storage.now_ms()
        with pytest.raises(RestBannedError, match="banned this IP until") as ban:
            client.exchange_info_blocking()
        assert before < ban.value.until_ms <= storage.now_ms() + 600_000
        server.fail(418, retry_after="1e300")
        check = RestClient(server.url).check_symbols_blocking(["BTCUSDT"])
        assert not check.checked and "HTTP 418" in check.note


def test_headless_stream_starts_despite_a_418_with_retry_after_inf(
    tmp_path: Path,
) -> None:
    """``ingestion.py stream`` facing a 418 with Retry-After inf notes the skipped
    symbol check and streams (it exited 1 with OverflowError before)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    with FakeBinanceRest() as server:
        server.fail(418, retry_after="inf", times=None)
        proc = subprocess.run(
            [sys.executable, str(repo / "ingestion.py"), "stream"]
            + ["--symbols", "btcusdt,ethusdt", "--db", str(tmp_path / "m.db")]
            + ["--url", f"ws://127.0.0.1:{free_port()}", "--rest-url", server.url]
            + ["--duration", "2", "--status-every", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "note: symbol check skipped" in proc.stderr and "HTTP 418" in proc.stderr
    assert "streaming BTCUSDT,ETHUSDT" in proc.stdout and "stopped:" in proc.stdout


@pytest.mark.parametrize(
    ("n_bytes", "declare", "message"),
    [
        (300 << 20, True, "is 314,572,800 bytes, over the 32 MB limit"),
        (100 << 20, False, "is over the 32 MB limit"),
    ],
)
def test_oversized_answer_is_refused_in_bounded_memory(
    n_bytes: int, declare: bool, message: str
) -> None:
    """A REST answer over MAX_RESPONSE_BYTES is refused unread (Content-Length) or
    once past the limit, holding about the limit at most (it was read whole)."""
    import tracemalloc

    with FakeBinanceRest() as server:
        server.serve_huge(n_bytes, declare_length=declare)
        client = RestClient(server.url, timeout_s=30)
        tracemalloc.start()
        try:
            with pytest.raises(RestUnavailableError, match=message):
                client.try_request("/fapi/v1/exchangeInfo", {}, 1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    print(f"{n_bytes >> 20} MB answer (declared={declare}): peak {peak / 2**20:.1f} MB")
    assert peak < MAX_RESPONSE_BYTES * 2 + (8 << 20)
    assert MAX_RESPONSE_BYTES == 32 << 20
