"""unitroot: ADF and Engle-Granger equal statsmodels 0.15 adfuller / coint.

References are computed here by statsmodels (adfuller, coint) on the same input, with
arch 8 (ADF, engle_granger) as a second opinion at a fixed lag. Tolerances: 1e-9
relative on statistic, p-value and best information criterion (the issue's bar);
chosen lag and nobs exactly; critical values 1e-12 (the same MacKinnon polynomial of
the same nobs). Against arch, whose OLS differs from statsmodels' pinv, 1e-8.
"""

from __future__ import annotations

import gzip
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.stattools import adfuller
from statsmodels.tsa.stattools import coint as sm_coint
from statsmodels.tsa.tsatools import add_trend

import unitroot
from unitroot import InsufficientDataError, adf, adf_min_nobs, coint

REL = 1e-9


def _close(ours: float, ref: float, rel: float = REL) -> bool:
    """Relative closeness that also accepts equal infinities and tiny p-values."""
    if math.isinf(ref) or math.isnan(ref):
        return ours == ref or (math.isnan(ours) and math.isnan(ref))
    return abs(ours - ref) <= rel * abs(ref) + 1e-300


def _sm_adf(x, **kwargs):
    """statsmodels adfuller with its degenerate-case warnings silenced."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return adfuller(x, result_object=True, **kwargs)


def _sm_coint(y, x, **kwargs):
    """statsmodels coint with its collinearity warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sm_coint(y, x, **kwargs)


def _ld_last_tstat(y: np.ndarray, cols: list[np.ndarray]) -> float:
    """t-statistic of the last column, OLS in 80-bit long double (independent check).

    Modified Gram-Schmidt with one re-orthogonalisation pass, in numpy.longdouble
    (64-bit mantissa, eps 1.1e-19): accurate to about cond * 1e-19, far below the
    float64 errors it arbitrates.
    """
    a = np.column_stack([np.asarray(c, dtype=np.longdouble) for c in cols])
    yl = np.asarray(y, dtype=np.longdouble)
    m, k = a.shape
    q = np.empty_like(a)
    for j in range(k):
        v = a[:, j].copy()
        for _ in range(2):
            for i in range(j):
                v -= (q[:, i] @ v) * q[:, i]
        q[:, j] = v / np.sqrt(v @ v)
    z = q.T @ yl
    resid = yl - q @ z
    z += q.T @ resid
    resid = yl - q @ z
    # last column: coefficient z_k / R_kk, standard error s / |R_kk|
    return float(z[-1] / np.sqrt((resid @ resid) / (m - k)))


def _ld_adf_columns(x: np.ndarray, lags: int, rows_lag: int, regression: str):
    """y, trend columns, lag columns and level of the ADF regression (long double)."""
    dx = np.diff(x)
    m = dx.shape[0] - rows_lag
    t = np.arange(1, m + 1, dtype=np.float64)
    trend = [np.ones(m), t, t * t][: (0 if regression == "n" else len(regression))]
    lag_cols = [dx[rows_lag - j : rows_lag - j + m] for j in range(1, lags + 1)]
    return dx[rows_lag:], trend, lag_cols, x[rows_lag : rows_lag + m]


def ld_adf_stat(x: np.ndarray, lags: int, regression: str) -> float:
    """ADF statistic with `lags` lags on its own sample, in long double."""
    y, trend, lag_cols, level = _ld_adf_columns(x, lags, lags, regression)
    return _ld_last_tstat(y, [*trend, *lag_cols, level])


