"""Tests of replay.py: Binance's stream protocol over real WebSockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller
from websockets.asyncio.client import connect

from replay import (
    ReplayServer,
    SyntheticPair,
    encode_text_frame,
    file_events,
    read_trades_csv,
    start_replay_in_thread,
)

REPO = Path(__file__).resolve().parent.parent
SET_B = "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
SET_A = "usdm_trade_frames_btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz"
SET_2023 = "usdm_trade_frames_btcusdt_20230404T2358_20230405T0007.jsonl.gz"


def source_trades(path: Path) -> list[dict]:
    """The trade payloads of a recorded frames file, parsed with plain json."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["data"] for line in fh if line.strip()]


async def collect(url: str, *, idle_s: float = 0.5, send: list[dict] = ()) -> list:
    """Receive every message until the connection is idle for ``idle_s`` seconds."""
    out: list = []
    async with connect(url, compression=None, max_size=None) as ws:
        for request in send:
            await ws.send(json.dumps(request))
        while True:
            try:
                out.append(await asyncio.wait_for(ws.recv(), idle_s))
            except TimeoutError:
                return out


def test_combined_stream_replays_every_recorded_frame_exactly(shared_data: Path):
    """Every recorded trade comes back in a combined envelope with unchanged values."""
    path = shared_data / "derived" / SET_2023
    src = source_trades(path)

    async def scenario() -> list:
        async with ReplayServer(files=[path], speed=0) as srv:
            assert srv.url.startswith("ws://127.0.0.1:")
            return await collect(srv.url + "/stream?streams=btcusdt@trade")

    got = [json.loads(m) for m in asyncio.run(scenario())]
    assert len(got) == len(src) == 12_935
    assert {g["stream"] for g in got} == {"btcusdt@trade"}
    assert [g["data"] for g in got] == src


def test_raw_route_serves_only_the_requested_symbol(shared_data: Path, tmp_path):
    """``/ws/ethusdt@trade`` sends bare payloads of ETHUSDT trades only."""
    lines = gzip.open(shared_data / "derived" / SET_A, "rt").readlines()[:4000]
    path = tmp_path / "head.ndjson.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(lines)
    eth = [d for d in source_trades(path) if d["s"] == "ETHUSDT"]
    replay = start_replay_in_thread(files=[path], speed=0)
    try:
        got = [
            json.loads(m)
            for m in asyncio.run(collect(replay.url + "/ws/ethusdt@trade"))
        ]
    finally:
        replay.stop()
    assert len(got) == len(eth) > 1000
    assert got == eth


def test_subscribe_unsubscribe_and_list_are_answered_as_binance_does(
    shared_data: Path,
):
    """SUBSCRIBE/UNSUBSCRIBE ack with result null, LIST_SUBSCRIPTIONS lists streams."""

    async def scenario(url: str) -> list[str]:
        replies = []
        async with connect(url + "/ws", compression=None) as ws:
            requests = [
                {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1},
                {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 2},
                {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3},
                {"method": "LIST_SUBSCRIPTIONS", "id": 4},
            ]
            for req in requests:
                await ws.send(json.dumps(req))
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 5)
                    if '"id"' in msg and '"e"' not in msg:
                        replies.append(msg)
                        break
        return replies

    replay = start_replay_in_thread(files=[shared_data / "derived" / SET_A], speed=1)
    try:
        replies = asyncio.run(scenario(replay.url))
    finally:
        replay.stop()
    assert replies == [
        '{"result":null,"id":1}',
        '{"result":null,"id":2}',
        '{"result":null,"id":3}',
        '{"result":["ethusdt@trade"],"id":4}',
    ]


