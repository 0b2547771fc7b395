"""Storage benchmark: write throughput and windowed read latency.

Every figure is the median of several runs, measured next to a baseline taken in
the same run on the same data, so ratios stay meaningful on a busy machine:

- writes (ticks/s, higher is better): ``Writer.write_batch`` (live path, lists of
  `Tick` in batches of 5 000 over 2 symbols), ``Writer.write_tick_columns`` (the
  columnar path, same batches as numpy arrays) and an all-duplicate batch, against
  a bare ``executemany`` of the same rows into the same ``ticks`` table (no
  dedupe, no bars: SQLite's insert ceiling here);
- reads (ms, lower is better): ``read_bars_1s`` of 1 h and 24 h and
  ``read_bars_agg`` (5 min) of 24 h against a bare ``cursor.fetchall()`` of the
  same rows (the sqlite3 module's floor), plus ``read_ticks`` of 1 h, ``db_stats``
  and ``last_trade_ids``.

``run(quick)`` returns one dict per figure: key, what, unit, median, min, max,
runs, baseline_key, ratio (median / baseline median, None without baseline).
``python bench/bench_storage.py [--quick]`` prints the table.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, row  # noqa: E402

import storage  # noqa: E402
from models import Tick  # noqa: E402

BATCH = 5_000
T0 = 1_700_000_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def make_batches(n_ticks: int, seed: int = 1) -> list[list[Tick]]:
    """Batches of 5 000 ticks alternating two symbols, ~35 trades/s each."""
    rng = np.random.default_rng(seed)
    n = n_ticks - n_ticks % BATCH
    half = n // 2
    ticks: list[Tick] = []
    cols = {}
    for symbol, p0 in zip(SYMBOLS, (60_000.0, 3_000.0), strict=True):
        ts = T0 + np.cumsum(rng.integers(0, 60, half))
        price = np.round(p0 + np.cumsum(rng.normal(0, 0.1, half)), 1)
        qty = 0.001 * (1 + np.arange(half) % 7)
        maker = np.arange(half) % 3 != 0
        cols[symbol] = (np.arange(1, half + 1), ts, price, qty, maker)
    for i in range(half):
        for symbol in SYMBOLS:
            ids, ts, price, qty, maker = cols[symbol]
            ticks.append(
                Tick(
                    symbol,
                    int(ids[i]),
                    int(ts[i]),
                    float(price[i]),
                    float(qty[i]),
                    bool(maker[i]),
                )
            )
    return [ticks[i : i + BATCH] for i in range(0, n, BATCH)]


def _columns(batch: list[Tick]) -> list[tuple]:
    """One batch as (symbol, ids, ts, price, qty, maker) numpy columns per symbol."""
    out = []
    for symbol in SYMBOLS:
        mine = [t for t in batch if t.symbol == symbol]
        out.append(
            (
                symbol,
                np.array([t.trade_id for t in mine], dtype=np.int64),
                np.array([t.ts_ms for t in mine], dtype=np.int64),
                np.array([t.price for t in mine]),
                np.array([t.qty for t in mine]),
                np.array([t.is_buyer_maker for t in mine]),
            )
        )
    return out


def _timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _write_figures(tmp: Path, n_ticks: int, runs: int) -> list[dict]:
    """Write throughput of write_batch, write_tick_columns and the baseline."""
    batches = make_batches(n_ticks)
    n = sum(len(b) for b in batches)
    columns = [_columns(b) for b in batches]
    rates: dict[str, list[float]] = {k: [] for k in ("base", "rows", "cols", "dup")}
    for run in range(runs):
        # interleaved, each on a fresh file, so load spikes hit all cases alike
        path = tmp / f"base-{run}.db"
        with storage.Writer(path) as w:
            conn = w._conn

            def bare(conn=conn) -> None:
                for batch in batches:
                    rows = [
                        (
                            t.symbol,
                            t.trade_id,
                            t.ts_ms,
                            t.price,
                            t.qty,
                            t.is_buyer_maker,
                        )
                        for t in batch
                    ]
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(storage._INSERT_TICK, rows)
                    conn.execute("COMMIT")

            rates["base"].append(n / _timed(bare))
        with storage.Writer(tmp / f"rows-{run}.db") as w:
            rates["rows"].append(
                n / _timed(lambda w=w: [w.write_batch(b) for b in batches])
            )
            dup = batches[: max(1, len(batches) // 5)]

            def again(w=w, dup=dup) -> None:
                for batch in dup:
                    w.write_batch(batch)

            rates["dup"].append(sum(map(len, dup)) / _timed(again))
        with storage.Writer(tmp / f"cols-{run}.db") as w:

            def cols(w=w) -> None:
                for per_symbol in columns:
                    for args in per_symbol:
                        w.write_tick_columns(*args)

            rates["cols"].append(n / _timed(cols))
    base = row(
        "storage.baseline_executemany",
        f"bare executemany of {n} ticks into `ticks`, {BATCH}/transaction "
        "(no dedupe, no bars)",
        "ticks/s",
        rates["base"],
    )
    return [
        base,
        row(
            "storage.write_batch",
            f"Writer.write_batch, {n} ticks, 2 symbols, {BATCH}/batch "
            "(dedupe + ticks + 1 s bars)",
            "ticks/s",
            rates["rows"],
            base,
        ),
        row(
            "storage.write_tick_columns",
            f"Writer.write_tick_columns, the same {n} ticks as numpy columns",
            "ticks/s",
            rates["cols"],
            base,
        ),
        row(
            "storage.write_batch.duplicates",
            f"Writer.write_batch of already-stored batches of {BATCH}",
            "ticks/s",
            rates["dup"],
            base,
        ),
    ]


def _fill_bars(path: Path, days: int) -> int:
    """`days` of synthetic 1 s bars for XBTUSDT; return the first bucket (ms)."""
    base = T0 - days * 86_400_000
    k = np.arange(days * 86_400)
    p = 50_000 + k * 0.01
    rows = list(
        zip(
            ["XBTUSDT"] * k.size,
            (base + k * 1000).tolist(),
            p.tolist(),
            (p + 1).tolist(),
            (p - 1).tolist(),
            (p + 0.5).tolist(),
            np.ones(k.size).tolist(),
            p.tolist(),
            (10 + k % 7).tolist(),
            p.tolist(),
            (k * 10).tolist(),
            (k * 10 + 9).tolist(),
            strict=True,
        )
    )
    with storage.Writer(path) as w, w._transaction("bench") as conn:
        conn.executemany(storage._UPSERT_BAR_1S, rows)
    return base


def _read_figures(tmp: Path, runs: int) -> list[dict]:
    """Latency of the windowed readers against a bare fetchall of the same rows."""
    import sqlite3

    path = tmp / "reads.db"
    base = _fill_bars(path, 2)
    lo = base + 3_600_000
    with storage.Writer(path) as w:
        w.write_batch([t for b in make_batches(2 * BATCH) for t in b])
    conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)
    sql = (
        "SELECT ts_ms, open, high, low, close, volume, quote_volume, trades "
        "FROM bars_1s WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms"
    )
    cases: dict[str, Callable[[], object]] = {
        "fetch_1h": lambda: conn.execute(
            sql, ("XBTUSDT", lo, lo + 3_600_000)
        ).fetchall(),
        "1s_1h": lambda: storage.read_bars_1s(path, "XBTUSDT", lo, lo + 3_600_000),
        "fetch_24h": lambda: conn.execute(
            sql, ("XBTUSDT", lo, lo + 86_400_000)
        ).fetchall(),
        "1s_24h": lambda: storage.read_bars_1s(path, "XBTUSDT", lo, lo + 86_400_000),
        "agg_24h": lambda: storage.read_bars_agg(
            path, "XBTUSDT", 300, lo, lo + 86_400_000
        ),
        "ticks_1h": lambda: storage.read_ticks(path, "BTCUSDT", T0, T0 + 3_600_000),
        "stats": lambda: storage.db_stats(path),
    }
    ms: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm the page cache and the reader connection
    for _ in range(runs):
        for name, fn in cases.items():
            ms[name].append(_timed(fn) * 1000)
    writer = storage.Writer(path)
    ms["last_ids"] = [_timed(writer.last_trade_ids) * 1000 for _ in range(runs)]
    writer.close()
    conn.close()
    storage.close_readers()
    f1 = row(
        "storage.baseline_fetchall.1h",
        "bare cursor.fetchall() of 3 600 1 s bar rows (sqlite3 floor)",
        "ms",
        ms["fetch_1h"],
    )
    f24 = row(
        "storage.baseline_fetchall.24h",
        "bare cursor.fetchall() of 86 400 1 s bar rows (sqlite3 floor)",
        "ms",
        ms["fetch_24h"],
    )
    return [
        f1,
        row(
            "storage.read_bars_1s.1h",
            "read_bars_1s, 1 h window (3 600 rows) to a bar DataFrame",
            "ms",
            ms["1s_1h"],
            f1,
        ),
        f24,
        row(
            "storage.read_bars_1s.24h",
            "read_bars_1s, 24 h window (86 400 rows) to a bar DataFrame",
            "ms",
            ms["1s_24h"],
            f24,
        ),
        row(
            "storage.read_bars_agg.5m.24h",
            "read_bars_agg 5 min over 24 h of 1 s bars (288 rows, SQL GROUP BY)",
            "ms",
            ms["agg_24h"],
            f24,
        ),
        row(
            "storage.read_ticks.1h",
            "read_ticks, 1 h of BTCUSDT ticks",
            "ms",
            ms["ticks_1h"],
        ),
        row("storage.db_stats", "db_stats of the read database", "ms", ms["stats"]),
        row(
            "storage.last_trade_ids",
            "Writer.last_trade_ids (resume point)",
            "ms",
            ms["last_ids"],
        ),
    ]


def run(quick: bool = False) -> list[dict]:
    """Run the storage benchmark; `quick` uses fewer ticks and runs."""
    n_ticks, runs = (50_000, 3) if quick else (300_000, 5)
    with tempfile.TemporaryDirectory(prefix="bench_storage-") as tmp:
        results = _write_figures(Path(tmp), n_ticks, runs)
        results += _read_figures(Path(tmp), runs)
        storage.close_readers()
    return results


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))
