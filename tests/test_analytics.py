"""Tests for analytics.py against independent references (statsmodels, scipy, pandas,
numpy, hand-computed cases) on the recorded Binance trades and on small series."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.tsa.stattools import adfuller, coint

import analytics as A
from resampling import align_pair, ticks_to_bars

RECORDING = (
    "derived/usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
)
RTOL = 1e-9


def load_ticks(path: Path) -> dict[str, pd.DataFrame]:
    """MARKET trades per symbol from a recorded combined-stream NDJSON file."""
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            data = json.loads(line)["data"]
            if data["X"] == "MARKET":
                rows.append(
                    (
                        data["s"],
                        data["t"],
                        data["T"],
                        float(data["p"]),
                        float(data["q"]),
                    )
                )
    frame = pd.DataFrame(rows, columns=["symbol", "trade_id", "ts_ms", "price", "qty"])
    return {s: g.drop(columns="symbol") for s, g in frame.groupby("symbol")}


@pytest.fixture(scope="module")
def real_bars(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """1 s BTCUSDT and ETHUSDT bars from the 2024-08-08 recording."""
    ticks = load_ticks(shared_data / RECORDING)
    return ticks_to_bars(ticks["BTCUSDT"], 1), ticks_to_bars(ticks["ETHUSDT"], 1)


@pytest.fixture(scope="module")
def real_pair(real_bars) -> tuple[np.ndarray, np.ndarray]:
    """Aligned BTC (y) and ETH (x) 1 s closes, about 340 bars."""
    frame = align_pair(*real_bars, max_ffill=5).frame
    return frame["y"].to_numpy(), frame["x"].to_numpy()


def synthetic_bars(
    n: int, seed: int = 0, beta: float = 20.0
) -> tuple[pd.DataFrame, ...]:
    """A cointegrated BTC-like/ETH-like pair of 1 m bars."""
    rng = np.random.default_rng(seed)
    x = 3000 + np.cumsum(rng.normal(0, 2, n))
    y = beta * x + 1000 + rng.normal(0, 30, n)
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC").as_unit("ms")

    def bars(p: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {"ts": ts, "open": p, "high": p, "low": p, "close": p, "volume": 1.0,
             "quote_volume": p, "trades": 5, "vwap": p}
        )  # fmt: skip

    return bars(y), bars(x)


# ------------------------------------------------------------------ hedge ratio


def test_ols_equals_statsmodels_and_lstsq_on_real_prices(real_pair):
    """OLS beta, alpha, R^2 and standard errors equal statsmodels OLS on BTC/ETH."""
    y, x = real_pair
    res = A.hedge_ratio(y, x)
    ref = sm.OLS(y, sm.add_constant(x)).fit()
    lst = np.linalg.lstsq(np.c_[x, np.ones_like(x)], y, rcond=None)[0]
    assert res.ok and res.n == y.size
    assert res.beta == pytest.approx(ref.params[1], rel=RTOL)
    assert res.beta == pytest.approx(lst[0], rel=1e-8)
    assert res.alpha == pytest.approx(ref.params[0], rel=RTOL)
    assert res.r2 == pytest.approx(ref.rsquared, rel=1e-8)
    assert res.beta_se == pytest.approx(ref.bse[1], rel=RTOL)
    assert res.alpha_se == pytest.approx(ref.bse[0], rel=RTOL)


def test_ols_without_intercept_equals_statsmodels(real_pair):
    """intercept=False fits through the origin like statsmodels OLS without constant."""
    y, x = real_pair
    res = A.hedge_ratio(y, x, intercept=False)
    ref = sm.OLS(y, x).fit()
    assert res.beta == pytest.approx(ref.params[0], rel=RTOL)
    assert res.alpha == 0.0 and res.alpha_se is None


def test_huber_equals_statsmodels_rlm(real_pair):
    """Huber beta/alpha/SE equal statsmodels RLM with HuberT."""
    y, x = real_pair
    res = A.hedge_ratio(y, x, method="huber")
    ref = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.HuberT()).fit()
    assert res.beta == pytest.approx(ref.params[1], rel=RTOL)
    assert res.alpha == pytest.approx(ref.params[0], rel=RTOL)
    assert res.beta_se == pytest.approx(ref.bse[1], rel=RTOL)


def test_theil_sen_equals_scipy_and_caps_points():
    """Theil-Sen equals scipy theilslopes on the newest 3 000 points and says so."""
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=3500)) + 100
    y = 2 * x + rng.standard_t(2, size=3500)
    res = A.hedge_ratio(y, x, method="theil_sen")
    ref = stats.theilslopes(y[-3000:], x[-3000:])
    assert res.beta == pytest.approx(ref.slope, rel=RTOL)
    assert res.alpha == pytest.approx(ref.intercept, rel=RTOL)
    assert res.beta_low == pytest.approx(ref.low_slope, rel=RTOL)
    assert res.n == 3000 and "newest 3000 of 3500" in res.note


def test_hedge_ratio_insufficient_and_constant():
    """Too few points or a constant x give ok=False with the standard message."""
    short = A.hedge_ratio([1.0, 2.0], [1.0, np.nan])
    assert not short.ok and short.message == "insufficient data: have 1 points, need 3"
    flat = A.hedge_ratio([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert not flat.ok and "x is constant" in flat.message and math.isnan(flat.beta)


def test_hedge_ratio_rejects_unknown_method():
    """An unknown method names the options and the value."""
    with pytest.raises(ValueError, match="method must be one of .* got 'lasso'"):
        A.hedge_ratio([1, 2, 3], [1, 2, 3], method="lasso")


# ------------------------------------------------------------------ rolling OLS


def test_rolling_ols_equals_lstsq_per_window_on_real_prices(real_pair):
    """Rolling beta/alpha equal numpy lstsq on each trailing window of BTC/ETH."""
    y, x = real_pair
    w = 60
    res = A.rolling_hedge_ratio(y, x, w)
    assert np.isnan(res.beta[: w - 1]).all()
    for t in range(w - 1, y.size):
        sl = slice(t - w + 1, t + 1)
        b, a = np.linalg.lstsq(np.c_[x[sl], np.ones(w)], y[sl], rcond=None)[0]
        assert res.beta[t] == pytest.approx(b, rel=RTOL)
        # alpha ~ mean(y) - beta mean(x) is a difference of ~60 000-sized numbers:
        # compare it on the scale of y (1e-9 of the price level).
        assert abs(res.alpha[t] - a) <= RTOL * abs(y[t])


def test_rolling_ols_on_btc_scale_levels_beats_naive_running_sums():
    """Block-centred sums stay at 1e-9 on 60 000-level prices over 20 000 bars."""
    rng = np.random.default_rng(7)
    n, w = 20_000, 30
    x = 3000 + np.cumsum(rng.normal(0, 0.5, n))
    y = 20 * x + 1000 + rng.normal(0, 3, n)
    res = A.rolling_hedge_ratio(y, x, w)
    for t in range(w - 1, n, 997):
        sl = slice(t - w + 1, t + 1)
        b = np.polyfit(x[sl] - x[sl].mean(), y[sl], 1)[0]
        assert res.beta[t] == pytest.approx(b, rel=RTOL)


def test_rolling_ols_nan_only_spoils_windows_containing_it():
    """A NaN bar makes exactly the windows that contain it NaN."""
    x = np.arange(30, dtype=float) + np.sin(np.arange(30))
    y = 2 * x + 1
    x[12] = np.nan
    res = A.rolling_hedge_ratio(y, x, 5)
    assert np.isnan(res.beta[12:17]).all()
    assert np.allclose(res.beta[17:], 2.0) and np.allclose(res.beta[4:12], 2.0)


def test_rolling_window_below_three_is_rejected():
    """window=2 is a caller mistake for rolling OLS."""
    with pytest.raises(ValueError, match="window must be an integer >= 3, got 2"):
        A.rolling_hedge_ratio([1, 2, 3], [1, 2, 3], 2)


# ------------------------------------------------------------ z-score and corr


def test_rolling_zscore_equals_pandas(real_pair):
    """z, mean and std equal pandas rolling mean/std (ddof=1) on a real spread."""
    y, x = real_pair
    s = pd.Series(A.spread(y, x, 16.0, 20_000.0))
    res = A.rolling_zscore(s, 30)
    mean, std = s.rolling(30).mean(), s.rolling(30).std()
    np.testing.assert_allclose(res.mean, mean, rtol=RTOL)
    np.testing.assert_allclose(res.std, std, rtol=1e-8)
    np.testing.assert_allclose(res.z, (s - mean) / std, rtol=1e-7, atol=1e-9)


def test_rolling_correlation_of_returns_equals_pandas(real_pair):
    """Return correlation equals pandas rolling corr of log returns."""
    y, x = real_pair
    res = A.rolling_correlation(y, x, 40)
    ry, rx = np.log(pd.Series(y)).diff(), np.log(pd.Series(x)).diff()
    np.testing.assert_allclose(res.corr, ry.rolling(40).corr(rx), rtol=1e-8, atol=1e-12)
    assert res.on == "returns" and "log-return" in res.label
    assert np.isnan(res.corr[:40]).all() and np.isfinite(res.corr[40])


def test_rolling_correlation_of_prices_equals_corrcoef_per_window(real_pair):
    """Price-level correlation equals numpy corrcoef per window and is labelled."""
    y, x = real_pair
    w = 50
    res = A.rolling_correlation(y, x, w, on="prices")
    for t in range(w - 1, y.size, 17):
        sl = slice(t - w + 1, t + 1)
        assert res.corr[t] == pytest.approx(np.corrcoef(y[sl], x[sl])[0, 1], rel=1e-9)
    assert "price-level" in res.label


def test_zscore_of_constant_series_is_nan_not_error():
    """A constant spread gives NaN z (zero std), never a warning or an error."""
    res = A.rolling_zscore(np.full(20, 3.0), 5)
    assert np.isnan(res.z).all() and res.ok


# ---------------------------------------------------------- returns, volatility


def test_log_returns_and_rolling_volatility_equal_pandas():
    """Annualised volatility equals pandas rolling std times sqrt(31 536 000 / dt)."""
    rng = np.random.default_rng(1)
    p = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 500)))
    r = A.log_returns(p)
    np.testing.assert_allclose(r, np.log(pd.Series(p)).diff(), rtol=1e-12)
    vol = A.rolling_volatility(r, 60, 60)
    ref = pd.Series(r).rolling(60).std() * math.sqrt(365 * 24 * 3600 / 60)
    np.testing.assert_allclose(vol.vol, ref, rtol=1e-9)
    assert vol.factor == pytest.approx(math.sqrt(525_600))


def test_price_stats_by_hand():
    """Window stats: change from first open, VWAP from sums, volatility from closes."""
    bars = pd.DataFrame(
        {"ts": pd.date_range("2024", periods=3, freq="1min", tz="UTC"),
         "open": [10.0, 11, 12], "high": [11.0, 13, 12], "low": [9.0, 10, 11],
         "close": [11.0, 12, 11], "volume": [1.0, 2, 1], "quote_volume": [10.0, 24, 12],
         "trades": [3, 4, 5], "vwap": [10.0, 12, 12]}
    )  # fmt: skip
    ps = A.price_stats(bars, 60)
    assert (ps.last, ps.change, ps.high, ps.low, ps.trades) == (
        11.0,
        1.0,
        13.0,
        9.0,
        12,
    )
    assert ps.change_pct == pytest.approx(10.0) and ps.vwap == pytest.approx(46 / 4)
    rets = np.diff(np.log([11.0, 12, 11]))
    assert ps.realized_vol == pytest.approx(np.std(rets, ddof=1) * math.sqrt(525_600))
    assert not A.price_stats(bars.iloc[:0], 60).ok


def test_liquidity_filter_marks_thin_bars():
    """A bar is excluded when either leg is below the trade or notional minimum."""
    mask = A.liquidity_filter(
        [5, 1, 5, 5], [5, 5, 5, 5], [100, 100, 10, 100], [100, 100, 100, 100],
        min_trades=2, min_notional=50,
    )  # fmt: skip
    assert mask.tolist() == [False, True, True, False]


# ------------------------------------------------------------ ADF, EG, half-life


def test_adf_equals_statsmodels_on_real_spread(real_pair):
    """ADF statistic, p-value, lag, nobs and critical values equal adfuller's."""
    y, x = real_pair
    s = A.spread(y, x, A.hedge_ratio(y, x).beta, A.hedge_ratio(y, x).alpha)
    for kwargs in ({}, {"autolag": "BIC"}, {"autolag": None, "maxlag": 3}):
        res = A.adf_test(s, **kwargs)
        ref = adfuller(s, result_object=True, **kwargs)
        assert res.statistic == pytest.approx(ref.statistic, rel=RTOL)
        assert res.pvalue == pytest.approx(ref.pvalue, rel=RTOL)
        assert (res.lags, res.nobs) == (ref.lags, ref.nobs)
        assert res.critical_values == pytest.approx(ref.critical_values, rel=RTOL)
        assert res.stationary_5pct == (ref.pvalue < 0.05) and res.regression == "c"


