"""Tests of ingestion.py over real WebSockets on 127.0.0.1 and real SQLite files."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError
from websockets.http11 import Response

import storage
from ingestion import (
    Backoff,
    IngestionConfig,
    IngestionService,
    ParseResult,
    describe_error,
    parse_frame,
    stream_url,
)
from models import Tick
from replay import start_replay_in_thread

REPO = Path(__file__).resolve().parent.parent
SET_A = "usdm_trade_frames_btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz"
SET_B = "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
SET_2023 = "usdm_trade_frames_btcusdt_20230404T2358_20230405T0007.jsonl.gz"
FAST = {
    "flush_interval_s": 0.05,
    "backoff_initial_s": 0.01,
    "backoff_max_s": 0.05,
    "lease_retry_s": 0.1,
    "heartbeat_s": 0.2,
    "open_timeout_s": 5.0,
}


# ------------------------------------------------------------------------ helpers


def frame_lines(shared: Path, name: str, limit: int | None = None) -> list[str]:
    """Raw frame lines of a derived recording (optionally the first ``limit``)."""
    with gzip.open(shared / "derived" / name, "rt", encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip()]
    return lines[:limit] if limit else lines


def source_ticks(lines: list[str]) -> pd.DataFrame:
    """MARKET trades of frame lines, parsed independently with json and Decimal."""
    rows = []
    for line in lines:
        d = json.loads(line)["data"]
        if d["X"] == "MARKET":
            rows.append(
                (
                    d["s"],
                    d["t"],
                    d["T"],
                    float(Decimal(d["p"])),
                    float(Decimal(d["q"])),
                    d["m"],
                )
            )
    return pd.DataFrame(
        rows, columns=["symbol", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker"]
    )


def stored_ticks(db: Path) -> pd.DataFrame:
    """Every stored tick, read with plain sqlite3 (independent of storage readers)."""
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query(
            "SELECT symbol, trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks "
            "ORDER BY symbol, trade_id",
            conn,
        )


def stored_gaps(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT symbol, from_id, to_id FROM gaps").fetchall()


def tick_count(db: Path) -> int:
    """Stored ticks, 0 while the file or its schema does not exist yet."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM ticks").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``cond`` until true; fail with a message after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def config(db: Path, url: str, symbols=("BTCUSDT", "ETHUSDT"), **kw) -> IngestionConfig:
    return IngestionConfig(
        symbols=tuple(symbols), db_path=db, base_url=url, **{**FAST, **kw}
    )


