"""PostgreSQL-specific tests of storage_pg.py against a throw-away PostgreSQL 15
cluster on 127.0.0.1 (tests/pg_fixture.py; skipped, naming the install command,
where the server binaries or psycopg are missing).

The backend-neutral behaviour runs in tests/test_storage.py on both backends; here:
schema and partitions, retention by dropping partitions, URLs and error messages,
the advisory-lock writer lease across processes, replay-driven ingestion and a
kill -9 of the headless ingester, and migration from a SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_storage import dead_pid

import storage
from models import Gap, Tick
from storage import DatabaseLockedError, LeaseOwner, StorageError, Writer

psycopg = pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
storage_pg = pytest.importorskip("storage_pg")

REPO = Path(storage.__file__).resolve().parent
DAY = 86_400_000
T0 = 1_723_161_256_000  # 2024-08-08 23:54:16 UTC
SET_2023 = "usdm_trade_frames_btcusdt_20230404T2358_20230405T0007.jsonl.gz"
N_2023 = 12_934  # MARKET trades in SET_2023 (one INSURANCE_FUND print filtered)


def tick(symbol: str, trade_id: int, ts_ms: int, price: float, qty: float = 1.0):
    """A Tick with is_buyer_maker False."""
    return Tick(symbol, trade_id, ts_ms, price, qty, False)


def wait_until(cond, timeout: float = 60.0) -> None:
    """Poll `cond` every 20 ms until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def pandas_bars(ticks: pd.DataFrame) -> pd.DataFrame:
    """Reference 1 s bars of stored ticks with pandas (open/close by trade id)."""
    df = ticks.sort_values("trade_id").copy()
    df["bucket"] = df["ts"].dt.floor("1s")
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


def assert_bars_match_ticks(target: str, symbol: str) -> None:
    """Stored 1 s bars equal pandas bars of the stored ticks."""
    got = storage.read_bars_1s(target, symbol, None, None)
    want = pandas_bars(storage.read_ticks(target, symbol, None, None))
    assert len(got) == len(want) > 0
    np.testing.assert_array_equal(
        got["ts"].dt.as_unit("ms").astype("int64").to_numpy(),
        want["ts"].dt.as_unit("ms").astype("int64").to_numpy(),
    )
    for col in ("open", "high", "low", "close", "trades"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy())
    for col in ("volume", "quote_volume", "vwap"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-9)


def sql(url: str, text: str, params: tuple = ()) -> list:
    """Rows of one statement on a fresh connection (schema from the URL)."""
    t = storage_pg.parse_target(url)
    with storage_pg.connect(t, "test") as conn:
        return conn.execute(text, params).fetchall()


# ------------------------------------------------------------------- schema, URLs


def test_schema_matches_the_contract_and_ticks_are_partitioned(pg_url: str) -> None:
    """Contract columns in order, ticks partitioned by range with the 3-column key."""
    Writer(pg_url).close()
    cols = {
        t: [
            r[0]
            for r in sql(
                pg_url,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s "
                "ORDER BY ordinal_position",
                (t,),
            )
        ]
        for t in ("ticks", "bars_1s", "gaps", "bars")
    }
    assert cols["ticks"] == [
        "symbol",
        "trade_id",
        "ts_ms",
        "price",
        "qty",
        "is_buyer_maker",
    ]
    assert cols["bars_1s"][:10] == [
        "symbol",
        "ts_ms",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "vwap",
    ]
    assert cols["gaps"][1:] == [
        "symbol",
        "from_id",
        "to_id",
        "detected_ms",
        "filled_by",
        "filled_ms",
        "fill_detail",
    ]
    assert cols["bars"][:3] == ["symbol", "interval_s", "ts_ms"]
    kind, key = sql(
        pg_url,
        "SELECT c.relkind, pg_get_partkeydef(c.oid) FROM pg_class c "
        "WHERE c.oid = 'ticks'::regclass",
    )[0]
    assert (kind, key) == ("p", "RANGE (ts_ms)")
    pk = sql(
        pg_url,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'ticks'::regclass AND contype = 'p'",
    )
    assert pk == [("PRIMARY KEY (symbol, trade_id, ts_ms)",)]
    version = sql(pg_url, "SELECT version FROM schema_version")
    assert version == [(storage_pg.SCHEMA_VERSION,)]