def test_adf_guards_length_and_constant():
    """ADF reports insufficient data for short or constant series instead of raising."""
    short = A.adf_test(np.arange(10.0))
    assert (
        not short.ok and short.message == "insufficient data: have 10 points, need 20"
    )
    lagged = A.adf_test(np.random.default_rng(0).normal(size=30), maxlag=10)
    assert lagged.message == "insufficient data: have 30 points, need 26" or lagged.ok
    big_lag = A.adf_test(np.random.default_rng(0).normal(size=30), maxlag=14)
    assert big_lag.message == "insufficient data: have 30 points, need 34"
    flat = A.adf_test(np.ones(50))
    assert not flat.ok and "constant" in flat.message


def test_adf_rejects_bad_regression():
    """An unknown regression option is a caller mistake."""
    with pytest.raises(ValueError, match="regression must be .* got 'x'"):
        A.adf_test(np.arange(30.0), regression="x")


def test_engle_granger_equals_statsmodels_coint(real_pair):
    """EG statistic, p-value, critical values equal coint; the lag equals adfuller's."""
    y, x = real_pair
    res = A.engle_granger(y, x)
    ref = coint(y, x)
    assert res.statistic == pytest.approx(ref.coint_t, rel=RTOL)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=RTOL)
    np.testing.assert_allclose(
        [res.critical_values[k] for k in ("1%", "5%", "10%")], ref.critical_values,
        rtol=RTOL,
    )  # fmt: skip
    resid = sm.OLS(y, sm.add_constant(x)).fit().resid
    assert res.lags == adfuller(resid, regression="n", result_object=True).lags