def assert_adf_equal(
    x, *, regression="c", autolag="AIC", maxlag=None, rel=REL, long_double=False
) -> None:
    """Assert unitroot.adf equals statsmodels adfuller on x with these arguments.

    With long_double, the statistic (and a "t-stat" icbest) must also equal an
    80-bit refit to 1e-12: the arbiter where statsmodels' own error exceeds 1e-9.
    """
    ref = _sm_adf(x, regression=regression, autolag=autolag, maxlag=maxlag)
    out = adf(x, regression=regression, autolag=autolag, maxlag=maxlag)
    where = f"regression={regression} autolag={autolag} maxlag={maxlag} n={len(x)}"
    assert out.usedlag == ref.lags, where
    assert out.nobs == ref.nobs, where
    assert _close(out.stat, ref.statistic, rel), (where, out.stat, ref.statistic)
    assert _close(out.pvalue, ref.pvalue, rel), (where, out.pvalue, ref.pvalue)
    for key in ("1%", "5%", "10%"):
        assert _close(out.critvalues[key], ref.critical_values[key], 1e-12), where
    if autolag is None:
        assert out.icbest is None and ref.icbest is None
    else:
        assert _close(out.icbest, ref.icbest, rel), (where, out.icbest, ref.icbest)
    if long_double:
        exact = ld_adf_stat(np.asarray(x, dtype=np.float64), out.usedlag, regression)
        assert _close(out.stat, exact, 1e-12), (where, out.stat, exact)
        if autolag == "t-stat" and out.usedlag > 0:
            y, trend, lag_cols, level = _ld_adf_columns(
                np.asarray(x, dtype=np.float64), out.maxlag, out.maxlag, regression
            )
            cols = [*trend, level, *lag_cols[: out.usedlag]]
            assert _close(out.icbest, abs(_ld_last_tstat(y, cols)), 1e-12), where


def assert_coint_equal(y, x, *, trend="c", autolag="aic", maxlag=None) -> None:
    """Assert unitroot.coint equals statsmodels coint on (y, x) with these arguments."""
    ref = _sm_coint(y, x, trend=trend, autolag=autolag, maxlag=maxlag)
    out = coint(y, x, trend=trend, autolag=autolag, maxlag=maxlag)
    where = f"trend={trend} autolag={autolag} maxlag={maxlag} n={len(y)}"
    assert _close(out.stat, ref.coint_t), (where, out.stat, ref.coint_t)
    assert _close(out.pvalue, ref.pvalue), (where, out.pvalue, ref.pvalue)
    crit = [out.critvalues[k] for k in ("1%", "5%", "10%")]
    np.testing.assert_allclose(crit, ref.critical_values, rtol=1e-12)
    if not out.collinear:
        # coint hides the residual ADF's lag and nobs: recompute them the same way
        design = x[:, None] if trend == "n" else add_trend(x[:, None], trend)
        first = OLS(y, design).fit()
        resid_ref = _sm_adf(first.resid, regression="n", autolag=autolag, maxlag=maxlag)
        assert (out.usedlag, out.nobs) == (resid_ref.lags, resid_ref.nobs), where
        np.testing.assert_allclose([out.beta], first.params[:1], rtol=1e-12)


def random_walk(n: int, seed: int, level: float = 1000.0) -> np.ndarray:
    """Gaussian random walk of length n starting near level."""
    rng = np.random.default_rng(seed)
    return level + np.cumsum(rng.standard_normal(n))