def test_newer_schema_version_is_refused(pg_url: str) -> None:
    """A schema written by a newer program is refused with the version numbers."""
    Writer(pg_url).close()
    with storage_pg.connect(storage_pg.parse_target(pg_url), "test") as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(StorageError, match=r"^open failed: database schema version"):
        Writer(pg_url)


def test_url_forms_and_path_mangled_urls() -> None:
    """Settings are told apart; a URL that went through Path() still works."""
    url = "postgresql://me:secret@db.example:6543/market?schema=live"
    assert storage.is_postgres_url(url)
    assert storage.is_postgres_url(Path(url))  # "postgresql:/me:secret@..."
    assert storage.is_postgres_url("postgres://u@h/d")
    assert not storage.is_postgres_url("data/market.db")
    assert not storage.is_postgres_url(Path("data/market.db"))
    assert not storage.is_postgres_url("sqlite:///data/market.db")
    t = storage_pg.parse_target(Path(url))
    assert (t.host, t.port, t.dbname, t.user, t.schema) == (
        "db.example",
        6543,
        "market",
        "me",
        "live",
    )
    assert "schema" not in t.conninfo and "connect_timeout=5" in t.conninfo
    assert "secret" not in t.where
    ds = storage.dataset_target(url, "btc_2024")
    assert storage_pg.parse_target(ds).schema == "ds_btc_2024"
    assert storage.dataset_target("data/market.db", "x") == Path("data/datasets/x.db")
    assert storage._as_path("sqlite:///data/m.db") == Path("data/m.db")
    assert storage._as_path("sqlite:////tmp/m.db") == Path("/tmp/m.db")
    assert storage.as_target(Path(url)) == url  # repaired, kept as str
    assert storage.as_target("postgres://u@h/d") == "postgresql://u@h/d"
    assert storage.as_target("sqlite:///data/m.db") == Path("data/m.db")
    assert storage.as_target("data/m.db") == Path("data/m.db")
    with pytest.raises(ValueError, match=r"names no database"):
        storage_pg.parse_target("postgresql://u@h:5432/")
    with pytest.raises(ValueError, match=r"schema= must be"):
        storage_pg.parse_target("postgresql://u@h/d?schema=a;drop")


def test_sqlite_url_setting_opens_the_file(tmp_path: Path) -> None:
    """``sqlite:////abs/path`` writes and reads the same file as the plain path."""
    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"  # an absolute path gives four slashes
    with Writer(url) as w:
        assert w.path == path
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
    assert len(storage.read_ticks(url, "BTCUSDT", None, None)) == 1
    assert len(storage.read_ticks(path, "BTCUSDT", None, None)) == 1


def test_unreachable_server_names_host_and_port(pg_cluster) -> None:
    """Nothing listening: writer and readers raise StorageError naming host:port."""
    port = pg_cluster.port + 1 if pg_cluster.port < 65535 else 1
    url = f"postgresql://nobody@127.0.0.1:{port}/market"
    with pytest.raises(
        StorageError,
        match=rf"^open failed: cannot reach PostgreSQL at 127.0.0.1:{port}",
    ):
        Writer(url)
    with pytest.raises(
        StorageError, match=rf"^read_bars_1s failed: cannot reach .*:{port} \(database"
    ):
        storage.read_bars_1s(url, "BTCUSDT", None, None)


def test_missing_database_is_refused_by_a_reachable_server(pg_cluster) -> None:
    """A server that answers but has no such database is not called unreachable:
    the message says it refused, with host, port and the server's reason."""
    url = pg_cluster.url("no_such_db")
    with pytest.raises(
        StorageError,
        match=rf"^open failed: refused by PostgreSQL at 127.0.0.1:{pg_cluster.port} "
        r'\(database no_such_db\): .*database "no_such_db" does not exist',
    ):
        Writer(url)


def test_read_only_transaction_error_names_operation(pg_url: str) -> None:
    """A write the server refuses raises StorageError (not locked) naming the call."""
    with Writer(pg_url) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
        w._pg.execute("SET default_transaction_read_only = on")
        with pytest.raises(
            StorageError, match=r"^write_batch failed: cannot execute .* read-only"
        ) as info:
            w.write_batch([tick("BTCUSDT", 2, T0, 1.0)])
        assert not isinstance(info.value, DatabaseLockedError)
        w._pg.execute("SET default_transaction_read_only = off")
        assert w.write_batch([tick("BTCUSDT", 2, T0, 1.0)]).inserted == 1


