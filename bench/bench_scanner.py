"""Benchmark: ``analytics.scan_pairs`` against a loop of statsmodels ``coint``.

What is timed (wall time, BLAS pinned to one thread before numpy is imported):

* ``scanner.scan.S.N``: one ``scan_pairs`` call on S symbols of N 1 m bars (all
  S (S-1) / 2 pairs: alignment, rolling OLS hedge and z, return correlation,
  signals, half-life, Engle-Granger in both directions, Benjamini-Hochberg). Target
  for 20 symbols x 900 bars: under 1.5 s median, at least 20x faster than the
  baseline.
* ``scanner.statsmodels.S.N``: BASELINE, the same Engle-Granger tests done the
  common way: statsmodels ``coint`` (default AIC lag search) on every pair, in both
  directions (what the scanner's p-value needs), nothing else. Its note gives the
  largest difference between the two p-values over all pairs.
* ``scanner.statsmodels_one_way.S.N``: the same loop in one direction only (a
  scanner without the second direction), for reference.

Data: seeded independent random walks near 100 x (i + 1), one per symbol, on the
same clock (the usual case for liquid futures).

    python bench/bench_scanner.py [--quick] [--keys]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import print_table, ratio_row, row, timed_ms  # noqa: E402
from statsmodels.tsa.stattools import coint  # noqa: E402

import analytics as A  # noqa: E402

TARGET = (20, 900)
TARGET_S = 1.5
TARGET_SPEEDUP = 20.0
SEED = 11


def universe(n_symbols: int, n_bars: int) -> dict[str, pd.DataFrame]:
    """Seeded random walks as 1 m bar frames, one per symbol."""
    rng = np.random.default_rng(SEED)
    ts = pd.date_range("2024-01-01", periods=n_bars, freq="1min", tz="UTC")
    ts = ts.as_unit("ms")
    out = {}
    for i in range(n_symbols):
        p = 100.0 * (i + 1) + np.cumsum(rng.normal(0.0, 1.0, n_bars))
        out[f"S{i:02d}USDT"] = pd.DataFrame(
            {"ts": ts, "open": p, "high": p, "low": p, "close": p, "volume": 1.0,
             "quote_volume": p, "trades": 5, "vwap": p}
        )  # fmt: skip
    return out


def statsmodels_loop(bars: dict[str, pd.DataFrame], both: bool) -> dict:
    """BASELINE: statsmodels coint on every pair (both directions when asked)."""
    closes = {s: f["close"].to_numpy() for s, f in bars.items()}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a, b in itertools.combinations(sorted(closes), 2):
            p = coint(closes[a], closes[b])[1]
            if both:
                p = min(1.0, 2.0 * min(p, coint(closes[b], closes[a])[1]))
            out[(a, b)] = p
    return out


def _agreement(bars: dict[str, pd.DataFrame], params: A.PairParams) -> str:
    """Largest |p(ours) - p(statsmodels)| over the pairs, as a note."""
    frame = A.scan_pairs(bars, params)
    ref = statsmodels_loop(bars, both=True)
    diffs = [abs(r.eg_p - ref[(r.y, r.x)]) for r in frame.itertuples()]
    return f"max |eg_p - statsmodels| over {len(diffs)} pairs: {max(diffs):.1e}"


def run(quick: bool = False) -> list[dict]:
    """Scanner and baseline rows for each size (``_common.row`` format)."""
    params = A.PairParams()
    sizes = [(10, 900), TARGET] if quick else [(10, 900), TARGET, (20, 3000)]
    rows: list[dict] = []
    for n_sym, n_bars in sizes:
        bars = universe(n_sym, n_bars)
        tag = f"{n_sym}.{n_bars}"
        label = f"{n_sym} symbols x {n_bars:,} bars ({n_sym * (n_sym - 1) // 2} pairs)"
        base_runs = 1 if quick or n_bars > 900 else 3
        base = row(
            f"scanner.statsmodels.{tag}",
            f"BASELINE statsmodels coint both ways, {label}",
            "ms",
            timed_ms(lambda b=bars: statsmodels_loop(b, True), base_runs),
            note=_agreement(bars, params) if (n_sym, n_bars) == TARGET else None,
        )
        base["target"] = "none (baseline)"
        one_way = row(
            f"scanner.statsmodels_one_way.{tag}",
            f"statsmodels coint one way only, {label}",
            "ms",
            timed_ms(lambda b=bars: statsmodels_loop(b, False), base_runs),
        )
        ours = row(
            f"scanner.scan.{tag}",
            f"scan_pairs, {label}",
            "ms",
            timed_ms(
                lambda b=bars: A.scan_pairs(b, params), 3 if quick else 5, warmup=1
            ),
            base,
        )
        if (n_sym, n_bars) == TARGET:
            ours["target"] = f"<= {TARGET_S * 1000:g} ms"
            ours["met"] = ours["median"] <= TARGET_S * 1000
        speedup = ratio_row(
            f"scanner.speedup.{tag}",
            f"  speed-up of scan_pairs over the baseline, {label}",
            base,
            ours,
            target=f">= {TARGET_SPEEDUP:g}x" if (n_sym, n_bars) == TARGET else None,
        )
        if (n_sym, n_bars) == TARGET:
            speedup["met"] = speedup["median"] >= TARGET_SPEEDUP
        rows += [base, one_way, ours, speedup]
    return rows


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and runs")
    parser.add_argument("--keys", action="store_true", help="print keys and notes")
    args = parser.parse_args()
    print_table(run(quick=args.quick), keys=args.keys)


if __name__ == "__main__":
    main()