def ar1(n: int, phi: float, seed: int) -> np.ndarray:
    """Stationary AR(1) x_t = phi x_{t-1} + e_t around 50."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return 50.0 + x


def cointegrated_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """BTC/ETH-like pair: x a random walk near 3400, y = 18 x + 2000 + AR(1) noise."""
    x = random_walk(n, seed, 3400.0)
    y = 18.0 * x + 2000.0 + 40.0 * (ar1(n, 0.9, seed + 1000) - 50.0)
    return y, x


# ---------------------------------------------------------------- ADF vs statsmodels


@pytest.mark.parametrize("n", [30, 100, 1000, 5000])
@pytest.mark.parametrize("regression", ["c", "ct", "n"])
@pytest.mark.parametrize("autolag", ["AIC", "BIC", "t-stat", None])
def test_adf_random_walks_match_statsmodels(n, regression, autolag):
    """ADF on random walks equals adfuller for every length, regression and autolag."""
    for seed in range(3):
        assert_adf_equal(random_walk(n, seed), regression=regression, autolag=autolag)


def _ctt_reference_tstat(x: np.ndarray, lags: int) -> float:
    """ADF 'ctt' t-statistic on a well-conditioned basis (Legendre trend terms).

    The t-statistic of the level does not change when the deterministic columns are
    replaced by another basis of the same span, or when the level is shifted by a
    constant; on this basis numpy lstsq is accurate to about 1e-15.
    """
    dx = np.diff(x)
    m = dx.shape[0] - lags
    level = x[lags : lags + m]
    u = np.linspace(-1.0, 1.0, m)
    cols = [level - level.mean(), np.ones(m), u, 1.5 * u * u - 0.5]
    cols += [dx[lags - j : lags - j + m] for j in range(1, lags + 1)]
    design = np.column_stack(cols)
    y = dx[lags:]
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    resid = y - design @ coef
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / (m - design.shape[1])
    return float(coef[0] / np.sqrt(cov[0, 0]))


@pytest.mark.parametrize("autolag", ["AIC", "t-stat", None])
def test_adf_quadratic_trend_matches_statsmodels(autolag):
    """ADF 'ctt' equals adfuller to 1e-7 and a well-conditioned refit to 1e-12.

    statsmodels applies pinv to the unscaled [x, 1, t, t²] (condition number about
    1e11 at n = 5000) and loses about 1e-9 relative there; the column-scaled QR here
    does not, which the reference on a Legendre basis shows.
    """
    for n in (100, 1000, 5000):
        x = random_walk(n, 7)
        ref = _sm_adf(x, regression="ctt", autolag=autolag)
        out = adf(x, regression="ctt", autolag=autolag)
        assert (out.usedlag, out.nobs) == (ref.lags, ref.nobs)
        assert _close(out.stat, ref.statistic, 1e-7)
        assert _close(out.pvalue, ref.pvalue, 1e-7)
        assert _close(out.stat, _ctt_reference_tstat(x, out.usedlag), 1e-12)


@pytest.mark.slow
def test_adf_long_series_matches_statsmodels():
    """ADF on 20 000 points equals adfuller with the AIC search (lag up to 45)."""
    x = random_walk(20_000, 11, 60_000.0)
    assert_adf_equal(x, regression="c", autolag="AIC")


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9, 0.99])
def test_adf_stationary_ar1_matches_statsmodels(phi):
    """ADF on stationary AR(1) series (tiny p-values) equals adfuller."""
    for n, seed in ((100, 1), (1000, 2), (5000, 3)):
        for regression in ("c", "ct", "n"):
            assert_adf_equal(ar1(n, phi, seed), regression=regression)


@pytest.mark.parametrize("maxlag", [0, 1, 5, 12, 30])
@pytest.mark.parametrize("autolag", ["AIC", "BIC", "t-stat", None])
def test_adf_fixed_maxlag_matches_statsmodels(maxlag, autolag):
    """A caller-given maxlag bounds the search (or is used as is) as adfuller."""
    x = random_walk(600, maxlag)
    for regression in ("c", "n", "ct"):
        assert_adf_equal(x, regression=regression, autolag=autolag, maxlag=maxlag)


def test_adf_accepts_lists_series_and_upper_case_codes():
    """Lists and Series work and codes are case-insensitive, as in statsmodels."""
    x = random_walk(300, 5)
    ref = adf(x)
    assert adf(list(x)) == ref
    assert adf(pd.Series(x, index=np.arange(300) * 7)) == ref
    assert adf(x, regression="C", autolag="aic") == ref


def test_adf_outcome_fields_and_defaults():
    """The outcome records regression, autolag, maxlag and nobs = n - 1 - usedlag."""
    out = adf(random_walk(5000, 0))
    assert out.regression == "c" and out.autolag == "aic"
    assert out.maxlag == 32  # ceil(12 * 50 ** 0.25) = ceil(31.9)
    assert out.nobs == 5000 - 1 - out.usedlag
    assert set(out.critvalues) == {"1%", "5%", "10%"}
    with pytest.raises(AttributeError):
        out.stat = 0.0  # type: ignore[misc]


# ---------------------------------------------------------------- awkward series


def test_adf_rarely_ticking_series_matches_statsmodels():
    """A 1 s-like close that mostly does not move (90 % zero diffs) equals adfuller.

    Tolerance 1e-8 against statsmodels, 1e-12 against an 80-bit refit.
    """
    rng = np.random.default_rng(0)
    steps = rng.choice([-1.0, 0.0, 1.0], size=4000, p=[0.05, 0.9, 0.05])
    x = 61_800.0 + 0.1 * np.cumsum(steps)
    for regression in ("c", "ct", "n"):
        for autolag in ("AIC", "t-stat"):
            # level 61 800 beside 0.1 ticks: statsmodels' unscaled pinv is off by up
            # to ~1e-8 here (the long-double refit shows whose number is right)
            assert_adf_equal(
                x, regression=regression, autolag=autolag, rel=1e-8, long_double=True
            )


def test_adf_two_level_series_matches_statsmodels():
    """A series with a single step (rank-deficient lag columns) equals adfuller."""
    x = np.r_[np.zeros(100), np.ones(100)]
    for regression in ("c", "ct", "n"):
        assert_adf_equal(x, regression=regression)


def test_adf_linear_ramp_follows_statsmodels_constant_skip():
    """On an exact ramp statsmodels' add_trend drops the constant; adf does the same."""
    x = np.arange(200.0)
    for regression in ("c", "ct", "n"):
        assert_adf_equal(x, regression=regression)