class ScriptedServer:
    """A WebSocket server on 127.0.0.1 that misbehaves on purpose per connection.

    ``handler(ws, n)`` runs for the n-th connection (0-based).
    """

    def __init__(
        self,
        handler: Callable[[ServerConnection, int], Awaitable[None]],
        process_request: Callable | None = None,
    ) -> None:
        self.handler = handler
        self.connections = 0
        self.attempts = 0
        self._process_request = process_request
        self._stop = threading.Event()
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),))
        self._thread.daemon = True
        self._thread.start()
        ready.wait(10)

    async def _main(self, ready: threading.Event) -> None:
        async def handle(ws: ServerConnection) -> None:
            n = self.connections
            self.connections += 1
            await self.handler(ws, n)

        def process_request(conn, request):
            self.attempts += 1
            if self._process_request is not None:
                return self._process_request(conn, request)
            return None

        async with serve(
            handle, "127.0.0.1", 0, compression=None, process_request=process_request
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


async def send_all(ws: ServerConnection, lines: list[str]) -> None:
    for line in lines:
        await ws.send(line)


# -------------------------------------------------------------------------- parser


def test_every_recorded_trade_frame_parses_to_the_source_values(shared_data: Path):
    """Each recorded @trade frame parses; ids, prices, quantities and times equal it."""
    for name, n_market in ((SET_A, 24_356), (SET_B, 35_389), (SET_2023, 12_934)):
        lines = frame_lines(shared_data, name)
        want = source_ticks(lines)
        results = [parse_frame(line, 0) for line in lines]
        ticks = [r.tick for r in results if r.kind == "trade"]
        got = pd.DataFrame(
            [
                (t.symbol, t.trade_id, t.ts_ms, t.price, t.qty, t.is_buyer_maker)
                for t in ticks
            ],
            columns=want.columns,
        )
        assert len(got) == n_market
        pd.testing.assert_frame_equal(got, want)
        assert not [r for r in results if r.kind in ("malformed", "ignored")]
    filtered = [r for r in results if r.kind == "filtered"]
    assert len(filtered) == 1  # the INSURANCE_FUND print of 2023-04-05
    assert (filtered[0].symbol, filtered[0].trade_id) == ("BTCUSDT", 3535191080)
    assert filtered[0].reason == "non-market trade X=INSURANCE_FUND"


@pytest.mark.parametrize(
    ("name", "trades", "filtered"),
    [
        ("usdm_btcusdt_20230404.dat.gz", 2_197, 0),
        ("usdm_btcusdt_20230405.dat.gz", 10_737, 1),
        ("usdm_btcusdt_20240718.gz", 974, 0),
    ],
)
def test_mixed_stream_recordings_yield_trades_and_ignore_other_events(
    shared_data: Path, name: str, trades: int, filtered: int
):
    """bookTicker, depth and markPrice frames are ignored, never counted malformed."""
    kinds: dict[str, int] = {}
    events: set[str] = set()
    with gzip.open(shared_data / "ws_hftbacktest" / name, "rt") as fh:
        for line in fh:
            frame = line.split(" ", 1)[1]
            if '"stream"' not in frame:
                continue  # the one REST depth snapshot
            r = parse_frame(frame, 0)
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
            if r.kind == "ignored":
                events.add(r.reason)
    assert kinds.get("trade") == trades  # SOURCES.md table
    assert kinds.get("filtered", 0) == filtered
    assert "malformed" not in kinds
    assert {"event bookTicker", "event depthUpdate"} <= events


GOOD = {
    "e": "trade",
    "E": 1723161256323,
    "T": 1723161256322,
    "s": "BTCUSDT",
    "t": 5266583935,
    "p": "61800.30",
    "q": "0.006",
    "X": "MARKET",
    "m": False,
}


def framed(**changes) -> str:
    data = {**GOOD, **changes}
    data = {k: v for k, v in data.items() if v is not ...}
    return json.dumps({"stream": "btcusdt@trade", "data": data})


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"stream":"btcusdt@trade","data":{"e":"trade"', r"^bad JSON"),
        (b'{"stream":"btcusdt@trade","data":"\xff\xfe"}', r"^invalid UTF-8$"),
        ("[1, 2]", r"^frame is a JSON list, not an object$"),
        ('{"stream":"btcusdt@trade","data":[1]}', r"'data' is not a JSON object"),
        (framed(p=...), r"^missing field 'p'$"),
        (framed(e=...), r"^missing field 'e'$"),
        (framed(p="abc"), r"field 'p' is not numeric: 'abc'"),
        (framed(p="-1.5"), r"field 'p' must be a finite number > 0"),
        (framed(q="0"), r"field 'q' must be a finite number > 0"),
        (framed(p="NaN"), r"field 'p' must be a finite number > 0"),
        (framed(p=None), r"field 'p' must be a decimal string, got NoneType"),
        (framed(t=True), r"field 't' must be an integer >= 0, got True"),
        (framed(t="5266583935"), r"field 't' must be an integer >= 0"),
        (framed(T=1.5), r"field 'T' must be an integer > 0"),
        (framed(m="false"), r"field 'm' must be true or false"),
        (framed(s="BTC/USDT"), r"field 's' must be a symbol"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(raw, reason):
    """Bad JSON, bad UTF-8, missing fields and wrong types give 'malformed' + reason."""
    r = parse_frame(raw, 0)
    assert r.kind == "malformed" and r.tick is None
    assert re.search(reason, r.reason), r.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"p": "1e308", "q": "1e308"}, r"^field 'p' is '1e308': 1e100 or more would"),
        ({"p": "1e200", "q": "1e200"}, r"^field 'p' is '1e200': 1e100 or more would"),
        ({"q": "1e308"}, r"^field 'q' is '1e308': 1e100 or more would overflow sums$"),
        ({"p": 1e300}, r"^field 'p' is 1e\+300: 1e100 or more would overflow sums$"),
    ],
)
def test_huge_prices_or_quantities_are_rejected_before_they_overflow(changes, reason):
    """A price or quantity of 1e100 or more is malformed, so no sum is ever inf."""
    r = parse_frame(framed(**changes), 0)
    assert r.kind == "malformed" and r.tick is None
    assert re.search(reason, r.reason), r.reason