def test_engle_granger_on_synthetic_cointegrated_pair():
    """A cointegrated synthetic pair is flagged cointegrated at 5 %, like coint says."""
    by, bx = synthetic_bars(1000)
    y, x = by["close"].to_numpy(), bx["close"].to_numpy()
    res = A.engle_granger(y, x)
    assert res.cointegrated_5pct and res.pvalue == pytest.approx(coint(y, x).pvalue)
    assert res.beta == pytest.approx(20.0, rel=1e-2)


def test_half_life_equals_statsmodels_ar1_fit():
    """Half-life is -ln2/ln(1+b) with b from statsmodels OLS of ds on lagged s."""
    rng = np.random.default_rng(5)
    s = np.zeros(2000)
    for t in range(1, s.size):
        s[t] = 0.9 * s[t - 1] + rng.normal()
    res = A.half_life(s)
    ref = sm.OLS(np.diff(s), sm.add_constant(s[:-1])).fit()
    assert res.b == pytest.approx(ref.params[1], rel=RTOL)
    assert res.b_se == pytest.approx(ref.bse[1], rel=RTOL)
    assert res.bars == pytest.approx(
        -math.log(2) / math.log(1 + ref.params[1]), rel=RTOL
    )
    assert 5 < res.bars < 8


def test_half_life_of_a_spread_constant_but_for_its_last_point():
    """A lagged spread without variation is insufficient data, not a division by 0."""
    res = A.half_life([5.0] * 9 + [1.0])
    assert not res.ok and res.bars is None
    assert res.message == "insufficient data: lagged spread is constant over 9 points"