def test_adf_half_ramp_follows_statsmodels():
    """A series moving in equal steps for most of its length equals adfuller."""
    rng = np.random.default_rng(3)
    x = np.r_[np.arange(150.0) * 0.5, 75.0 + np.cumsum(rng.standard_normal(50))]
    for regression in ("c", "ct", "n"):
        for autolag in ("AIC", None):
            assert_adf_equal(x, regression=regression, autolag=autolag)


def test_adf_search_sample_without_change_picks_lag_zero():
    """When the search rows never change, all ICs are -inf and lag 0 wins (adfuller)."""
    x = np.r_[np.ones(3), 2.0, np.ones(196)]
    for autolag in ("AIC", "BIC"):
        assert_adf_equal(x, autolag=autolag)
        assert adf(x, autolag=autolag).icbest == -math.inf
    out = adf(x, autolag="t-stat")
    assert out.usedlag == 0 and math.isnan(out.icbest)
    assert _close(out.stat, _sm_adf(x, autolag="t-stat").statistic)


def test_adf_without_change_in_regression_rows_is_insufficient():
    """A series that moves only before the regressed rows has no ADF statistic."""
    x = np.r_[0.0, 1.0, np.ones(198)]
    with pytest.raises(InsufficientDataError, match="does not change over the last"):
        adf(x, autolag=None, maxlag=3)


def test_adf_exact_path_equals_statsmodels(monkeypatch):
    """Forcing the statsmodels fallback for every regression still equals adfuller."""
    monkeypatch.setattr(unitroot, "RANK_TOL", 2.0)
    for autolag in ("AIC", "BIC", "t-stat", None):
        assert_adf_equal(random_walk(400, 3), autolag=autolag)


def test_adf_small_qr_blocks_equal_statsmodels(monkeypatch):
    """The streamed QR gives the same answers with tiny row blocks (short last one)."""
    monkeypatch.setattr(unitroot, "CHUNK_ROWS", 7)
    for regression in ("c", "ct", "n"):
        for autolag in ("AIC", "t-stat", None):
            assert_adf_equal(
                random_walk(503, 8), regression=regression, autolag=autolag
            )


def test_adf_tstat_stop_refit_equals_statsmodels(monkeypatch):
    """Refitting every t-stat candidate exactly (as near the 1.645 stop) agrees."""
    monkeypatch.setattr(unitroot, "TSTAT_TIE_TOL", 1e6)
    for regression in ("c", "n"):
        assert_adf_equal(random_walk(400, 6), regression=regression, autolag="t-stat")


def test_adf_near_tie_refit_equals_statsmodels(monkeypatch):
    """Treating every criterion as a near-tie (exact refits) still equals adfuller."""
    monkeypatch.setattr(unitroot, "TIE_TOL", 1e6)
    for autolag in ("AIC", "BIC", "t-stat"):
        assert_adf_equal(random_walk(400, 4), autolag=autolag)


@pytest.mark.parametrize(
    ("regression", "n"), [("c", 4), ("ct", 6), ("ctt", 8), ("n", 3)]
)
def test_adf_at_minimum_length_matches_statsmodels(regression, n):
    """At exactly adf_min_nobs the result equals adfuller."""
    assert adf_min_nobs(regression) == n
    x = random_walk(n, 2)
    assert_adf_equal(x, regression=regression)


def test_adf_min_nobs_with_fixed_maxlag():
    """With a fixed maxlag the need is max(2 (p + ntrend + 1), 2 p + ntrend + 3)."""
    assert adf_min_nobs("c", 5) == 14
    assert adf_min_nobs("n", 5) == 13
    assert_adf_equal(random_walk(14, 1), maxlag=5)
    with pytest.raises(InsufficientDataError, match=r"have 13, need 14"):
        adf(random_walk(13, 1), maxlag=5)


