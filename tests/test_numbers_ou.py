"""Tests for pairdesk/numbers/ou.py (Ornstein-Uhlenbeck fit, Bertram's bands) and the
Bertram signal rule of analytics.pair_analytics: against an independent numerical
MLE, a seeded Monte Carlo of the OU and a brute-force search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from scipy.signal import lfilter
from test_analytics_claims import bars_of, cointegrated

import analytics as A
from pairdesk.numbers.ou import bertram_bands, expected_cycle_s, ou_fit


def simulate_ou(n: int, theta: float, mu: float, sigma: float, dt: float, seed: int):
    """An exact OU path of n points every dt seconds, started at mu."""
    b = math.exp(-theta * dt)
    sd = sigma * math.sqrt((1 - b * b) / (2 * theta))
    noise = np.random.default_rng(seed).normal(0.0, sd, n)
    return mu + lfilter([1.0], [1.0, -b], noise)


def exact_ou_negloglik(params: np.ndarray, s: np.ndarray, dt: float) -> float:
    """Negative exact OU transition log-likelihood at (log theta, mu, log sigma)."""
    theta, mu, sigma = math.exp(params[0]), params[1], math.exp(params[2])
    b = math.exp(-theta * dt)
    var = sigma**2 * (1 - b * b) / (2 * theta)
    resid = s[1:] - (mu + (s[:-1] - mu) * b)
    return 0.5 * (resid.size * math.log(2 * math.pi * var) + resid @ resid / var)


@pytest.mark.parametrize("dt", [1.0, 60.0])
def test_ou_fit_equals_a_numerical_maximum_likelihood(dt):
    """The closed-form fit equals scipy's maximisation of the exact likelihood."""
    s = simulate_ou(3000, theta=0.02 / dt, mu=5.0, sigma=0.3 / math.sqrt(dt),
                    dt=dt, seed=1)  # fmt: skip
    fit = ou_fit(s, dt)
    start = np.array([math.log(fit.theta * 1.5), fit.mu + 0.1, math.log(fit.sigma)])
    ref = optimize.minimize(
        exact_ou_negloglik, start, args=(s, dt), method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000},
    )  # fmt: skip
    assert fit.theta == pytest.approx(math.exp(ref.x[0]), rel=1e-4)
    assert fit.mu == pytest.approx(ref.x[1], rel=1e-4)
    assert fit.sigma == pytest.approx(math.exp(ref.x[2]), rel=1e-4)
    assert fit.loglik == pytest.approx(-ref.fun, rel=1e-9)


def test_ou_fit_recovers_the_truth_and_reports_per_second():
    """On a long path the fit is within sampling error of the true parameters."""
    s = simulate_ou(50_000, theta=0.01, mu=-2.0, sigma=0.05, dt=1.0, seed=2)
    fit = ou_fit(s, 1.0)
    assert fit.theta == pytest.approx(0.01, rel=0.1)
    assert fit.mu == pytest.approx(-2.0, abs=0.1)
    assert fit.sigma == pytest.approx(0.05, rel=0.02)
    assert fit.half_life_s == pytest.approx(math.log(2) / fit.theta)
    assert fit.sigma_eq == pytest.approx(fit.sigma / math.sqrt(2 * fit.theta))


def test_ou_fit_says_why_it_has_no_parameters():
    """Too few points, a constant and an explosive series are refused in words."""
    assert ou_fit(np.arange(10.0), 1.0).message == "insufficient data: have 9, need 30"
    assert "constant over 99" in ou_fit(np.ones(100), 1.0).message
    grows = ou_fit(1.01 ** np.arange(200), 1.0)
    assert not grows.ok and grows.message.startswith("no mean reversion: AR coeff")
    with pytest.raises(ValueError, match="dt_s must be a finite number > 0, got 0"):
        ou_fit(np.ones(100), 0)


def cycle_times(x: np.ndarray, level: float) -> np.ndarray:
    """Steps from each first touch of -level to the next touch of -level after
    touching +level (one full cycle of the symmetric strategy)."""
    lo, hi = np.flatnonzero(x <= -level), np.flatnonzero(x >= level)
    out, i = [], lo[0]
    while True:
        k = np.searchsorted(hi, i)
        if k >= hi.size:
            break
        m = np.searchsorted(lo, hi[k])
        if m >= lo.size:
            break
        out.append(lo[m] - i)
        i = lo[m]
    return np.array(out, dtype=float)