def test_half_life_none_when_not_mean_reverting():
    """An exploding series has no half-life; too few points say insufficient data."""
    grows = A.half_life(1.01 ** np.arange(100))
    assert grows.bars is None and not grows.mean_reverting and grows.ok
    assert (
        A.half_life([1.0, 2.0]).message == "insufficient data: have 2 points, need 10"
    )


# ----------------------------------------------------------------------- Kalman


def kalman_reference(y, x, delta, obs_var, theta0, p0):
    """Plain matrix-form Kalman filter, one step at a time."""
    theta = np.array(theta0, dtype=float)
    p = np.array(p0, dtype=float)
    q = delta / (1 - delta) * np.eye(2)
    betas, errors, variances = [], [], []
    for yt, xt in zip(y, x, strict=True):
        h = np.array([[xt, 1.0]])
        p = p + q
        e = yt - (h @ theta)[0]
        s = (h @ p @ h.T)[0, 0] + obs_var
        k = (p @ h.T)[:, 0] / s
        theta = theta + k * e
        p = p - np.outer(k, h @ p)
        betas.append(theta[0])
        errors.append(e)
        variances.append(s)
    return np.array(betas), np.array(errors), np.array(variances), theta


def test_kalman_equals_step_by_step_reference():
    """Beta path, forecast errors and variances equal a plain matrix implementation."""
    rng = np.random.default_rng(2)
    x = 50 + np.cumsum(rng.normal(0, 0.5, 400))
    y = 1.3 * x + 4 + rng.normal(0, 0.3, 400)
    res = A.kalman_hedge_ratio(y, x, 1e-4, 1e-3, initial_cov=np.eye(2))
    betas, errors, variances, theta = kalman_reference(
        y, x, 1e-4, 1e-3, [0, 0], np.eye(2)
    )
    np.testing.assert_allclose(res.beta, betas, rtol=1e-9)
    np.testing.assert_allclose(res.error, errors, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.error_var, variances, rtol=1e-9)
    assert res.state.alpha == pytest.approx(theta[1], rel=1e-9)


def test_kalman_incremental_equals_batch():
    """Feeding bars one at a time through kalman_update gives the batch path."""
    rng = np.random.default_rng(4)
    x = 3000 + np.cumsum(rng.normal(0, 2, 50))
    y = 20 * x + rng.normal(0, 5, 50)
    batch = A.kalman_hedge_ratio(y, x)
    state = A.KalmanState()
    for t in range(50):
        step = A.kalman_update(state, y[t], x[t])
        state = step.state
        assert step.error == pytest.approx(batch.error[t], rel=1e-12)
    assert state == batch.state


def test_kalman_with_zero_delta_ends_at_full_sample_ols():
    """With delta = 0 and a diffuse prior the final beta equals full-sample OLS."""
    rng = np.random.default_rng(6)
    x = 100 + np.cumsum(rng.normal(0, 1, 2000))
    y = 1.7 * x + 30 + rng.normal(0, 2, 2000)
    res = A.kalman_hedge_ratio(y, x, 0.0, 1.0, initial_cov=np.eye(2) * 1e10)
    ref = sm.OLS(y, sm.add_constant(x)).fit()
    # diffuse prior 1e10 versus the data's information: bias ~1e-10; Joseph-form
    # updates on uncentred prices lose a few more digits (1.1e-6 seen), so 2e-6.
    assert res.beta[-1] == pytest.approx(ref.params[1], rel=2e-6)
    assert res.alpha[-1] == pytest.approx(ref.params[0], rel=2e-6)
    # the dashboard's path: centred x and a prior scaled to the data (kalman_scale)
    sc = A.kalman_scale(y, x, 60)
    scaled = A.kalman_hedge_ratio(
        y,
        x,
        0.0,
        sc.obs_var,
        initial_state=sc.initial_state,
        initial_cov=sc.initial_cov,
        x_center=sc.x_center,
        state_noise=sc.state_noise,
    )
    assert scaled.beta[-1] == pytest.approx(ref.params[1], rel=1e-9)
    assert scaled.alpha[-1] == pytest.approx(ref.params[0], rel=1e-9)


