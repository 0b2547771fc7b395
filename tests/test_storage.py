"""Tests for storage.py on both backends: real SQLite files under tmp_path and a
throw-away PostgreSQL 15 cluster on 127.0.0.1 (tests/pg_fixture.py).

The `backend` fixture runs every test that touches a database once per backend;
PostgreSQL runs skip with the install command when its binaries or psycopg are
missing. Tests of SQLite mechanisms (PRAGMA, WAL, files, integrity_check) skip on
PostgreSQL saying why; tests/test_storage_pg.py covers PostgreSQL's own.

Reference bars are computed here with pandas straight from the stored (or source)
ticks; the recorded Binance trades come from ../shared via the `shared_data` fixture.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage
from models import BAR_COLUMNS, Gap, Tick
from storage import (
    AlertRuleRow,
    BatchResult,
    DatabaseLockedError,
    LeaseOwner,
    StorageError,
    Writer,
)

HOST = socket.gethostname()
BACKENDS = ("sqlite", "postgres")
DERIVED = "derived"
FILE_2024_08 = "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
FILE_2024_07 = "usdm_trade_frames_btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz"
FILE_2023 = "usdm_trade_frames_btcusdt_20230404T2358_20230405T0007.jsonl.gz"


# --------------------------------------------------------------------------- helpers


def load_market_ticks(path: Path) -> list[Tick]:
    """MARKET trades of a recorded combined-stream NDJSON.gz file, parsed with json."""
    ticks = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            d = json.loads(line)["data"]
            if d["X"] != "MARKET":
                continue
            ticks.append(
                Tick(d["s"], d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"])
            )
    return ticks


def ticks_frame(ticks: list[Tick]) -> pd.DataFrame:
    """Ticks as a frame with ts (UTC), trade_id, price, qty."""
    return pd.DataFrame(
        {
            "symbol": [t.symbol for t in ticks],
            "ts": pd.to_datetime([t.ts_ms for t in ticks], unit="ms", utc=True),
            "trade_id": [t.trade_id for t in ticks],
            "price": [t.price for t in ticks],
            "qty": [t.qty for t in ticks],
        }
    )


def pandas_bars(ticks: pd.DataFrame, freq: str = "1s") -> pd.DataFrame:
    """Reference bars: open/close by lowest/highest trade id per bucket, pandas only."""
    df = ticks.sort_values("trade_id").copy()
    df["bucket"] = df["ts"].dt.floor(freq)
    df["pq"] = df["price"] * df["qty"]
    g = df.groupby("bucket", sort=True)
    out = pd.DataFrame(
        {
            "open": g["price"].first(),
            "high": g["price"].max(),
            "low": g["price"].min(),
            "close": g["price"].last(),
            "volume": g["qty"].sum(),
            "quote_volume": g["pq"].sum(),
            "trades": g["price"].size().astype("int64"),
        }
    )
    out["vwap"] = out["quote_volume"] / out["volume"]
    return out.rename_axis("ts").reset_index()


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Compare bar frames: exact times, prices and counts; sums to 1e-9 relative."""
    assert list(got.columns) == list(BAR_COLUMNS)
    assert len(got) == len(want)
    np.testing.assert_array_equal(
        got["ts"].dt.as_unit("ms").astype("int64").to_numpy(),
        want["ts"].dt.as_unit("ms").astype("int64").to_numpy(),
    )
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    np.testing.assert_array_equal(got["trades"].to_numpy(), want["trades"].to_numpy())
    for col in ("volume", "quote_volume", "vwap"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-9)


def tick(symbol: str, trade_id: int, ts_ms: int, price: float, qty: float = 1.0):
    """A Tick with is_buyer_maker False."""
    return Tick(symbol, trade_id, ts_ms, price, qty, False)


def batches_of(ticks: list[Tick], rng: random.Random, max_size: int) -> list[list]:
    """Split ticks into consecutive batches of random size 1..max_size."""
    out, i = [], 0
    while i < len(ticks):
        n = rng.randint(1, max_size)
        out.append(ticks[i : i + n])
        i += n
    return out


T0 = 1_723_161_256_000  # 2024-08-08 23:54:16 UTC


def sqlite_only(backend: str, why: str) -> None:
    """Skip a PostgreSQL run of a test of a SQLite mechanism, saying why."""
    if backend != "sqlite":
        pytest.skip(f"SQLite-specific ({why}); PostgreSQL: see test_storage_pg.py")


def is_file(target: object) -> bool:
    """True for a SQLite file target (a Path), False for a PostgreSQL URL."""
    return isinstance(target, Path)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test ("sqlite" or "postgres")."""
    if request.param == "postgres":
        request.getfixturevalue("pg_cluster")  # skips when PostgreSQL is missing
    return request.param


@pytest.fixture()
def pg_db(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test (None on SQLite)."""
    if backend != "postgres":
        yield None
        return
    yield request.getfixturevalue("pg_url")


@pytest.fixture()
def db_path(tmp_path: Path, pg_db: str | None) -> Path | str:
    """A fresh database target: a file under tmp_path, or a fresh PG database URL."""
    return tmp_path / "market.db" if pg_db is None else pg_db


@pytest.fixture()
def new_db(tmp_path: Path, pg_db: str | None) -> Callable[[str], Path | str]:
    """Factory of further fresh targets: a file, or a schema of the test database."""

    made = itertools.count()

    def make(name: str) -> Path | str:
        if pg_db is None:
            return tmp_path / name
        # a counter too: hypothesis reseeds `random`, so names may repeat
        schema = f"s{next(made)}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        return f"{pg_db}?schema={schema[:63]}"

    return make


@pytest.fixture()
def dataset_base(tmp_path: Path, pg_db: str | None) -> Path | str:
    """Base of the dataset functions: a directory, or the test database URL."""
    return tmp_path if pg_db is None else pg_db


@contextmanager
def write_lock_held(target: Path | str) -> Iterator[None]:
    """Another connection holds the write lock of `target` inside the block."""
    if is_file(target):
        other = sqlite3.connect(target, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as other, other.transaction():
        other.execute("LOCK TABLE ticks, bars_1s IN EXCLUSIVE MODE")
        yield


@pytest.fixture()
def writer(db_path: Path):
    """An open Writer on a fresh database, closed after the test."""
    w = Writer(db_path)
    yield w
    w.close()


@pytest.fixture(scope="module")
def real_ticks(shared_data: Path) -> list[Tick]:
    """MARKET ticks of the 2024-08-08 BTC/ETH recording (35 389 trades)."""
    return load_market_ticks(shared_data / DERIVED / FILE_2024_08)


@pytest.fixture(scope="module")
def real_db(
    real_ticks: list[Tick], backend: str, tmp_path_factory, request
) -> Iterator[Path | str]:
    """A database holding the 2024-08-08 recording, written in batches of 5 000."""
    cluster = None
    if backend == "sqlite":
        path: Path | str = tmp_path_factory.mktemp("real") / "real.db"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        path = cluster.create_database("real")
    with Writer(path) as w:
        for i in range(0, len(real_ticks), 5000):
            w.write_batch(real_ticks[i : i + 5000])
    yield path
    if cluster is not None:
        storage.close_readers()
        cluster.drop_database(path)


# --------------------------------------------------------------------------- schema


def test_schema_contract_tables_and_columns(
    writer: Writer, db_path: Path, backend: str
) -> None:
    """The contract tables exist with their columns, WAL and the schema version."""
    sqlite_only(backend, "PRAGMA table_info, journal_mode and user_version")
    con = sqlite3.connect(db_path)
    cols = {
        t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
        for t in ("ticks", "bars_1s", "gaps", "bars", "writer_lease")
    }
    assert cols["ticks"] == [
        "symbol",
        "trade_id",
        "ts_ms",
        "price",
        "qty",
        "is_buyer_maker",
    ]
    assert cols["bars_1s"][:10] == ["symbol", "ts_ms", *BAR_COLUMNS[1:]]
    assert {"first_id", "last_id"} <= set(cols["bars_1s"])
    assert cols["gaps"][1:] == [
        "symbol",
        "from_id",
        "to_id",
        "detected_ms",
        "filled_by",
        "filled_ms",
        "fill_detail",
    ]
    assert cols["bars"] == [
        "symbol",
        "interval_s",
        "ts_ms",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
    ]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    con.close()


def test_reopen_keeps_data_and_newer_schema_is_refused(
    db_path: Path, backend: str
) -> None:
    """Reopening migrates nothing twice, and a newer schema version is refused."""
    sqlite_only(backend, "PRAGMA user_version")
    with Writer(db_path) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 100.0)])
    with Writer(db_path) as w:
        assert w.last_trade_ids() == {"BTCUSDT": 1}
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StorageError, match=r"^open failed: database schema version"):
        Writer(db_path)


