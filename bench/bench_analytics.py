"""Benchmark: ``analytics.pair_analytics`` per size, each part's share, and a baseline.

What is timed (wall time, BLAS pinned to one thread before numpy is imported):

* ``analytics.pair.N.with_tests`` / ``.no_tests``: one ``pair_analytics`` call on N
  aligned 1 m bars with the default ``PairParams`` (rolling OLS over 60 bars, z-score,
  return correlation, signals, backtest, in-sample OLS, half-life; ADF and
  Engle-Granger with their default AIC lag search when ``with_tests``), for N = 1 000,
  5 000, 10 000 and 100 000 (``--quick`` skips 100 000). Target: 5 000 bars with the
  tests in under 50 ms median.
* ``analytics.pair.N.part.NAME``: each component called on its own with the inputs
  ``pair_analytics`` gives it (align, in-sample OLS, rolling hedge, z-score,
  correlation, signals, backtest, ADF, Engle-Granger, half-life), and ``other``
  (table, latest values, messages): the time of ``pair_analytics`` calls minus that
  of their component calls, timed inside the same calls. Their ``ratio`` is the share
  of the ``with_tests`` call (``baseline_key`` points at it).
* ``analytics.naive.N``: BASELINE, the same statistics computed the common naive way:
  pandas merge, statsmodels ``RollingOLS``, pandas rolling mean/std/corr, statsmodels
  OLS for the in-sample fit and the half-life, ``adfuller`` and ``coint`` with their
  default lag search, a Python loop for the signals and a vectorised pandas backtest;
  at 1 000 and 5 000 bars (``--quick``: 1 000). The ``with_tests`` row at the same N
  has ``ratio`` = ours / baseline; the baseline's note gives the agreement of the two
  (ADF and Engle-Granger statistic and lag, rolling beta).

Data: a synthetic cointegrated BTC/ETH-like pair of 1 m bars, seeded: x a random walk
near 3 400, y = 18 x + 2 000 + 40 u with u an AR(1) (phi 0.9), trade counts and quote
volumes per bar; both legs on the same clock (the usual case for liquid futures).

    python bench/bench_analytics.py [--quick] [--keys]
"""

from __future__ import annotations

import os

# before numpy; see docs/architecture.md, traps
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import print_table, row, timed_ms  # noqa: E402

import analytics as A  # noqa: E402
from resampling import align_pair_arrays  # noqa: E402

SIZES = (1_000, 5_000, 10_000, 100_000)
NAIVE_SIZES = (1_000, 5_000)
TARGET_N = 5_000
TARGET_MS = 50.0
SEED = 7