def test_kalman_follows_a_step_in_beta():
    """When the true beta steps from 1.0 to 1.5 the filtered beta follows it."""
    rng = np.random.default_rng(8)
    n = 1000
    x = 100 + 20 * np.sin(np.arange(n) / 15) + rng.normal(0, 1, n)
    beta = np.where(np.arange(n) < 500, 1.0, 1.5)
    y = beta * x + rng.normal(0, 0.5, n)
    res = A.kalman_hedge_ratio(y, x, 1e-4, 0.25)
    assert abs(res.beta[400:500].mean() - 1.0) < 0.05
    assert abs(res.beta[520:540].mean() - 1.5) < 0.05
    assert abs(res.beta[-100:].mean() - 1.5) < 0.05


def test_kalman_rejects_bad_delta():
    """delta outside [0, 1) is a caller mistake."""
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1\), got 1.0"):
        A.kalman_hedge_ratio([1.0], [1.0], 1.0)


# ----------------------------------------------------------------------- signals


def test_zscore_signals_state_machine_by_hand():
    """Enter beyond +-2, exit when z crosses 0, hold through NaN, calls per bar."""
    z = [0.0, -2.5, -1.0, np.nan, 0.1, 2.1, 1.0, -0.1, 0.0]
    res = A.zscore_signals(z)
    assert res.position.tolist() == [0, 1, 1, 1, 0, -1, -1, 0, 0]
    assert res.calls.tolist() == [
        "NEUTRAL", "BUY SPREAD", "HOLD", "HOLD", "EXIT", "SELL SPREAD", "HOLD",
        "EXIT", "NEUTRAL",
    ]  # fmt: skip
    assert res.signal == "NEUTRAL"


def test_zscore_signals_stop_and_no_reentry_until_back_inside():
    """Beyond the stop a long exits and does not re-enter until |z| <= entry."""
    z = [-2.5, -3.5, -2.5, -1.5, -2.2]
    res = A.zscore_signals(z, stop=3.0)
    assert res.position.tolist() == [1, 0, 0, 0, 1]
    assert res.signal == "BUY SPREAD"


def test_zscore_signals_rejects_exit_beyond_entry():
    """exit must lie strictly inside (-entry, entry)."""
    with pytest.raises(ValueError, match="exit must be in"):
        A.zscore_signals([0.0], entry=2.0, exit=2.0)


def _reference_signals(z, entry, exit, stop):
    """Plain per-bar state machine written from the zscore_signals docstring."""
    st_ = math.inf if stop is None else stop
    cur, blocked, out = 0, 0, []
    for zi in z:
        if not math.isnan(zi):
            if blocked and abs(zi) <= entry:
                blocked = 0
            if cur == 1 and (zi >= -exit or zi < -st_):
                blocked, cur = (1 if zi < -st_ else blocked), 0
            elif cur == -1 and (zi <= exit or zi > st_):
                blocked, cur = (-1 if zi > st_ else blocked), 0
            if cur == 0 and -st_ <= zi < -entry and blocked != 1:
                cur = 1
            elif cur == 0 and entry < zi <= st_ and blocked != -1:
                cur = -1
        out.append(cur)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(-6, 6), st.just(math.nan), st.just(math.inf), st.just(-math.inf)
        ),
        max_size=120,
    ),
    st.floats(0.5, 3.0),
    st.floats(-0.9, 0.9),
    st.one_of(st.none(), st.floats(0.1, 2.0)),
)
def test_zscore_signals_equal_a_plain_per_bar_loop(z, entry, exit_frac, stop_gap):
    """Positions and calls equal a plain per-bar loop on random z with NaN and inf."""
    exit_ = exit_frac * entry
    stop = None if stop_gap is None else entry + stop_gap
    res = A.zscore_signals(z, entry, exit_, stop)
    ref = _reference_signals(z, entry, exit_, stop)
    assert res.position.tolist() == ref
    names = {1: "BUY SPREAD", -1: "SELL SPREAD", 0: "EXIT"}
    calls = [
        names[p] if p != q else ("HOLD" if p else "NEUTRAL")
        for p, q in zip(ref, ([0, *ref])[:-1], strict=True)
    ]
    assert res.calls.tolist() == calls
    assert res.signal == (calls[-1] if calls else "NEUTRAL")


# ---------------------------------------------------------------------- backtest