def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    """Another program's SQLite file is refused before WAL or tables touch it."""
    path = tmp_path / "notes.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(
        StorageError,
        match=r"^open failed: .*notes\.db is not a PairDesk database \(it has tables "
        r"notes and no PairDesk schema version\); it was left untouched$",
    ):
        Writer(path)
    assert path.read_bytes() == before  # still journal_mode=delete, no new tables
    assert not Path(f"{path}-wal").exists()


def test_newer_schema_is_an_error_for_readers_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """With no writer, reading or exporting a newer-schema file fails and says why."""
    path = tmp_path / "market.db"
    with Writer(path) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 100.0)])
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    con.close()
    newer = rf"is newer than this program's {storage.SCHEMA_VERSION}: use a newer"
    with pytest.raises(StorageError, match=rf"^read failed: .*{newer}"):
        storage.read_bars_1s(path, "BTCUSDT", None, None)
    import ingestion

    out = tmp_path / "bars.csv"
    argv = ["export", "bars", "--symbol", "BTCUSDT", "--interval", "1s"]
    code = ingestion.main([*argv, "--db", str(path), "--out", str(out)])
    assert code != 0
    assert re.search(newer, capsys.readouterr().err)


def test_writer_reopens_a_backup_moved_over_its_file(tmp_path: Path) -> None:
    """A consistent copy moved over the file: the writer reopens it, never
    applies its old log to it, and reports the ticks and ids the copy lacks."""
    path, copy = tmp_path / "market.db", tmp_path / "copy.db"
    w = Writer(path)
    w.write_batch([tick("BTCUSDT", i, T0 + i, 100.0) for i in range(1, 11)])
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    w.write_batch([tick("BTCUSDT", i, T0 + i, 101.0) for i in range(11, 21)])
    assert w.reopen_if_changed() is None
    os.replace(copy, path)
    change = w.reopen_if_changed()
    assert change is not None and change.kind == "replaced"
    assert re.fullmatch(
        r".*market\.db is another file now \(inode \d+, was \d+\)", change.detail
    )
    assert (change.lost_ticks, dict(change.missing)) == (10, {"BTCUSDT": (11, 20)})
    w.write_batch([tick("BTCUSDT", 21, T0 + 21, 102.0)])
    w.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [r[0] for r in con.execute("SELECT trade_id FROM ticks ORDER BY trade_id")]
    con.close()
    assert ids == [*range(1, 11), 21]


def test_writer_creates_parent_directories(tmp_path: Path) -> None:
    """A Writer on a path in missing directories creates them."""
    path = tmp_path / "a" / "b" / "market.db"
    with Writer(path) as w:
        assert w.path == path
    assert path.is_file()


def test_writer_rejects_negative_timeout(db_path: Path) -> None:
    """A negative busy timeout is a caller mistake named in the message."""
    with pytest.raises(ValueError, match=r"busy_timeout_ms must be an integer >= 0"):
        Writer(db_path, busy_timeout_ms=-1)


def test_closed_writer_raises_storage_error(db_path: Path) -> None:
    """Calls on a closed writer raise StorageError naming the operation."""
    w = Writer(db_path)
    w.close()
    w.close()
    with pytest.raises(StorageError, match=r"^write_batch failed: writer .* is closed"):
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])


# --------------------------------------------------------------------------- bars


def test_real_trades_bars_equal_pandas_with_random_batches(
    real_ticks: list[Tick], db_path: Path
) -> None:
    """bars_1s built over many random-size batches equals pandas bars of the ticks."""
    rng = random.Random(7)
    with Writer(db_path) as w:
        total = 0
        for batch in batches_of(real_ticks, rng, 400):
            total += w.write_batch(batch).inserted
    assert total == len(real_ticks)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        stored = storage.read_ticks(db_path, symbol, None, None)
        source = ticks_frame([t for t in real_ticks if t.symbol == symbol])
        assert len(stored) == len(source)
        np.testing.assert_array_equal(
            stored["trade_id"].to_numpy(), np.sort(source["trade_id"].to_numpy())
        )
        got = storage.read_bars_1s(db_path, symbol, None, None)
        assert got["ts"].dtype == "datetime64[ms, UTC]"
        assert_bars_equal(got, pandas_bars(stored))
        assert_bars_equal(got, pandas_bars(source))


def test_real_trades_bars_right_when_batches_arrive_out_of_order(
    real_ticks: list[Tick], db_path: Path
) -> None:
    """Shuffled batches of shuffled ticks give open by lowest id, close by highest."""
    rng = random.Random(11)
    batches = batches_of(real_ticks, rng, 700)
    rng.shuffle(batches)
    with Writer(db_path) as w:
        for batch in batches:
            batch = list(batch)
            rng.shuffle(batch)
            w.write_batch(batch)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        source = ticks_frame([t for t in real_ticks if t.symbol == symbol])
        assert_bars_equal(
            storage.read_bars_1s(db_path, symbol, None, None), pandas_bars(source)
        )


def test_second_split_across_batches_hand_computed(
    writer: Writer, db_path: Path
) -> None:
    """One second's trades split over three batches, later ids first, give the bar."""
    writer.write_batch([tick("BTCUSDT", 5, T0 + 900, 103.0, 1.0)])
    writer.write_batch(
        [tick("BTCUSDT", 2, T0 + 100, 101.0, 2.0), tick("BTCUSDT", 4, T0 + 500, 99.0)]
    )
    writer.write_batch([tick("BTCUSDT", 3, T0 + 300, 105.0, 0.5)])
    bars = storage.read_bars_1s(db_path, "BTCUSDT", T0, T0 + 1000)
    assert len(bars) == 1
    row = bars.iloc[0]
    assert (row.open, row.high, row.low, row.close) == (101.0, 105.0, 99.0, 103.0)
    assert row.volume == pytest.approx(4.5)
    assert row.quote_volume == pytest.approx(103 + 202 + 99 + 52.5)
    assert row.trades == 4
    assert row.vwap == pytest.approx((103 + 202 + 99 + 52.5) / 4.5)
    assert row.ts == pd.Timestamp(T0, unit="ms", tz="UTC")


@st.composite
def tick_batches(draw):
    """Unique trades for two symbols, then batches with repeats in random order."""
    out = []
    for symbol in ("AAAUSDT", "BBBUSDT"):
        n = draw(st.integers(1, 40))
        ts = T0
        for tid in range(1, n + 1):
            ts += draw(st.integers(0, 700))
            price = draw(st.integers(1, 50)) * 0.5
            qty = draw(st.integers(1, 9)) * 0.001
            out.append(Tick(symbol, tid, ts, price, qty, draw(st.booleans())))
    stream = draw(st.lists(st.sampled_from(out), max_size=60)) + out
    stream = draw(st.permutations(stream))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    return out, [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=tick_batches())
def test_property_duplicates_change_nothing(new_db, data) -> None:
    """Any batching with repeats stores each trade once and bars obey the invariants."""
    unique, batches = data
    path = new_db(f"prop-{random.getrandbits(64):x}.db")
    with Writer(path) as w:
        inserted = sum(w.write_batch(b).inserted for b in batches)
        assert inserted == len(unique)
        before = {s: storage.read_bars_1s(path, s, None, None) for s in ("AAAUSDT",)}
        again = w.write_batch(unique)
        assert again == BatchResult(inserted=0, duplicates=len(unique), gaps=0)
    pd.testing.assert_frame_equal(
        storage.read_bars_1s(path, "AAAUSDT", None, None), before["AAAUSDT"]
    )
    for symbol in ("AAAUSDT", "BBBUSDT"):
        mine = [t for t in unique if t.symbol == symbol]
        bars = storage.read_bars_1s(path, symbol, None, None)
        assert_bars_equal(bars, pandas_bars(ticks_frame(mine)))
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
        assert (bars[["open", "close"]].max(axis=1) <= bars["high"]).all()
        assert bars["volume"].sum() == pytest.approx(sum(t.qty for t in mine))
        assert bars["trades"].sum() == len(mine)
    storage.close_readers()
    if is_file(path):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


