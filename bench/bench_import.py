"""Benchmark: importing a Binance trades CSV into a dataset (ticks + 1 s bars).

Each case runs in a fresh subprocess so that its peak RSS is its own:

- ``datafiles.import_file``: chunked read, validation, ``Writer.write_batch``;
- baseline: ``pandas.read_csv`` of the whole file into memory, then ``to_sql`` of
  the ticks (no bars, no validation): what "just load it" costs in memory.

``run(quick)`` returns one dict per case (rows, seconds, rows_per_s, peak_rss_mb);
``python bench/bench_import.py [--quick]`` prints a table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent

_CASE = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
kind, src, base = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if kind == "import_file":
    import datafiles
    report = datafiles.import_file(src, dataset="bench", base_dir=base)
    rows = report.ticks_inserted
else:
    import sqlite3
    import pandas as pd
    frame = pd.read_csv(src)
    conn = sqlite3.connect(base + "/baseline.db")
    frame.to_sql("ticks", conn, index=False, chunksize=100_000)
    conn.commit()
    conn.close()
    rows = len(frame)
seconds = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rows": rows, "seconds": seconds, "peak_rss_mb": peak_kb / 1024}}))
"""


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
    code = _CASE.format(repo=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code, kind, str(src), str(base)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["case"] = kind
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def run(quick: bool = False) -> list[dict]:
    """Import speed and peak RSS of import_file vs the load-everything baseline."""
    sizes = [200_000] if quick else [500_000, 2_000_000]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            src = make_trades_csv(Path(tmp) / f"BTCUSDT-trades-{rows}.csv", rows)
            for kind in ("import_file", "baseline_read_csv_to_sql"):
                base = Path(tmp) / f"{kind}-{rows}"
                base.mkdir()
                result = _run_case(kind, src, base)
                result["file_mb"] = src.stat().st_size / 2**20
                results.append(result)
    return results


def main() -> None:
    """Print the benchmark table."""
    quick = "--quick" in sys.argv
    print(
        f"{'case':<26}{'rows':>10}{'file MB':>9}{'s':>8}{'rows/s':>10}"
        f"{'peak RSS MB':>13}"
    )
    for r in run(quick):
        print(
            f"{r['case']:<26}{r['rows']:>10}{r['file_mb']:>9.1f}{r['seconds']:>8.2f}"
            f"{r['rows_per_s']:>10.0f}{r['peak_rss_mb']:>13.0f}"
        )


if __name__ == "__main__":
    main()