def test_backtest_five_bars_by_hand():
    """Equity, trades, costs and drawdown equal a hand computation on five bars."""
    y = [100.0, 101.0, 103.0, 102.0, 104.0]
    x = [50.0, 50.0, 51.0, 52.0, 52.0]
    ts = pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC")
    res = A.backtest(
        y, x, 2.0, [1, 1, 0, -1, -1], fee_bps=10, notional=100.0, ts=ts,
        z=[-2.5, -1.0, 0.1, 2.2, 2.4],
    )  # fmt: skip
    # bar 0: open long, qy=1, qx=2, gross 200, cost 0.2      -> r = -0.001
    # bar 1: +1*(1*1 - 2*0) = 1                              -> r = 1/200
    # bar 2: +(2 - 2*1) = 0; close at 103 + 2*51 = 205 * 1e-3 -> r = -0.205/200
    # bar 3: open short, qy=100/102, qx=200/102, gross 20600/102, cost 1e-3 gross
    # bar 4: -1*(qy*2 - qx*0) = -200/102                     -> r = -200/20600
    r = np.array([-0.001, 0.005, -0.205 / 200, -0.001, -200 / 20600])
    np.testing.assert_allclose(res.returns, r, rtol=1e-12)
    np.testing.assert_allclose(res.equity, 1 + np.cumsum(r), rtol=1e-12)
    pnl = [-0.2, 1.0, -0.205, -0.2 * 20600 / 20400, -200 / 102]
    np.testing.assert_allclose(res.pnl, pnl, rtol=1e-12)
    assert res.total_return == pytest.approx(r.sum(), rel=1e-12)
    assert res.max_drawdown == pytest.approx(1.004 - (1 + r.sum()), rel=1e-12)
    assert res.n_trades == 1 and res.hit_rate == 1.0
    first = res.trades.iloc[0]
    assert first["pnl"] == pytest.approx(0.595) and first["return"] == pytest.approx(
        0.595 / 200
    )
    assert first["side"] == "long spread" and first["exit_ts"] == ts[2]
    assert first["entry_z"] == -2.5 and first["exit_z"] == 0.1
    assert pd.isna(res.trades.iloc[1]["exit_ts"]) and len(res.trades) == 2
    assert res.costs == pytest.approx(0.2 + 0.205 + 0.2 * 20600 / 20400)


def _reference_backtest(y, x, beta, pos, cost_rate, notional):
    """Plain per-bar backtest from the backtest docstring: (pnl, returns, trades)."""
    yf = pd.Series(y).ffill().tolist()
    xf = pd.Series(x).ffill().tolist()
    n = len(yf)
    pnl, ret, trades = [0.0] * n, [0.0] * n, []
    cur, qy, qx, gross, entry, trade = 0, 0.0, 0.0, 0.0, 0, 0.0
    for t in range(n):
        if t > 0 and cur != 0:
            move = cur * (qy * (yf[t] - yf[t - 1]) - qx * (xf[t] - xf[t - 1]))
            if not math.isnan(move):
                pnl[t] += move
                ret[t] += move / gross
                trade += move
        ok = all(map(math.isfinite, (yf[t], xf[t], beta[t]))) and yf[t] > 0
        want = pos[t] if ok else (cur if pos[t] == cur else 0)
        if want != cur:
            if cur != 0:
                value = qy * yf[t] + abs(qx) * xf[t]
                c = 0.0 if math.isnan(value) else cost_rate * value
                pnl[t] -= c
                ret[t] -= c / gross
                trade -= c
                trades.append((entry, t, trade))
            if want != 0:
                qy = notional / yf[t]
                qx = beta[t] * qy
                gross = qy * yf[t] + abs(qx) * xf[t]
                pnl[t] -= cost_rate * gross
                ret[t] -= cost_rate
                trade, entry = -cost_rate * gross, t
            cur = want
    if cur != 0:
        trades.append((entry, -1, trade))
    return pnl, ret, trades


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 150), st.integers(0, 2**32 - 1), st.booleans())
def test_backtest_equals_a_plain_per_bar_loop(n, seed, holes):
    """pnl, returns and trades equal a plain loop over every bar, NaN bars included."""
    rng = np.random.default_rng(seed)
    y = 100 + np.cumsum(rng.normal(0, 1, n))
    x = 50 + np.cumsum(rng.normal(0, 1, n))
    beta = rng.normal(2.0, 0.1, n)
    if holes:
        y[rng.random(n) < 0.1] = np.nan
        beta[rng.random(n) < 0.1] = np.nan
    pos = np.repeat(rng.choice([-1, 0, 1], n), 1)
    res = A.backtest(y, x, beta, pos, fee_bps=3.0, slippage_bps=1.0, notional=500.0)
    pnl, ret, trades = _reference_backtest(y, x, beta, pos.tolist(), 4e-4, 500.0)
    np.testing.assert_array_equal(res.pnl, pnl)
    np.testing.assert_array_equal(res.returns, ret)
    assert res.trades["entry_ts"].tolist() == [t[0] for t in trades]
    assert res.trades["exit_ts"].tolist() == [t[1] for t in trades]
    assert res.trades["pnl"].tolist() == [t[2] for t in trades]


def test_backtest_has_no_look_ahead():
    """A spike on the last bar changes only the last bar's equity."""
    by, bx = synthetic_bars(400)
    y, x = by["close"].to_numpy(), bx["close"].to_numpy()
    rh = A.rolling_hedge_ratio(y, x, 60)
    z = A.rolling_zscore(A.spread(y, x, rh.beta, rh.alpha), 60).z
    pos = A.zscore_signals(z).position
    base = A.backtest(y, x, rh.beta, pos, fee_bps=4)
    y2 = y.copy()
    y2[-1] *= 1.2
    rh2 = A.rolling_hedge_ratio(y2, x, 60)
    z2 = A.rolling_zscore(A.spread(y2, x, rh2.beta, rh2.alpha), 60).z
    pos2 = A.zscore_signals(z2).position
    spiked = A.backtest(y2, x, rh2.beta, pos2, fee_bps=4)
    np.testing.assert_array_equal(rh.beta[:-1], rh2.beta[:-1])
    np.testing.assert_array_equal(pos[:-1], pos2[:-1])
    np.testing.assert_array_equal(base.equity[:-1], spiked.equity[:-1])
    assert base.n_trades > 0