# ----------------------------------------------------------------- dedupe, gaps


def test_dedupe_within_and_across_batches(writer: Writer, db_path: Path) -> None:
    """Repeats inside a batch and across batches are dropped and counted."""
    a = [tick("BTCUSDT", i, T0 + i, 100.0 + i) for i in range(1, 6)]
    first = writer.write_batch([*a, a[0], a[2]])
    assert first == BatchResult(inserted=5, duplicates=2, gaps=0)
    b = [tick("BTCUSDT", i, T0 + i, 100.0 + i) for i in range(4, 9)]
    second = writer.write_batch(b + [tick("ETHUSDT", 4, T0, 5.0)])
    assert second == BatchResult(inserted=4, duplicates=2, gaps=0)
    bars = storage.read_bars_1s(db_path, "BTCUSDT", None, None)
    assert bars["trades"].sum() == 8
    assert bars["volume"].sum() == pytest.approx(8.0)


def test_sparse_ids_over_wide_range_are_deduped(writer: Writer) -> None:
    """A batch whose ids span a wide range still finds the stored ones."""
    writer.write_batch([tick("BTCUSDT", i, T0 + i, 1.0) for i in range(1, 3001)])
    batch = [tick("BTCUSDT", i, T0 + i, 1.0) for i in (5, 2000, 10**9, 10**9 + 7)]
    assert writer.write_batch(batch) == BatchResult(inserted=2, duplicates=2, gaps=0)


def test_last_trade_ids_per_symbol(writer: Writer) -> None:
    """last_trade_ids returns the highest stored id per symbol."""
    assert writer.last_trade_ids() == {}
    writer.write_batch(
        [
            tick("BTCUSDT", 10, T0, 1.0),
            tick("BTCUSDT", 12, T0 + 5, 1.0),
            tick("ETHUSDT", 7, T0, 1.0),
            tick("BTCUSDT", 11, T0 + 3, 1.0),
        ]
    )
    assert writer.last_trade_ids() == {"BTCUSDT": 12, "ETHUSDT": 7}


def test_gap_rows_stored_once_with_batch(writer: Writer, db_path: Path) -> None:
    """Gap rows are written with the batch, read back, and a repeat is skipped."""
    gap = Gap("BTCUSDT", 3, 9, T0 + 50)
    res = writer.write_batch(
        [tick("BTCUSDT", 2, T0, 1.0), tick("BTCUSDT", 10, T0 + 40, 1.0)], [gap]
    )
    assert res == BatchResult(inserted=2, duplicates=0, gaps=1)
    assert writer.write_batch([], [gap]).gaps == 0
    writer.write_batch([], [Gap("ETHUSDT", 100, 100, T0)])
    gaps = storage.read_gaps(db_path)[
        ["symbol", "from_id", "to_id", "missing", "detected_ms"]
    ]
    assert gaps.to_dict("records") == [
        {
            "symbol": "BTCUSDT",
            "from_id": 3,
            "to_id": 9,
            "missing": 7,
            "detected_ms": T0 + 50,
        },
        {
            "symbol": "ETHUSDT",
            "from_id": 100,
            "to_id": 100,
            "missing": 1,
            "detected_ms": T0,
        },
    ]
    assert list(storage.read_gaps(db_path, "ethusdt")["from_id"]) == [100]
    assert storage.db_stats(db_path).gaps == 2


def test_empty_batch_is_a_no_op(writer: Writer) -> None:
    """An empty batch writes nothing and reports zeros."""
    assert writer.write_batch([]) == BatchResult(0, 0, 0)


# --------------------------------------------------------------------------- reads


def test_reader_sees_writes_while_writer_open_from_other_thread(
    writer: Writer, db_path: Path
) -> None:
    """A reader in another thread sees each committed batch while the writer is open."""
    seen: list[int] = []

    def read() -> None:
        seen.append(len(storage.read_ticks(db_path, "BTCUSDT", None, None)))
        storage.close_readers()

    for n in (1, 2, 3):
        writer.write_batch([tick("BTCUSDT", n, T0 + n * 1000, 1.0)])
        th = threading.Thread(target=read)
        th.start()
        th.join()
        assert len(storage.read_bars_1s(db_path, "BTCUSDT", None, None)) == n
    assert seen == [1, 2, 3]


def test_missing_database_reads_empty(new_db) -> None:
    """Readers on a file (schema) that does not exist return empty results."""
    path = new_db("nope.db")
    bars = storage.read_bars_1s(path, "BTCUSDT", 0, 10**13)
    assert list(bars.columns) == list(BAR_COLUMNS) and bars.empty
    assert bars["ts"].dtype == "datetime64[ms, UTC]"
    assert storage.read_bars_agg(path, "BTCUSDT", 60, None, None).empty
    assert storage.read_bars(path, "BTCUSDT", 60, None, None).empty
    ticks = storage.read_ticks(path, "BTCUSDT", None, None)
    assert list(ticks.columns) == list(storage.TICK_COLUMNS) and ticks.empty
    assert storage.last_tick(path, "BTCUSDT") is None
    assert storage.list_symbols(path) == []
    assert storage.db_stats(path) == storage.DbStats(0, (), 0)
    assert storage.read_gaps(path).empty
    assert storage.read_lease(path) is None
    assert storage.list_alert_rules(path) == []
    assert storage.list_alert_events(path).empty
    assert not is_file(path) or not path.exists()


def test_empty_file_without_tables_reads_empty(tmp_path: Path) -> None:
    """A database file that exists but has no schema yet reads as empty."""
    path = tmp_path / "blank.db"
    sqlite3.connect(path).close()
    assert storage.read_bars_1s(path, "BTCUSDT", None, None).empty
    assert storage.list_symbols(path) == []


def test_read_windows_are_half_open(writer: Writer, db_path: Path) -> None:
    """Windows include start and exclude end for bars and ticks."""
    writer.write_batch([tick("BTCUSDT", i, T0 + i * 1000, 100.0 + i) for i in range(5)])
    bars = storage.read_bars_1s(db_path, "BTCUSDT", T0 + 1000, T0 + 3000)
    assert list(bars["open"]) == [101.0, 102.0]
    ticks = storage.read_ticks(db_path, "btcusdt", T0 + 1000, T0 + 3000)
    assert list(ticks["trade_id"]) == [1, 2]
    assert list(ticks.columns) == list(storage.TICK_COLUMNS)
    assert ticks["ts"].dtype == "datetime64[ms, UTC]"
    assert ticks["is_buyer_maker"].dtype == bool
    assert storage.read_bars_1s(db_path, "BTCUSDT", T0 + 5000, T0 + 9000).empty


def test_read_ticks_limit_keeps_newest(writer: Writer, db_path: Path) -> None:
    """limit keeps the newest ticks of the window, oldest first."""
    writer.write_batch([tick("BTCUSDT", i, T0 + i, float(i)) for i in range(10)])
    got = storage.read_ticks(db_path, "BTCUSDT", None, None, limit=3)
    assert list(got["trade_id"]) == [7, 8, 9]
    with pytest.raises(ValueError, match=r"limit must be an integer >= 0"):
        storage.read_ticks(db_path, "BTCUSDT", None, None, limit=-1)


def test_last_tick_and_list_symbols(writer: Writer, db_path: Path) -> None:
    """last_tick returns the highest trade id's tick; list_symbols all symbols."""
    writer.write_batch(
        [Tick("ETHUSDT", 9, T0 + 5, 3.5, 0.2, True), tick("ETHUSDT", 8, T0 + 9, 3.0)]
    )
    writer.write_bars(
        "SOLUSDT",
        60,
        pd.DataFrame(
            {
                "ts_ms": [T0],
                "open": [1.0],
                "high": [1.0],
                "low": [1.0],
                "close": [1.0],
                "volume": [1.0],
            }
        ),
    )
    assert storage.last_tick(db_path, "ethusdt") == Tick(
        "ETHUSDT", 9, T0 + 5, 3.5, 0.2, True
    )
    assert storage.list_symbols(db_path) == ["ETHUSDT", "SOLUSDT"]


def test_reader_rejects_bad_symbol(db_path: Path) -> None:
    """A symbol that fails validation is a ValueError, never formatted into SQL."""
    with pytest.raises(ValueError, match=r"symbol must be 2-20 letters or digits"):
        storage.read_bars_1s(db_path, "BTC'; DROP TABLE ticks; --", None, None)