# ---------------------------------------------------------------- errors


def test_adf_too_short_is_insufficient_data():
    """Too few points raise InsufficientDataError saying have and need."""
    with pytest.raises(
        InsufficientDataError, match=r"insufficient data: have 3, need 4"
    ) as e:
        adf([1.0, 2.0, 1.5])
    assert (e.value.have, e.value.need) == (3, 4)
    with pytest.raises(InsufficientDataError, match=r"have 0, need 4"):
        adf([])


def test_adf_regression_n_refuses_zero_dof_lengths():
    """regression='n' at an even length whose widest lag fit is exact is refused."""
    with pytest.raises(InsufficientDataError, match=r"have 20, need 21"):
        adf(random_walk(20, 0), regression="n")
    assert_adf_equal(random_walk(21, 0), regression="n")


def test_adf_constant_series_is_insufficient_data():
    """A constant series raises InsufficientDataError (statsmodels: ValueError)."""
    with pytest.raises(InsufficientDataError, match="x is constant"):
        adf(np.full(100, 61_000.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regression": "linear"}, r"regression must be one of .* got 'linear'"),
        ({"autolag": "HQIC"}, r"autolag must be one of .* got 'HQIC'"),
        ({"maxlag": -1}, r"maxlag must be a non-negative integer or None: got -1"),
        ({"maxlag": 2.5}, r"maxlag must be a non-negative integer or None: got 2.5"),
        ({"maxlag": True}, r"maxlag must be a non-negative integer or None: got True"),
    ],
)
def test_adf_rejects_bad_arguments(kwargs, message):
    """Unknown regression/autolag and bad maxlag raise ValueError naming the value."""
    with pytest.raises(ValueError, match=message):
        adf(random_walk(100, 0), **kwargs)


def test_adf_rejects_non_finite_and_2d_input():
    """NaN values and 2-D input are caller mistakes (ValueError), not short data."""
    x = random_walk(100, 0)
    x[5] = np.nan
    with pytest.raises(ValueError, match=r"x must be finite: found 1 NaN or infinite"):
        adf(x)
    with pytest.raises(
        ValueError, match=r"x must be one-dimensional: got shape \(2, 50\)"
    ):
        adf(random_walk(100, 0).reshape(2, 50))


def test_adf_explicit_maxlag_too_large_is_insufficient():
    """A maxlag above n // 2 - ntrend - 1 raises InsufficientDataError with the need."""
    with pytest.raises(InsufficientDataError, match=r"have 50, need 104 .*maxlag=50"):
        adf(random_walk(50, 0), maxlag=50)


# ---------------------------------------------------------------- coint vs statsmodels


@pytest.mark.parametrize("n", [30, 100, 1000])
@pytest.mark.parametrize("trend", ["c", "ct", "n"])
@pytest.mark.parametrize("autolag", ["aic", "bic", "t-stat", None])
def test_coint_matches_statsmodels(n, trend, autolag):
    """coint on cointegrated and independent pairs equals statsmodels coint."""
    for seed in range(2):
        y, x = cointegrated_pair(n, seed)
        assert_coint_equal(y, x, trend=trend, autolag=autolag)
        assert_coint_equal(
            random_walk(n, seed + 50, 60_000.0), x, trend=trend, autolag=autolag
        )


@pytest.mark.parametrize(("trend", "autolag"), [("c", "aic"), ("ct", "t-stat")])
def test_coint_5000_points_matches_statsmodels(trend, autolag):
    """coint on 5 000 points (the dashboard's default view) equals statsmodels coint."""
    y, x = cointegrated_pair(5000, 21)
    assert_coint_equal(y, x, trend=trend, autolag=autolag)


@pytest.mark.parametrize("maxlag", [0, 3, 10])
def test_coint_fixed_maxlag_matches_statsmodels(maxlag):
    """coint with a fixed maxlag equals statsmodels coint."""
    y, x = cointegrated_pair(800, 9)
    for autolag in ("aic", None):
        assert_coint_equal(y, x, autolag=autolag, maxlag=maxlag)