@pytest.mark.parametrize("band", [0.3, 0.5])
def test_expected_cycle_time_matches_a_monte_carlo_of_the_ou(band):
    """Bertram's closed-form E[T] agrees with simulated cycles within 3 standard
    errors (discrete monitoring corrected by Broadie-Glasserman's 0.5826 sd)."""
    theta, sigma, dt = 1.0, 1.0, 0.001
    x = simulate_ou(3_000_000, theta, 0.0, sigma, dt, seed=0)
    shift = 0.5826 * sigma * math.sqrt(dt)
    times = cycle_times(x, band - shift) * dt
    want = expected_cycle_s(theta, sigma, band)
    se = times.std(ddof=1) / math.sqrt(times.size)
    assert times.size > 500
    assert abs(times.mean() - want) < 3 * se


def test_bertram_bands_maximise_the_return_per_unit_time():
    """The band equals a brute-force grid maximum of (2 d - c) / E[T](d); costs
    widen it; costs beyond any band are refused in words."""
    fit = ou_fit(simulate_ou(20_000, 0.05, 1.0, 0.2, 1.0, seed=3), 1.0)
    for cost in (0.0, 0.1, 0.5):
        bands = bertram_bands(fit, cost)
        grid = np.linspace(cost / 2 + 1e-6, 6 * fit.sigma_eq, 20_001)
        per_s = np.array(
            [(2 * d - cost) / expected_cycle_s(fit.theta, fit.sigma, d) for d in grid]
        )
        best = grid[int(np.argmax(per_s))]
        step = 6 * fit.sigma_eq / 20_000
        assert bands.band == pytest.approx(best, abs=2 * step)
        assert bands.lower == pytest.approx(fit.mu - bands.band)
        assert bands.return_per_s == pytest.approx(2 * per_s.max(), rel=1e-6)
    assert bertram_bands(fit, 0.5).band > bertram_bands(fit, 0.1).band
    huge = bertram_bands(fit, 100.0)
    assert not huge.ok and huge.message.startswith("costs of 100 exceed any band")


def test_band_signals_buy_low_flip_high():
    """Flat until a band is touched; a long flips short at the upper band."""
    s = [0.0, -1.0, -0.5, 0.5, 1.0, 0.2, -1.2, np.nan, 0.0]
    res = A.band_signals(s, -1.0, 1.0)
    assert res.position.tolist() == [0, 1, 1, 1, -1, -1, 1, 1, 1]
    assert list(res.calls[:5]) == ["NEUTRAL", "BUY SPREAD", "HOLD", "HOLD",
                                   "SELL SPREAD"]  # fmt: skip


def test_bertram_rule_is_causal_and_trades_the_drawn_bands():
    """With the Bertram rule, bars after k change nothing on bars <= k, and every
    entry happens at or beyond the band drawn on that bar."""
    y, x = cointegrated(600, 31, 0.8)
    params = {"interval": "1m", "window": 60, "signal_rule": "bertram", "fee_bps": 0.5}
    base = A.pair_analytics(bars_of(y), bars_of(x), A.PairParams(**params))
    t = base.table
    assert base.backtest.n_trades > 5 and base.ou.ok and base.bands.ok
    longs = t[(t["position"] == 1) & (t["position"].shift(fill_value=0) != 1)]
    assert (longs["spread"] <= longs["band_lower"]).all()
    rng = np.random.default_rng(3)
    k = 400
    y2, x2 = y.copy(), x.copy()
    y2[k + 1 :] *= np.exp(rng.normal(0, 0.01, y.size - k - 1))
    moved = A.pair_analytics(bars_of(y2), bars_of(x2), A.PairParams(**params))
    for col in ("position", "equity", "band_lower", "band_upper"):
        np.testing.assert_array_equal(
            moved.table[col].to_numpy()[: k + 1], t[col].to_numpy()[: k + 1]
        )


def test_live_signal_is_the_next_bars_call():
    """Fed the next bar's closes, the live call equals that bar's call (z rule)."""
    y, x = cointegrated(240, 21, 0.9)
    params = A.PairParams(interval="1m", window=60, z_entry=1.0)
    full = A.pair_analytics(bars_of(y), bars_of(x), params, with_tests=False)
    before = A.pair_analytics(
        bars_of(y[:-1]), bars_of(x[:-1]), params, with_tests=False
    )
    live = A.live_values(before, y[-1], x[-1])
    assert A.live_signal(before, live) == full.signal
    assert A.live_signal(before, None) == before.signal