@pytest.mark.parametrize(
    ("interval_s", "freq"), [(15, "15s"), (60, "1min"), (300, "5min")]
)
def test_read_bars_agg_equals_pandas_resample(
    real_ticks: list[Tick], real_db: Path, interval_s: int, freq: str
) -> None:
    """SQL aggregation of 1 s bars equals pandas resampling of the same 1 s bars."""
    db_path = real_db
    for symbol in ("BTCUSDT", "ETHUSDT"):
        one = storage.read_bars_1s(db_path, symbol, None, None)
        agg = (
            one.set_index("ts")
            .resample(freq)
            .agg(
                {
                    "open": "first",
                    "high": "max",
                    "low": "min",
                    "close": "last",
                    "volume": "sum",
                    "quote_volume": "sum",
                    "trades": "sum",
                }
            )
        )
        agg = agg[agg["trades"] > 0].reset_index()
        agg["vwap"] = agg["quote_volume"] / agg["volume"]
        agg["trades"] = agg["trades"].astype("int64")
        got = storage.read_bars_agg(db_path, symbol, interval_s, None, None)
        assert_bars_equal(got, agg[list(BAR_COLUMNS)])
        assert_bars_equal(
            got,
            pandas_bars(
                ticks_frame([t for t in real_ticks if t.symbol == symbol]), freq
            ),
        )


def test_read_bars_agg_window_and_validation(writer: Writer, db_path: Path) -> None:
    """The aggregated window is [start, end) on 1 s bars and intervals are validated."""
    writer.write_batch([tick("BTCUSDT", i, T0 + i * 1000, 100.0 + i) for i in range(8)])
    start = T0 - T0 % 4000
    got = storage.read_bars_agg(db_path, "BTCUSDT", 4, start, start + 8000)
    assert list(got["trades"]) == [4, 4]
    assert list(got["open"]) == [100.0, 104.0]
    assert list(got["close"]) == [103.0, 107.0]
    with pytest.raises(ValueError, match=r"interval_s must be an integer >= 1, got 0"):
        storage.read_bars_agg(db_path, "BTCUSDT", 0, None, None)


def test_write_bars_round_trip(writer: Writer, db_path: Path) -> None:
    """Coarser bars are upserted and read back with vwap and unknowns handled."""
    ts = pd.to_datetime([T0, T0 + 60_000, T0 + 120_000], unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "ts": ts,
            "open": [1.0, 2.0, 3.0],
            "high": [1.5, 2.5, 3.5],
            "low": [0.5, 1.5, 2.5],
            "close": [1.2, 2.2, 3.2],
            "volume": [10.0, 20.0, 30.0],
            "quote_volume": [12.0, np.nan, 96.0],
        }
    )
    assert writer.write_bars("btcusdt", 60, frame) == 3
    frame.loc[2, "close"] = 3.3
    assert writer.write_bars("BTCUSDT", 60, frame.iloc[2:]) == 1
    got = storage.read_bars(db_path, "BTCUSDT", 60, T0, T0 + 180_000)
    assert list(got.columns) == list(BAR_COLUMNS)
    assert list(got["ts"]) == list(ts)
    assert list(got["close"]) == [1.2, 2.2, 3.3]
    assert got["vwap"].iloc[0] == pytest.approx(1.2)
    assert np.isnan(got["vwap"].iloc[1])
    assert list(got["trades"]) == [0, 0, 0]
    assert storage.read_bars(db_path, "BTCUSDT", 300, None, None).empty
    assert storage.list_bar_intervals(db_path, "BTCUSDT") == [60]
    with pytest.raises(ValueError, match=r"bars: missing column\(s\) ts, volume"):
        writer.write_bars("BTCUSDT", 60, frame.drop(columns=["ts", "volume"]))
    with pytest.raises(ValueError, match=r"interval_s must be an integer >= 1"):
        writer.write_bars("BTCUSDT", 0, frame)


# ----------------------------------------------------------------- retention, stats


def test_prune_deletes_old_ticks_and_bars(writer: Writer, db_path: Path) -> None:
    """prune removes ticks before the cutoff and bars ending by it; counts rows."""
    writer.write_batch([tick("BTCUSDT", i, T0 + i * 500, 1.0) for i in range(10)])
    writer.write_bars(
        "BTCUSDT",
        1,
        pd.DataFrame(
            {
                "ts_ms": [T0, T0 + 4000],
                "open": [1.0, 1.0],
                "high": [1.0, 1.0],
                "low": [1.0, 1.0],
                "close": [1.0, 1.0],
                "volume": [1.0, 1.0],
            }
        ),
    )
    # cutoff T0+2500: ticks 0..4 (ts < cutoff) go; 1 s bars T0, T0+1000 end by it.
    assert writer.prune(T0 + 2500) == 5 + 2 + 1
    assert list(storage.read_ticks(db_path, "BTCUSDT", None, None)["trade_id"]) == [
        5,
        6,
        7,
        8,
        9,
    ]
    bars = storage.read_bars_1s(db_path, "BTCUSDT", None, None)
    assert bars["ts"].iloc[0] == pd.Timestamp(T0 + 2000, unit="ms", tz="UTC")
    assert len(storage.read_bars(db_path, "BTCUSDT", 1, None, None)) == 1
    assert writer.prune(T0) == 0


def test_prune_deletes_in_bounded_transactions_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite prune changes at most PRUNE_CHUNK_ROWS rows per transaction and
    deletes exactly the old ticks, 1 s bars and coarser bars."""
    monkeypatch.setattr(storage, "PRUNE_CHUNK_ROWS", 100, raising=False)
    db = tmp_path / "market.db"
    sizes: list[int] = []
    original = Writer._transaction

    @contextmanager
    def measured(self, op: str, **kw):  # noqa: ANN001, ANN202
        with original(self, op, **kw) as conn:
            before = conn.total_changes
            yield conn
            if op == "prune":
                sizes.append(conn.total_changes - before)

    with Writer(db) as w:
        w.write_batch(
            [
                tick(sym, i, T0 + i * 1000, 1.0)
                for sym in ("BTCUSDT", "ETHUSDT")
                for i in range(1000)
            ]
        )
        minutes = [T0 // 60_000 * 60_000 + m * 60_000 for m in range(20)]
        ones = [1.0] * 20
        w.write_bars(
            "BTCUSDT",
            60,
            pd.DataFrame(
                {"ts_ms": minutes, **{c: ones for c in ("open", "high", "low")}}
                | {"close": ones, "volume": ones}
            ),
        )
        monkeypatch.setattr(Writer, "_transaction", measured)
        cutoff = T0 + 600_000
        old_bars = sum(m + 60_000 <= cutoff for m in minutes)
        assert w.prune(cutoff) == 2 * 600 + 2 * 600 + old_bars
    assert max(sizes) <= 100 and len(sizes) >= 24
    got = storage.read_ticks(db, "ETHUSDT", None, None)
    assert got["trade_id"].tolist() == list(range(600, 1000))
    assert len(storage.read_bars_1s(db, "BTCUSDT", None, None)) == 400
    assert len(storage.read_bars(db, "BTCUSDT", 60, None, None)) == 20 - old_bars


def test_clear_market_data_keeps_rules(writer: Writer, db_path: Path) -> None:
    """clear_market_data empties ticks, bars and gaps but keeps alert rules."""
    writer.write_batch([tick("BTCUSDT", 1, T0, 1.0)], [Gap("BTCUSDT", 5, 6, T0)])
    writer.add_alert_rule("z > 2", "{}", 60.0, True, None, None)
    writer.clear_market_data()
    assert storage.list_symbols(db_path) == []
    assert storage.read_gaps(db_path).empty
    assert len(storage.list_alert_rules(db_path)) == 1
    assert writer.last_trade_ids() == {}


def test_db_stats_counts_and_span(writer: Writer, db_path: Path) -> None:
    """db_stats reports file size, per-symbol counts, first/last time and gaps."""
    writer.write_batch(
        [tick("BTCUSDT", i, T0 + i * 700, 1.0) for i in range(6)]
        + [tick("ETHUSDT", 1, T0 + 42, 1.0)]
    )
    stats = storage.db_stats(db_path)
    if is_file(db_path):
        wal = Path(str(db_path) + "-wal")
        assert stats.file_bytes == db_path.stat().st_size + (
            wal.stat().st_size if wal.exists() else 0
        )
    assert stats.file_bytes > 0
    assert stats.symbols == (
        storage.SymbolStats("BTCUSDT", 6, 4, T0, T0 + 3500, 0),
        storage.SymbolStats("ETHUSDT", 1, 1, T0 + 42, T0 + 42, 0),
    )
    assert stats.gaps == 0


# --------------------------------------------------------------------------- lease


def dead_pid() -> int:
    """The pid of a child process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lease_free_taken_and_reacquired(writer: Writer, db_path: Path) -> None:
    """A free lease is taken; its holder may take it again and heartbeat it."""
    me = storage.new_lease_owner()
    state = writer.acquire_lease(me)
    assert state.acquired and state.holder == me
    assert writer.acquire_lease(me).acquired
    assert storage.read_lease(db_path) == me
    assert writer.heartbeat(me, now=state.heartbeat_ms + 10)
    assert storage.read_lease_state(db_path).heartbeat_ms == state.heartbeat_ms + 10