def test_acks_unknown_events_and_unknown_keys():
    """Acks and other events are ignored; an unknown payload key (st) is accepted."""
    assert parse_frame('{"result":null,"id":1}', 0).kind == "ignored"
    assert parse_frame('{"error":{"code":2,"msg":"x"},"id":3}', 0).kind == "ignored"
    ticker = '{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","s":"BTCUSDT"}}'
    assert parse_frame(ticker, 0) == ParseResult("ignored", reason="event bookTicker")
    r = parse_frame(framed(st="x"), 1723161256400)
    assert r.kind == "trade" and r.event_ms == 1723161256323
    assert r.tick == Tick("BTCUSDT", 5266583935, 1723161256322, 61800.3, 0.006, False)
    raw = parse_frame(json.dumps(GOOD).encode(), 0)  # raw payload, bytes
    assert raw.tick == r.tick


def test_stream_url_keeps_the_route_and_validates_symbols():
    """The URL is plain concatenation (``/public`` kept) of validated symbols."""
    assert (
        stream_url("wss://fstream.binance.com/public", ["btcusdt", "ETHUSDT"])
        == "wss://fstream.binance.com/public/stream?streams=btcusdt@trade/ethusdt@trade"
    )
    with pytest.raises(ValueError, match="symbol must be 2-20 letters or digits"):
        stream_url("wss://x/public", ["btc/usdt"])
    with pytest.raises(ValueError, match="base_url: must start with ws:// or wss://"):
        IngestionConfig(symbols=("BTCUSDT",), db_path=Path("x.db"), base_url="http://x")
    with pytest.raises(ValueError, match="watchdog_s: must be a number > 0, got 0"):
        IngestionConfig(symbols=("BTCUSDT",), db_path=Path("x.db"), watchdog_s=0)
    with pytest.raises(ValueError, match="symbols: give at least one symbol"):
        IngestionConfig(symbols=(), db_path=Path("x.db"))
    cfg = IngestionConfig(symbols=("ethusdt", "btcusdt", "ETHUSDT"), db_path="x.db")
    assert cfg.symbols == ("ETHUSDT", "BTCUSDT")


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets():
    """Delays lie in [d/2, d] for d = initial * factor^n capped; reset restarts."""
    b = Backoff(0.1, 2.0, 1.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    caps = [min(1.0, 0.1 * 2**n) for n in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    b.reset()
    assert 0.05 <= b.next_delay() <= 0.1


# ------------------------------------------------------------------- service, e2e


def bars_from_ticks(ticks: pd.DataFrame) -> pd.DataFrame:
    """1 s bars computed directly from ticks with pandas (open = lowest id)."""
    t = ticks.sort_values("trade_id").assign(
        bucket=lambda d: d["ts_ms"] // 1000 * 1000, notional=lambda d: d.price * d.qty
    )
    g = t.groupby("bucket")
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["qty"].sum(),
            "quote_volume": g["notional"].sum(),
            "trades": g.size(),
        }
    )
    out["vwap"] = out["quote_volume"] / out["volume"]
    return out