def test_backtest_sharpe_is_annualised_by_interval():
    """Sharpe = mean/std(ddof=1) of per-bar returns times sqrt(bars per year)."""
    by, bx = synthetic_bars(300, seed=3)
    y, x = by["close"].to_numpy(), bx["close"].to_numpy()
    pos = np.tile(np.r_[np.zeros(5), np.ones(5)], 30)  # 30 round trips
    res = A.backtest(y, x, 20.0, pos, fee_bps=4, interval_s=300)
    want = res.returns.mean() / res.returns.std(ddof=1) * math.sqrt(365 * 24 * 12)
    assert res.n_trades >= A.BACKTEST_MIN_TRADES
    assert res.sharpe == pytest.approx(want, rel=1e-12)
    tstat = res.returns.mean() / res.returns.std(ddof=1) * math.sqrt(300)
    assert res.sharpe_tstat == pytest.approx(tstat, rel=1e-12)


def test_backtest_withholds_sharpe_on_a_small_sample():
    """Below 20 closed trades the Sharpe is None and the t-statistic is reported."""
    by, bx = synthetic_bars(300, seed=3)
    y, x = by["close"].to_numpy(), bx["close"].to_numpy()
    pos = np.r_[np.zeros(50), np.ones(100), -np.ones(150)]
    res = A.backtest(y, x, 20.0, pos, fee_bps=4, interval_s=1)
    tstat = res.returns.mean() / res.returns.std(ddof=1) * math.sqrt(300)
    assert res.sharpe is None and res.n_bars == 300
    assert res.sharpe_tstat == pytest.approx(tstat, rel=1e-12)
    assert res.sharpe_message.startswith(
        "sample too small for an annualised Sharpe: 1 closed trades over 300 bars"
    )


# ------------------------------------------------------------------------ regime


@pytest.mark.parametrize(
    ("p", "corr", "hl", "label"),
    [
        (None, 0.8, 5.0, "Insufficient data"),
        (0.01, float("nan"), 5.0, "Insufficient data"),
        (0.01, 0.1, 5.0, "Decoupled"),
        (0.01, -0.8, 5.0, "Mean-reverting"),
        (0.01, 0.8, 80.0, "Trending"),
        (0.2, 0.8, 5.0, "Trending"),
        (0.01, 0.8, None, "Trending"),
    ],
)
def test_regime_rule(p, corr, hl, label):
    """The regime follows the documented rule."""
    assert A.regime(p, corr, hl, 60).label == label


# ---------------------------------------------------------------------- params


def test_pair_params_json_round_trip_and_validation():
    """PairParams round-trips through JSON and rejects bad fields by name."""
    p = A.PairParams(symbol_y="solusdt", hedge_method="kalman", z_stop=3.5)
    assert p.symbol_y == "SOLUSDT"
    assert A.PairParams.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="window must be an integer >= 3, got 2"):
        A.PairParams(window=2)
    with pytest.raises(ValueError, match="hedge_method must be one of"):
        A.PairParams(hedge_method="magic")
    with pytest.raises(ValueError, match=r"z_stop must be a finite number None or > "):
        A.PairParams(z_stop=1.0)
    with pytest.raises(ValueError, match="interval: interval must"):
        A.PairParams(interval="1d")
    with pytest.raises(ValueError, match=r"unknown fields \['bogus'\]"):
        A.PairParams.from_json('{"bogus": 1}')


# --------------------------------------------------------------- pair analytics


def test_pair_analytics_on_real_bars(real_bars):
    """The one-call result on recorded BTC/ETH 1 s bars agrees with the pieces."""
    params = A.PairParams(interval="1s", window=30)
    res = A.pair_analytics(*real_bars, params)
    frame = align_pair(*real_bars, max_ffill=5, interval_s=1).frame
    y, x = frame["y"].to_numpy(), frame["x"].to_numpy()
    assert res.n_bars == len(frame) == len(res.table)
    assert list(res.table.columns) == list(A.TABLE_COLUMNS)
    rh = A.rolling_hedge_ratio(y, x, 30)
    np.testing.assert_allclose(res.table["beta"], rh.beta, rtol=1e-12)
    s = A.spread(y, x, rh.beta, rh.alpha)
    np.testing.assert_allclose(res.table["z"], A.rolling_zscore(s, 30).z, rtol=1e-12)
    assert res.in_sample.beta == pytest.approx(A.hedge_ratio(y, x).beta, rel=1e-12)
    assert res.adf is not None and res.eg is not None
    assert res.eg.statistic == pytest.approx(coint(y, x).coint_t, rel=RTOL)
    assert res.latest.z == pytest.approx(res.table["z"].iloc[-1])
    assert res.signal in {"BUY SPREAD", "SELL SPREAD", "EXIT", "HOLD", "NEUTRAL"}
    assert not res.hedge_in_sample