def test_lease_refused_while_live_holder_on_this_host(db_path: Path) -> None:
    """A second owner in a live process on this host is refused and told the holder."""
    with Writer(db_path) as first, Writer(db_path) as second:
        a = storage.new_lease_owner()
        b = storage.new_lease_owner()
        assert a != b
        assert first.acquire_lease(a).acquired
        state = second.acquire_lease(b)
        assert not state.acquired
        assert state.holder == a
        assert not second.heartbeat(b)
        first.release_lease(a)
        assert storage.read_lease(db_path) is None
        assert second.acquire_lease(b).acquired


def test_lease_of_dead_pid_on_this_host_taken_over(
    writer: Writer, db_path: Path
) -> None:
    """A holder whose pid is gone from this host is replaced at once."""
    ghost = LeaseOwner(pid=dead_pid(), host=HOST, since_ms=1)
    assert writer.acquire_lease(ghost).acquired
    me = storage.new_lease_owner()
    state = writer.acquire_lease(me)
    assert state.acquired and state.holder == me
    assert not writer.heartbeat(ghost)


def test_lease_from_other_host_taken_only_when_stale(
    writer: Writer, db_path: Path
) -> None:
    """A holder on another host keeps the lease until its heartbeat is stale."""
    other = LeaseOwner(pid=dead_pid(), host=HOST + "-elsewhere", since_ms=1)
    assert writer.acquire_lease(other, now=T0).acquired
    me = storage.new_lease_owner()
    refused = writer.acquire_lease(me, stale_after_ms=15_000, now=T0 + 15_000)
    assert not refused.acquired and refused.holder == other
    assert refused.heartbeat_ms == T0
    taken = writer.acquire_lease(me, stale_after_ms=15_000, now=T0 + 15_001)
    assert taken.acquired and taken.holder == me
    assert not writer.heartbeat(other)
    writer.release_lease(other)  # not the holder: nothing happens
    assert storage.read_lease(db_path) == me
    with pytest.raises(ValueError, match=r"stale_after_ms must be > 0, got 0"):
        writer.acquire_lease(me, stale_after_ms=0)


# --------------------------------------------------------------------------- failures


def test_locked_database_raises_quickly_and_batch_retries(
    writer: Writer, db_path: Path
) -> None:
    """A lock held elsewhere raises DatabaseLockedError; the retry loses nothing."""
    writer.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
    batch = [tick("BTCUSDT", i, T0 + i, 2.0) for i in range(2, 50)]
    with (
        write_lock_held(db_path),
        pytest.raises(
            DatabaseLockedError, match=r"^write_batch failed: database is locked"
        ),
    ):
        writer.write_batch(batch, [Gap("BTCUSDT", 100, 101, T0)])
    assert isinstance(DatabaseLockedError("x"), StorageError)
    assert writer.write_batch(batch, [Gap("BTCUSDT", 100, 101, T0)]) == BatchResult(
        48, 0, 1
    )
    assert len(storage.read_ticks(db_path, "BTCUSDT", None, None)) == 49
    assert storage.read_bars_1s(db_path, "BTCUSDT", None, None)["trades"].sum() == 49


def test_read_only_connection_error_names_operation(
    writer: Writer, db_path: Path, backend: str
) -> None:
    """A write refused by SQLite raises StorageError naming operation and reason."""
    sqlite_only(backend, "PRAGMA query_only")
    writer.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
    writer._conn.execute("PRAGMA query_only = ON")  # as a read-only file would refuse
    with pytest.raises(
        StorageError, match=r"^write_batch failed: attempt to write a readonly database"
    ) as info:
        writer.write_batch([tick("BTCUSDT", 2, T0, 1.0)])
    assert not isinstance(info.value, DatabaseLockedError)
    with pytest.raises(StorageError, match=r"^add_alert_rule failed: attempt to write"):
        writer.add_alert_rule("z > 2", "{}", 0, True, None, None)
    writer._conn.execute("PRAGMA query_only = OFF")
    assert writer.write_batch([tick("BTCUSDT", 2, T0, 1.0)]).inserted == 1