def test_coint_beta_alpha_equal_ols():
    """beta and alpha are the OLS slope and intercept of y on x (numpy lstsq)."""
    y, x = cointegrated_pair(1000, 3)
    out = coint(y, x)
    coef = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)[0]
    np.testing.assert_allclose([out.beta, out.alpha], coef, rtol=1e-9)
    assert out.nobs == 1000 - 1 - out.usedlag
    assert coint(y, x, trend="n").alpha is None


def test_coint_collinear_pair_gives_minus_inf():
    """An exactly linear pair gives stat -inf and p-value 0, as statsmodels."""
    x = random_walk(500, 1, 3400.0)
    y = 18.0 * x + 2000.0
    ref = _sm_coint(y, x)
    out = coint(y, x)
    assert out.collinear and out.stat == -math.inf and ref.coint_t == -math.inf
    assert out.pvalue == ref.pvalue == 0.0
    assert out.usedlag is None and out.nobs is None


def test_coint_no_trend_has_nan_critical_values():
    """trend='n' has no MacKinnon 2010 table: critical values are NaN (statsmodels)."""
    y, x = cointegrated_pair(300, 2)
    out = coint(y, x, trend="n")
    assert all(math.isnan(v) for v in out.critvalues.values())


def test_coint_errors():
    """Length mismatch, constant legs, bad trend and short data raise named errors."""
    y, x = cointegrated_pair(100, 0)
    with pytest.raises(
        ValueError, match=r"y and x must have the same length: got 100 and 99"
    ):
        coint(y, x[:-1])
    with pytest.raises(ValueError, match=r"trend must be one of .* got 'cx'"):
        coint(y, x, trend="cx")
    with pytest.raises(InsufficientDataError, match="y is constant"):
        coint(np.ones(100), x)
    with pytest.raises(InsufficientDataError, match="x is constant"):
        coint(y, np.ones(100))
    with pytest.raises(InsufficientDataError, match=r"numerically constant"):
        coint(y, 1e9 + np.r_[np.zeros(99), 1e-6])
    with pytest.raises(InsufficientDataError, match=r"have 2, need 3"):
        coint(y[:2], x[:2])
    with pytest.raises(ValueError, match=r"y must be finite"):
        coint(np.r_[y[:-1], np.inf], x)


# ---------------------------------------------------------------- arch second opinion


@pytest.mark.parametrize("lags", [0, 1, 4, 10])
@pytest.mark.parametrize("trend", ["c", "ct", "n"])
def test_adf_matches_arch_at_fixed_lag(lags, trend):
    """With the lag fixed, adf equals arch.unitroot.ADF's statistic and p-value."""
    from arch.unitroot import ADF

    x = random_walk(1500, lags + 20, 3400.0)
    ref = ADF(x, lags=lags, trend=trend)
    out = adf(x, regression=trend, autolag=None, maxlag=lags)
    assert _close(out.stat, ref.stat, 1e-8)
    assert _close(out.pvalue, ref.pvalue, 1e-8)


def test_coint_stat_matches_arch_engle_granger_at_fixed_lag():
    """With the lag fixed, the Engle-Granger statistic equals arch's engle_granger."""
    from arch.unitroot import engle_granger

    y, x = cointegrated_pair(1500, 4)
    ref = engle_granger(y, x, trend="c", lags=2)
    out = coint(y, x, autolag=None, maxlag=2)
    assert _close(out.stat, ref.stat, 1e-8)


# ---------------------------------------------------------------- real Binance data


def _closes(path: Path, freq: str) -> pd.DataFrame:
    """Last MARKET trade price per bucket for each symbol, inner-joined on time."""
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            frame = json.loads(line)
            data = frame.get("data", {})
            if data.get("e") == "trade" and data.get("X") == "MARKET":
                rows.append((data["s"], data["T"], data["t"], float(data["p"])))
    trades = pd.DataFrame(rows, columns=["symbol", "ts_ms", "trade_id", "price"])
    trades = trades.sort_values(["symbol", "trade_id"])
    trades["ts"] = pd.to_datetime(trades["ts_ms"], unit="ms", utc=True)
    wide = {
        sym: grp.set_index("ts")["price"].resample(freq).last().dropna()
        for sym, grp in trades.groupby("symbol")
    }
    return pd.DataFrame(wide).dropna()


PAIR_FILES = [
    "usdm_trade_frames_btcusdt_ethusdt_20240718T2357_20240719T0005.jsonl.gz",
    "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz",
]