def test_service_stores_every_replayed_trade_and_exact_1s_bars(shared_data, db_path):
    """Replayed trades land once each; bars_1s equals bars computed from the ticks."""
    lines = frame_lines(shared_data, SET_2023)
    replay = start_replay_in_thread(files=[shared_data / "derived" / SET_2023], speed=0)
    svc = IngestionService(
        config(db_path, replay.url + "/public", ("BTCUSDT",), flush_max_ticks=333)
    )
    try:
        svc.start()
        # lag percentiles are computed twice a second: a fast machine can store
        # the whole replay before the first computation
        wait_until(
            lambda: (
                (s := svc.status()).stored_ticks >= 12_934 and s.lag_p50_ms is not None
            )
        )
        st = svc.status()
    finally:
        svc.stop()
        replay.stop()
    assert (st.total_ticks, st.filtered, st.gaps, st.duplicates, st.malformed) == (
        12_934,
        1,
        0,
        0,
        0,
    )
    assert st.state == "live" and st.role == "writer" and st.lag_p50_ms is not None
    assert svc.status().state == "stopped"
    want = source_ticks(lines)
    got = stored_ticks(db_path)
    got["is_buyer_maker"] = got["is_buyer_maker"].astype(bool)
    pd.testing.assert_frame_equal(got, want.sort_values("trade_id", ignore_index=True))
    assert stored_gaps(db_path) == []  # the INSURANCE_FUND id creates no gap
    bars = storage.read_bars_1s(db_path, "BTCUSDT", None, None)
    ref = bars_from_ticks(got)
    assert len(bars) == len(ref)
    ts = bars["ts"].dt.as_unit("ms").astype("int64").to_numpy()
    np.testing.assert_array_equal(ts, ref.index.to_numpy())
    for col in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
        np.testing.assert_allclose(
            bars[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12
        )
    np.testing.assert_array_equal(bars["trades"].to_numpy(), ref["trades"].to_numpy())


def test_dropped_connection_with_overlapping_replay_loses_and_duplicates_nothing(
    shared_data, db_path
):
    """A server that drops mid-stream and replays overlap leaves every trade once."""
    lines = frame_lines(shared_data, SET_A, 1500)

    async def handler(ws, n):
        if n == 0:
            await send_all(ws, lines[:900])
            ws.transport.abort()  # abrupt drop, no close frame
        else:
            await send_all(ws, lines[600:])
            await ws.wait_closed()

    server = ScriptedServer(handler)
    svc = IngestionService(config(db_path, server.url))
    try:
        svc.start()
        wait_until(lambda: svc.status().stored_ticks >= 1500)
        st = svc.status()
    finally:
        svc.stop()
        server.stop()
    assert st.reconnects >= 1 and st.duplicates == 300 and st.gaps == 0
    got = stored_ticks(db_path)
    assert len(got) == 1500 and not got.duplicated(["symbol", "trade_id"]).any()
    assert stored_gaps(db_path) == []


def test_hole_in_trade_ids_becomes_one_gap_row_and_filtered_trade_none(
    shared_data, db_path
):
    """Skipped ids record one gap row; a non-MARKET trade advances the id silently."""
    lines = frame_lines(shared_data, SET_A, 400)
    btc = [i for i, line in enumerate(lines) if '"BTCUSDT"' in line]
    hole = btc[20:23]  # three consecutive BTC trades never arrive
    ids = [json.loads(lines[i])["data"]["t"] for i in hole]
    changed = {}
    for i, kind in ((btc[60], "INSURANCE_FUND"), (btc[-1], "ADL")):
        frame = json.loads(lines[i])
        frame["data"]["X"] = kind
        changed[i] = json.dumps(frame)
    last_btc_id = json.loads(lines[btc[-1]])["data"]["t"]
    sent = [changed.get(i, line) for i, line in enumerate(lines) if i not in hole]

    async def handler(ws, n):
        await send_all(ws, sent)
        await ws.wait_closed()

    server = ScriptedServer(handler)
    svc = IngestionService(config(db_path, server.url))
    try:
        svc.start()
        wait_until(lambda: svc.status().stored_ticks >= 395)
        st = svc.status()
    finally:
        svc.stop()
        server.stop()
    assert st.gaps == 1 and st.filtered == 2
    assert stored_gaps(db_path) == [("BTCUSDT", ids[0], ids[-1])]
    with storage.Writer(db_path) as writer:  # a restart resumes after the ADL print
        assert writer.last_trade_ids()["BTCUSDT"] == last_btc_id


def test_silent_server_triggers_the_watchdog_and_malformed_frames_are_skipped(
    shared_data, db_path
):
    """Silence past watchdog_s reconnects; malformed frames are counted and skipped."""
    lines = frame_lines(shared_data, SET_A, 600)
    junk = [
        "not json",
        '{"stream":"btcusdt@trade","data":{"e":"trade"}}',
        framed(p="0"),
    ]
    first = lines[:300]
    for k, bad in enumerate(junk):
        first.insert(50 + 100 * k, bad)

    async def handler(ws, n):
        if n == 0:
            await send_all(ws, first)
            await ws.wait_closed()  # open but silent: a half-open socket
        else:
            await send_all(ws, lines[250:])
            await ws.wait_closed()

    server = ScriptedServer(handler)
    svc = IngestionService(config(db_path, server.url, watchdog_s=1.0))
    try:
        svc.start()
        wait_until(lambda: svc.status().stored_ticks >= 600)
        st = svc.status()
    finally:
        svc.stop()
        server.stop()
    assert st.malformed == 3 and st.reconnects >= 1
    assert st.last_error == "no data for 1 s, reconnecting"
    assert len(stored_ticks(db_path)) == 600


def test_http_451_and_refused_connections_are_reported_and_retried(db_path):
    """A 451 handshake says so in plain words; the client keeps retrying."""

    def refuse(conn, request):
        return Response(451, "Unavailable For Legal Reasons", Headers(), b"")

    async def never(ws, n):  # pragma: no cover - handshake always refused
        return None

    server = ScriptedServer(never, refuse)
    svc = IngestionService(config(db_path, server.url))
    try:
        svc.start()
        wait_until(lambda: server.attempts >= 3)
        st = svc.status()
    finally:
        svc.stop()
        server.stop()
    assert st.state == "error"
    assert st.last_error == "HTTP 451 from the exchange (region blocked?)"
    svc = IngestionService(config(db_path, server.url))  # now nothing listens
    try:
        svc.start()
        wait_until(lambda: svc.status().last_error.startswith("connection refused"))
    finally:
        svc.stop()


def test_wrong_route_and_silent_symbol_are_flagged(db_path, tmp_path):
    """No trade on the route names the route; a silent symbol is named in warnings."""
    replay = start_replay_in_thread(synthetic=True, seed=5, rate=300.0)
    wrong = IngestionService(
        config(db_path, replay.url + "/market", no_trade_warn_s=0.3)
    )
    silent = IngestionService(
        config(
            tmp_path / "b.db",
            replay.url + "/public",
            ("BTCUSDT", "ETHUSDT", "XYZUSDT"),
            symbol_silent_s=0.5,
        )
    )
    try:
        wrong.start()
        silent.start()
        wait_until(lambda: wrong.status().warnings != ())
        wait_until(
            lambda: (
                "no trades for XYZUSDT: check the symbol" in silent.status().warnings
            )
        )
        warn = wrong.status().warnings[0]
    finally:
        wrong.stop()
        silent.stop()
        replay.stop()
    assert warn == (
        f"connected to {replay.url}/market/stream?streams=btcusdt@trade/ethusdt@trade "
        "but no trades arrived in 0.3 s: check the route (/market)"
    )


def test_second_service_attaches_read_only_then_takes_over(shared_data, db_path):
    """While one service holds the lease another is read-only; it takes over later."""
    replay = start_replay_in_thread(synthetic=True, seed=2, rate=200.0)
    first = IngestionService(config(db_path, replay.url))
    second = IngestionService(config(db_path, replay.url))
    try:
        first.start()
        wait_until(lambda: first.status().stored_ticks > 0)
        second.start()
        wait_until(lambda: second.status().state == "read-only")
        st = second.status()
        assert st.role == "read-only"
        assert st.lease_holder.startswith(
            f"read-only: ingestion by pid {os.getpid()} on "
        )
        first.stop()
        wait_until(lambda: second.status().role == "writer")
        wait_until(lambda: second.status().stored_ticks > 0)
    finally:
        first.stop()
        second.stop()
        replay.stop()
    got = stored_ticks(db_path)
    assert not got.duplicated(["symbol", "trade_id"]).any()


def test_locked_database_keeps_the_batch_and_retries(shared_data, db_path):
    """While another connection holds the write lock, ticks wait and then all land."""
    lines = frame_lines(shared_data, SET_A, 1000)
    go = threading.Event()

    async def handler(ws, n):
        await send_all(ws, lines[:500])
        while not go.is_set():
            await asyncio.sleep(0.01)
        await send_all(ws, lines[500:])
        await ws.wait_closed()

    server = ScriptedServer(handler)
    svc = IngestionService(config(db_path, server.url))
    try:
        svc.start()
        wait_until(lambda: svc.status().stored_ticks >= 500)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        go.set()
        wait_until(lambda: svc.status().total_ticks >= 1000)
        time.sleep(0.3)  # several flush attempts hit the lock
        assert svc.status().queue_depth == 500
        blocker.execute("ROLLBACK")
        blocker.close()
        wait_until(lambda: svc.status().stored_ticks >= 1000)
    finally:
        svc.stop()
        server.stop()
    assert len(stored_ticks(db_path)) == 1000


def test_planned_reconnect_and_restart_with_new_symbols(shared_data, db_path):
    """A planned reconnect loses nothing; restart() switches symbols without a leak."""
    lines = frame_lines(shared_data, SET_A, 800)

    async def handler(ws, n):
        await send_all(ws, lines)
        await ws.wait_closed()

    server = ScriptedServer(handler)
    ran = []

    async def task(service):
        ran.append(service.config.symbols)
        await asyncio.sleep(30)

    svc = IngestionService(
        config(db_path, server.url, planned_reconnect_s=1.0), tasks=[task]
    )
    try:
        svc.start()
        wait_until(lambda: svc.status().reconnects >= 1)
        threads = threading.active_count()
        svc.restart(["ETHUSDT"])
        assert svc.status().symbols == ("ETHUSDT",)
        wait_until(lambda: len(ran) == 2)
        assert threading.active_count() <= threads
        st = svc.status()
    finally:
        svc.stop()
        server.stop()
    assert svc.running is False
    assert ran == [("BTCUSDT", "ETHUSDT"), ("ETHUSDT",)]
    assert "stream?streams=ethusdt@trade" in st.url
    assert len(stored_ticks(db_path)) == 800


def cli(*args: str) -> list[str]:
    """The headless ingester's command line; REST stays off (tests never leave
    127.0.0.1)."""
    return [sys.executable, str(REPO / "ingestion.py"), "stream", "--no-rest", *args]


def test_abrupt_kill_loses_at_most_the_unflushed_batch_and_restart_resumes(
    shared_data, db_path, tmp_path
):
    """After SIGKILL the stored ticks are a clean prefix; a restart adds the rest."""
    lines = frame_lines(shared_data, SET_A, 6000)  # 224 s of trades
    small = tmp_path / "head.ndjson"
    small.write_text("\n".join(lines) + "\n")
    replay = start_replay_in_thread(files=[small], speed=20)
    proc = subprocess.Popen(
        cli("--symbols", "btcusdt,ethusdt", "--db", str(db_path), "--url", replay.url),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: tick_count(db_path) > 1000)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = stored_ticks(db_path)
        assert len(before) < len(lines)
        for _sym, grp in before.groupby("symbol"):
            ids = grp["trade_id"].to_numpy()
            assert (np.diff(ids) == 1).all()  # a prefix: nothing missing inside
        replay.stop()
        replay = start_replay_in_thread(files=[small], speed=0)
        svc = IngestionService(config(db_path, replay.url))
        svc.start()
        wait_until(lambda: tick_count(db_path) == len(lines), timeout=60)
        st = svc.status()
        svc.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
        replay.stop()
    assert st.duplicates == len(before)  # the replay restarts from the beginning
    assert st.gaps == 0 and stored_gaps(db_path) == []


def test_cli_stream_leaves_the_expected_ticks_bars_and_recording(
    shared_data, db_path, tmp_path
):
    """``ingestion.py stream --duration N`` stores every replayed trade and records."""
    lines = frame_lines(shared_data, SET_A, 2000)
    small = tmp_path / "head.ndjson"
    small.write_text("\n".join(lines) + "\n")
    record = tmp_path / "rec.ndjson"
    replay = start_replay_in_thread(files=[small], speed=0)
    try:
        done = subprocess.run(
            cli(
                "--symbols",
                "btcusdt,ethusdt",
                "--db",
                str(db_path),
                "--url",
                replay.url + "/public",
                "--duration",
                "4",
                "--record",
                str(record),
            ),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        replay.stop()
    assert done.returncode == 0, done.stderr
    assert "stopped: " in done.stdout and "stored=2000" in done.stdout
    assert len(stored_ticks(db_path)) == 2000
    stats = storage.db_stats(db_path)
    assert {s.symbol for s in stats.symbols} == {"BTCUSDT", "ETHUSDT"}
    assert all(s.bars_1s > 0 for s in stats.symbols)
    assert record.read_text().splitlines() == lines
    bad = subprocess.run(
        cli("--symbols", "btc/usdt", "--db", str(db_path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "symbol must be 2-20 letters or digits" in bad.stderr


def test_cli_exits_cleanly_on_sigterm_with_everything_flushed(
    shared_data, db_path, tmp_path
):
    """SIGTERM makes ``ingestion.py stream`` flush, print its final status, exit 0."""
    lines = frame_lines(shared_data, SET_A, 1500)
    small = tmp_path / "head.ndjson"
    small.write_text("\n".join(lines) + "\n")
    replay = start_replay_in_thread(files=[small], speed=0)
    proc = subprocess.Popen(
        cli("--symbols", "BTCUSDT,ETHUSDT", "--db", str(db_path), "--url", replay.url),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: tick_count(db_path) == 1500)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        replay.stop()
    assert proc.returncode == 0, err
    assert "stopped: stopped [writer] ticks=1500" in out


def test_connection_failures_are_described_in_plain_words():
    """DNS, refused, timeout and close errors become short plain-language texts."""
    url = "wss://fstream.example.invalid/public/stream?streams=btcusdt@trade"
    dns = socket.gaierror(-2, "Name or service not known")
    assert describe_error(dns, url) == (
        "DNS lookup failed for fstream.example.invalid: Name or service not known"
    )
    refused = ConnectionRefusedError(111, "Connection refused")
    assert describe_error(refused, url) == (
        "connection refused by fstream.example.invalid:443"
    )
    assert describe_error(TimeoutError(), url) == f"timed out opening {url}"
    closed = ConnectionClosedError(None, None)
    assert describe_error(closed, url) == "connection lost (no close frame)"


# --------------------------------------------------------------- live trade window


def test_live_window_is_on_against_an_exchange_and_off_for_local_replays():
    """The live window defaults to 24 h behind / 5 min ahead against an exchange,
    off against a loopback replay server, and can be set or turned off by hand."""
    import ingestion

    def window(url: str, **kw) -> tuple[int, int] | None:
        cfg = IngestionConfig(symbols=("BTCUSDT",), db_path="x.db", base_url=url, **kw)
        return cfg.trade_window_ms

    assert window("wss://fstream.binance.com/public") == (86_400_000, 300_000)
    assert window("ws://127.0.0.1:4000") is None
    assert window("ws://localhost:4000") is None
    assert window("ws://[::1]:4000") is None
    assert window("ws://127.0.0.1:4000", max_trade_age_s=3600) == (3_600_000, 300_000)
    assert window("wss://fstream.binance.com/public", max_trade_age_s=0) is None
    with pytest.raises(ValueError, match=r"^max_trade_age_s: must be >= 0 \(0: off\)"):
        window("wss://x/public", max_trade_age_s=-1)
    with pytest.raises(ValueError, match=r"^max_trade_age_s: must be a number or"):
        window("wss://x/public", max_trade_age_s="1d")
    parser, _ = ingestion.build_parser()
    args = parser.parse_args(["stream", "--symbols", "btcusdt", "--max-trade-age", "0"])
    assert args.max_trade_age == 0.0
    args = parser.parse_args(["stream", "--symbols", "btcusdt"])
    assert args.max_trade_age is None


def _timed_frames(now_ms: int) -> list[str]:
    """Five consecutive BTCUSDT trades: fresh, 3 days old, 10 min ahead, about
    2 500 days old, fresh (event times all at ``now_ms``)."""
    offsets = [0, -3 * 86_400_000, 600_000, -2_500 * 86_400_000 + 1, 5]
    return [
        framed(t=100 + i, T=max(now_ms + off, 1_546_300_800_000), E=now_ms)
        for i, off in enumerate(offsets)
    ]


def test_trades_outside_the_live_window_are_counted_malformed_and_not_stored(
    tmp_path, caplog
):
    """With the live window on, trades far behind or ahead of the receive time are
    counted as malformed with a logged reason, never stored, and leave a gap row;
    with the default against 127.0.0.1 (a replay) all of them are stored."""
    lines = _timed_frames(int(time.time() * 1000))

    async def handler(ws, n):
        await send_all(ws, lines)
        await ws.wait_closed()

    server = ScriptedServer(handler)
    live_db, replay_db = tmp_path / "live.db", tmp_path / "replay.db"
    live = IngestionService(config(live_db, server.url, max_trade_age_s=86_400))
    try:
        with caplog.at_level("WARNING", logger="ingestion"):
            live.start()
            wait_until(lambda: live.status().malformed == 3)
            wait_until(lambda: live.status().stored_ticks == 2)
        st = live.status()
    finally:
        live.stop()
    replay = IngestionService(config(replay_db, server.url))
    try:
        replay.start()
        wait_until(lambda: replay.status().stored_ticks == 5)
        replayed = replay.status()
    finally:
        replay.stop()
        server.stop()
    assert stored_ticks(live_db)["trade_id"].tolist() == [100, 104]
    assert stored_gaps(live_db) == [("BTCUSDT", 101, 103)]
    assert (st.malformed, st.gaps) == (3, 1)
    skipped = [
        r.getMessage() for r in caplog.records if "live window" in r.getMessage()
    ]
    assert len(skipped) == 3
    assert re.search(r"field 'T' is \S+, 259200 s before the receive time", skipped[0])
    assert re.search(
        r", 600 s after the receive time: outside the live window", skipped[1]
    )
    assert replayed.malformed == 0
    assert stored_ticks(replay_db)["trade_id"].tolist() == [100, 101, 102, 103, 104]


# --------------------------------------------------------------- import leftovers


def test_service_start_removes_leftovers_of_killed_imports(tmp_path, caplog):
    """Starting the ingestion service on a SQLite database deletes the hidden copies
    of imports whose process is gone (beside it in datasets/) and logs what it
    reclaimed; the copy of a running import is kept."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time_ns()
    dead = folder / f".eth.importing-{gone.pid}-{now}.db"
    mine = folder / f".btc.importing-{os.getpid()}-{now}.db"
    for path in (dead, Path(f"{dead}-wal"), mine):
        path.write_bytes(b"x" * 2048)
    svc = IngestionService(config(tmp_path / "market.db", "ws://127.0.0.1:9"))
    try:
        with caplog.at_level("WARNING", logger="ingestion"):
            svc.start()
            wait_until(lambda: not dead.exists(), timeout=10.0)
    finally:
        svc.stop()
    assert sorted(p.name for p in folder.iterdir()) == [mine.name]
    notes = [r.getMessage() for r in caplog.records if "leftover" in r.getMessage()]
    assert notes == [
        f"removed 2 leftover files (0.0 MB) from killed imports "
        f"(datasets of {tmp_path / 'market.db'})"
    ]