def test_market_route_acks_and_stays_silent(shared_data: Path):
    """On the wrong route (``/market``) @trade is acked and then nothing arrives."""
    replay = start_replay_in_thread(files=[shared_data / "derived" / SET_A], speed=0)
    try:
        got = asyncio.run(
            collect(
                replay.url + "/market/stream?streams=btcusdt@trade",
                send=[{"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}],
            )
        )
    finally:
        replay.stop()
    assert got == ['{"result":null,"id":7}']


def test_trades_csv_replays_the_same_trades_as_the_recorded_frames(shared_data: Path):
    """The public-data CSV layout (header or not) yields the recorded trades."""
    frames = source_trades(shared_data / "derived" / SET_B)
    csv_path = shared_data / "derived_csv" / "ETHUSDT-trades-2024-08-08-span.csv"
    events = list(read_trades_csv(csv_path))
    want = [
        (d["t"], d["T"], Decimal(d["p"]), Decimal(d["q"]), d["m"])
        for d in frames
        if d["s"] == "ETHUSDT"
    ]
    got = []
    for ev in events:
        d = json.loads(ev.payload)
        assert ev.stream == "ethusdt@trade" and d["s"] == "ETHUSDT"
        got.append((d["t"], d["T"], Decimal(d["p"]), Decimal(d["q"]), d["m"]))
    assert sorted(got) == sorted(want)
    no_header = list(
        read_trades_csv(
            shared_data / "derived_csv" / "BTCUSDT-trades-2024-07-18-span.csv"
        )
    )
    assert len(no_header) == 10_701
    assert json.loads(no_header[0].payload)["t"] == 5182005737


def test_several_files_are_merged_by_time(shared_data: Path):
    """Two per-symbol CSVs merge into one stream ordered by trade time."""
    paths = [
        shared_data / "derived_csv" / "BTCUSDT-trades-2024-08-08-span.csv",
        shared_data / "derived_csv" / "ETHUSDT-trades-2024-08-08-span.csv",
    ]
    events = list(file_events(paths))
    times = [ev.t_ms for ev in events]
    assert len(events) == 21_313 + 14_076
    assert times == sorted(times)
    assert {ev.stream for ev in events} == {"btcusdt@trade", "ethusdt@trade"}


def test_loop_passes_continue_trade_ids_and_times(shared_data: Path, tmp_path):
    """With loop, a second pass shifts ids past the first pass so ids keep rising."""
    full = shared_data / "derived_csv" / "ETHUSDT-trades-2024-07-18-span.csv"
    path = tmp_path / "ETHUSDT-trades-head.csv"
    path.write_text("".join(full.read_text().splitlines(keepends=True)[:300]))
    gen = file_events([path], loop=True)
    events = [next(gen) for _ in range(300 * 2 + 10)]
    ids = [json.loads(ev.payload)["t"] for ev in events]
    times = [json.loads(ev.payload)["T"] for ev in events]
    assert all(b == a + 1 for a, b in zip(ids, ids[1:], strict=False))
    assert times[300] > times[299]


def test_ndjson_lines_with_receive_timestamps_are_read(shared_data: Path, tmp_path):
    """hftbacktest lines (``<ns> {frame}``) replay their @trade frames, REST skipped."""
    src = shared_data / "ws_hftbacktest" / "usdm_btcusdt_20240718.gz"
    events = [ev for ev in file_events([src]) if ev.stream == "btcusdt@trade"]
    assert len(events) == 974  # SOURCES.md table
    assert all(json.loads(ev.payload)["e"] == "trade" for ev in events)


def test_synthetic_pair_is_realistic_and_cointegrated():
    """Synthetic trades sit on the tick/lot grid, ids rise, the spread mean-reverts."""
    pair = SyntheticPair(rate=40.0, seed=7)
    t0 = 1_800_000_000.0
    events = []
    for k in range(int(900 / 0.1)):  # 15 simulated minutes in 100 ms steps
        events.extend(pair.step(t0 + k * 0.1))
    rows = [json.loads(ev.payload) for ev in events]
    frame = pd.DataFrame(rows)
    assert set(frame["s"]) == {"BTCUSDT", "ETHUSDT"}
    for sym, tick in (("BTCUSDT", Decimal("0.1")), ("ETHUSDT", Decimal("0.01"))):
        sub = frame[frame["s"] == sym]
        assert sub["t"].is_monotonic_increasing and sub["t"].is_unique
        assert all(Decimal(p) % tick == 0 for p in sub["p"])
        assert all(
            Decimal(q) % Decimal("0.001") == 0 and Decimal(q) > 0 for q in sub["q"]
        )
    assert (frame["X"] == "MARKET").all()
    per_s = frame.groupby(frame["T"] // 1000).size()
    assert per_s.max() > 4 * per_s.median()  # bursts
    assert 0.7 * 40 < len(frame) / 900 < 3 * 40
    frame["px"] = frame["p"].astype(float)
    secs = frame.pivot_table(
        index=frame["T"] // 1000, columns="s", values="px", aggfunc="last"
    )
    secs = secs.ffill().dropna()
    y, x = secs["BTCUSDT"].to_numpy(), secs["ETHUSDT"].to_numpy()
    assert 55_000 < y.mean() < 75_000 and 2_900 < x.mean() < 3_900
    beta, alpha = np.polyfit(x, y, 1)
    resid = y - (alpha + beta * x)
    adf = adfuller(resid, maxlag=10, autolag=None, regression="c", result_object=True)
    assert adf.pvalue < 0.01  # statsmodels ADF: the residual is stationary
    roll = pd.Series(resid).rolling(60)
    z = (pd.Series(resid) - roll.mean()) / roll.std()
    assert (z.abs() > 2).any()


def test_synthetic_server_keeps_ids_increasing_across_reconnects():
    """Reconnecting to the synthetic feed never sees a trade id again."""

    async def two_sessions(url: str) -> list[int]:
        ids: list[int] = []
        for _ in range(2):
            async with connect(url + "/ws/btcusdt@trade", compression=None) as ws:
                for _ in range(5):
                    ids.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["t"])
        return ids

    replay = start_replay_in_thread(synthetic=True, seed=3, rate=400.0)
    try:
        ids = asyncio.run(two_sessions(replay.url))
    finally:
        replay.stop()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_encode_text_frame_matches_rfc6455_lengths():
    """Frames use the 7-bit, 16-bit and 64-bit length forms of RFC 6455."""
    assert encode_text_frame("a")[:2] == b"\x81\x01"
    assert encode_text_frame("a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert encode_text_frame("a" * 70_000)[:2] == b"\x81\x7f"
    assert len(encode_text_frame("a" * 70_000)) == 70_000 + 10


def test_bad_arguments_are_rejected_with_the_rule():
    """Missing files, two sources, negative speed raise ValueError naming the rule."""
    with pytest.raises(ValueError, match="source: give either files or synthetic"):
        ReplayServer()
    with pytest.raises(ValueError, match="files: no such file"):
        ReplayServer(files=["/nonexistent.ndjson"])
    with pytest.raises(ValueError, match=r"speed: must be a finite number >= 0"):
        ReplayServer(synthetic=True, speed=-1)
    with pytest.raises(ValueError, match=r"rate: must be > 0"):
        SyntheticPair(rate=0)
    assert math.isfinite(SyntheticPair(seed=1).rate)


def test_cli_serve_prints_its_url_and_serves(shared_data: Path, tmp_path):
    """``python replay.py serve --file F --port 0`` prints a loopback URL and serves."""
    lines = gzip.open(shared_data / "derived" / SET_2023, "rt").readlines()[:500]
    small = tmp_path / "head.ndjson"
    small.write_text("".join(lines))
    proc = subprocess.Popen(
        [
            sys.executable,
            "replay.py",
            "serve",
            "--file",
            str(small),
            "--speed",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("replay server listening on ws://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        got = asyncio.run(collect(url + "/ws/btcusdt@trade"))
        assert len(got) == 500
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, proc.stderr.read()


def test_synthetic_symbols_trade_at_plausible_levels():
    """Added symbols trade near their own market level (SOLUSDT about 150, XRPUSDT
    about 0.55, an unknown one at the documented 100), not at ETH's; BTC/ETH as
    before."""
    import json as json_module

    import replay

    pair = replay.SyntheticPair(
        ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ABCUSDT"], rate=400.0, seed=3
    )
    last: dict[str, float] = {}
    for k in range(1, 200):
        for ev in pair.step(1000.0 + 0.05 * k):
            data = json_module.loads(ev.payload)
            last[data["s"]] = float(data["p"])
    assert last["BTCUSDT"] == pytest.approx(64_000, rel=0.02)
    assert last["ETHUSDT"] == pytest.approx(3_400, rel=0.02)
    assert last["SOLUSDT"] == pytest.approx(150, rel=0.02)
    assert last["XRPUSDT"] == pytest.approx(0.55, rel=0.02)
    assert last["ABCUSDT"] == pytest.approx(replay.SYNTHETIC_DEFAULT[0], rel=0.02)