def test_pair_analytics_liquidity_filter_counts_and_skips_bars():
    """Thin bars are excluded from the regression and z-score and counted."""
    by, bx = synthetic_bars(300)
    by.loc[100:109, "trades"] = 1
    res = A.pair_analytics(by, bx, A.PairParams(min_trades=2), with_tests=False)
    assert res.excluded_bars == 10 and res.table["excluded"].sum() == 10
    assert res.table.loc[100:109, "z"].isna().all()
    assert any("10 of 300 bars excluded" in m for m in res.messages)
    keep = ~res.table["excluded"].to_numpy()
    y, x = by["close"].to_numpy()[keep], bx["close"].to_numpy()[keep]
    np.testing.assert_allclose(
        res.table["beta"].to_numpy()[keep], A.rolling_hedge_ratio(y, x, 60).beta,
        rtol=1e-12,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["ols", "huber", "theil_sen"])
def test_static_hedge_is_shown_in_sample_and_rolling_ols_is_traded(method):
    """A static method is the in-sample description; the traded beta is rolling OLS."""
    by, bx = synthetic_bars(200)
    res = A.pair_analytics(by, bx, A.PairParams(hedge_method=method), with_tests=False)
    assert res.hedge_in_sample and res.in_sample.method == method
    assert res.trade_method == "rolling_ols"
    assert any("in-sample" in m and "rolling OLS" in m for m in res.messages)
    y, x = by["close"].to_numpy(), bx["close"].to_numpy()
    roll = A.rolling_hedge_ratio(y, x, 60)
    np.testing.assert_allclose(res.table["beta"], roll.beta, rtol=1e-12)
    fit = A.hedge_ratio(y, x, method=method)
    np.testing.assert_allclose(
        res.table["spread_in_sample"], y - fit.beta * x - fit.alpha, rtol=1e-12
    )


def test_pair_analytics_kalman_and_log_space():
    """Kalman on log prices gives a finite z = e / sqrt(S) and no live z from NaN."""
    by, bx = synthetic_bars(300)
    params = A.PairParams(hedge_method="kalman", price_space="log")
    res = A.pair_analytics(by, bx, params, with_tests=False)
    assert res.adf is None and np.isfinite(res.table["z"].iloc[-1])
    z = res.table["spread"] / res.table["spread_std"]
    np.testing.assert_allclose(res.table["z"], z, rtol=1e-12)
    assert res.table["z"].iloc[:59].isna().all()  # warm-up: not causal, not traded
    assert A.live_zscore(res, float("nan"), bx["close"].iloc[-1]) is None


def test_pair_analytics_insufficient_data_says_so():
    """Fewer bars than the window give messages, no z, and no exception."""
    by, bx = synthetic_bars(10)
    res = A.pair_analytics(by, bx, A.PairParams())
    assert res.latest.z is None and not res.ok
    assert any("insufficient data: have 10" in m for m in res.messages)
    assert res.regime.label == "Insufficient data"


# ------------------------------------------------------------- property tests

series = st.lists(
    st.one_of(
        st.floats(1.0, 1e5, allow_nan=False), st.just(float("nan")), st.just(5.0)
    ),
    min_size=0,
    max_size=400,
)


@settings(max_examples=60, deadline=None)
@given(series, st.integers(3, 50))
def test_rolling_functions_never_raise_and_keep_length(values, window):
    """Random, constant, NaN-laden and short inputs keep output lengths aligned."""
    y = np.array(values, dtype=float)
    x = y[::-1].copy()
    n = y.size
    assert A.rolling_hedge_ratio(y, x, window).beta.size == n
    assert A.rolling_zscore(y, window).z.size == n
    assert A.rolling_correlation(y, x, window).corr.size == n
    assert A.rolling_volatility(A.log_returns(y), window, 60).vol.size == n
    assert A.kalman_hedge_ratio(y, x).beta.size == n
    assert A.zscore_signals(A.rolling_zscore(y, window).z).position.size == n
    assert A.backtest(y, x, 1.0, np.ones(n), fee_bps=1).equity.size == n
    A.hedge_ratio(y, x)
    A.half_life(y)


@settings(max_examples=15, deadline=None)
@given(series)
def test_unit_root_tests_never_raise(values):
    """ADF and Engle-Granger return a result (ok or insufficient) on any input."""
    y = np.array(values, dtype=float)
    assert isinstance(A.adf_test(y), A.AdfResult)
    assert isinstance(A.engle_granger(y, y[::-1] + 1.0), A.EngleGrangerResult)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 3000),
    st.sampled_from(["rolling_ols", "kalman", "ols"]),
    st.floats(0.0, 0.3),
    st.booleans(),
)
def test_pair_analytics_never_raises_and_aligns(n, method, nan_share, constant):
    """Any length, NaN share or constant leg gives a table with one row per bar."""
    by, bx = synthetic_bars(n, seed=n)
    rng = np.random.default_rng(n)
    if n:
        by.loc[rng.random(n) < nan_share, "close"] = np.nan
    if constant:
        bx["close"] = 3000.0
    res = A.pair_analytics(by, bx, A.PairParams(hedge_method=method), with_tests=False)
    assert len(res.table) == res.n_bars == n
    assert res.backtest.equity.size == n
