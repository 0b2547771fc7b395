"""PostgreSQL backend against SQLite in the same run: ingest rate and refresh reads.

Starts a throw-away PostgreSQL cluster on 127.0.0.1 (tests/pg_fixture.py; the
server binaries come from Debian's ``postgresql`` package) with
``synchronous_commit=off``, the nearest match to SQLite's WAL with
``synchronous=NORMAL`` (a commit does not wait for the disk; a crash of the
server machine may lose the last commits, never corrupt).

Figures (targets from issue 9):

- ``pg.ingest``: ticks/s through ``Writer.write_batch`` in batches of 5 000 ticks
  (two symbols, dense ids), against ``sqlite.ingest``; target ratio >= 0.5.
- ``pg.read_1s_24h`` / ``pg.read_1m_24h``: ``read_bars_1s`` and ``read_bars_agg``
  (60 s) over 24 h of 1 s bars of one symbol (86 400 rows), against SQLite;
  target ratio <= 2.
- ``pg.refresh.24h.{1s,1m}``: one dashboard refresh at bar close through app.py
  (``bench_refresh.measure_series``: window read, resample, ``pair_analytics``,
  figures) on 24 h of two-symbol 1 s bars, the two backends interleaved close by
  close; target ratio <= 2.

Run: ``python bench/bench_pg.py [--quick]``. Without PostgreSQL it returns no rows
and says why.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import row, timed_ms  # noqa: E402

import storage  # noqa: E402
from models import Tick  # noqa: E402

BATCH = 5_000
DAY_S = 86_400
T0 = 1_723_075_200_000  # 2024-08-08 00:00 UTC
BENCH_SETTINGS = {
    "synchronous_commit": "off",
    "shared_buffers": "128MB",
    "max_connections": "50",
}


def _ticks(n: int, start_id: int = 1) -> list[Tick]:
    """`n` ticks alternating BTCUSDT/ETHUSDT, 10 per second, dense ids per symbol."""
    rng = np.random.default_rng(7)
    prices = 60_000 + np.cumsum(rng.normal(0, 5, n))
    out = []
    for i in range(n):
        sym = "BTCUSDT" if i % 2 == 0 else "ETHUSDT"
        out.append(
            Tick(
                sym, start_id + i // 2, T0 + i * 100, float(prices[i]), 0.01, i % 3 == 0
            )
        )
    return out


def _ingest_rate(target: object, ticks: list[Tick]) -> float:
    """ticks/s writing `ticks` in 5 000-tick batches into a fresh `target`."""
    with storage.Writer(target) as w:
        w.write_batch(ticks[:BATCH])  # warm: schema, partitions, prepared statements
        start = time.perf_counter()
        for i in range(BATCH, len(ticks), BATCH):
            w.write_batch(ticks[i : i + BATCH])
        elapsed = time.perf_counter() - start
    return (len(ticks) - BATCH) / elapsed


def _fill_day(target: object) -> None:
    """24 h of 1 s bars of BTCUSDT and ETHUSDT (cointegrated): one trade per second
    each, through the columnar path."""
    n = DAY_S
    ids = np.arange(1, n + 1, dtype=np.int64)
    ts = T0 + (ids - 1) * 1000 + 250
    rng = np.random.default_rng(3)
    btc = 60_000 + np.cumsum(rng.normal(0, 2, n))
    eth = 0.05 * btc + rng.normal(0, 0.5, n)
    with storage.Writer(target) as w:
        for symbol, price in (("BTCUSDT", btc), ("ETHUSDT", eth)):
            for i in range(0, n, 20_000):
                s = slice(i, i + 20_000)
                w.write_tick_columns(
                    symbol,
                    ids[s],
                    ts[s],
                    price[s],
                    np.full(ids[s].size, 0.5),
                    ids[s] % 2,
                )


def _refresh_rows(lite_db: Path, pg_db: str, quick: bool) -> list[dict]:
    """App-path refresh at bar close on both backends, interleaved, and the ratio."""
    from bench_refresh import _quiet, measure_series

    _quiet()
    out = []
    for interval_s, label in ((1, "1s"), (60, "1m")):
        series = measure_series(
            {"sqlite": lite_db, "pg": pg_db}, interval_s, 6 if quick else 16
        )
        storage.close_readers()
        lite, pg = series["sqlite"], series["pg"]
        out += _versus(
            f"refresh.24h.{label}",
            f"refresh at bar close, 24 h db, {label} bars "
            f"(app path, {lite['bars']} bars)",
            lite["steady"],
            pg["steady"],
        )
    return out


def _versus(key: str, what: str, lite_ms: list, pg_ms: list) -> list[dict]:
    """The SQLite row and the PostgreSQL row against it (target: ratio <= 2)."""
    base = row(f"sqlite.{key}", f"SQLite {what}", "ms", lite_ms)
    cur = row(f"pg.{key}", f"PostgreSQL {what}", "ms", pg_ms, base, target="ratio <= 2")
    cur["met"] = cur["ratio"] <= 2.0
    return [base, cur]


def run(quick: bool = False) -> list[dict]:
    """Run the PostgreSQL-vs-SQLite benchmark; `quick` uses fewer ticks and runs."""
    import pg_fixture

    reason = pg_fixture.missing_reason()
    if reason is not None:
        print(f"bench_pg skipped: {reason}", file=sys.stderr)
        return []
    n_ticks, runs = (50_000, 3) if quick else (200_000, 5)
    ticks = _ticks(n_ticks)
    cluster = pg_fixture.start_cluster(BENCH_SETTINGS)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_pg-") as tmp:
            lite, pg = [], []
            for k in range(runs):
                lite.append(_ingest_rate(Path(tmp) / f"ingest{k}.db", ticks))
                pg.append(_ingest_rate(cluster.create_database("ingest"), ticks))
            base_ingest = row(
                "sqlite.ingest",
                f"SQLite write_batch, {BATCH}-tick batches, {n_ticks} ticks",
                "ticks/s",
                lite,
            )
            results = [
                base_ingest,
                row(
                    "pg.ingest",
                    f"PostgreSQL write_batch (COPY + one bar upsert), {BATCH}-tick "
                    "batches, loopback",
                    "ticks/s",
                    pg,
                    base_ingest,
                    target="ratio >= 0.5",
                ),
            ]
            results[-1]["met"] = results[-1]["ratio"] >= 0.5
            lite_db = Path(tmp) / "day.db"
            pg_db = cluster.create_database("day")
            _fill_day(lite_db)
            _fill_day(pg_db)
            hi = T0 + DAY_S * 1000
            reads = (
                (
                    "read_1s_24h",
                    "read_bars_1s over 24 h (86 400 bars)",
                    lambda t: storage.read_bars_1s(t, "BTCUSDT", T0, hi),
                ),
                (
                    "read_1m_24h",
                    "read_bars_agg 60 s over 24 h (1 440 bars)",
                    lambda t: storage.read_bars_agg(t, "BTCUSDT", 60, T0, hi),
                ),
            )
            for key, what, fn in reads:
                assert len(fn(lite_db)) == len(fn(pg_db))
                results += _versus(
                    key,
                    what,
                    timed_ms(lambda fn=fn: fn(lite_db), runs, warmup=1),
                    timed_ms(lambda fn=fn: fn(pg_db), runs, warmup=1),
                )
            storage.close_readers()
            results += _refresh_rows(lite_db, pg_db, quick)
    finally:
        cluster.stop()
    return results


if __name__ == "__main__":
    from bench_storage import print_table

    print_table(run(quick="--quick" in sys.argv))