@pytest.mark.parametrize("name", PAIR_FILES)
@pytest.mark.parametrize("freq", ["1s", "100ms"])
def test_real_closes_and_spread_match_statsmodels(shared_data, name, freq):
    """ADF on recorded BTC/ETH closes and their spread, and coint, equal statsmodels."""
    closes = _closes(shared_data / "derived" / name, freq)
    assert len(closes) > 300
    btc, eth = closes["BTCUSDT"].to_numpy(), closes["ETHUSDT"].to_numpy()
    for series in (btc, eth):
        for regression in ("c", "ct", "n"):
            # without a constant, statsmodels' pinv of [price ~ 6e4, 0.1-tick diffs]
            # is off by up to 1.3e-9 (measured against the long-double refit)
            rel = 1e-8 if regression == "n" else REL
            for autolag in ("AIC", "BIC", "t-stat"):
                assert_adf_equal(
                    series,
                    regression=regression,
                    autolag=autolag,
                    rel=rel,
                    long_double=True,
                )
    beta, alpha = np.polyfit(eth, btc, 1)
    assert_adf_equal(btc - beta * eth - alpha, regression="c")
    for trend in ("c", "ct"):
        for autolag in ("aic", "t-stat"):
            assert_coint_equal(btc, eth, trend=trend, autolag=autolag)
            assert_coint_equal(eth, btc, trend=trend, autolag=autolag)


def test_real_btc_2023_closes_match_statsmodels(shared_data):
    """ADF on the 2023 BTC recording (funding pause; 1 s and 1 min) equals adfuller."""
    name = "usdm_trade_frames_btcusdt_20230404T2358_20230405T0007.jsonl.gz"
    path = shared_data / "derived" / name
    btc_1s = _closes(path, "1s")["BTCUSDT"].to_numpy()
    for regression in ("c", "ct", "n"):
        rel = 1e-8 if regression == "n" else REL  # see the pair test
        assert_adf_equal(btc_1s, regression=regression, rel=rel, long_double=True)
    btc_1m = _closes(path, "1min")["BTCUSDT"].to_numpy()
    assert len(btc_1m) == 9
    assert_adf_equal(btc_1m, regression="c")


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=arrays(
        np.float64,
        st.integers(0, 120),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    ),
    regression=st.sampled_from(["c", "ct", "n"]),
    autolag=st.sampled_from(["AIC", "BIC", "t-stat", None]),
)
def test_adf_never_fails_unexpectedly(x, regression, autolag):
    """Any finite series gives an outcome or InsufficientDataError, nothing else."""
    try:
        out = adf(x, regression=regression, autolag=autolag)
    except InsufficientDataError as exc:
        assert str(exc).startswith("insufficient data:")
        return
    assert out.nobs == len(x) - 1 - out.usedlag
    assert 0 <= out.usedlag <= out.maxlag
    assert 0.0 <= out.pvalue <= 1.0


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(25, 400),
    regression=st.sampled_from(["c", "ct", "n"]),
)
def test_adf_random_walks_property(seed, n, regression):
    """For random walks of any length from 25 to 400, adf equals adfuller."""
    assert_adf_equal(random_walk(n, seed), regression=regression)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=arrays(
        np.float64,
        st.tuples(st.integers(0, 80), st.just(2)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    ),
    trend=st.sampled_from(["c", "ct", "n"]),
)
def test_coint_never_fails_unexpectedly(data, trend):
    """Any finite pair gives an outcome or InsufficientDataError, nothing else."""
    try:
        out = coint(data[:, 0], data[:, 1], trend=trend)
    except InsufficientDataError as exc:
        assert str(exc).startswith("insufficient data:")
        return
    assert 0.0 <= out.pvalue <= 1.0
    assert out.collinear or out.nobs == len(data) - 1 - out.usedlag


def test_coint_refuses_a_leg_whose_variation_underflows() -> None:
    """A leg varying by ~1e-186 (its sum of squares underflows to 0) is insufficient
    data, not a NaN R² (found by hypothesis in CI)."""
    tiny = 1.66070349e-186
    y = np.array([0.0, tiny, tiny])
    x = np.array([1.0, tiny, tiny])
    with pytest.raises(InsufficientDataError, match="varies by less than"):
        coint(y, x, trend="c")
