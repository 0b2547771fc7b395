"""Benchmark: unitroot.adf / unitroot.coint against statsmodels adfuller / coint.

Default arguments on both sides (regression "c", AIC lag search, default maxlag
``12 (n / 100) ** (1 / 4)``), on a synthetic BTC/ETH-like cointegrated pair. Each row
is the median wall time of several runs, our result's agreement with statsmodels
(relative difference of the statistic, and whether the chosen lag is the same) and
the speed-up. At 100 000 points statsmodels' coint is skipped (about 1.5 min per
call here) and, in quick mode, its adfuller too (about 1 min).

    python bench/bench_unitroot.py [--quick]
"""

from __future__ import annotations

import os

# before numpy; see docs/architecture.md, traps
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statsmodels.tsa.stattools import adfuller  # noqa: E402
from statsmodels.tsa.stattools import coint as sm_coint  # noqa: E402

import unitroot  # noqa: E402

SIZES = (1_000, 5_000, 10_000, 100_000)


def _pair(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BTC/ETH-like pair: x a random walk near 3400, y = 18 x + 2000 + AR(1) noise."""
    rng = np.random.default_rng(seed)
    x = 3400.0 + np.cumsum(rng.standard_normal(n))
    e = rng.standard_normal(n)
    u = np.empty(n)
    u[0] = e[0]
    for t in range(1, n):
        u[t] = 0.9 * u[t - 1] + e[t]
    return 18.0 * x + 2000.0 + 40.0 * u, x


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of fn over repeats runs, in ms, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), out


def _repeats(n: int, statsmodels_side: bool, quick: bool) -> int:
    """Runs per measurement: fewer for slow cases."""
    if statsmodels_side:
        return 1 if n >= 100_000 else (3 if quick or n >= 10_000 else 5)
    return 3 if n >= 100_000 else (5 if quick else 15)


def run(quick: bool = False) -> list[dict]:
    """Time ADF, coint and both together, ours against statsmodels, per size.

    Returns one dict per (test, n): test, n, ours_ms, statsmodels_ms (None when
    skipped), speedup, lag_equal, stat_rel_diff.
    """
    rows: list[dict] = []
    for n in SIZES:
        y, x = _pair(n)
        # statsmodels at 100 000 points: ADF alone costs about a minute here, coint
        # about 1.5 minutes; the full run times ADF only, quick neither.
        skip_sm_for = {"adf": quick and n >= 100_000, "coint": n >= 100_000}
        cases = {
            "adf": (
                lambda y=y: unitroot.adf(y),
                lambda y=y: adfuller(y, result_object=True),
            ),
            "coint": (
                lambda y=y, x=x: unitroot.coint(y, x),
                lambda y=y, x=x: sm_coint(y, x),
            ),
        }
        both_ours = 0.0
        both_sm: float | None = 0.0
        for name, (ours_fn, sm_fn) in cases.items():
            ours_ms, ours = _median_ms(ours_fn, _repeats(n, False, quick))
            both_ours += ours_ms
            row = {"test": name, "n": n, "ours_ms": ours_ms, "statsmodels_ms": None}
            row.update(speedup=None, lag_equal=None, stat_rel_diff=None)
            if not skip_sm_for[name]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sm_ms, ref = _median_ms(sm_fn, _repeats(n, True, quick))
                ref_stat = ref.statistic if name == "adf" else ref.coint_t
                row.update(
                    statsmodels_ms=sm_ms,
                    speedup=sm_ms / ours_ms,
                    stat_rel_diff=abs(ours.stat - ref_stat) / abs(ref_stat),
                    lag_equal=(ours.usedlag == ref.lags) if name == "adf" else None,
                )
                both_sm = None if both_sm is None else both_sm + sm_ms
            else:
                both_sm = None
            rows.append(row)
        rows.append(
            {
                "test": "adf+coint",
                "n": n,
                "ours_ms": both_ours,
                "statsmodels_ms": both_sm,
                "speedup": None if both_sm is None else both_sm / both_ours,
                "lag_equal": None,
                "stat_rel_diff": None,
            }
        )
    return rows


def _fmt(value: object, spec: str) -> str:
    """Format a table cell, '-' for None."""
    return "-" if value is None else format(value, spec)


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip statsmodels at 100k")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    head = f"{'test':<10}{'n':>8}{'ours ms':>10}{'statsmodels ms':>16}"
    print(head + f"{'speed-up':>10}{'same lag':>10}{'stat rel diff':>15}")
    for r in rows:
        print(
            f"{r['test']:<10}{r['n']:>8}{r['ours_ms']:>10.2f}"
            f"{_fmt(r['statsmodels_ms'], '.1f'):>16}{_fmt(r['speedup'], '.0f'):>10}"
            f"{_fmt(r['lag_equal'], ''):>10}{_fmt(r['stat_rel_diff'], '.1e'):>15}"
        )


if __name__ == "__main__":
    main()