def test_writer_reconnects_after_its_session_is_killed(pg_url: str) -> None:
    """A terminated writer session fails one call, then the writer reconnects."""
    with Writer(pg_url) as w:
        w.write_batch([tick("BTCUSDT", 1, T0, 1.0)])
        pid = w._pg.info.backend_pid
        sql(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        with pytest.raises(StorageError, match=r"^write_batch failed: cannot reach"):
            w.write_batch([tick("BTCUSDT", 2, T0 + 1, 1.0)])
        assert w.write_batch([tick("BTCUSDT", 2, T0 + 1, 1.0)]).inserted == 1
    assert len(storage.read_ticks(pg_url, "BTCUSDT", None, None)) == 2


# ------------------------------------------------------------------- partitions


def test_day_partitions_created_on_demand_and_dropped_by_prune(pg_url: str) -> None:
    """Ticks of three days make three day partitions (plus the next day's); prune
    drops whole days before the cutoff and deletes rows of the day holding it."""
    d0 = (T0 // DAY) * DAY
    ticks = [
        tick("BTCUSDT", day * 10 + i, d0 + day * DAY + i * 1000, 100.0 + i)
        for day in range(3)
        for i in range(5)
    ]
    with Writer(pg_url) as w:
        assert w.write_batch(ticks).inserted == 15
        assert w.partitions() == [
            "ticks_p20240808",
            "ticks_p20240809",
            "ticks_p20240810",
            "ticks_p20240811",
        ]
        # ids 20, 21 of day 2 are before the cutoff; days 0 and 1 end before it
        cutoff = d0 + 2 * DAY + 1500
        bars_before = 5 + 5 + 1  # 1 s bars ending by the cutoff (not +1000)
        assert w.prune(cutoff) == 10 + 2 + bars_before
        assert w.partitions() == ["ticks_p20240810", "ticks_p20240811"]
        got = storage.read_ticks(pg_url, "BTCUSDT", None, None)
        assert got["trade_id"].tolist() == [22, 23, 24]
        bars = storage.read_bars_1s(pg_url, "BTCUSDT", None, None)
        assert bars["ts"].iloc[0] == pd.Timestamp(
            d0 + 2 * DAY + 1000, unit="ms", tz="UTC"
        )
        late = tick("BTCUSDT", 100, d0 + 5000, 1.0)  # an old day comes back on demand
        assert w.write_batch([late]).inserted == 1
        assert "ticks_p20240808" in w.partitions()
    assert storage.last_tick(pg_url, "BTCUSDT") == late


def test_dedupe_probe_reads_only_the_batch_days(pg_url: str) -> None:
    """The stored-id probe of a batch is pruned to the partitions of its days."""
    d0 = (T0 // DAY) * DAY
    with Writer(pg_url) as w:
        for day in range(5):
            w.write_batch([tick("BTCUSDT", day * 10 + 1, d0 + day * DAY, 1.0)])
        plan = w._pg.execute(
            "EXPLAIN SELECT trade_id FROM ticks WHERE symbol = 'BTCUSDT' "
            "AND trade_id BETWEEN 1 AND 9 AND ts_ms BETWEEN %s AND %s",
            (d0, d0 + 10),
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "ticks_p20240808" in text and "ticks_p20240809" not in text


def lock_counter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (operation, relation locks held just before COMMIT) of every writer
    transaction from now on (PgWriter._transaction wrapped)."""
    seen: list[tuple[str, int]] = []
    original = storage_pg.PgWriter._transaction

    @contextlib.contextmanager
    def counted(self, op: str, **kw):  # noqa: ANN001, ANN202
        with original(self, op, **kw) as conn:
            yield conn
            row = conn._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                "AND locktype = 'relation'"
            ).fetchone()
            seen.append((op, int(row[0])))

    monkeypatch.setattr(storage_pg.PgWriter, "_transaction", counted)
    return seen


def test_batch_over_300_days_makes_few_partitions_and_keeps_every_row(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of trades on 300 different days creates partitions for three days
    (and the next), puts the rest in ticks_default with bounded locks, stores and
    dedupes every row, and a later batch of one of those days moves its rows out."""
    d0 = (T0 // DAY) * DAY
    ticks = [tick("BTCUSDT", i, d0 - i * DAY + 1000, 100.0 + i) for i in range(300)]
    locks = lock_counter(monkeypatch)
    with Writer(pg_url) as w:
        assert w.write_batch(ticks).inserted == 300
        assert w.partitions() == [
            "ticks_p20240806",
            "ticks_p20240807",
            "ticks_p20240808",
            "ticks_p20240809",
        ]
        assert sql(pg_url, "SELECT count(*) FROM ticks_default") == [(297,)]
        # PostgreSQL's default max_locks_per_transaction; a first batch of one new
        # day holds 34 here, the 300-day batch of the old code about 2 100
        assert max(n for op, n in locks if op == "write_batch") <= 64
        assert w.write_batch(ticks).inserted == 0  # dedupe sees ticks_default too
        late = tick("BTCUSDT", 1000, d0 - 100 * DAY + 5000, 1.0)  # 2024-04-30
        assert w.write_batch([late]).inserted == 1
        assert "ticks_p20240430" in w.partitions()
    assert sql(pg_url, "SELECT count(*) FROM ticks_p20240430") == [(2,)]
    assert sql(pg_url, "SELECT count(*) FROM ticks_p20240501") == [(1,)]  # next day
    assert sql(pg_url, "SELECT count(*) FROM ticks_default") == [(295,)]
    got = storage.read_ticks(pg_url, "BTCUSDT", None, None)
    assert sorted(got["trade_id"]) == [*range(300), 1000]
    assert storage.read_bars_1s(pg_url, "BTCUSDT", None, None)["trades"].sum() == 301


def test_prune_of_300_day_partitions_drops_one_per_transaction(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrating 300 days creates every day's partition and prune drops 290 of them,
    each transaction of both holding a bounded number of locks."""
    d0 = (T0 // DAY) * DAY
    with Writer(tmp_path / "src.db") as src:
        src.write_batch(
            [
                tick("BTCUSDT", 2 * i + k, d0 - (299 - i) * DAY + 1000 * (k + 1), 1.0)
                for i in range(300)
                for k in range(2)
            ]
        )
    locks = lock_counter(monkeypatch)
    assert storage_pg.migrate(tmp_path / "src.db", pg_url).ok
    with Writer(pg_url) as w:
        assert len(w.partitions()) == 301  # every day copied has its partition
        cutoff = d0 - 9 * DAY + 1500  # drops 290 whole days, one tick of the next
        assert w.prune(cutoff) == 2 * 290 + 1 + 2 * 290
        parts = w.partitions()
    assert len(parts) == 11 and parts[0] == "ticks_p20240730"
    assert len(storage.read_ticks(pg_url, "BTCUSDT", None, None)) == 19
    pruned = [n for op, n in locks if op == "prune"]
    assert len(pruned) >= 290 and max(pruned) <= 20
    assert max(n for op, n in locks if op == "migrate") <= 40


# ------------------------------------------------------------------- lease

HOLD_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import storage
w = storage.Writer({url!r})
state = w.acquire_lease(storage.new_lease_owner())
print("acquired" if state.acquired else "refused", flush=True)
sys.stdin.read()
"""


def test_advisory_lock_lease_across_processes_and_kill_9(pg_url: str) -> None:
    """Two processes race: one wins; after kill -9 of the winner the other takes
    the lease at once (the server freed the lock with the session)."""
    Writer(pg_url).close()
    code = HOLD_SCRIPT.format(root=str(REPO), url=pg_url)
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
        results = [p.stdout.readline().strip() for p in procs]
        assert sorted(results) == ["acquired", "refused"]
        winner = procs[results.index("acquired")]
        assert storage.read_lease(pg_url).pid == winner.pid
        with Writer(pg_url) as me:
            mine = storage.new_lease_owner()
            refused = me.acquire_lease(mine)
            assert not refused.acquired and refused.holder.pid == winner.pid
            winner.send_signal(signal.SIGKILL)
            winner.wait(10)
            wait_until(lambda: me.acquire_lease(mine).acquired, timeout=10)
            assert storage.read_lease(pg_url) == mine
            assert me.heartbeat(mine)
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=30)


def test_stale_holder_session_is_terminated_on_takeover(pg_url: str) -> None:
    """A live holder without heartbeat past stale_after_ms loses lock and lease."""
    with Writer(pg_url) as first, Writer(pg_url) as second:
        other = LeaseOwner(pid=1, host="elsewhere.example", since_ms=1)
        assert first.acquire_lease(other, now=T0).acquired
        me = storage.new_lease_owner()
        assert not second.acquire_lease(
            me, stale_after_ms=15_000, now=T0 + 15_000
        ).acquired
        assert not second.heartbeat(me)
        taken = second.acquire_lease(me, stale_after_ms=15_000, now=T0 + 15_001)
        assert taken.acquired and taken.holder == me
        assert not first.heartbeat(other)
        assert storage.read_lease(pg_url) == me
        assert first.write_batch([tick("BTCUSDT", 1, T0, 1.0)]).inserted == 1


def test_takeover_spares_a_new_holder_that_has_not_yet_written_its_row(
    pg_url: str,
) -> None:
    """The row still names a dead process, but another dashboard has just taken
    the free lock: a third writer must not terminate that session (the two would
    take turns as writer, each running its alert monitor for a moment)."""
    ghost = LeaseOwner(pid=dead_pid(), host=storage.new_lease_owner().host, since_ms=1)
    with Writer(pg_url) as dead, Writer(pg_url) as a, Writer(pg_url) as b:
        assert dead.acquire_lease(ghost).acquired
        dead._unlock()  # its process died: the session's lock went, the row stayed
        a_owner = LeaseOwner(pid=os.getpid(), host=ghost.host, since_ms=2)
        # a's acquire_lease, stopped between taking the lock and writing its row
        a._lease_tag = storage_pg._lease_tag(a_owner)
        assert a._try_lock("test")
        b_owner = LeaseOwner(pid=os.getpid(), host=ghost.host, since_ms=3)
        refused = b.acquire_lease(b_owner)
        assert not refused.acquired and refused.holder == ghost
        taken = a.acquire_lease(a_owner)  # a finishes: its session was spared
        assert taken.acquired and storage.read_lease(pg_url) == a_owner
        assert a.heartbeat(a_owner)
        refused = b.acquire_lease(b_owner)
        assert not refused.acquired and refused.holder == a_owner


# ------------------------------------------------------------------- ingestion


def frame_ticks(path: Path) -> int:
    """Number of MARKET trades in a recorded NDJSON.gz file."""
    with gzip.open(path, "rt") as fh:
        return sum(json.loads(line)["data"]["X"] == "MARKET" for line in fh)


def test_replay_driven_ingestion_into_postgres(shared_data: Path, pg_url: str) -> None:
    """The ingestion service fed by the replay server stores every trade once in
    PostgreSQL, with 1 s bars equal to pandas bars of the stored ticks."""
    from ingestion import IngestionConfig, IngestionService
    from replay import start_replay_in_thread

    replay = start_replay_in_thread(files=[shared_data / "derived" / SET_2023], speed=0)
    svc = IngestionService(
        IngestionConfig(
            symbols=("BTCUSDT",),
            db_path=pg_url,
            base_url=replay.url + "/public",
            flush_max_ticks=1000,
        )
    )
    try:
        svc.start()
        wait_until(lambda: svc.status().stored_ticks >= N_2023)
        st = svc.status()
    finally:
        svc.stop()
        replay.stop()
    assert (st.total_ticks, st.gaps, st.duplicates, st.role) == (
        N_2023,
        0,
        0,
        "writer",
    )
    ticks = storage.read_ticks(pg_url, "BTCUSDT", None, None)
    assert len(ticks) == N_2023 and ticks["trade_id"].is_unique
    assert_bars_match_ticks(pg_url, "BTCUSDT")
    assert storage.read_gaps(pg_url).empty


def test_kill_9_of_the_headless_ingester_loses_no_committed_tick(
    shared_data: Path, pg_url: str
) -> None:
    """SIGKILL mid-stream leaves whole batches (ticks and bars agree); a restart
    takes the lease at once and completes the data without duplicates."""
    from ingestion import IngestionConfig, IngestionService
    from replay import start_replay_in_thread

    source = shared_data / "derived" / SET_2023
    replay = start_replay_in_thread(files=[source], speed=10)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "ingestion.py"),
            "stream",
            "--no-rest",
            "--symbols",
            "btcusdt",
            "--db",
            pg_url,
            "--url",
            replay.url + "/public",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def count() -> int:
        return len(storage.read_ticks(pg_url, "BTCUSDT", None, None))

    try:
        wait_until(lambda: count() > 200, timeout=90)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        replay.stop()
    kept = storage.read_ticks(pg_url, "BTCUSDT", None, None)
    assert kept["trade_id"].is_unique
    bars = storage.read_bars_1s(pg_url, "BTCUSDT", None, None)
    assert int(bars["trades"].sum()) == len(kept)  # whole batches only
    assert storage.read_lease(pg_url).pid == proc.pid  # the row outlives it
    replay = start_replay_in_thread(files=[source], speed=0)
    svc = IngestionService(
        IngestionConfig(
            symbols=("BTCUSDT",), db_path=pg_url, base_url=replay.url + "/public"
        )
    )
    try:
        svc.start()
        wait_until(lambda: count() >= N_2023)
        st = svc.status()
    finally:
        svc.stop()
        replay.stop()
    assert st.role == "writer"
    ticks = storage.read_ticks(pg_url, "BTCUSDT", None, None)
    assert len(ticks) == N_2023 and ticks["trade_id"].is_unique
    assert_bars_match_ticks(pg_url, "BTCUSDT")


# ------------------------------------------------------------------- migration


def test_migration_from_sqlite_gives_identical_bars_and_rows(
    shared_data: Path, tmp_path: Path, pg_url: str
) -> None:
    """SQLite -> PostgreSQL copies every table; bars read back identical, counts and
    checksums agree, and the copy keeps working (new rule ids follow the old)."""
    from test_storage import load_market_ticks

    src = tmp_path / "market.db"
    ticks = load_market_ticks(shared_data / "derived" / SET_2023)
    with Writer(src) as w:
        for i in range(0, len(ticks), 4000):
            w.write_batch(ticks[i : i + 4000], last_seen={"BTCUSDT": 10**10})
        w.write_batch([], [Gap("BTCUSDT", 5, 9, T0)])
        w.mark_gap_filled("BTCUSDT", 5, 9, by="skipped", at_ms=T0, detail="test")
        w.write_bars(
            "ETHUSDT",
            60,
            pd.DataFrame(
                {
                    "ts_ms": [T0, T0 + 60_000],
                    "open": [1.0, 2.0],
                    "high": [1.5, 2.5],
                    "low": [0.5, 1.5],
                    "close": [1.2, 2.2],
                    "volume": [10.0, 20.0],
                    "quote_volume": [12.0, np.nan],
                }
            ),
        )
        r1 = w.add_alert_rule("z > 2", "{}", 30.0, True, None, None)
        r2 = w.add_alert_rule("z < -2", "{}", 0.0, False, "http://127.0.0.1:9/", None)
        w.delete_alert_rule(r1)
        w.add_alert_event(r1, T0, 2.5, "{}")
        w.add_alert_event(r2, T0 + 1, -2.5, "{}")
    seen: list[tuple[str, int, int]] = []
    report = storage_pg.migrate(
        f"sqlite:///{src}", pg_url, lambda *a: seen.append(a), chunk_rows=5000
    )
    assert report.ok, report.summary()
    counts = {tc.table: (tc.source_rows, tc.target_rows) for tc in report.tables}
    assert counts["ticks"] == (len(ticks), len(ticks))
    assert counts["alert_events"] == (2, 2) and counts["gaps"] == (1, 1)
    assert report.bars_checksum_source == report.bars_checksum_target
    assert ("ticks", len(ticks), len(ticks)) in seen and ("ticks", 5000, N_2023) in seen
    pd.testing.assert_frame_equal(
        storage.read_bars_1s(pg_url, "BTCUSDT", None, None),
        storage.read_bars_1s(src, "BTCUSDT", None, None),
    )
    pd.testing.assert_frame_equal(
        storage.read_bars_agg(pg_url, "BTCUSDT", 60, None, None),
        storage.read_bars_agg(src, "BTCUSDT", 60, None, None),
    )
    pd.testing.assert_frame_equal(
        storage.read_bars(pg_url, "ETHUSDT", 60, None, None),
        storage.read_bars(src, "ETHUSDT", 60, None, None),
    )
    pd.testing.assert_frame_equal(
        storage.read_ticks(pg_url, "BTCUSDT", None, None),
        storage.read_ticks(src, "BTCUSDT", None, None),
    )
    pd.testing.assert_frame_equal(storage.read_gaps(pg_url), storage.read_gaps(src))
    pd.testing.assert_frame_equal(
        storage.list_alert_events(pg_url), storage.list_alert_events(src)
    )
    assert storage.list_alert_rules(pg_url) == storage.list_alert_rules(src)
    with Writer(pg_url) as w:
        assert w.last_trade_ids() == {"BTCUSDT": 10**10}
        assert w.add_alert_rule("z > 3", "{}", 0, True, None, None) == r2 + 1
    with pytest.raises(ValueError, match=r"^to: the destination already holds rows"):
        storage_pg.migrate(src, pg_url)


def test_migrate_cli_prints_progress_and_verification(
    tmp_path: Path, pg_url: str, capsys
) -> None:
    """``migrate --from --to`` copies, prints per-table progress and "verified: OK"."""
    src = tmp_path / "m.db"
    with Writer(src) as w:
        w.write_batch([tick("BTCUSDT", i, T0 + i * 300, 1.0 + i) for i in range(50)])
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    storage_pg.add_cli_commands(sub)
    args = parser.parse_args(["migrate", "--from", str(src), "--to", pg_url])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ticks: 50/50 rows" in out and "verified: OK" in out
    args = parser.parse_args(
        ["migrate", "--from", str(tmp_path / "no.db"), "--to", pg_url]
    )
    assert args.func(args) == 2
    assert "from: no database file" in capsys.readouterr().err
    assert os.path.exists(src)


def test_ingestion_config_keeps_a_postgres_url_as_given() -> None:
    """A PostgreSQL URL reaches the writer as given, not as a mangled Path."""
    from ingestion import IngestionConfig

    url = "postgresql://u@127.0.0.1:5432/market"
    assert IngestionConfig(symbols=("BTCUSDT",), db_path=url).db_path == url


# ------------------------------------------------------------- import into datasets


def _staging_schemas(url: str) -> list[str]:
    rows = sql(
        url,
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1",
        ("_staging_",),
    )
    return [r[0] for r in rows]


def _dataset_frames(target: object, symbol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        storage.read_ticks(target, symbol, None, None),
        storage.read_bars_1s(target, symbol, None, None),
    )


def test_import_into_a_postgres_dataset_equals_the_sqlite_import(
    shared_data: Path, tmp_path: Path, pg_url: str
) -> None:
    """Real Binance trades CSVs imported into a PostgreSQL dataset give the same
    ticks and 1 s bars as the SQLite import; a second file adds to the dataset with
    the same duplicate counts; no staging schema or temporary file is left."""
    import datafiles

    csvs = shared_data / "derived_csv"
    first = csvs / "BTCUSDT-trades-2024-08-08-span.csv"
    second = csvs / "BTCUSDT-trades-2024-07-18-span.csv"
    temp_before = set(Path(datafiles.tempfile.gettempdir()).glob(".pairdesk-*"))
    reports = {}
    for base in (tmp_path, pg_url):
        a = datafiles.import_file(first, dataset="btc", base_dir=base, chunk_rows=4000)
        b = datafiles.import_file(first, dataset="btc", base_dir=base)  # all dupes
        c = datafiles.import_file(second, dataset="btc", base_dir=base)
        reports[str(base)] = [
            (r.ticks_inserted, r.duplicates_dropped) for r in (a, b, c)
        ]
    assert reports[str(tmp_path)] == reports[pg_url]
    n_first = reports[pg_url][0][0]
    assert n_first == 21_313 and reports[pg_url][1] == (0, n_first)
    assert storage.list_datasets(pg_url) == ["btc"]
    pg_ds = storage.dataset_target(pg_url, "btc")
    assert isinstance(pg_ds, str) and c.db_path == pg_ds
    lite = storage.dataset_db_path(tmp_path, "btc")
    for got, want in zip(
        _dataset_frames(pg_ds, "BTCUSDT"), _dataset_frames(lite, "BTCUSDT"), strict=True
    ):
        pd.testing.assert_frame_equal(got, want)
    assert storage_pg.bars_checksum(pg_ds) == storage_pg.bars_checksum(lite)
    assert _staging_schemas(pg_url) == []
    assert set(Path(datafiles.tempfile.gettempdir()).glob(".pairdesk-*")) == temp_before


def test_bad_file_or_failed_copy_leaves_the_postgres_dataset_as_it_was(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad row in a late chunk, or a copy that fails half-way, keeps nothing:
    the dataset reads as before and the staging schema is gone."""
    import datafiles

    good = tmp_path / "BTCUSDT-trades-a.csv"
    rows = [
        f"{1000 + i},{60000 + i % 7}.5,0.01,0,{T0 + i * 9},false" for i in range(900)
    ]
    good.write_text("\n".join(rows) + "\n")
    datafiles.import_file(good, dataset="keep", base_dir=pg_url, now_ms=T0 + 10**9)
    url = storage.dataset_target(pg_url, "keep")
    before = storage_pg.bars_checksum(url), _dataset_frames(url, "BTCUSDT")
    bad = tmp_path / "BTCUSDT-trades-b.csv"
    bad.write_text("\n".join([*rows[:500], "5000,60000,0.1,0,not-a-time,true"]) + "\n")
    with pytest.raises(datafiles.FileImportError, match="row 501, column 'time'"):
        datafiles.import_file(bad, dataset="keep", base_dir=pg_url, chunk_rows=100)
    more = tmp_path / "BTCUSDT-trades-c.csv"
    more.write_text(f"9000,61000.5,0.2,0,{T0 + 10_000},true\n")
    real_copy = storage_pg.PgWriter._copy_rows

    def copy_then_fail(self, table, columns, rows):  # noqa: ANN001, ANN202
        real_copy(self, table, columns, rows)
        if table == "bars_1s":
            raise StorageError("migrate failed: connection lost (injected)")

    monkeypatch.setattr(storage_pg.PgWriter, "_copy_rows", copy_then_fail)
    with pytest.raises(StorageError, match="injected"):
        datafiles.import_file(more, dataset="keep", base_dir=pg_url, now_ms=T0 + 10**9)
    monkeypatch.undo()
    after = storage_pg.bars_checksum(url), _dataset_frames(url, "BTCUSDT")
    assert after[0] == before[0]
    for got, want in zip(after[1], before[1], strict=True):
        pd.testing.assert_frame_equal(got, want)
    assert _staging_schemas(pg_url) == []
    assert storage.list_datasets(pg_url) == ["keep"]


def test_stale_staging_schemas_are_dropped_and_fresh_ones_kept(
    tmp_path: Path, pg_url: str
) -> None:
    """A staging schema older than a day (a crashed import) is dropped by the next
    import; one of a running import (recent) is left alone."""
    old = f"_staging_{int(time.time()) - 2 * 86_400}_1"
    recent = f"_staging_{int(time.time())}_1"
    t = storage_pg.parse_target(pg_url)
    with storage_pg.connect(t, "test") as conn:
        for schema in (old, recent):
            conn.execute(f'CREATE SCHEMA "{schema}"')
    src = tmp_path / "ETHUSDT-trades-x.csv"
    src.write_text(f"1,3000.5,0.1,0,{T0},true\n")
    datafiles = pytest.importorskip("datafiles")
    datafiles.import_file(src, dataset="eth", base_dir=pg_url, now_ms=T0 + 10**9)
    assert _staging_schemas(pg_url) == [recent]


def test_import_cli_into_postgres_names_the_dataset(
    tmp_path: Path, pg_url: str, capsys
) -> None:
    """``ingestion.py import FILE --db postgresql://...`` lands in a schema dataset
    named after the file and prints where it went."""
    import ingestion

    src = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    src.write_text(
        "".join(f"{i},{60000 + i}.5,0.01,0,{T0 + i * 250},false\n" for i in range(40))
    )
    assert ingestion.main(["import", str(src), "--db", pg_url]) == 0
    out = capsys.readouterr().out
    assert "-> dataset 'BTCUSDT-trades-2024-08-08': BTCUSDT, 40 rows, 40 ticks" in out
    assert "?dataset=BTCUSDT-trades-2024-08-08" in out
    assert storage.list_datasets(pg_url) == ["BTCUSDT-trades-2024-08-08"]
    ticks = storage.read_ticks(
        storage.dataset_target(pg_url, "BTCUSDT-trades-2024-08-08"),
        "BTCUSDT",
        None,
        None,
    )
    assert ticks["trade_id"].tolist() == list(range(40))


def test_display_target_masks_the_password() -> None:
    """Messages show a PostgreSQL URL without its password; paths unchanged."""
    assert (
        storage.display_target("postgresql://desk:s3cr%40t@db.example:5433/m?dataset=x")
        == "postgresql://desk:***@db.example:5433/m?dataset=x"
    )
    assert storage.display_target(Path("data/market.db")) == "data/market.db"