def synthetic_bars(n: int, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two bar frames (BAR_COLUMNS) of n cointegrated 1 m bars, y ~ 18 x + 2000."""
    rng = np.random.default_rng(seed)
    x = 3400.0 + np.cumsum(rng.normal(0.0, 1.5, n))
    e = rng.standard_normal(n)
    u = np.empty(n)
    u[0] = e[0]
    for t in range(1, n):
        u[t] = 0.9 * u[t - 1] + e[t]
    y = 18.0 * x + 2000.0 + 40.0 * u
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC").as_unit("ms")

    def frame(close: np.ndarray, base_volume: float) -> pd.DataFrame:
        volume = base_volume * rng.uniform(0.5, 2.0, n)
        return pd.DataFrame(
            {
                "ts": ts,
                "open": close,
                "high": close * 1.0005,
                "low": close * 0.9995,
                "close": close,
                "volume": volume,
                "quote_volume": volume * close,
                "trades": rng.integers(50, 500, n),
                "vwap": close,
            }
        )

    return frame(y, 20.0), frame(x, 300.0)


def _runs(n: int, quick: bool) -> int:
    """Timed calls per measurement: fewer for big inputs and in quick mode."""
    if n >= 100_000:
        return 5
    if n >= 10_000:
        return 5 if quick else 11
    return 11 if quick else 21


def _parts(
    bars_y: pd.DataFrame, bars_x: pd.DataFrame, params: A.PairParams
) -> dict[str, tuple[str, Callable[[], object]]]:
    """Each component of pair_analytics as a call on the inputs it gets there."""
    w = params.window
    al = align_pair_arrays(
        bars_y, bars_x, max_ffill=params.max_ffill, interval_s=params.interval_s
    )
    y, x = al.y, al.x
    roll = A.rolling_hedge_ratio(y, x, w)
    spread = A.spread(y, x, roll.beta, roll.alpha)
    z = A.rolling_zscore(spread, w).z
    pos = A.zscore_signals(z).position
    ins = A.hedge_ratio(y, x)
    in_spread = A.spread(y, x, ins.beta, ins.alpha)
    return {
        "align": (
            "align_pair_arrays (common clock)",
            lambda: align_pair_arrays(
                bars_y,
                bars_x,
                max_ffill=params.max_ffill,
                interval_s=params.interval_s,
            ),
        ),
        "ols": ("in-sample OLS (statsmodels)", lambda: A.hedge_ratio(y, x)),
        "rolling_hedge": (
            f"rolling OLS hedge ratio ({w} bars)",
            lambda: A.rolling_hedge_ratio(y, x, w),
        ),
        "zscore": ("rolling z-score", lambda: A.rolling_zscore(spread, w)),
        "corr": (
            "rolling log-return correlation",
            lambda: A.rolling_correlation(y, x, w),
        ),
        "signals": ("z-score signal state machine", lambda: A.zscore_signals(z)),
        "backtest": (
            "backtest with trades list",
            lambda: A.backtest(
                y, x, roll.beta, pos, fee_bps=params.fee_bps, ts=al.ts, z=z
            ),
        ),
        "adf": ("ADF, AIC lag search (unitroot)", lambda: A.adf_test(in_spread)),
        "eg": ("Engle-Granger, AIC lag search", lambda: A.engle_granger(y, x)),
        "half_life": ("half-life (AR(1) fit)", lambda: A.half_life(in_spread)),
    }


COMPONENTS = (
    "align_pair_arrays",
    "liquidity_filter",
    "hedge_ratio",
    "rolling_hedge_ratio",
    "kalman_hedge_ratio",
    "spread",
    "rolling_zscore",
    "rolling_correlation",
    "zscore_signals",
    "backtest",
    "half_life",
    "adf_test",
    "engle_granger",
    "regime",
)


def _other_in_call(
    bars_y: pd.DataFrame, bars_x: pd.DataFrame, params: A.PairParams, runs: int
) -> list[float]:
    """ms per pair_analytics call spent outside its component functions.

    The components are wrapped with timers for the duration (pair_analytics looks
    them up in the module at call time), so the remainder is measured in the same
    calls: the table, latest values, messages and glue.
    """
    spent = [0.0]
    originals = {name: getattr(A, name) for name in COMPONENTS}

    def timed(fn: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        return wrapper

    out = []
    try:
        for name, fn in originals.items():
            setattr(A, name, timed(fn))
        A.pair_analytics(bars_y, bars_x, params)
        for _ in range(runs):
            spent[0] = 0.0
            start = time.perf_counter()
            A.pair_analytics(bars_y, bars_x, params)
            out.append((time.perf_counter() - start - spent[0]) * 1000.0)
    finally:
        for name, fn in originals.items():
            setattr(A, name, fn)
    return out


def naive_pair(bars_y: pd.DataFrame, bars_x: pd.DataFrame, window: int) -> dict:
    """BASELINE: the same statistics the common notebook way (pandas, statsmodels).

    Inner join with ``pd.merge``; ``RollingOLS`` for the no-look-ahead hedge; pandas
    rolling z-score and return correlation; statsmodels OLS in-sample fit and
    half-life regression; ``adfuller`` and ``coint`` with their default AIC lag
    search; a Python loop over the z-scores for the signals; a vectorised pandas
    backtest (position of bar t-1 times bar t's hedged move, fees on changes).
    """
    import statsmodels.api as sm
    from statsmodels.regression.rolling import RollingOLS
    from statsmodels.tsa.stattools import adfuller, coint

    df = pd.merge(
        bars_y[["ts", "close"]], bars_x[["ts", "close"]], on="ts", suffixes=("_y", "_x")
    ).set_index("ts")
    y, x = df["close_y"], df["close_x"]
    exog = sm.add_constant(x)
    params = RollingOLS(y, exog, window=window).fit().params
    beta, alpha = params["close_x"], params["const"]
    spread = y - beta * x - alpha
    z = (spread - spread.rolling(window).mean()) / spread.rolling(window).std()
    corr = np.log(y).diff().rolling(window).corr(np.log(x).diff())
    fit = sm.OLS(y, exog).fit()
    in_spread = y - fit.params["close_x"] * x - fit.params["const"]
    lagged = in_spread.shift(1).iloc[1:]
    hl_fit = sm.OLS(in_spread.diff().iloc[1:], sm.add_constant(lagged)).fit()
    half_life = -np.log(2) / np.log(1 + hl_fit.params.iloc[1])
    adf = adfuller(in_spread)
    eg = coint(y, x)
    pos, cur = [], 0
    for value in z:
        if value == value:
            if cur == 1 and value >= 0 or cur == -1 and value <= 0:
                cur = 0
            if cur == 0:
                cur = 1 if value < -2 else (-1 if value > 2 else 0)
        pos.append(cur)
    position = pd.Series(pos, index=z.index)
    qy = 10_000.0 / y
    pnl = position.shift(1) * (qy.shift(1) * y.diff() - (beta * qy).shift(1) * x.diff())
    fees = position.diff().abs() * 2 * 10_000.0 * 4e-4
    equity = (pnl.fillna(0) - fees.fillna(0)).cumsum()
    return {
        "adf_stat": float(adf[0]),
        "adf_lag": int(adf[2]),
        "eg_stat": float(eg[0]),
        "beta": beta.to_numpy(),
        "corr": corr.to_numpy(),
        "half_life": float(half_life),
        "equity": equity.to_numpy(),
    }


def _agreement(
    bars_y: pd.DataFrame, bars_x: pd.DataFrame, params: A.PairParams, naive: dict
) -> str:
    """How closely pair_analytics agrees with the baseline's statsmodels figures."""
    ours = A.pair_analytics(bars_y, bars_x, params)

    def rel(a: float, b: float) -> float:
        return abs(a - b) / abs(b)

    beta_ok = np.isfinite(naive["beta"])
    beta_rel = np.max(
        np.abs(ours.table["beta"].to_numpy()[beta_ok] - naive["beta"][beta_ok])
        / np.abs(naive["beta"][beta_ok])
    )
    adf_rel = rel(ours.adf.statistic, naive["adf_stat"])
    eg_rel = rel(ours.eg.statistic, naive["eg_stat"])
    return (
        f"vs statsmodels: ADF stat rel diff {adf_rel:.0e} (lag {ours.adf.lags} vs "
        f"{naive['adf_lag']}), EG stat rel diff {eg_rel:.0e}, rolling beta max rel "
        f"diff vs RollingOLS {beta_rel:.0e}"
    )


def run(quick: bool = False) -> list[dict]:
    """Time pair_analytics per size (with and without tests), its parts and the
    naive baseline; one row dict per measurement (see ``_common.row``)."""
    params = A.PairParams()
    rows: list[dict] = []
    sizes = [n for n in SIZES if not (quick and n >= 100_000)]
    naive_sizes = NAIVE_SIZES[:1] if quick else NAIVE_SIZES
    warm_y, warm_x = synthetic_bars(500)
    A.pair_analytics(warm_y, warm_x, params)  # imports, first-call caches
    for n in sizes:
        bars_y, bars_x = synthetic_bars(n)
        runs = _runs(n, quick)
        base = None
        if n in naive_sizes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                naive_runs = 3 if (quick or n >= 5_000) else 5
                naive_ms = timed_ms(
                    lambda by=bars_y, bx=bars_x: naive_pair(by, bx, params.window),
                    naive_runs,
                    warmup=1,
                )
                note = _agreement(
                    bars_y,
                    bars_x,
                    params,
                    naive_pair(bars_y, bars_x, params.window),
                )
            base = row(
                f"analytics.naive.{n}",
                f"BASELINE naive pandas/statsmodels pair stats, {n:,} bars",
                "ms",
                naive_ms,
                note=note,
            )
            base["target"] = "none (baseline)"
        for with_tests in (True, False):
            label = "with_tests" if with_tests else "no_tests"
            values = timed_ms(
                lambda wt=with_tests, by=bars_y, bx=bars_x: A.pair_analytics(
                    by, bx, params, with_tests=wt
                ),
                runs,
                warmup=1,
            )
            what = f"pair_analytics, {n:,} bars, " + (
                "ADF + Engle-Granger included" if with_tests else "no tests"
            )
            r = row(
                f"analytics.pair.{n}.{label}",
                what,
                "ms",
                values,
                base if with_tests else None,
            )
            if n == TARGET_N:
                r["target"] = f"<= {TARGET_MS:g} ms"
                r["met"] = r["median"] <= TARGET_MS
            rows.append(r)
            if with_tests:
                whole = r
        for name, (text, fn) in _parts(bars_y, bars_x, params).items():
            part = row(
                f"analytics.pair.{n}.part.{name}",
                f"  part: {text}, {n:,} bars (ratio = share)",
                "ms",
                timed_ms(fn, runs, warmup=1),
                whole,
            )
            rows.append(part)
        rest = row(
            f"analytics.pair.{n}.part.other",
            f"  part: other (table, latest, messages; in the call), {n:,} bars",
            "ms",
            _other_in_call(bars_y, bars_x, params, runs),
            whole,
            note="pair_analytics time minus its component calls, in the same calls",
        )
        rows.append(rest)
        if base is not None:
            rows.append(base)
    return rows


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="skip 100 000 bars and the 5 000 baseline"
    )
    parser.add_argument("--keys", action="store_true", help="print keys and notes")
    args = parser.parse_args()
    print_table(run(quick=args.quick), keys=args.keys)


if __name__ == "__main__":
    main()
