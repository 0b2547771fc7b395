"""Benchmark: importing a Binance trades CSV into a dataset (ticks + 1 s bars).

Each case runs in a fresh subprocess, so that its peak RSS is its own, and the
cases of one size run interleaved, so that load from other processes hits them
alike (figures are medians over the runs, ratios taken in the same run):

- ``import.trades_csv``: `datafiles.import_file` (chunked read, validation,
  `storage.Writer.write_tick_columns`), wall-clock rows/s;
- ``import.trades_csv.cpu``: the same runs in rows per CPU second of the process
  (user + system), which a busy machine disturbs far less;
- ``import.trades_csv.row_path``: the same import through the former row path
  (a `Tick` per row, then `Writer.write_batch`), for a before/after in one run;
- baseline ``import.baseline_read_csv_to_sql``: ``pandas.read_csv`` of the whole
  file into memory, then ``DataFrame.to_sql`` of the rows (no bars, no
  validation, no primary key): what "just load it" costs;
- ``...peak_rss`` figures (MB) at two file sizes: the import's stays flat, the
  baseline's grows with the file.

``run(quick)`` returns one dict per figure: key, what, unit, median, min, max,
runs, baseline_key, ratio (median / baseline median, None without baseline).
``python bench/bench_import.py [--quick]`` prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pandas as pd  # noqa: E402
from _common import print_table, row  # noqa: E402

_CASE = r"""
import json, os, resource, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, {repo!r})
kind, src, base = sys.argv[1], sys.argv[2], sys.argv[3]
import sqlite3
import pandas as pd
import datafiles
from models import Tick

def row_path(writer, frame):
    ticks = list(map(Tick, frame["symbol"].tolist(), frame["trade_id"].tolist(),
                     frame["ts_ms"].tolist(), frame["price"].tolist(),
                     frame["qty"].tolist(), frame["is_buyer_maker"].tolist()))
    result = writer.write_batch(ticks)
    return result.inserted, result.duplicates

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

t0, c0 = time.perf_counter(), cpu()
if kind in ("import_file", "row_path"):
    if kind == "row_path":
        datafiles._write_ticks = row_path
    report = datafiles.import_file(src, dataset="bench", base_dir=base)
    rows = report.ticks_inserted
else:
    frame = pd.read_csv(src)
    conn = sqlite3.connect(base + "/baseline.db")
    frame.to_sql("ticks", conn, index=False, chunksize=100_000)
    conn.commit()
    conn.close()
    rows = len(frame)
seconds, cpu_s = time.perf_counter() - t0, cpu() - c0
# VmHWM of this process's own memory: getrusage's ru_maxrss would also carry the
# high-water mark of the benchmark process this one was forked from
with open("/proc/self/status") as fh:
    peak_kb = int(next(ln.split()[1] for ln in fh if ln.startswith("VmHWM:")))
print(json.dumps({{"rows": rows, "seconds": seconds, "cpu_s": cpu_s,
                   "peak_rss_mb": peak_kb / 1024}}))
"""

KINDS = ("import_file", "row_path", "baseline")


def make_trades_csv(path: Path, rows: int) -> Path:
    """A Binance USD-M trades CSV (with header) of `rows` plausible trades."""
    rng = np.random.default_rng(7)
    with open(path, "w") as fh:
        fh.write("id,price,qty,quote_qty,time,is_buyer_maker\n")
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            ids = np.arange(start, start + n) + 5_000_000_000
            ts = 1_723_161_256_322 + (ids - 5_000_000_000) * 3
            price = np.round(60_000 + np.cumsum(rng.normal(0, 0.5, n)), 1)
            qty = np.round(rng.exponential(0.05, n) + 0.001, 3)
            frame = pd.DataFrame(
                {
                    "id": ids,
                    "price": price,
                    "qty": qty,
                    "quote_qty": np.round(price * qty, 4),
                    "time": ts,
                    "is_buyer_maker": np.where(rng.random(n) < 0.5, "true", "false"),
                }
            )
            fh.write(frame.to_csv(index=False, header=False, lineterminator="\n"))
    return path


def _run_case(kind: str, src: Path, base: Path) -> dict:
    """One import in a fresh interpreter; its rows, times and peak RSS."""
    base.mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", _CASE.format(repo=str(REPO)), kind, str(src), str(base)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    """Import speed and peak RSS of import_file against the load-everything baseline.

    Speed at the smaller size (median of `runs`), peak RSS at both sizes.
    """
    small, large, runs = (100_000, 300_000, 3) if quick else (1_000_000, 4_000_000, 3)
    out: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_import-") as tmp:
        root = Path(tmp)
        for rows, n_runs, kinds in (
            (small, runs, KINDS),
            (large, 1, ("import_file", "baseline")),
        ):
            src = make_trades_csv(root / f"BTCUSDT-trades-{rows}.csv", rows)
            for i in range(n_runs):
                for kind in kinds:
                    res = _run_case(kind, src, root / f"{kind}-{rows}-{i}")
                    out.setdefault((kind, rows), []).append(res)
            src.unlink()

    def rate(kind: str, field: str = "seconds") -> list[float]:
        return [r["rows"] / r[field] for r in out[(kind, small)]]

    def rss(kind: str, rows: int) -> list[float]:
        return [r["peak_rss_mb"] for r in out[(kind, rows)]]

    base = row(
        "import.baseline_read_csv_to_sql",
        f"pandas.read_csv whole file + DataFrame.to_sql, {small} rows",
        "rows/s",
        rate("baseline"),
    )
    base_cpu = row(
        "import.baseline_read_csv_to_sql.cpu",
        "the same baseline runs, rows per CPU second (user + system)",
        "rows/s",
        rate("baseline", "cpu_s"),
    )
    base_rss_small = row(
        f"import.baseline.peak_rss.{small}",
        f"peak RSS of the baseline, {small}-row file",
        "MB",
        rss("baseline", small),
    )
    base_rss_large = row(
        f"import.baseline.peak_rss.{large}",
        f"peak RSS of the baseline, {large}-row file",
        "MB",
        rss("baseline", large),
    )
    return [
        base,
        base_cpu,
        row(
            "import.trades_csv",
            f"datafiles.import_file of a {small}-row Binance trades CSV "
            "(ticks + 1 s bars), wall clock",
            "rows/s",
            rate("import_file"),
            base,
        ),
        row(
            "import.trades_csv.cpu",
            "the same imports, rows per CPU second (user + system)",
            "rows/s",
            rate("import_file", "cpu_s"),
            base_cpu,
        ),
        row(
            "import.trades_csv.row_path",
            "the same import through Tick objects + Writer.write_batch (former path)",
            "rows/s",
            rate("row_path"),
            base,
        ),
        row(
            "import.trades_csv.row_path.cpu",
            "the former path, rows per CPU second",
            "rows/s",
            rate("row_path", "cpu_s"),
            base_cpu,
        ),
        base_rss_small,
        row(
            f"import.trades_csv.peak_rss.{small}",
            f"peak RSS of import_file, {small}-row file",
            "MB",
            rss("import_file", small),
            base_rss_small,
        ),
        base_rss_large,
        row(
            f"import.trades_csv.peak_rss.{large}",
            f"peak RSS of import_file, {large}-row file (flat in file size)",
            "MB",
            rss("import_file", large),
            base_rss_large,
        ),
    ]


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv))