def test_disk_full_rolls_back_and_keeps_stored_data(
    writer: Writer, db_path: Path, backend: str
) -> None:
    """SQLITE_FULL mid-batch raises StorageError and leaves earlier data intact."""
    sqlite_only(backend, "PRAGMA max_page_count and integrity_check")
    first = [tick("BTCUSDT", i, T0 + i * 10, 1.0) for i in range(1, 200)]
    writer.write_batch(first)
    pages = writer._conn.execute("PRAGMA page_count").fetchone()[0]
    writer._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = [tick("BTCUSDT", i, T0 + i * 10, 1.0) for i in range(200, 20_000)]
    with pytest.raises(
        StorageError, match=r"^write_batch failed: database or disk is full"
    ):
        writer.write_batch(big)
    assert len(storage.read_ticks(db_path, "BTCUSDT", None, None)) == len(first)
    assert storage.read_bars_1s(db_path, "BTCUSDT", None, None)["trades"].sum() == 199
    writer._conn.execute("PRAGMA max_page_count = 1073741823")
    assert writer.write_batch(big).inserted == len(big)
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_integrity_check_after_mixed_workload(
    real_ticks: list[Tick], db_path: Path, backend: str
) -> None:
    """After batches, bars, prune and alerts the database passes integrity_check."""
    sqlite_only(backend, "PRAGMA integrity_check")
    with Writer(db_path) as w:
        for i in range(0, len(real_ticks), 3000):
            w.write_batch(real_ticks[i : i + 3000])
        w.prune(real_ticks[len(real_ticks) // 2].ts_ms)
        rid = w.add_alert_rule("z > 2", "{}", 5, True, None, None)
        w.add_alert_event(rid, T0, 2.5, "{}")
        w.checkpoint()
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


# --------------------------------------------------------------------------- alerts


def test_alert_rules_and_events_round_trip(writer: Writer, db_path: Path) -> None:
    """Rules and events are stored, toggled, listed, filtered and deleted."""
    r1 = writer.add_alert_rule("z > 2", '{"window": 60}', 30.0, True, None, None)
    r2 = writer.add_alert_rule(
        "spread < -5", "{}", 0, False, "http://127.0.0.1:9/hook", "slack"
    )
    rules = storage.list_alert_rules(db_path)
    assert [r.id for r in rules] == [r1, r2]
    assert isinstance(rules[0], AlertRuleRow)
    assert rules[0].text == "z > 2" and rules[0].params_json == '{"window": 60}'
    assert rules[0].cooldown_s == 30.0 and rules[0].enabled is True
    assert rules[1].webhook_url == "http://127.0.0.1:9/hook"
    assert rules[1].webhook_format == "slack" and rules[1].enabled is False
    writer.set_alert_rule_enabled(r2, True)
    assert storage.list_alert_rules(db_path)[1].enabled is True
    assert writer.alert_event_id(r1, T0) is None
    e1 = writer.add_alert_event(r1, T0, 2.3, '{"z": 2.3}')
    # the same firing stored again (a retried store) keeps its one row
    assert writer.add_alert_event(r1, T0, 2.3, '{"z": 2.3}') == e1
    assert writer.alert_event_id(r1, T0) == e1
    assert writer.alert_event_id(r2, T0) is None
    e2 = writer.add_alert_event(r2, T0 + 1000, -6.0, "{}")
    writer.update_alert_event_notification(e2, "failed", "HTTP 500")
    events = storage.list_alert_events(db_path)
    assert list(events.columns) == list(storage.EVENT_COLUMNS)
    assert list(events["id"]) == [e2, e1]
    assert events.iloc[0]["notify_status"] == "failed"
    assert events.iloc[0]["notify_detail"] == "HTTP 500"
    assert events.iloc[1]["notify_status"] == "pending"
    assert events.iloc[1]["rule_text"] == "z > 2"
    assert events.iloc[1]["fired"] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert list(storage.list_alert_events(db_path, rule_id=r1)["id"]) == [e1]
    assert list(storage.list_alert_events(db_path, since_ms=T0 + 1)["id"]) == [e2]
    assert list(storage.list_alert_events(db_path, limit=1)["id"]) == [e2]
    assert writer.delete_alert_rule(r1) is True
    assert writer.delete_alert_rule(r1) is False
    assert [r.id for r in storage.list_alert_rules(db_path)] == [r2]
    assert storage.list_alert_events(db_path, rule_id=r1)["rule_text"].isna().all()


def test_alert_rule_validation(writer: Writer) -> None:
    """Bad rule arguments and unknown ids are ValueErrors naming the argument."""
    with pytest.raises(ValueError, match=r"text: an alert rule needs a condition"):
        writer.add_alert_rule("  ", "{}", 0, True, None, None)
    with pytest.raises(ValueError, match=r"cooldown_s must be a finite number >= 0"):
        writer.add_alert_rule("z > 2", "{}", -1, True, None, None)
    with pytest.raises(ValueError, match=r"rule_id: no alert rule with id 99"):
        writer.set_alert_rule_enabled(99, True)


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("name", ["", "a b", "../x", "x.db", "a" * 65, "é", "a/b"])
def test_dataset_names_validated(dataset_base: Path, name: str) -> None:
    """Dataset names outside ^[A-Za-z0-9_-]{1,64}$ are refused."""
    with pytest.raises(ValueError, match=r"name: a dataset name is 1-64 letters"):
        storage.dataset_db_path(dataset_base, name)


def test_datasets_create_list_rename_delete(dataset_base: Path) -> None:
    """Datasets live in data/datasets/NAME.db (a schema each on PostgreSQL) and can
    be listed, renamed, deleted."""
    tmp_path = dataset_base
    path = storage.dataset_db_path(tmp_path, "btc_2024-08")
    if is_file(tmp_path):
        assert path == tmp_path / "datasets" / "btc_2024-08.db"
    else:
        assert path.endswith("?dataset=btc_2024-08")
    assert storage.list_datasets(tmp_path) == []
    with Writer(path) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
    with Writer(storage.dataset_db_path(tmp_path, "A1")):
        pass
    assert storage.list_datasets(tmp_path) == ["A1", "btc_2024-08"]
    assert len(storage.read_ticks(path, "BTCUSDT", None, None)) == 1
    new = storage.rename_dataset(tmp_path, "btc_2024-08", "btc")
    assert storage.list_datasets(tmp_path) == ["A1", "btc"]
    assert len(storage.read_ticks(new, "BTCUSDT", None, None)) == 1
    assert storage.read_ticks(path, "BTCUSDT", None, None).empty
    with pytest.raises(ValueError, match=r"new: a dataset named 'A1' already exists"):
        storage.rename_dataset(tmp_path, "btc", "A1")
    with pytest.raises(ValueError, match=r"old: no dataset named 'zz'"):
        storage.rename_dataset(tmp_path, "zz", "yy")
    assert storage.delete_dataset(tmp_path, "btc") is True
    assert storage.delete_dataset(tmp_path, "btc") is False
    assert storage.list_datasets(tmp_path) == ["A1"]
    if is_file(tmp_path):
        folder = tmp_path / "datasets"
        assert not any(p.name.startswith("btc") for p in folder.iterdir())
    assert storage.read_ticks(new, "BTCUSDT", None, None).empty


def test_reader_reopens_when_file_replaced(dataset_base: Path) -> None:
    """A cached reader notices its file (schema) was deleted and recreated."""
    tmp_path = dataset_base
    path = storage.dataset_db_path(tmp_path, "x")
    with Writer(path) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
    assert len(storage.read_ticks(path, "BTCUSDT", None, None)) == 1
    storage.delete_dataset(tmp_path, "x")
    with Writer(path) as w:
        w.write_batch([tick("ETHUSDT", 1, T0, 1.0)])
    assert storage.list_symbols(path) == ["ETHUSDT"]


def test_default_paths() -> None:
    """The live and demo databases sit under data/."""
    assert storage.DEFAULT_DB_PATH == Path("data/market.db")
    assert storage.DEMO_DB_PATH == Path("data/demo.db")
    assert os.fspath(storage.DEFAULT_DB_PATH.parent) == "data"


def test_filtered_trade_recording_round_trip(shared_data: Path, db_path: Path) -> None:
    """The 2023 recording minus its INSURANCE_FUND print is stored once, ids intact."""
    ticks = load_market_ticks(shared_data / DERIVED / FILE_2023)
    assert len(ticks) == 12_934
    assert all(t.trade_id != 3535191080 for t in ticks)
    with Writer(db_path) as w:
        assert w.write_batch(ticks).inserted == len(ticks)
        assert w.last_trade_ids() == {"BTCUSDT": max(t.trade_id for t in ticks)}
    assert storage.read_bars_1s(db_path, "BTCUSDT", None, None)["high"].max() < 28722.5


def test_data_span_prefers_1s_bars(writer: Writer, db_path: Path) -> None:
    """data_span gives the first and last 1 s bar start, else coarser bars, or None."""
    assert storage.data_span(db_path, "BTCUSDT") is None
    writer.write_bars(
        "ETHUSDT",
        60,
        pd.DataFrame(
            {
                "ts_ms": [T0, T0 + 60_000],
                "open": [1.0, 1.0],
                "high": [1.0, 1.0],
                "low": [1.0, 1.0],
                "close": [1.0, 1.0],
                "volume": [1.0, 1.0],
            }
        ),
    )
    writer.write_batch(
        [tick("BTCUSDT", 1, T0 + 10, 1.0), tick("BTCUSDT", 2, T0 + 4321, 1.0)]
    )
    assert storage.data_span(db_path, "BTCUSDT") == storage.DataSpan(T0, T0 + 4000)
    assert storage.data_span(db_path, "ETHUSDT") == storage.DataSpan(T0, T0 + 60_000)


def test_migrations_apply_in_order_once(
    db_path: Path, monkeypatch, backend: str
) -> None:
    """A new migration step runs once on an old file and bumps user_version."""
    sqlite_only(backend, "storage.MIGRATIONS and PRAGMA user_version")
    Writer(db_path).close()
    calls: list[int] = []

    def step2(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("ALTER TABLE alert_rules ADD COLUMN note TEXT")

    monkeypatch.setattr(storage, "MIGRATIONS", (*storage.MIGRATIONS, step2))
    monkeypatch.setattr(storage, "SCHEMA_VERSION", len(storage.MIGRATIONS))
    Writer(db_path).close()
    Writer(db_path).close()
    assert calls == [1]
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == len(storage.MIGRATIONS)
    assert "note" in [r[1] for r in con.execute("PRAGMA table_info(alert_rules)")]
    con.close()


def test_failing_migration_rolls_back(db_path: Path, monkeypatch, backend: str) -> None:
    """A migration step that fails leaves the schema and user_version as they were."""
    sqlite_only(backend, "storage.MIGRATIONS and PRAGMA user_version")
    Writer(db_path).close()

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE alert_rules ADD COLUMN note TEXT")
        conn.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(storage, "MIGRATIONS", (*storage.MIGRATIONS, bad))
    monkeypatch.setattr(storage, "SCHEMA_VERSION", len(storage.MIGRATIONS))
    with pytest.raises(
        StorageError, match=r"^open failed: no such table: no_such_table"
    ):
        Writer(db_path)
    con = sqlite3.connect(db_path)
    assert (
        con.execute("PRAGMA user_version").fetchone()[0] == len(storage.MIGRATIONS) - 1
    )
    assert "note" not in [r[1] for r in con.execute("PRAGMA table_info(alert_rules)")]
    con.close()


def test_open_failures_name_the_operation(tmp_path: Path) -> None:
    """A directory or a non-database file as path raises StorageError from open."""
    with pytest.raises(StorageError, match=r"^open failed: unable to open database"):
        Writer(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=r"^open failed: file is not a database"):
        Writer(junk)


def test_readers_in_threads_while_writer_writes(writer: Writer, db_path: Path) -> None:
    """Reader threads read without errors, never going backwards, during writes."""
    done = threading.Event()
    errors: list[BaseException] = []
    counts: list[list[int]] = [[], []]

    def reader(k: int) -> None:
        try:
            while not done.is_set():
                bars = storage.read_bars_1s(db_path, "BTCUSDT", None, None)
                counts[k].append(int(bars["trades"].sum()))
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            storage.close_readers()

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for b in range(40):
        writer.write_batch(
            [tick("BTCUSDT", b * 100 + i, T0 + b * 1000 + i, 1.0) for i in range(100)]
        )
    done.set()
    for th in threads:
        th.join()
    assert errors == []
    for seen in counts:
        assert seen == sorted(seen)
        assert all(c % 100 == 0 for c in seen)  # whole batches only (atomic commits)
    assert storage.read_bars_1s(db_path, "BTCUSDT", None, None)["trades"].sum() == 4000


LEASE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import storage
w = storage.Writer({db!r}, admin_timeout_ms=10_000)
state = w.acquire_lease(storage.new_lease_owner())
print("acquired" if state.acquired else "refused", flush=True)
sys.stdin.read()
"""


def test_two_processes_racing_for_lease_one_wins(db_path: Path) -> None:
    """Two live processes asking for the lease at once: exactly one gets it."""
    Writer(db_path).close()
    root = str(Path(storage.__file__).resolve().parent)
    code = LEASE_SCRIPT.format(root=root, db=str(db_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        results = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
    assert results == ["acquired", "refused"]
    assert storage.read_lease(db_path).pid in {p.pid for p in procs}


def test_numpy_scalars_in_ticks_are_stored_as_numbers(
    writer: Writer, db_path: Path
) -> None:
    """Ticks built from numpy scalars store INTEGER/REAL values, never BLOBs."""
    ticks = [
        Tick(
            "BTCUSDT",
            np.int64(i),
            np.int64(T0 + i),
            np.float32(1.5),
            np.float64(2.0),
            np.bool_(i % 2),
        )
        for i in (1, 2)
    ]
    assert writer.write_batch(ticks).inserted == 2
    assert writer.write_batch(ticks).duplicates == 2
    writer.write_batch([], [Gap("BTCUSDT", np.int64(3), np.int64(4), np.int64(T0))])
    if is_file(db_path):  # PostgreSQL's columns are typed: nothing else to check
        con = sqlite3.connect(db_path)
        types = con.execute(
            "SELECT DISTINCT typeof(trade_id), typeof(ts_ms), typeof(price), "
            "typeof(qty), typeof(is_buyer_maker) FROM ticks"
        ).fetchall()
        gap_types = con.execute(
            "SELECT typeof(from_id), typeof(to_id) FROM gaps"
        ).fetchall()
        con.close()
        assert types == [("integer", "integer", "real", "real", "integer")]
        assert gap_types == [("integer", "integer")]
    assert list(storage.read_gaps(db_path)["from_id"]) == [3]
    assert storage.last_tick(db_path, "BTCUSDT") == Tick(
        "BTCUSDT", 2, T0 + 2, 1.5, 2.0, False
    )


def test_last_seen_filtered_id_resumes_after_it(writer: Writer, db_path: Path) -> None:
    """A filtered trade's id given as last_seen makes last_trade_ids resume after it."""
    writer.write_batch([tick("BTCUSDT", 79, T0, 1.0)], last_seen={"BTCUSDT": 80})
    assert writer.last_trade_ids() == {"BTCUSDT": 80}
    writer.write_batch([tick("BTCUSDT", 81, T0 + 5, 1.0)], last_seen={"BTCUSDT": 81})
    writer.write_batch([], last_seen={"BTCUSDT": 70, "ETHUSDT": 5})
    assert writer.last_trade_ids() == {"BTCUSDT": 81, "ETHUSDT": 5}
    writer.clear_market_data()
    assert writer.last_trade_ids() == {}


def test_old_version_1_file_is_upgraded(
    db_path: Path, monkeypatch, backend: str
) -> None:
    """A file created at schema version 1 gains the later tables on open."""
    sqlite_only(backend, "storage.MIGRATIONS and PRAGMA user_version")
    monkeypatch.setattr(storage, "MIGRATIONS", storage.MIGRATIONS[:1])
    monkeypatch.setattr(storage, "SCHEMA_VERSION", 1)
    with Writer(db_path) as w:
        w.write_batch([tick("BTCUSDT", 5, T0, 1.0)])
    monkeypatch.undo()
    with Writer(db_path) as w:
        w.write_batch([], last_seen={"BTCUSDT": 6})
        assert w.last_trade_ids() == {"BTCUSDT": 6}
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    con.close()


# ------------------------------------------------------------ columnar write path


def columns_of(ticks: list[Tick]) -> dict[str, np.ndarray]:
    """The tick fields as numpy columns (the shape `write_tick_columns` takes)."""
    return {
        "trade_id": np.array([t.trade_id for t in ticks], dtype=np.int64),
        "ts_ms": np.array([t.ts_ms for t in ticks], dtype=np.int64),
        "price": np.array([t.price for t in ticks], dtype=np.float64),
        "qty": np.array([t.qty for t in ticks], dtype=np.float64),
        "is_buyer_maker": np.array([t.is_buyer_maker for t in ticks], dtype=bool),
    }


def write_as_columns(w: Writer, batch: list[Tick]) -> BatchResult:
    """Write one batch through write_tick_columns, one call per symbol; sum results."""
    inserted = duplicates = 0
    for symbol in sorted({t.symbol for t in batch}):
        res = w.write_tick_columns(
            symbol, **columns_of([t for t in batch if t.symbol == symbol])
        )
        inserted += res.inserted
        duplicates += res.duplicates
    return BatchResult(inserted=inserted, duplicates=duplicates, gaps=0)


def assert_same_store(a: Path, b: Path, symbols: tuple[str, ...]) -> None:
    """Two databases hold identical ticks and bars (sums to 1e-12 relative)."""
    for symbol in symbols:
        pd.testing.assert_frame_equal(
            storage.read_ticks(a, symbol, None, None),
            storage.read_ticks(b, symbol, None, None),
        )
        got = storage.read_bars_1s(b, symbol, None, None)
        want = storage.read_bars_1s(a, symbol, None, None)
        for col in ("ts", "open", "high", "low", "close", "trades"):
            pd.testing.assert_series_equal(got[col], want[col])
        for col in ("volume", "quote_volume", "vwap"):
            np.testing.assert_allclose(got[col], want[col], rtol=1e-12)


def test_tick_columns_equal_write_batch_on_real_trades(
    real_ticks: list[Tick], real_db: Path, new_db
) -> None:
    """The recording written as columns stores what write_batch stores."""
    path = new_db("columns.db")
    with Writer(path) as w:
        for i in range(0, len(real_ticks), 5000):
            res = write_as_columns(w, real_ticks[i : i + 5000])
            assert res.duplicates == 0
    assert_same_store(real_db, path, ("BTCUSDT", "ETHUSDT"))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        source = ticks_frame([t for t in real_ticks if t.symbol == symbol])
        assert_bars_equal(
            storage.read_bars_1s(path, symbol, None, None), pandas_bars(source)
        )


def test_tick_columns_shuffled_batches_with_repeats_match_write_batch(
    real_ticks: list[Tick], new_db
) -> None:
    """Shuffled, repeating batches give write_batch's counts, ticks and bars."""
    rng = random.Random(5)
    stream = list(real_ticks) + rng.sample(real_ticks, 3000)
    rng.shuffle(stream)
    batches = batches_of(stream, rng, 3000)
    a, b = new_db("rows.db"), new_db("cols.db")
    with Writer(a) as wa, Writer(b) as wb:
        for batch in batches:
            assert write_as_columns(wb, batch) == wa.write_batch(batch)
    assert_same_store(a, b, ("BTCUSDT", "ETHUSDT"))
    for symbol in ("BTCUSDT", "ETHUSDT"):
        source = ticks_frame([t for t in real_ticks if t.symbol == symbol])
        assert_bars_equal(
            storage.read_bars_1s(b, symbol, None, None), pandas_bars(source)
        )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=tick_batches())
def test_property_tick_columns_match_write_batch(new_db, data) -> None:
    """Any batching with repeats gives the same results through both write paths."""
    _, batches = data
    tag = f"{random.getrandbits(64):x}"
    a, b = new_db(f"rows-{tag}.db"), new_db(f"cols-{tag}.db")
    with Writer(a) as wa, Writer(b) as wb:
        for batch in batches:
            assert write_as_columns(wb, batch) == wa.write_batch(batch)
    assert_same_store(a, b, ("AAAUSDT", "BBBUSDT"))
    storage.close_readers()
    for path in (a, b):
        if is_file(path):
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)


def test_tick_columns_keep_first_occurrence_and_skip_stored(
    writer: Writer, db_path: Path
) -> None:
    """A repeated id keeps its first row; stored ids are dropped and counted."""
    res = writer.write_tick_columns(
        "btcusdt",
        np.array([3, 1, 3, 2], dtype=np.int32),
        [T0 + 30, T0 + 10, T0 + 31, T0 + 20],
        [10.0, 11.0, 99.0, 12.0],
        np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32),
        [1, 0, 0, 1],
    )
    assert res == BatchResult(inserted=3, duplicates=1, gaps=0)
    ticks = storage.read_ticks(db_path, "BTCUSDT", None, None)
    assert ticks["trade_id"].tolist() == [1, 2, 3]
    assert ticks["price"].tolist() == [11.0, 12.0, 10.0]
    assert ticks["is_buyer_maker"].tolist() == [False, True, True]
    bar = storage.read_bars_1s(db_path, "BTCUSDT", None, None).iloc[0]
    # hand-computed: ids 1, 2, 3 -> open 11, close 10, volume 2 + 4 + 1
    assert (bar.open, bar.high, bar.low, bar.close) == (11.0, 12.0, 10.0, 10.0)
    assert (bar.volume, bar.trades) == (7.0, 3)
    again = writer.write_tick_columns(
        "BTCUSDT", [2, 4], [T0 + 20, T0 + 40], [1.0, 13.0], [1.0, 1.0], [False, False]
    )
    assert again == BatchResult(inserted=1, duplicates=1, gaps=0)
    bar = storage.read_bars_1s(db_path, "BTCUSDT", None, None).iloc[0]
    assert (bar.close, bar.high, bar.trades) == (13.0, 13.0, 4)
    if is_file(db_path):  # PostgreSQL's columns are typed
        con = sqlite3.connect(db_path)
        types = con.execute(
            "SELECT DISTINCT typeof(trade_id), typeof(ts_ms), typeof(price), "
            "typeof(qty), typeof(is_buyer_maker) FROM ticks"
        ).fetchall()
        con.close()
        assert types == [("integer", "integer", "real", "real", "integer")]


def test_tick_columns_sparse_ids_gaps_and_last_seen(
    writer: Writer, db_path: Path
) -> None:
    """Wide-range ids are probed, gap rows stored once, last_seen kept."""
    ids = np.arange(1, 3001)
    writer.write_tick_columns(
        "BTCUSDT", ids, T0 + ids, np.ones(3000), np.ones(3000), np.zeros(3000)
    )
    wide = np.array([5, 2000, 10**9, 10**9 + 7])
    gap = Gap("BTCUSDT", 3001, 10**9 - 1, T0)
    res = writer.write_tick_columns(
        "BTCUSDT",
        wide,
        T0 + wide % 10**6,
        np.ones(4),
        np.ones(4),
        np.zeros(4),
        [gap],
        last_seen={"BTCUSDT": 10**9 + 9},
    )
    assert res == BatchResult(inserted=2, duplicates=2, gaps=1)
    empty = np.empty(0)
    assert writer.write_tick_columns(
        "BTCUSDT", empty, empty, empty, empty, empty, [gap]
    ) == BatchResult(0, 0, 0)
    assert writer.write_tick_columns(
        "ETHUSDT", empty, empty, empty, empty, empty
    ) == BatchResult(0, 0, 0)
    assert writer.last_trade_ids() == {"BTCUSDT": 10**9 + 9}
    assert storage.read_gaps(db_path)["missing"].tolist() == [10**9 - 3001]


def test_tick_columns_validation(writer: Writer) -> None:
    """Bad symbols, shapes, lengths and non-integer ids are refused by name."""
    one = np.ones(1)
    with pytest.raises(ValueError, match=r"columns must have the same length.*qty=2"):
        writer.write_tick_columns("BTCUSDT", [1], [T0], one, [1.0, 2.0], [True])
    with pytest.raises(ValueError, match=r"^trade_id must hold integers, got 1\.5"):
        writer.write_tick_columns("BTCUSDT", [1.5], [T0], one, one, [True])
    with pytest.raises(ValueError, match=r"^ts_ms must be one-dimensional"):
        writer.write_tick_columns("BTCUSDT", [1], [[T0]], one, one, [True])
    with pytest.raises(ValueError, match=r"^price must hold numbers"):
        writer.write_tick_columns("BTCUSDT", [1], [T0], ["x"], one, [True])
    with pytest.raises(ValueError, match="symbol"):
        writer.write_tick_columns("BTC/USDT", [1], [T0], one, one, [True])
    assert writer.last_trade_ids() == {}


def test_bar_level_fill_merges_like_ticks_and_gap_fill_is_recorded(
    db_path: Path,
) -> None:
    """A bar-level 1 s fill merges by trade id like ticks, and the gap row keeps how
    it was filled."""
    t0 = 1_720_000_000_000
    with storage.Writer(db_path) as w:
        w.write_batch(
            [
                Tick("BTCUSDT", 1, t0 + 10, 100.0, 1.0, False),
                Tick("BTCUSDT", 5, t0 + 900, 101.0, 2.0, True),
            ],
            [Gap("BTCUSDT", 2, 4, t0 + 1_000)],
        )
        bar = pd.DataFrame(
            {
                "ts": pd.to_datetime([t0], unit="ms", utc=True),
                "open": [99.0],
                "high": [103.0],
                "low": [98.0],
                "close": [102.0],
                "volume": [3.0],
                "quote_volume": [300.0],
                "trades": [3],
                "vwap": [100.0],
                "first_id": [2],
                "last_id": [4],
            }
        )
        assert w.upsert_bars_1s("btcusdt", bar) == 1
        assert w.mark_gap_filled(
            "BTCUSDT", 2, 4, by="aggTrades", at_ms=t0 + 2_000, detail="bar level"
        )
        assert not w.mark_gap_filled("BTCUSDT", 7, 9, by="trades", at_ms=0, detail="")
    got = storage.read_bars_1s(db_path, "BTCUSDT", None, None).iloc[0]
    # open from id 1 (a tick), close from id 5 (a tick), extremes from the fill.
    assert (got.open, got.high, got.low, got.close) == (100.0, 103.0, 98.0, 101.0)
    assert (got.volume, got.quote_volume, got.trades) == (6.0, 602.0, 5)
    assert got.vwap == 602.0 / 6.0
    gaps = storage.read_gaps(db_path)
    assert gaps[["filled_by", "fill_detail"]].values.tolist() == [
        ["aggTrades", "bar level"]
    ]
    assert int(gaps["filled_ms"].iloc[0]) == t0 + 2_000


def _time_index_present(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
            ("ticks_symbol_ts",),
        ).fetchone()
    finally:
        conn.close()
    return row is not None and "(symbol, ts_ms)" in row[0]


def test_bulk_load_rebuilds_the_time_index_after_success_and_failure(
    tmp_path: Path,
) -> None:
    """bulk_load drops the ticks time index while loading and always rebuilds it."""
    path = tmp_path / "bulk.db"
    writer = storage.Writer(path)
    ids = np.arange(1, 2_001)
    ts = 1_700_000_000_000 + ids * 7
    with writer.bulk_load():
        assert not _time_index_present(path)
        writer.write_tick_columns(
            "BTCUSDT", ids, ts, np.full(ids.size, 100.0), np.ones(ids.size), ids % 2
        )
    assert _time_index_present(path)
    with pytest.raises(RuntimeError, match="boom"), writer.bulk_load():
        raise RuntimeError("boom")
    assert _time_index_present(path)
    window = storage.read_ticks(path, "BTCUSDT", int(ts[100]), int(ts[199]) + 1)
    assert window["trade_id"].tolist() == ids[100:200].tolist()
    plan = (
        sqlite3.connect(path)
        .execute(
            "EXPLAIN QUERY PLAN SELECT * FROM ticks WHERE symbol = 'BTCUSDT' "
            "AND ts_ms >= 0 AND ts_ms < 1"
        )
        .fetchall()
    )
    assert any("ticks_symbol_ts" in str(step) for step in plan), plan
    writer.close()
