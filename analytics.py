"""Pure pair analytics: hedge ratios, spread, z-score, tests, signals, backtest.

Arrays (numpy or pandas) in, frozen result dataclasses out; no I/O, no clock, no
Streamlit. Caller mistakes (unknown method, window < 2, lengths differ) raise
``ValueError`` naming the argument, the rule and the value. Too little data is not an
error: results carry ``ok=False`` and ``message="insufficient data: have n, need m"``
and NaN (or None) numbers, so the dashboard keeps going. Constant, NaN-laden or empty
input never raises.

Conventions
-----------
* A rolling value stamped on bar t uses bars t-window+1..t (inclusive, no look-ahead).
* Sample standard deviations use ddof=1, like pandas ``rolling().std()``.
* Crypto trades around the clock: a year has 365 * 24 * 3600 seconds, so a series of
  ``interval_s`` bars is annualised with sqrt(31 536 000 / interval_s).
* Prices, not log prices, by default (architecture.md, decision 12): the spread is in
  quote currency. Spread, z-score, signals and backtest use a hedge ratio estimated
  without look-ahead (rolling OLS or Kalman); the static fit over the view is
  descriptive (decision 14).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.tsa.adfvalues import mackinnoncrit

import unitroot
from models import normalize_symbol
from pairdesk.numbers.ou import (
    OU_MIN_OBS,
    BertramBands,
    OUFit,
    bertram_bands,
    expected_cycle_s,
    ou_fit,
)
from resampling import (
    Leg,
    align_pair_arrays,
    bars_per_year,
    leg_arrays,
    parse_interval,
)

SECONDS_PER_YEAR = 365 * 24 * 3600
HEDGE_METHODS = ("ols", "huber", "theil_sen", "rolling_ols", "kalman")
STATIC_METHODS = ("ols", "huber", "theil_sen")
PRICE_SPACES = ("price", "log")
CORR_ON = ("returns", "prices")
SIGNAL_RULES = ("z", "bertram")
# Walk-forward refits of the OU bands: every window bars, at most this many per view.
BANDS_MAX_REFITS = 50
THEIL_SEN_MAX_POINTS = 3000
ADF_MIN_OBS = 20
HALF_LIFE_MIN_OBS = 10
# Chan (2013), "Algorithmic Trading", ch. 3, example 3.3 uses delta = 1e-4 for the
# random-walk state noise of a Kalman hedge ratio on prices.
KALMAN_DEFAULT_DELTA = 1e-4
# Observation noise variance (quote currency squared). Chan uses Ve = 1e-3 on ETF
# prices around 50 USD; BTC/ETH prices are ~1000x larger, so 1.0 is the default here.
KALMAN_DEFAULT_OBS_VAR = 1.0
# Approximate diffuse prior: variance 1e6 on each state, as statsmodels'
# ``initialization="approximate_diffuse"`` (Durbin & Koopman 2012, sec. 5.1).
KALMAN_DIFFUSE_VAR = 1e6
REGIME_MIN_ABS_CORR = 0.3
REGIME_MAX_PVALUE = 0.05
SIGNAL_BUY = "BUY SPREAD"
SIGNAL_SELL = "SELL SPREAD"
SIGNAL_EXIT = "EXIT"
SIGNAL_HOLD = "HOLD"
SIGNAL_NEUTRAL = "NEUTRAL"


def _insufficient(have: int, need: int, unit: str = "points") -> str:
    """The standard message for too little data."""
    return f"insufficient data: have {have} {unit}, need {need}"


# --------------------------------------------------------------------------- inputs


def _as_float_array(values: Any, name: str) -> np.ndarray:
    """A 1-D float64 copy of values; ValueError when it is not one-dimensional."""
    arr = np.asarray(values, dtype="float64")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr.copy()


def _pair_arrays(y: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D float arrays of equal length."""
    ya, xa = _as_float_array(y, "y"), _as_float_array(x, "x")
    if ya.size != xa.size:
        raise ValueError(
            f"y and x must have the same length, got {ya.size} and {xa.size}"
        )
    return ya, xa


def _check_window(window: int, name: str = "window", minimum: int = 2) -> int:
    """Validate an integer window >= minimum."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {window!r}")
    if window < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {window!r}")
    return int(window)


def _finite_pairs(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (y, x) pairs where both are finite."""
    keep = np.isfinite(y) & np.isfinite(x)
    return y[keep], x[keep]


def _is_constant(values: np.ndarray) -> bool:
    """True when all values are equal up to 1e-12 of their magnitude."""
    if values.size == 0:
        return True
    span = float(values.max() - values.min())
    return span <= 1e-12 * max(1.0, float(np.abs(values).max()))


# ----------------------------------------------------------------- rolling moments


@dataclass(frozen=True, slots=True)
class _Moments:
    """Rolling mean and centred (co)moment sums, stamped on each window's last bar.

    ``sxx``/``syy`` are the sums of squares about the blocks' references that the
    centred sums were computed from: the scale of their rounding error.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    cxx: np.ndarray
    cyy: np.ndarray
    cxy: np.ndarray
    sxx: np.ndarray
    syy: np.ndarray


def _rolling_moments(x: np.ndarray, y: np.ndarray | None, window: int) -> _Moments:
    """O(n) rolling means and centred sums of squares/products over trailing windows.

    The series is cut into blocks of ``window`` points; each block is centred on
    its first finite value and carries prefix and suffix sums. A window spans at
    most two blocks: the suffix of one plus the prefix of the next, re-centred on
    the first block's reference. No sum runs over more than ``window`` points and
    every sum is taken about a nearby reference, so there is no catastrophic
    cancellation on price levels such as 60 000 (naive running sums of x^2 lose ~8
    digits there). A window holding a NaN yields NaN.

    With ``y=None`` only the x moments are computed (``mean_y``, ``cyy`` and ``cxy``
    are then ``mean_x``, ``cxx`` and ``cxx``): the one-series case of the z-score
    and the volatility, at half the cost.

    The window starting at s = k w + j (block k, offset j) ends at t = s + w - 1;
    its suffix part is the flat suffix sum at s, its prefix part (j > 0) the flat
    prefix sum at t, so both are contiguous slices of the flattened block sums.
    """
    n = x.size
    if n < window:
        return _Moments(*(np.full(n, np.nan) for _ in range(7)))
    nb = -(-n // window)
    pad = nb * window - n
    rows = np.arange(nb)
    t_last = n - window + 1  # number of complete windows
    s = np.arange(t_last)
    k = s // window
    whole = (s % window) == 0
    kn = np.minimum(k + 1, nb - 1)
    mm = np.where(whole, 0.0, (s % window).astype("float64"))
    w = float(window)

    def centred(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blocks of values minus each block's reference, the references, and the
        per-window shift from block k's reference to block k+1's."""
        # NaN padding keeps the last block's reference on real data only; padded
        # cells are never part of a complete window.
        blocks = np.concatenate([values, np.full(pad, np.nan)]).reshape(nb, window)
        # Reference of each block: its first finite value, so that no value stamped
        # on bar t depends (even in rounding) on bars after t.
        fin = np.isfinite(blocks)
        first = blocks[rows, np.argmax(fin, axis=1)]
        ref = np.where(fin.any(axis=1), first, 0.0)
        return blocks - ref[:, None], ref, ref[kn] - ref[k]

    def window_sums(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Suffix sum of each window's first block and prefix sum of its second."""
        suf = np.cumsum(part[:, ::-1], axis=1)[:, ::-1].reshape(-1)[:t_last]
        pre = np.cumsum(part, axis=1).reshape(-1)[window - 1 : n]
        return suf, np.where(whole, 0.0, pre)

    dx, rx, ddx = centred(x)
    sx, b1x = window_sums(dx)
    sxx, bxx = window_sums(dx * dx)
    mean_x = np.full(n, np.nan)
    cxx = np.full(n, np.nan)
    scale_x = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        s1x = sx + b1x + mm * ddx
        sxx = sxx + bxx + 2 * ddx * b1x + mm * ddx * ddx
        mean_x[window - 1 :] = rx[k] + s1x / w
        cxx[window - 1 :] = np.maximum(sxx - s1x * s1x / w, 0.0)
        scale_x[window - 1 :] = sxx
    if y is None:
        return _Moments(mean_x, mean_x, cxx, cxx, cxx, scale_x, scale_x)
    dy, ry, ddy = centred(y)
    sy, b1y = window_sums(dy)
    syy, byy = window_sums(dy * dy)
    sxy, bxy = window_sums(dx * dy)
    mean_y = np.full(n, np.nan)
    cyy = np.full(n, np.nan)
    cxy = np.full(n, np.nan)
    scale_y = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        s1y = sy + b1y + mm * ddy
        syy = syy + byy + 2 * ddy * b1y + mm * ddy * ddy
        sxy = sxy + bxy + ddx * b1y + ddy * b1x + mm * ddx * ddy
        mean_y[window - 1 :] = ry[k] + s1y / w
        cyy[window - 1 :] = np.maximum(syy - s1y * s1y / w, 0.0)
        cxy[window - 1 :] = sxy - s1x * s1y / w
        scale_y[window - 1 :] = syy
    return _Moments(mean_x, mean_y, cxx, cyy, cxy, scale_x, scale_y)


# Relative rounding of a centred sum of squares computed from sums about a block
# reference: a few ulps per summed term (16 ulps x window, with margin).
_ROUNDING_ULPS = 16 * np.finfo("float64").eps


def _degenerate(
    c: np.ndarray, mean: np.ndarray, window: int, scale: np.ndarray
) -> np.ndarray:
    """Windows whose centred sum of squares is zero up to rounding.

    Two scales: the level (|mean|, for sums that happen to be centred near zero)
    and ``scale``, the sum of squares about the block reference the centred sum was
    derived from, whose rounding can leave 1e-9 where the series did not move (a
    flat x then gave betas of 0, +-64 or +-128 instead of NaN).
    """
    level = np.maximum(1.0, np.abs(mean))
    with np.errstate(invalid="ignore"):
        tol = np.maximum((1e-12 * level) ** 2, _ROUNDING_ULPS * scale) * window
        return ~(c > tol)


# -------------------------------------------------------------------- hedge ratio


@dataclass(frozen=True, slots=True)
class HedgeRatio:
    """A static hedge-ratio fit y = beta * x + alpha + e.

    Attributes
    ----------
    method : "ols", "huber" or "theil_sen".
    beta : units of x per unit of y (NaN when not ok).
    alpha : intercept in y's units (0.0 when ``intercept=False``).
    r2 : 1 - SSR/SST of the fitted line on the points used (descriptive for all
        methods; uncentred SST without intercept, as statsmodels).
    n : points used (finite pairs; at most 3 000 newest for Theil-Sen).
    beta_se, alpha_se : standard errors (OLS: classical; Huber: statsmodels RLM H1);
        None for Theil-Sen, which reports a 95 % interval instead.
    beta_low, beta_high : Theil-Sen 95 % confidence interval of beta, else None.
    intercept : whether an intercept was fitted.
    in_sample : always True: the fit uses every point it describes.
    ok, message : False and "insufficient data: ..." when it could not be fitted.
    note : extra remarks (e.g. the Theil-Sen subsample).
    """

    method: str
    beta: float
    alpha: float
    r2: float
    n: int
    beta_se: float | None = None
    alpha_se: float | None = None
    beta_low: float | None = None
    beta_high: float | None = None
    intercept: bool = True
    in_sample: bool = True
    ok: bool = True
    message: str = ""
    note: str = ""


def hedge_ratio(
    y: Any, x: Any, method: str = "ols", intercept: bool = True
) -> HedgeRatio:
    """Static hedge ratio of y on x by OLS, Huber M-estimation or Theil-Sen.

    Parameters
    ----------
    y, x : array-like of equal length
        Prices (or log prices); non-finite pairs are dropped.
    method : {"ols", "huber", "theil_sen"}
        ``ols``: statsmodels ``OLS``; ``huber``: statsmodels ``RLM`` with ``HuberT``
        (t = 1.345, MAD scale); ``theil_sen``: ``scipy.stats.theilslopes`` (median of
        pairwise slopes, intercept median(y) - beta * median(x)) on the newest 3 000
        points at most, because its cost and memory grow with n^2.
    intercept : bool
        Fit alpha (default) or force the line through the origin (OLS/Huber only).

    Returns
    -------
    HedgeRatio
        Minimum data: 3 finite pairs with intercept (2 without) and non-constant x;
        below that ``ok=False``.

    Raises
    ------
    ValueError
        Unknown method, lengths differ, or Theil-Sen without intercept.

    Notes
    -----
    OLS: beta = cov(x, y) / var(x), alpha = mean(y) - beta mean(x),
    se(beta) = sqrt(s^2 / sum((x - mean x)^2)) with s^2 = SSR / (n - 2).
    """
    if method not in STATIC_METHODS:
        raise ValueError(f"method must be one of {STATIC_METHODS}, got {method!r}")
    if method == "theil_sen" and not intercept:
        raise ValueError("intercept must be True for method 'theil_sen', got False")
    ya, xa = _finite_pairs(*_pair_arrays(y, x))
    need = 3 if intercept else 2
    nan = float("nan")
    degenerate = _is_constant(xa) if intercept else not np.any(xa)
    if ya.size < need or degenerate:
        reason = (
            _insufficient(ya.size, need)
            if ya.size < need
            else f"insufficient data: x is constant over {ya.size} points"
        )
        return HedgeRatio(
            method,
            nan,
            nan,
            nan,
            int(ya.size),
            intercept=intercept,
            ok=False,
            message=reason,
        )
    note = ""
    if method == "theil_sen":
        if ya.size > THEIL_SEN_MAX_POINTS:
            cap = THEIL_SEN_MAX_POINTS
            note = f"Theil-Sen ran on the newest {cap} of {ya.size} points"
            ya, xa = ya[-THEIL_SEN_MAX_POINTS:], xa[-THEIL_SEN_MAX_POINTS:]
        return _theil_sen(ya, xa, note)
    if method == "ols" and intercept:
        return _ols(ya, xa)
    return _statsmodels_fit(ya, xa, method, intercept)


def _ols(y: np.ndarray, x: np.ndarray) -> HedgeRatio:
    """OLS with intercept from centred sums (statsmodels' OLS to ~1e-12, tested;
    a twentieth of its cost, which matters at every bar close)."""
    x_mean, y_mean = float(x.mean()), float(y.mean())
    xc, yc = x - x_mean, y - y_mean
    sxx, syy = float(xc @ xc), float(yc @ yc)
    beta = float(xc @ yc) / sxx
    resid = yc - beta * xc
    ssr = float(resid @ resid)
    s2 = ssr / (y.size - 2)
    return HedgeRatio(
        method="ols",
        beta=beta,
        alpha=y_mean - beta * x_mean,
        r2=1.0 - ssr / syy if syy > 0 else float("nan"),
        n=int(y.size),
        beta_se=_finite_or_none(math.sqrt(s2 / sxx)),
        alpha_se=_finite_or_none(math.sqrt(s2 * (1.0 / y.size + x_mean**2 / sxx))),
    )


def _statsmodels_fit(
    y: np.ndarray, x: np.ndarray, method: str, intercept: bool
) -> HedgeRatio:
    """OLS without intercept or RLM(HuberT) through statsmodels, as HedgeRatio."""
    import statsmodels.api as sm

    design = np.column_stack([x, np.ones_like(x)]) if intercept else x[:, None]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if method == "ols":
            res = sm.OLS(y, design).fit()
        else:
            res = sm.RLM(y, design, M=sm.robust.norms.HuberT()).fit()
    params = np.asarray(res.params, dtype="float64")
    bse = np.asarray(res.bse, dtype="float64")
    beta = float(params[0])
    alpha = float(params[1]) if intercept else 0.0
    resid = y - beta * x - alpha
    sst = float(np.sum((y - y.mean()) ** 2)) if intercept else float(np.sum(y * y))
    r2 = 1.0 - float(np.sum(resid * resid)) / sst if sst > 0 else float("nan")
    return HedgeRatio(
        method=method,
        beta=beta,
        alpha=alpha,
        r2=r2,
        n=int(y.size),
        beta_se=_finite_or_none(bse[0]),
        alpha_se=_finite_or_none(bse[1]) if intercept else None,
        intercept=intercept,
    )


def _theil_sen(y: np.ndarray, x: np.ndarray, note: str) -> HedgeRatio:
    """scipy.stats.theilslopes converted to HedgeRatio."""
    from scipy import stats

    with np.errstate(all="ignore"):
        res = stats.theilslopes(y, x)
    beta, alpha = float(res.slope), float(res.intercept)
    resid = y - beta * x - alpha
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid * resid)) / sst if sst > 0 else float("nan")
    return HedgeRatio(
        method="theil_sen",
        beta=beta,
        alpha=alpha,
        r2=r2,
        n=int(y.size),
        beta_low=float(res.low_slope),
        beta_high=float(res.high_slope),
        note=note,
    )


def _finite_or_none(value: float) -> float | None:
    """float(value) when finite, else None."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class RollingHedge:
    """Rolling OLS hedge ratio; each array has the input's length.

    Attributes
    ----------
    beta, alpha : OLS of y on x over bars t-window+1..t, stamped on bar t; NaN for the
        first window-1 bars, for windows holding a NaN and for constant-x windows.
    r2 : the window's R^2 (NaN when y is constant in the window).
    window : bars per regression.
    ok, message : False and "insufficient data: ..." when no window is complete.
    beta_se : classical OLS standard error of each window's beta,
        sqrt(s^2 / Sxx) with s^2 = SSR / (window - 2): beta +- 2 beta_se is the
        band drawn on the chart (residuals of price levels are autocorrelated, so
        read it as a lower bound of the uncertainty).
    """

    beta: np.ndarray
    alpha: np.ndarray
    r2: np.ndarray
    window: int
    ok: bool = True
    message: str = ""
    beta_se: np.ndarray | None = None


def rolling_hedge_ratio(y: Any, x: Any, window: int) -> RollingHedge:
    """OLS of y on x (with intercept) over each trailing window, in O(n).

    Parameters
    ----------
    y, x : array-like of equal length
    window : int >= 3
        Bars per regression.

    Returns
    -------
    RollingHedge
        Minimum data: ``window`` bars for the first value.

    Notes
    -----
    beta_t = Sxy / Sxx and alpha_t = mean(y) - beta_t mean(x), with Sxy = sum over the
    window of (x - mean x)(y - mean y); equal to a separate least-squares fit of each
    window (to ~1e-12 relative on BTC/ETH price levels), computed with block-centred
    sums (see ``_rolling_moments``).
    """
    ya, xa = _pair_arrays(y, x)
    window = _check_window(window, minimum=3)
    mom = _rolling_moments(xa, ya, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = _degenerate(mom.cxx, mom.mean_x, window, mom.sxx)
        beta = np.where(bad, np.nan, mom.cxy / np.where(bad, 1.0, mom.cxx))
        alpha = mom.mean_y - beta * mom.mean_x
        bad_y = _degenerate(mom.cyy, mom.mean_y, window, mom.syy)
        r2 = np.where(
            bad | bad_y,
            np.nan,
            mom.cxy**2 / np.where(bad | bad_y, 1.0, mom.cxx * mom.cyy),
        )
        ssr = np.maximum(mom.cyy - beta * mom.cxy, 0.0)
        beta_se = np.sqrt(ssr / (window - 2) / np.where(bad, 1.0, mom.cxx))
        beta_se = np.where(bad, np.nan, beta_se)
    ok = ya.size >= window
    return RollingHedge(
        beta,
        alpha,
        r2,
        window,
        ok,
        "" if ok else _insufficient(ya.size, window, "bars"),
        beta_se,
    )


# ------------------------------------------------------------------------- Kalman


@dataclass(frozen=True, slots=True)
class KalmanState:
    """Filtered state of the dynamic regression y_t = beta_t (x_t - c) + a_t + e_t.

    Attributes
    ----------
    beta : hedge ratio after the last update (units of x per unit of y).
    alpha : intercept at x = c (the ``x_center`` the filter runs with; with the
        default c = 0 it is the ordinary intercept).
    p_bb, p_ba, p_aa : state covariance entries (beta-beta, beta-alpha, alpha-alpha).
    n : observations absorbed so far.
    """

    beta: float = 0.0
    alpha: float = 0.0
    p_bb: float = KALMAN_DIFFUSE_VAR
    p_ba: float = 0.0
    p_aa: float = KALMAN_DIFFUSE_VAR
    n: int = 0


@dataclass(frozen=True, slots=True)
class KalmanStep:
    """One Kalman step: the new state, forecast error e_t and its variance S_t."""

    state: KalmanState
    error: float
    error_var: float


@dataclass(frozen=True, slots=True)
class KalmanScale:
    """The data's scale for the Kalman filter, from a warm-up sample.

    Attributes
    ----------
    obs_var : R, the OLS residual variance of y on x over the warm-up (ddof=2).
    x_center : c, the warm-up mean of x; the filter regresses on x - c so that beta
        and the intercept are not confounded by the price level.
    state_noise : per-state scale of Q = delta / (1 - delta) * diag(state_noise):
        (R / max(c^2, var x), R), so that a unit of delta moves the hedge's value
        beta * c by as much as the intercept, whatever the price level (var x
        stands in when c is near 0, as log prices near 1 USDT are).
    initial_state, initial_cov : (0, first y) and a prior 1e6 times the data's own
        variance of beta and of the intercept (diffuse relative to the data).
    warmup : bars the scale was estimated from (values before the last of them
        are not causal and are not traded).
    ok, message : False and "insufficient data: ..." when the warm-up has fewer
        than 3 finite bars, or a leg is constant in it.
    """

    obs_var: float
    x_center: float
    state_noise: tuple[float, float]
    initial_state: tuple[float, float]
    initial_cov: tuple[tuple[float, float], tuple[float, float]]
    warmup: int
    ok: bool = True
    message: str = ""


def kalman_scale(
    y: Any, x: Any, warmup: int, obs_var: float | None = None
) -> KalmanScale:
    """Scale the Kalman filter to the first ``warmup`` bars of the data.

    Parameters
    ----------
    y, x : array-like of equal length (price or log-price levels).
    warmup : int >= 3, bars from the start used for the scale.
    obs_var : optional R to use instead of the warm-up's residual variance.

    Returns
    -------
    KalmanScale
        Minimum data: 3 finite pairs in the warm-up with both legs moving.

    Notes
    -----
    With Q = q I and R = 1 on prices near 60 000 the state noise dwarfs the
    observation noise, the filter follows y exactly and its forecast error is the
    one-bar hedged price change (white noise): Q and R must carry the data's units.
    Here R = s^2 of the warm-up OLS and Q = q diag(R / c^2, R) on x centred at
    its warm-up mean c, so delta alone sets how fast the hedge adapts (with the
    default 1e-4, a spread with a 20-bar half-life keeps a 10-20 bar half-life in
    the forecast error; scaling beta's noise by the warm-up var x instead let
    beta chase the spread once x left the warm-up range, halving it).
    """
    ya, xa = _pair_arrays(y, x)
    warmup = _check_window(warmup, "warmup", minimum=3)
    wy, wx = _finite_pairs(ya[:warmup], xa[:warmup])
    nan = float("nan")
    if wy.size < 3 or _is_constant(wx) or _is_constant(wy):
        msg = (
            _insufficient(wy.size, 3, "bars")
            if wy.size < 3
            else f"insufficient data: a leg is constant over the {wy.size}-bar warm-up"
        )
        bad = ((nan, nan), (nan, nan))
        return KalmanScale(nan, nan, (nan, nan), (nan, nan), bad, warmup, False, msg)
    center = float(wx.mean())
    xc = wx - center
    var_x = float(xc @ xc) / (wx.size - 1)
    var_y = float(np.var(wy, ddof=1))
    beta = float(xc @ (wy - wy.mean())) / float(xc @ xc)
    resid = wy - wy.mean() - beta * xc
    r = float(resid @ resid) / max(wy.size - 2, 1) if obs_var is None else obs_var
    r = max(r, var_y * 1e-12, np.finfo("float64").tiny)  # collinear warm-up
    cov = (
        (KALMAN_DIFFUSE_VAR * var_y / var_x, 0.0),
        (0.0, KALMAN_DIFFUSE_VAR * var_y),
    )
    return KalmanScale(
        obs_var=r,
        x_center=center,
        state_noise=(r / max(center * center, var_x), r),
        initial_state=(0.0, float(wy[0])),
        initial_cov=cov,
        warmup=warmup,
    )


@dataclass(frozen=True, slots=True)
class KalmanResult:
    """Kalman hedge-ratio paths; each array has the input's length.

    Attributes
    ----------
    beta, alpha : filtered state after bar t (uses data up to t only), as
        y = beta x + alpha (alpha converted back from the centred intercept).
    error : one-step forecast error e_t = y_t - (beta_{t-1} (x_t - c) + a_{t-1}),
        the Kalman spread (NaN on bars with a non-finite price).
    error_var : its variance S_t = H P_{t|t-1} H' + R.
    beta_var : filtered variance of beta after bar t (P_bb).
    z : standardised forecast error e_t / sqrt(S_t), the Kalman z-score (N(0, 1)
        when the model holds).
    state : the state after the last bar (feed it back to continue incrementally).
    delta, obs_var : the settings used. x_center, state_noise : see KalmanScale.
    ok, message : False and "insufficient data: ..." with fewer than 2 finite bars.
    """

    beta: np.ndarray
    alpha: np.ndarray
    error: np.ndarray
    error_var: np.ndarray
    beta_var: np.ndarray
    z: np.ndarray
    state: KalmanState
    delta: float
    obs_var: float
    x_center: float = 0.0
    state_noise: tuple[float, float] = (1.0, 1.0)
    ok: bool = True
    message: str = ""


def _check_kalman(delta: float, obs_var: float) -> None:
    """Validate Kalman settings."""
    if not (isinstance(delta, (int, float)) and 0.0 <= delta < 1.0):
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    if not (isinstance(obs_var, (int, float)) and obs_var > 0 and obs_var < math.inf):
        raise ValueError(f"obs_var must be a finite number > 0, got {obs_var!r}")


def kalman_update(
    state: KalmanState,
    y: float,
    x: float,
    *,
    delta: float = KALMAN_DEFAULT_DELTA,
    obs_var: float = KALMAN_DEFAULT_OBS_VAR,
    x_center: float = 0.0,
    state_noise: tuple[float, float] = (1.0, 1.0),
) -> KalmanStep:
    """Advance the Kalman hedge-ratio filter by one bar (see ``kalman_hedge_ratio``).

    A non-finite y or x only predicts (covariance grows by Q) and returns NaN error.
    """
    _check_kalman(delta, obs_var)
    res = kalman_hedge_ratio(
        [y],
        [x],
        delta,
        obs_var,
        initial_state=state,
        x_center=x_center,
        state_noise=state_noise,
    )
    return KalmanStep(res.state, float(res.error[0]), float(res.error_var[0]))


def _kalman_start(
    initial_state: Any, initial_cov: Any
) -> tuple[float, float, float, float, float, int]:
    """(beta, alpha, p_bb, p_ba, p_aa, n) from the optional initial state and cov."""
    if isinstance(initial_state, KalmanState):
        st = initial_state
        b, a, pbb, pba, paa, n_seen = st.beta, st.alpha, st.p_bb, st.p_ba, st.p_aa, st.n
    else:
        b, a = (0.0, 0.0) if initial_state is None else map(float, initial_state)
        pbb, pba, paa, n_seen = KALMAN_DIFFUSE_VAR, 0.0, KALMAN_DIFFUSE_VAR, 0
    if initial_cov is not None:
        cov = np.asarray(initial_cov, dtype="float64")
        if cov.shape != (2, 2):
            raise ValueError(f"initial_cov must be 2x2, got shape {cov.shape}")
        pbb, pba, paa = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    return b, a, pbb, pba, paa, n_seen


def kalman_hedge_ratio(
    y: Any,
    x: Any,
    delta: float = KALMAN_DEFAULT_DELTA,
    obs_var: float = KALMAN_DEFAULT_OBS_VAR,
    *,
    initial_state: Any = None,
    initial_cov: Any = None,
    x_center: float = 0.0,
    state_noise: tuple[float, float] = (1.0, 1.0),
) -> KalmanResult:
    """Dynamic linear regression with random-walk beta and intercept (Kalman filter).

    Parameters
    ----------
    y, x : array-like of equal length
    delta : float in [0, 1)
        State noise: Q = delta / (1 - delta) * diag(state_noise) per step (Chan
        2013, ch. 3, uses 1e-4 with Q = q I). delta = 0 gives recursive least squares.
    obs_var : float > 0
        Observation noise variance R.
    initial_state : KalmanState or (beta, alpha), optional
        Default (0, 0). A KalmanState also carries its covariance.
    initial_cov : 2x2 array-like, optional
        Default 1e6 * I, an approximate diffuse prior as statsmodels'
        ``approximate_diffuse`` initialisation (Durbin & Koopman 2012, sec. 5.1).
    x_center : float
        c: the filter regresses on x - c (``kalman_scale`` uses the warm-up mean);
        the returned ``alpha`` is converted back to y = beta x + alpha.
    state_noise : (s_beta, s_alpha)
        Per-state scale of Q (default (1, 1): Chan's Q = q I).

    Returns
    -------
    KalmanResult
        Minimum data: 2 finite bars. Use ``kalman_scale`` for Q and R in the data's
        units; the unscaled defaults only suit prices near 1.

    Notes
    -----
    State theta_t = (beta_t, a_t), theta_t = theta_{t-1} + w_t, w ~ N(0, Q);
    observation y_t = H_t theta_t + e_t with H_t = (x_t - c, 1), e ~ N(0, R).
    Predict: P- = P + Q. Forecast error e_t = y_t - H theta, S_t = H P- H' + R.
    Gain K = P- H' / S_t; update theta += K e_t and, in Joseph form (stays
    symmetric and positive semi-definite in floating point),
    P = (I - K H) P- (I - K H)' + K R K'.
    """
    ya, xa = _pair_arrays(y, x)
    _check_kalman(delta, obs_var)
    b, a, pbb, pba, paa, n_seen = _kalman_start(initial_state, initial_cov)
    q = delta / (1.0 - delta)
    qb, qa = q * float(state_noise[0]), q * float(state_noise[1])
    r = float(obs_var)
    c = float(x_center)
    n = ya.size
    betas = np.empty(n)
    alphas = np.empty(n)
    bvars = np.empty(n)
    errs = np.full(n, np.nan)
    svars = np.full(n, np.nan)
    finite = np.isfinite(ya) & np.isfinite(xa)
    ylist, xlist, flist = ya.tolist(), (xa - c).tolist(), finite.tolist()
    for i in range(n):
        pbb += qb
        paa += qa
        if flist[i]:
            h = xlist[i]
            e = ylist[i] - (b * h + a)
            # P- H' = (pbb h + pba, pba h + paa)
            hb = pbb * h + pba
            ha = pba * h + paa
            s = hb * h + ha + r
            kb = hb / s
            ka = ha / s
            b += kb * e
            a += ka * e
            # Joseph form with A = I - K H = [[1 - kb h, -kb], [-ka h, 1 - ka]]
            a11, a12, a21, a22 = 1.0 - kb * h, -kb, -ka * h, 1.0 - ka
            m11, m12 = a11 * pbb + a12 * pba, a11 * pba + a12 * paa
            m21, m22 = a21 * pbb + a22 * pba, a21 * pba + a22 * paa
            pbb = m11 * a11 + m12 * a12 + r * kb * kb
            pba = m11 * a21 + m12 * a22 + r * kb * ka
            paa = m21 * a21 + m22 * a22 + r * ka * ka
            errs[i] = e
            svars[i] = s
            n_seen += 1
        betas[i] = b
        alphas[i] = a
        bvars[i] = pbb
    state = KalmanState(b, a, pbb, pba, paa, n_seen)
    have = int(finite.sum())
    ok = have >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        z = errs / np.sqrt(svars)
    return KalmanResult(
        betas,
        alphas - betas * c,
        errs,
        svars,
        bvars,
        z,
        state,
        float(delta),
        r,
        c,
        (float(state_noise[0]), float(state_noise[1])),
        ok,
        "" if ok else _insufficient(have, 2, "bars"),
    )


# ----------------------------------------------------- spread, z-score, correlation


def spread(y: Any, x: Any, beta: Any, alpha: Any = 0.0) -> np.ndarray:
    """Spread s_t = y_t - beta_t x_t - alpha_t (beta/alpha scalars or per-bar arrays).

    No minimum data; NaN wherever an input is NaN. Raises ValueError when lengths
    differ.
    """
    ya, xa = _pair_arrays(y, x)
    b = np.broadcast_to(np.asarray(beta, dtype="float64"), ya.shape)
    a = np.broadcast_to(np.asarray(alpha, dtype="float64"), ya.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return ya - b * xa - a


@dataclass(frozen=True, slots=True)
class RollingZScore:
    """Rolling z-score; arrays have the input's length.

    Attributes
    ----------
    z : (s_t - mean_t) / std_t, NaN for the first window-1 bars, windows with a NaN
        and windows of zero spread.
    mean, std : trailing mean and sample std (ddof=1) over bars t-window+1..t.
    window : bars per window.
    ok, message : False and "insufficient data: ..." when no window is complete.
    """

    z: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    window: int
    ok: bool = True
    message: str = ""


def rolling_zscore(series: Any, window: int) -> RollingZScore:
    """Rolling z-score z_t = (s_t - mean(s_{t-w+1..t})) / std(s_{t-w+1..t}, ddof=1).

    Equal to ``(s - s.rolling(w).mean()) / s.rolling(w).std()`` in pandas. Minimum
    data: ``window`` (>= 2) points for the first value.
    """
    s = _as_float_array(series, "series")
    window = _check_window(window)
    mom = _rolling_moments(s, None, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(mom.cxx / (window - 1))
        bad = _degenerate(mom.cxx, mom.mean_x, window, mom.sxx)
        z = np.where(bad, np.nan, (s - mom.mean_x) / np.where(bad, 1.0, std))
    ok = s.size >= window
    return RollingZScore(
        z, mom.mean_x, std, window, ok, "" if ok else _insufficient(s.size, window)
    )


@dataclass(frozen=True, slots=True)
class RollingCorrelation:
    """Rolling Pearson correlation; ``corr`` has the input's length.

    Attributes
    ----------
    corr : correlation over the trailing window stamped on its last bar.
    on : "returns" (log returns, default) or "prices" (price levels, spurious for
        trending series, shown labelled).
    label : human label, e.g. "return correlation (60 bars)".
    window, ok, message : as usual.
    """

    corr: np.ndarray
    on: str
    label: str
    window: int
    ok: bool = True
    message: str = ""


def rolling_correlation(
    y: Any, x: Any, window: int, on: str = "returns"
) -> RollingCorrelation:
    """Rolling correlation of log returns (default) or of price levels.

    Parameters
    ----------
    y, x : prices of equal length.
    window : int >= 3
        Returns (or prices) per window. On returns, the value on bar t uses the
        returns r_{t-w+1..t} (r_t = ln p_t - ln p_{t-1}), so the first value is on bar
        ``window`` and needs window + 1 prices.
    on : {"returns", "prices"}

    Returns
    -------
    RollingCorrelation
        Equal to pandas ``a.rolling(w).corr(b)`` on the same series; NaN where a leg
        is constant in the window.
    """
    if on not in CORR_ON:
        raise ValueError(f"on must be one of {CORR_ON}, got {on!r}")
    ya, xa = _pair_arrays(y, x)
    window = _check_window(window, minimum=3)
    if on == "returns":
        a, b = log_returns(ya), log_returns(xa)
        need = window + 1
        label = f"log-return correlation ({window} bars)"
    else:
        a, b = ya, xa
        need = window
        label = f"price-level correlation ({window} bars)"
    mom = _rolling_moments(b, a, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        bad = _degenerate(mom.cxx, mom.mean_x, window, mom.sxx) | _degenerate(
            mom.cyy, mom.mean_y, window, mom.syy
        )
        den = np.sqrt(np.where(bad, 1.0, mom.cxx * mom.cyy))
        corr = np.where(bad, np.nan, np.clip(mom.cxy / den, -1.0, 1.0))
    ok = ya.size >= need
    return RollingCorrelation(
        corr, on, label, window, ok, "" if ok else _insufficient(ya.size, need, "bars")
    )


# ------------------------------------------------------------ returns, volatility


def log_returns(prices: Any) -> np.ndarray:
    """Log returns r_t = ln(p_t / p_{t-1}), same length as prices, r_0 = NaN.

    Non-positive or non-finite prices give NaN returns. No minimum data.
    """
    p = _as_float_array(prices, "prices")
    out = np.full(p.size, np.nan)
    if p.size < 2:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        lp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), np.nan)
    out[1:] = np.diff(lp)
    return out


def annualization_factor(interval_s: int) -> float:
    """sqrt(bars per year) = sqrt(31 536 000 / interval_s) (365 x 24 h trading)."""
    return math.sqrt(bars_per_year(interval_s))


@dataclass(frozen=True, slots=True)
class RollingVolatility:
    """Annualised rolling volatility of log returns; ``vol`` has the input's length.

    Attributes
    ----------
    vol : std(r_{t-w+1..t}, ddof=1) * sqrt(31 536 000 / interval_s), a fraction
        (0.5 = 50 % a year).
    factor : the annualisation factor used.
    window, interval_s, ok, message : as usual.
    """

    vol: np.ndarray
    factor: float
    window: int
    interval_s: int
    ok: bool = True
    message: str = ""


def rolling_volatility(returns: Any, window: int, interval_s: int) -> RollingVolatility:
    """Rolling annualised volatility of (log) returns.

    Parameters
    ----------
    returns : array-like of per-bar log returns (see ``log_returns``).
    window : int >= 2, returns per window.
    interval_s : bar length in seconds.

    Returns
    -------
    RollingVolatility
        Equal to ``r.rolling(w).std() * sqrt(31_536_000 / interval_s)``. Minimum data:
        ``window`` returns.
    """
    r = _as_float_array(returns, "returns")
    window = _check_window(window)
    factor = annualization_factor(interval_s)
    mom = _rolling_moments(r, None, window)
    vol = np.sqrt(mom.cxx / (window - 1)) * factor
    ok = int(np.isfinite(r).sum()) >= window
    msg = "" if ok else _insufficient(int(np.isfinite(r).sum()), window, "returns")
    return RollingVolatility(vol, factor, window, int(interval_s), ok, msg)


# ------------------------------------------------------------- unit-root tests


@dataclass(frozen=True, slots=True)
class AdfResult:
    """Augmented Dickey-Fuller test (H0: unit root; small p rejects it).

    Attributes
    ----------
    statistic : ADF t-statistic of the lagged level.
    pvalue : MacKinnon (1994, 2010) approximate p-value.
    lags : lagged differences used.
    nobs : observations in the test regression.
    critical_values : {"1%", "5%", "10%"} from MacKinnon (2010).
    stationary_5pct : pvalue < 0.05.
    regression : "c" (constant), "ct", "ctt" or "n".
    autolag : lag criterion ("AIC", "BIC", "t-stat") or None for fixed maxlag.
    icbest : best information criterion value of the lag search, or None.
    n : finite points tested.
    ok, message : False and "insufficient data: ..." when not computed.
    """

    statistic: float
    pvalue: float
    lags: int
    nobs: int
    critical_values: dict[str, float] = field(default_factory=dict)
    stationary_5pct: bool = False
    regression: str = "c"
    autolag: str | None = "AIC"
    icbest: float | None = None
    n: int = 0
    ok: bool = True
    message: str = ""


def _adf_bad(n: int, message: str, regression: str, autolag: str | None) -> AdfResult:
    """An AdfResult that says why it was not computed."""
    nan = float("nan")
    return AdfResult(
        nan, nan, 0, 0, {}, False, regression, autolag, None, n, False, message
    )


def _adf_need(regression: str, maxlag: int | None) -> int:
    """Minimum points for adfuller with these arguments."""
    ntrend = 0 if regression == "n" else len(regression)
    if maxlag is None:
        return ADF_MIN_OBS
    return max(ADF_MIN_OBS, 2 * (maxlag + ntrend + 1) + 2)


def _check_adf_args(regression: str, autolag: str | None, maxlag: int | None) -> None:
    """Validate ADF arguments."""
    if regression not in ("c", "ct", "ctt", "n"):
        raise ValueError(
            f"regression must be 'c', 'ct', 'ctt' or 'n', got {regression!r}"
        )
    if autolag is not None and str(autolag).lower() not in ("aic", "bic", "t-stat"):
        raise ValueError(
            f"autolag must be 'AIC', 'BIC', 't-stat' or None, got {autolag!r}"
        )
    if maxlag is not None and (
        isinstance(maxlag, bool)
        or not isinstance(maxlag, (int, np.integer))
        or maxlag < 0
    ):
        raise ValueError(f"maxlag must be None or an integer >= 0, got {maxlag!r}")


def adf_test(
    series: Any,
    regression: str = "c",
    autolag: str | None = "AIC",
    maxlag: int | None = None,
) -> AdfResult:
    """Augmented Dickey-Fuller unit-root test, identical to statsmodels ``adfuller``.

    Parameters
    ----------
    series : array-like; non-finite values are dropped.
    regression : {"c", "ct", "ctt", "n"}; "c" (constant only) by default.
    autolag : {"AIC", "BIC", "t-stat", None}
        Lag search from maxlag down (None: use maxlag lags).
    maxlag : int, optional
        Default 12 * (n / 100)^(1/4) capped at n/2 - ntrend - 1 (Schwert 1989).

    Returns
    -------
    AdfResult
        Minimum data: 20 points, and 2 * (maxlag + ntrend + 1) + 2 with an explicit
        maxlag; a constant series is insufficient data too.

    Notes
    -----
    Test regression dy_t = a + g y_{t-1} + sum_i c_i dy_{t-i} + e_t; statistic =
    g / se(g); MacKinnon p-value and critical values. Reference: statsmodels 0.15
    ``adfuller``, reproduced by ``unitroot.adf`` with one QR for the lag search.
    """
    _check_adf_args(regression, autolag, maxlag)
    s = _as_float_array(series, "series")
    s = s[np.isfinite(s)]
    need = _adf_need(regression, maxlag)
    if s.size < need:
        return _adf_bad(int(s.size), _insufficient(s.size, need), regression, autolag)
    if _is_constant(s):
        msg = f"insufficient data: series is constant over {s.size} points"
        return _adf_bad(int(s.size), msg, regression, autolag)
    return _adfuller(s, regression, autolag, maxlag)


def _adfuller(
    s: np.ndarray, regression: str, autolag: str | None, maxlag: int | None
) -> AdfResult:
    """unitroot.adf (statsmodels' adfuller, one QR for the lag search) as AdfResult."""
    try:
        res = unitroot.adf(s, regression=regression, autolag=autolag, maxlag=maxlag)
    except unitroot.InsufficientDataError as exc:
        return _adf_bad(int(s.size), str(exc), regression, autolag)
    stat, pvalue = float(res.stat), float(res.pvalue)
    if not (math.isfinite(stat) and math.isfinite(pvalue)):
        msg = f"insufficient data: degenerate test regression over {s.size} points"
        return _adf_bad(int(s.size), msg, regression, autolag)
    return AdfResult(
        statistic=stat,
        pvalue=pvalue,
        lags=int(res.usedlag),
        nobs=int(res.nobs),
        critical_values={k: float(v) for k, v in res.critvalues.items()},
        stationary_5pct=pvalue < 0.05,
        regression=regression,
        autolag=autolag,
        icbest=None if res.icbest is None else float(res.icbest),
        n=int(s.size),
    )


@dataclass(frozen=True, slots=True)
class EngleGrangerResult:
    """Engle-Granger two-step cointegration test (H0: no cointegration).

    Attributes
    ----------
    statistic : ADF t-statistic of the first-stage OLS residual (no constant in the
        ADF regression).
    pvalue : MacKinnon p-value for 2 variables with a constant ("c").
    lags : lags chosen by the residual ADF's lag search.
    nobs : points in the first-stage regression.
    critical_values : {"1%", "5%", "10%"} (MacKinnon 2010, N=2, nobs-1 as statsmodels).
    beta, alpha : first-stage OLS y = beta x + alpha (in-sample).
    cointegrated_5pct : pvalue < 0.05.
    ok, message : False and "insufficient data: ..." when not computed.
    """

    statistic: float
    pvalue: float
    lags: int
    nobs: int
    critical_values: dict[str, float] = field(default_factory=dict)
    beta: float = float("nan")
    alpha: float = float("nan")
    cointegrated_5pct: bool = False
    ok: bool = True
    message: str = ""


def engle_granger(
    y: Any, x: Any, *, autolag: str | None = "AIC", maxlag: int | None = None
) -> EngleGrangerResult:
    """Engle-Granger cointegration test, identical to statsmodels ``coint(y, x)``.

    Parameters
    ----------
    y, x : array-like of equal length; non-finite pairs are dropped.
    autolag, maxlag : lag search of the residual ADF (as ``coint``).

    Returns
    -------
    EngleGrangerResult
        Minimum data: 20 pairs (more with a large maxlag); constant legs or
        (almost) perfectly collinear legs are reported as not computed.

    Notes
    -----
    Step 1: OLS y = alpha + beta x + u. Step 2: ADF on u without deterministic terms;
    statistic and MacKinnon p-value / critical values for N=2, trend "c". This is
    statsmodels 0.15's ``coint``, reproduced by ``unitroot.coint`` (chosen lag
    reported).
    """
    _check_adf_args("n", autolag, maxlag)
    ya, xa = _finite_pairs(*_pair_arrays(y, x))
    nan = float("nan")
    need = _adf_need("n", maxlag)
    if ya.size < need or _is_constant(xa) or _is_constant(ya):
        msg = (
            _insufficient(ya.size, need)
            if ya.size < need
            else f"insufficient data: a leg is constant over {ya.size} points"
        )
        return EngleGrangerResult(nan, nan, 0, int(ya.size), ok=False, message=msg)
    return _coint(ya, xa, autolag, maxlag)


def _coint(
    y: np.ndarray, x: np.ndarray, autolag: str | None, maxlag: int | None
) -> EngleGrangerResult:
    """unitroot.coint (statsmodels' coint, one QR for the lag search) as a result."""
    nan = float("nan")
    nobs = y.size
    try:
        res = unitroot.coint(y, x, trend="c", autolag=autolag, maxlag=maxlag)
    except unitroot.InsufficientDataError as exc:
        return EngleGrangerResult(nan, nan, 0, nobs, ok=False, message=str(exc))
    if res.collinear:
        return EngleGrangerResult(
            nan,
            nan,
            0,
            nobs,
            beta=float(res.beta),
            alpha=nan if res.alpha is None else float(res.alpha),
            ok=False,
            message="insufficient data: y and x are (almost) perfectly collinear",
        )
    stat, pvalue = float(res.stat), float(res.pvalue)
    if not (math.isfinite(stat) and math.isfinite(pvalue)):
        return EngleGrangerResult(
            nan,
            nan,
            0,
            nobs,
            beta=float(res.beta),
            alpha=nan if res.alpha is None else float(res.alpha),
            ok=False,
            message="insufficient data: degenerate residual regression",
        )
    crit = {k: float(v) for k, v in res.critvalues.items()}
    return EngleGrangerResult(
        statistic=stat,
        pvalue=pvalue,
        lags=int(res.usedlag),
        nobs=nobs,
        critical_values=crit,
        beta=float(res.beta),
        alpha=nan if res.alpha is None else float(res.alpha),
        cointegrated_5pct=pvalue < 0.05,
    )


@dataclass(frozen=True, slots=True)
class CointegrationResult:
    """Engle-Granger in both directions, combined into one p-value.

    Attributes
    ----------
    pvalue : min(1, 2 min(p(y on x), p(x on y))), H0: no cointegration. The
        Engle-Granger statistic depends on which leg is regressed on which; this
        Bonferroni combination rejects when either normalisation rejects at half
        the level, so under H0 P(pvalue <= a) <= a/2 + a/2 = a, and the verdict
        cannot flip with the order of the legs. (Requiring both, the larger p,
        is valid too but missed 4 in 10 cointegrated pairs whose reverse
        regression is attenuated by the spread's noise.)
    y_on_x, x_on_y : the two Engle-Granger tests (N=2 MacKinnon tables).
    ok, message : False and the reason when either direction was not computed.
    """

    pvalue: float
    y_on_x: EngleGrangerResult
    x_on_y: EngleGrangerResult
    ok: bool = True
    message: str = ""


def cointegration_test(
    y: Any, x: Any, *, autolag: str | None = "AIC", maxlag: int | None = None
) -> CointegrationResult:
    """Engle-Granger of y on x and of x on y, combined: p = min(1, 2 min(p1, p2)).

    Minimum data: as ``engle_granger``. The residual of an estimated hedge needs the
    N=2 tables: ADF's single-series tables on it reject a true null 3-4 times too
    often (16-18 % instead of 5 % on 180 bars of independent random walks).
    """
    fwd = engle_granger(y, x, autolag=autolag, maxlag=maxlag)
    rev = engle_granger(x, y, autolag=autolag, maxlag=maxlag)
    if not (fwd.ok and rev.ok):
        msg = fwd.message if not fwd.ok else f"x on y: {rev.message}"
        return CointegrationResult(float("nan"), fwd, rev, False, msg)
    return CointegrationResult(min(1.0, 2.0 * min(fwd.pvalue, rev.pvalue)), fwd, rev)


@dataclass(frozen=True, slots=True)
class RollingCointegration:
    """Engle-Granger (both directions) on trailing windows: is the relation stable?

    Attributes
    ----------
    end : index of each tested window's last point in the input.
    pvalue : ``cointegration_test`` p-value of the window ending there (NaN where
        the window could not be tested).
    window : points per test. ok, message : False and "insufficient data: ..."
        when not one window fits.
    """

    end: np.ndarray
    pvalue: np.ndarray
    window: int
    ok: bool = True
    message: str = ""


def rolling_cointegration(
    y: Any, x: Any, window: int, *, points: int = 30
) -> RollingCointegration:
    """Two-way Engle-Granger p-values on up to ``points`` trailing windows.

    The windows end on evenly spaced points from the first complete window to the
    last point (always included), so the cost is bounded whatever the length:
    about ``points`` x 2 Engle-Granger tests of ``window`` points. Minimum data:
    ``window`` (>= 20) finite pairs. Each p-value uses data up to its window's end
    only; a series of them is a stability view, not one test (no multiplicity
    correction: read a run of small values, not one).
    """
    ya, xa = _pair_arrays(y, x)
    window = _check_window(window, minimum=ADF_MIN_OBS)
    points = _check_window(points, "points", minimum=1)
    n = ya.size
    if n < window:
        empty = np.zeros(0, dtype="int64")
        return RollingCointegration(
            empty, np.zeros(0), window, False, _insufficient(n, window)
        )
    ends = np.unique(np.linspace(window - 1, n - 1, min(points, n - window + 1)))
    ends = ends.round().astype("int64")
    pvals = np.full(ends.size, np.nan)
    for i, end in enumerate(ends.tolist()):
        res = cointegration_test(
            ya[end - window + 1 : end + 1], xa[end - window + 1 : end + 1]
        )
        if res.ok:
            pvals[i] = res.pvalue
    return RollingCointegration(ends, pvals, window)


# ---------------------------------------------------------------------- half-life


@dataclass(frozen=True, slots=True)
class HalfLifeResult:
    """Mean-reversion half-life from an AR(1) fit of the spread.

    Attributes
    ----------
    bars : half-life in bars, -ln 2 / ln(1 + b); None unless b is significantly
        negative (Dickey-Fuller test at 5 %), so that a random walk, whose b is
        negative in most samples, gets no half-life.
    b : slope of ds_t = a + b s_{t-1} + e_t (b < 0 means mean reversion).
    b_se : its OLS standard error.
    phi : AR(1) coefficient 1 + b.
    n : points in the regression (pairs of consecutive finite values).
    mean_reverting : -2 < b < 0 and significant.
    tstat, critical_5pct : t = b / b_se and the 5 % Dickey-Fuller critical value
        for it (MacKinnon 2010, one series, constant, n points): the null is a unit
        root (no mean reversion), rejected when tstat < critical_5pct.
    bars_low, bars_high : 95 % interval of the half-life from b +- 1.96 b_se
        (bars_high is inf when the interval reaches b = 0); None when ``bars`` is.
    ok, message : False and "insufficient data: ..." when not computed.
    """

    bars: float | None
    b: float
    b_se: float | None
    phi: float
    n: int
    mean_reverting: bool
    ok: bool = True
    message: str = ""
    tstat: float | None = None
    critical_5pct: float | None = None
    bars_low: float | None = None
    bars_high: float | None = None


def _bars_from_b(b: float) -> float:
    """Half-life in bars of ds = b s: inf for b >= 0, 0 for b <= -1."""
    if b >= 0:
        return math.inf
    if b <= -1:
        return 0.0
    return -math.log(2.0) / math.log1p(b)


def half_life(spread_values: Any) -> HalfLifeResult:
    """Half-life of mean reversion from the discrete Ornstein-Uhlenbeck / AR(1) fit.

    Parameters
    ----------
    spread_values : array-like; non-finite values are dropped first.

    Returns
    -------
    HalfLifeResult
        Minimum data: 10 points and a non-constant series.

    Notes
    -----
    OLS of ds_t = s_t - s_{t-1} on (s_{t-1}, 1) gives b; s_t = (1 + b) s_{t-1} + ...
    so a deviation halves after h bars with (1 + b)^h = 1/2: h = -ln 2 / ln(1 + b)
    for -1 < b < 0 (for -2 < b <= -1 the AR(1) overshoots each bar: h = 0 < 1 bar).
    This is the Dickey-Fuller regression with a constant and no lags: a half-life
    is reported only when its t-statistic rejects the unit root at 5 %
    (MacKinnon's one-series table; for a spread whose beta was estimated, the
    badge uses Engle-Granger instead). Reference: statsmodels OLS.
    """
    s = _as_float_array(spread_values, "spread")
    s = s[np.isfinite(s)]
    nan = float("nan")
    if s.size < HALF_LIFE_MIN_OBS:
        return HalfLifeResult(
            None,
            nan,
            None,
            nan,
            int(max(s.size - 1, 0)),
            False,
            False,
            _insufficient(s.size, HALF_LIFE_MIN_OBS),
        )
    if _is_constant(s):
        msg = f"insufficient data: spread is constant over {s.size} points"
        return HalfLifeResult(None, nan, None, nan, int(s.size - 1), False, False, msg)
    lag = s[:-1]
    ds = np.diff(s)
    n = lag.size
    lag_c = lag - lag.mean()
    sxx = float(lag_c @ lag_c)
    if not sxx > 0:  # e.g. constant but for the last point (found by hypothesis)
        msg = f"insufficient data: lagged spread is constant over {n} points"
        return HalfLifeResult(None, nan, None, nan, n, False, False, msg)
    b = float(lag_c @ (ds - ds.mean())) / sxx
    a = float(ds.mean() - b * lag.mean())
    resid = ds - a - b * lag
    dof = n - 2
    b_se = math.sqrt(float(resid @ resid) / dof / sxx) if dof > 0 else None
    tstat = b / b_se if b_se else None
    crit = float(mackinnoncrit(N=1, regression="c", nobs=n)[1])
    significant = tstat is not None and tstat < crit
    reverting = -2.0 < b < 0.0 and significant
    bars = low = high = None
    if reverting:
        bars = _bars_from_b(b)
        if b_se is not None:
            # faster reversion (more negative b) = shorter half-life
            low = _bars_from_b(max(b - 1.96 * b_se, -1.0))
            high = _bars_from_b(b + 1.96 * b_se)
    return HalfLifeResult(
        bars, b, b_se, 1.0 + b, n, reverting, True, "", tstat, crit, low, high
    )


# ------------------------------------------------------------------------ signals


@dataclass(frozen=True, slots=True)
class SignalResult:
    """Positions and calls from the z-score state machine; arrays have z's length.

    Attributes
    ----------
    position : +1 long the spread (long y, short x), -1 short, 0 flat; the position
        held after bar t's close.
    calls : per-bar call: "BUY SPREAD" (opened long), "SELL SPREAD" (opened short),
        "EXIT" (closed), "HOLD" (still in), "NEUTRAL" (still flat).
    signal : the call on the last bar ("NEUTRAL" for empty input).
    entry, exit, stop : thresholds used.
    """

    position: np.ndarray
    calls: np.ndarray
    signal: str
    entry: float
    exit: float
    stop: float | None
    ok: bool = True
    message: str = ""


# Per-bar call by 3 * (position changed) + position + 1: unchanged short, flat, long;
# then changed to short, to flat, to long.
_CALL_LABELS = np.array(
    [SIGNAL_HOLD, SIGNAL_NEUTRAL, SIGNAL_HOLD, SIGNAL_SELL, SIGNAL_EXIT, SIGNAL_BUY],
    dtype=object,
)


# The labels as the string array pandas infers from an object array of str (pandas
# 3's "str" dtype); None where pandas keeps such data as object.
_CALL_STRINGS = (
    None
    if pd.Series(_CALL_LABELS).dtype == object
    else pd.array(_CALL_LABELS.tolist(), dtype=pd.Series(_CALL_LABELS).dtype)
)


def _call_codes(pos: np.ndarray) -> np.ndarray:
    """Index of each bar's call in _CALL_LABELS: 3 * (changed) + position + 1."""
    prev = np.r_[np.int8(0), pos[:-1]] if pos.size else pos
    return 3 * (pos != prev) + pos.astype("int64") + 1


def _call_column(pos: np.ndarray, calls: np.ndarray) -> Any:
    """The calls as the table's string column: taken from a six-value string array
    (what pandas infers from ``calls``, built ~3x faster)."""
    if pos.size == 0 or _CALL_STRINGS is None:
        return calls  # pandas keeps an empty object column as object
    return _CALL_STRINGS.take(_call_codes(pos))


def _check_thresholds(entry: float, exit: float, stop: float | None) -> None:
    """Validate z-score thresholds."""
    if not (isinstance(entry, (int, float)) and 0 < entry < math.inf):
        raise ValueError(f"entry must be a finite number > 0, got {entry!r}")
    if not (isinstance(exit, (int, float)) and -entry < exit < entry):
        raise ValueError(
            f"exit must be in (-entry, entry) = (-{entry}, {entry}), got {exit!r}"
        )
    if stop is not None and not (isinstance(stop, (int, float)) and stop > entry):
        raise ValueError(
            f"stop must be None or a number > entry ({entry}), got {stop!r}"
        )


def zscore_signals(
    z: Any, entry: float = 2.0, exit: float = 0.0, stop: float | None = None
) -> SignalResult:
    """Mean-reversion position state machine on a z-score series.

    Parameters
    ----------
    z : array-like z-scores (NaN bars keep the current position).
    entry : open long the spread when z < -entry, short when z > entry.
    exit : a short exits when z <= exit; a long exits when z >= -exit.
    stop : optional; a long exits when z < -stop, a short when z > stop. After a stop
        the same side is not re-entered until |z| falls back to entry or below.

    Returns
    -------
    SignalResult
        No minimum data. An exit and an opposite entry may happen on the same bar
        (the call is then the entry).

    Notes
    -----
    Defaults are the classic test: enter beyond |z| = 2, exit when z crosses 0.
    """
    _check_thresholds(entry, exit, stop)
    za = _as_float_array(z, "z")
    n = za.size
    cur = 0
    blocked = 0  # side that was stopped out and may not re-enter yet
    st = math.inf if stop is None else float(stop)
    held = [0] * n
    zl = za.tolist()
    # Bars beyond the entry bands: the only ones where a flat, unblocked state can
    # change, so the loop jumps from one to the next while flat (NaN bars and bars
    # inside the bands keep it flat and unblocked).
    with np.errstate(invalid="ignore"):
        outside = np.flatnonzero(np.abs(za) > entry).tolist()
    n_out = len(outside)
    j = 0
    i = 0
    while i < n:
        if cur == 0 and not blocked:
            j = bisect.bisect_left(outside, i, j)
            if j == n_out:
                break
            i = outside[j]
        zi = zl[i]
        if zi != zi:  # NaN: hold
            held[i] = cur
            i += 1
            continue
        if blocked and abs(zi) <= entry:
            blocked = 0
        if cur == 1 and (zi >= -exit or zi < -st):
            if zi < -st:
                blocked = 1
            cur = 0
        elif cur == -1 and (zi <= exit or zi > st):
            if zi > st:
                blocked = -1
            cur = 0
        if cur == 0:
            if zi < -entry and zi >= -st and blocked != 1:
                cur = 1
            elif zi > entry and zi <= st and blocked != -1:
                cur = -1
        held[i] = cur
        i += 1
    pos = np.array(held, dtype="int8")
    calls = _CALL_LABELS[_call_codes(pos)]
    signal = str(calls[-1]) if n else SIGNAL_NEUTRAL
    return SignalResult(
        pos,
        calls,
        signal,
        float(entry),
        float(exit),
        None if stop is None else float(stop),
    )


def band_signals(spread_values: Any, lower: Any, upper: Any) -> SignalResult:
    """Positions from per-bar bands: buy at or below ``lower``, sell at or above
    ``upper``; a long is closed and a short opened at ``upper`` and vice versa.

    Parameters
    ----------
    spread_values, lower, upper : arrays of equal length (bands may change per
        bar, e.g. walk-forward refits); a bar where any is NaN keeps the position.

    Returns
    -------
    SignalResult
        Same calls as ``zscore_signals`` (a flip is the new side's entry); ``entry``
        and ``exit`` are NaN (the levels are per bar). No minimum data.
    """
    sv = _as_float_array(spread_values, "spread_values")
    lo = np.broadcast_to(np.asarray(lower, dtype="float64"), sv.shape)
    hi = np.broadcast_to(np.asarray(upper, dtype="float64"), sv.shape)
    held = [0] * sv.size
    cur = 0
    rows = zip(sv.tolist(), lo.tolist(), hi.tolist(), strict=True)
    for i, (si, li, ui) in enumerate(rows):
        if si == si and li == li and ui == ui:
            if si <= li and cur != 1:
                cur = 1
            elif si >= ui and cur != -1:
                cur = -1
        held[i] = cur
    pos = np.array(held, dtype="int8")
    calls = _CALL_LABELS[_call_codes(pos)]
    signal = str(calls[-1]) if sv.size else SIGNAL_NEUTRAL
    nan = float("nan")
    return SignalResult(pos, calls, signal, nan, nan, None)


# ----------------------------------------------------------- price stats, filters


@dataclass(frozen=True, slots=True)
class PriceStats:
    """Per-symbol statistics over a window of bars.

    Attributes
    ----------
    last : last close. change : last close - first bar's open (quote currency).
    change_pct : change / first open * 100. high, low : extremes of the window.
    vwap : sum(quote_volume) / sum(volume). volume : base units. quote_volume : USDT.
    trades : trade count. realized_vol : annualised volatility of the log
        close-to-close returns, each scaled to one bar of elapsed time (None below
        3 bars). n_bars : bars in the window.
    ok, message : False and "insufficient data: ..." on an empty window.
    """

    last: float
    change: float
    change_pct: float
    high: float
    low: float
    vwap: float
    volume: float
    quote_volume: float
    trades: int
    realized_vol: float | None
    n_bars: int
    ok: bool = True
    message: str = ""


def price_stats(bars: pd.DataFrame, interval_s: int) -> PriceStats:
    """Window statistics of one symbol's bars (``BAR_COLUMNS``).

    Minimum data: 1 bar (3 for the realised volatility). Realised volatility =
    std(u, ddof=1) * sqrt(31 536 000 / interval_s) with u_t = (ln c_t - ln c_{t-1})
    / sqrt(dt_t / interval_s): empty buckets have no bar, so a return spanning k
    buckets carries k bars of variance and is scaled back to one (a leg trading
    in 20 % of seconds otherwise reads sqrt(5) = 2.2 times too volatile). With
    every bucket present this is the plain per-bar std.
    """
    factor = annualization_factor(interval_s)
    n = len(bars)
    nan = float("nan")
    if n == 0:
        return PriceStats(
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            0.0,
            0.0,
            0,
            None,
            0,
            False,
            _insufficient(0, 1, "bars"),
        )
    close = bars["close"].to_numpy("float64")
    open_ = bars["open"].to_numpy("float64")
    volume = float(np.nansum(bars["volume"].to_numpy("float64")))
    quote = float(np.nansum(bars["quote_volume"].to_numpy("float64")))
    first = float(open_[0])
    last = float(close[-1])
    rets = log_returns(close)[1:] / np.sqrt(_bars_elapsed(bars, interval_s))
    rets = rets[np.isfinite(rets)]
    vol = float(np.std(rets, ddof=1) * factor) if rets.size >= 2 else None
    with np.errstate(all="ignore"):
        return PriceStats(
            last=last,
            change=last - first,
            change_pct=(last - first) / first * 100 if first else nan,
            high=float(np.nanmax(bars["high"].to_numpy("float64"))),
            low=float(np.nanmin(bars["low"].to_numpy("float64"))),
            vwap=quote / volume if volume > 0 else nan,
            volume=volume,
            quote_volume=quote,
            trades=int(np.nansum(bars["trades"].to_numpy("float64"))),
            realized_vol=vol,
            n_bars=n,
        )


def _bars_elapsed(bars: pd.DataFrame, interval_s: int) -> np.ndarray:
    """Bar intervals between consecutive rows (1.0 each when ``ts`` is absent)."""
    if "ts" not in bars.columns or len(bars) < 2:
        return np.ones(max(len(bars) - 1, 0))
    ts = pd.to_datetime(bars["ts"], utc=True).dt.as_unit("ms").astype("int64")
    steps = np.diff(ts.to_numpy()) / (interval_s * 1000.0)
    return np.where(steps > 0, steps, np.nan)


def liquidity_filter(
    y_trades: Any,
    x_trades: Any,
    y_notional: Any,
    x_notional: Any,
    *,
    min_trades: int = 0,
    min_notional: float = 0.0,
) -> np.ndarray:
    """Boolean mask of bars to exclude: either leg has trades < min_trades or
    quote volume < min_notional. With the defaults (0, 0.0) nothing is excluded.
    """
    yt, xt = _pair_arrays(y_trades, x_trades)
    yn, xn = _pair_arrays(y_notional, x_notional)
    with np.errstate(invalid="ignore"):
        return (
            (yt < min_trades)
            | (xt < min_trades)
            | (yn < min_notional)
            | (xn < min_notional)
        )


# ------------------------------------------------------------------------ regime


@dataclass(frozen=True, slots=True)
class RegimeResult:
    """Regime label and the reason, in words."""

    label: str
    reason: str


REGIME_MEAN_REVERTING = "Mean-reverting"
REGIME_TRENDING = "Trending"
REGIME_DECOUPLED = "Decoupled"
REGIME_INSUFFICIENT = "Insufficient data"


def regime(
    coint_pvalue: float | None,
    return_corr: float | None,
    half_life_bars: float | None,
    window: int,
) -> RegimeResult:
    """Classify the pair's regime.

    Rule, in order:

    1. "Insufficient data" when the cointegration p-value or the return correlation
       is missing (None or NaN).
    2. "Decoupled" when |return correlation| < 0.3: the legs no longer move together.
    3. "Mean-reverting" when the Engle-Granger p-value (both directions combined,
       see ``cointegration_test``) is < 0.05 and the spread's half-life is
       significant and shorter than ``window`` bars.
    4. "Trending" otherwise (no cointegration shown, or reversion too slow).

    Size: on non-cointegrated pairs the badge says "Mean-reverting" in at most
    about 5 % of samples (checked by a seeded Monte Carlo in the tests).
    """

    def missing(v: float | None) -> bool:
        return v is None or not math.isfinite(v)

    if missing(coint_pvalue) or missing(return_corr):
        what = (
            "cointegration p-value" if missing(coint_pvalue) else "return correlation"
        )
        return RegimeResult(REGIME_INSUFFICIENT, f"no {what} yet")
    if abs(return_corr) < REGIME_MIN_ABS_CORR:
        return RegimeResult(
            REGIME_DECOUPLED, f"|return correlation| {abs(return_corr):.2f} < 0.3"
        )
    hl_ok = half_life_bars is not None and math.isfinite(half_life_bars)
    if coint_pvalue < REGIME_MAX_PVALUE and hl_ok and half_life_bars < window:
        return RegimeResult(
            REGIME_MEAN_REVERTING,
            f"Engle-Granger p {coint_pvalue:.3f} < 0.05 (both directions), "
            f"half-life {half_life_bars:.1f} bars < window {window}",
        )
    hl_text = f"{half_life_bars:.1f} bars" if hl_ok else "none"
    return RegimeResult(
        REGIME_TRENDING,
        f"Engle-Granger p {coint_pvalue:.3f} (both directions), half-life {hl_text}"
        f" (window {window})",
    )


# ---------------------------------------------------------------------- backtest


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Result of a spread backtest.

    Attributes
    ----------
    equity : 1 + cumulative return on gross notional, per bar (starts at 1.0).
    returns : per-bar return on the gross notional of the position it belongs to.
    pnl : per-bar profit in quote currency, after costs.
    total_return : equity[-1] - 1 (sum of per-bar returns; positions are not
        compounded, each trade is sized at ``notional``).
    total_pnl : sum of pnl in quote currency.
    sharpe : mean(returns) / std(returns, ddof=1) * sqrt(bars per year); None when
        undefined (fewer than 2 bars or zero variance) or when the sample is below
        ``BACKTEST_MIN_TRADES`` closed trades or ``BACKTEST_MIN_BARS`` bars (an
        annualised figure from minutes of one-second bars reads as -957);
        ``sharpe_message`` then says why.
    sharpe_tstat : mean(returns) / std(returns, ddof=1) * sqrt(n_bars): the
        t-statistic of the mean per-bar return (|t| < 2: indistinguishable from 0).
    n_bars : bars in the backtest.
    max_drawdown : largest fall of equity from a previous peak (return units, >= 0).
    n_trades : closed round trips. hit_rate : share of closed trades with pnl > 0
        (None without closed trades).
    trades : DataFrame entry_ts, exit_ts, side, entry_z, exit_z, pnl, return
        (an open trade at the end has exit_ts NaT and is marked to market).
    costs : total fees and slippage paid (quote currency).
    ok, message : False and "insufficient data: ..." below 2 bars.
    """

    equity: np.ndarray
    returns: np.ndarray
    pnl: np.ndarray
    total_return: float
    total_pnl: float
    sharpe: float | None
    max_drawdown: float
    n_trades: int
    hit_rate: float | None
    trades: pd.DataFrame
    costs: float
    ok: bool = True
    message: str = ""
    sharpe_tstat: float | None = None
    n_bars: int = 0
    sharpe_message: str = ""


# Below these the annualised Sharpe ratio is not reported (its t-statistic is).
BACKTEST_MIN_TRADES = 20
BACKTEST_MIN_BARS = 100

TRADE_COLUMNS = ("entry_ts", "exit_ts", "side", "entry_z", "exit_z", "pnl", "return")


def backtest(
    y: Any,
    x: Any,
    beta: Any,
    positions: Any,
    *,
    fee_bps: float,
    slippage_bps: float = 0.0,
    notional: float = 10_000.0,
    interval_s: int = 60,
    ts: Any = None,
    z: Any = None,
) -> BacktestResult:
    """Backtest a spread position series without look-ahead.

    Parameters
    ----------
    y, x : prices per bar.
    beta : hedge ratio per bar (units of x per unit of y), estimated from data up to
        each bar (rolling OLS or Kalman), or a scalar.
    positions : +1 / 0 / -1 per bar, decided at the bar's close.
    fee_bps, slippage_bps : cost per side on each leg's traded value, basis points.
    notional : quote-currency value of the Y leg of one unit of position.
    interval_s : bar length, for the Sharpe ratio's annualisation.
    ts, z : optional bar timestamps and z-scores for the trades list.

    Returns
    -------
    BacktestResult
        Minimum data: 2 bars.

    Notes
    -----
    On the bar t where a position p opens, q_y = notional / y_t units of Y and
    q_x = beta_t q_y units of X are fixed (re-hedged only when a position opens);
    gross notional G = q_y y_t + |q_x| x_t. The position decided on bar t earns bar
    t+1's move: pnl_{t+1} = p_t (q_y (y_{t+1} - y_t) - q_x (x_{t+1} - x_t)), and the
    return is pnl / G. Each change of position pays (fee_bps + slippage_bps) / 1e4 of
    the traded value of both legs (closing at current prices, opening at G). A
    position cannot open on a bar whose price or beta is not finite (it stays flat).
    """
    ya, xa = _pair_arrays(y, x)
    n = ya.size
    ba = np.broadcast_to(np.asarray(beta, dtype="float64"), (n,)).copy()
    pa = _as_float_array(positions, "positions")
    if pa.size != n:
        raise ValueError(f"positions must have length {n} like y, got {pa.size}")
    for name, value in (("fee_bps", fee_bps), ("slippage_bps", slippage_bps)):
        if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (isinstance(notional, (int, float)) and 0 < notional < math.inf):
        raise ValueError(f"notional must be a finite number > 0, got {notional!r}")
    bpy = bars_per_year(interval_s)
    za = None if z is None else _as_float_array(z, "z")
    if n < 2:
        zeros = np.zeros(n)
        return BacktestResult(
            np.ones(n),
            zeros,
            zeros.copy(),
            0.0,
            0.0,
            None,
            0.0,
            0,
            None,
            _empty_trades(),
            0.0,
            False,
            _insufficient(n, 2, "bars"),
        )
    pos = np.nan_to_num(np.clip(np.round(pa), -1, 1)).astype("int64")
    cost_rate = (fee_bps + slippage_bps) / 1e4
    # forward-filled prices for marking to market across missing bars
    yf = _ffill(ya)
    xf = _ffill(xa)
    tradable = np.isfinite(yf) & np.isfinite(xf) & np.isfinite(ba) & (yf > 0)
    # State machine over position changes: a tight loop over Python floats (numpy
    # scalar indexing costs ~10x more per bar). Only bars holding or wanting a
    # position can book anything: the position held into bar t is non-zero only if
    # positions[t-1] is, so flat stretches are skipped; their pnl stays 0.0.
    active = pos != 0
    active[1:] |= pos[:-1] != 0
    idx = np.flatnonzero(active)
    prev = np.maximum(idx - 1, 0)
    steps = idx.tolist()
    pnl_l = [0.0] * len(steps)
    ret_l = [0.0] * len(steps)
    costs = 0.0
    cur, qy, qx, gross = 0, 0.0, 0.0, 0.0
    # closed and open trades as (entry bar, exit bar or -1, side, pnl, return)
    trades: list[tuple[int, int, int, float, float]] = []
    entry_i = side = 0
    trade_pnl = 0.0
    # values on each active bar t and on bar t - 1
    yl, xl, bl = yf[idx].tolist(), xf[idx].tolist(), ba[idx].tolist()
    yp, xp = yf[prev].tolist(), xf[prev].tolist()
    pl, tl = pos[idx].tolist(), tradable[idx].tolist()
    for i, t in enumerate(steps):
        p_t = pl[i]
        pnl_t = 0.0
        ret_t = 0.0
        if t > 0 and cur != 0:
            move = cur * (qy * (yl[i] - yp[i]) - qx * (xl[i] - xp[i]))
            if move == move:
                pnl_t += move
                ret_t += move / gross
                trade_pnl += move
        want = p_t if tl[i] else (cur if p_t == cur else 0)
        if want != cur:
            if cur != 0:
                value = qy * yl[i] + abs(qx) * xl[i]
                c = cost_rate * value if value == value else 0.0
                pnl_t -= c
                ret_t -= c / gross
                costs += c
                trade_pnl -= c
                trades.append((entry_i, t, side, trade_pnl, trade_pnl / gross))
            if want != 0:
                qy = notional / yl[i]
                qx = bl[i] * qy
                gross = qy * yl[i] + abs(qx) * xl[i]
                c = cost_rate * gross
                pnl_t -= c
                ret_t -= cost_rate
                costs += c
                trade_pnl = -c
                entry_i, side = t, want
            cur = want
        pnl_l[i] = pnl_t
        ret_l[i] = ret_t
    if cur != 0:
        trades.append((entry_i, -1, side, trade_pnl, trade_pnl / gross))
    pnl = np.zeros(n)
    ret = np.zeros(n)
    pnl[steps] = pnl_l
    ret[steps] = ret_l
    equity = 1.0 + np.cumsum(ret)
    peak = np.maximum.accumulate(equity)
    max_dd = float(np.max(peak - equity))
    closed = [tr for tr in trades if tr[1] >= 0]
    wins = sum(1 for tr in closed if tr[3] > 0)
    sharpe, tstat, sharpe_msg = _sharpe(ret, bpy, len(closed))
    if trades:
        trades_df = _trades_frame(trades, ts, np.full(n, np.nan) if za is None else za)
    else:
        trades_df = _empty_trades()
    return BacktestResult(
        equity=equity,
        returns=ret,
        pnl=pnl,
        total_return=float(equity[-1] - 1.0),
        total_pnl=float(pnl.sum()),
        sharpe=sharpe,
        max_drawdown=max_dd,
        n_trades=len(closed),
        hit_rate=wins / len(closed) if closed else None,
        trades=trades_df,
        costs=float(costs),
        sharpe_tstat=tstat,
        n_bars=n,
        sharpe_message=sharpe_msg,
    )


def _sharpe(
    ret: np.ndarray, bars_year: float, n_closed: int
) -> tuple[float | None, float | None, str]:
    """(annualised Sharpe or None, t-statistic of the mean return, why None)."""
    sd = float(np.std(ret, ddof=1))
    if not sd > 1e-15:
        return None, None, "no variation in returns"
    ratio = float(ret.mean() / sd)
    tstat = ratio * math.sqrt(ret.size)
    if n_closed < BACKTEST_MIN_TRADES or ret.size < BACKTEST_MIN_BARS:
        msg = (
            f"sample too small for an annualised Sharpe: {n_closed} closed trades "
            f"over {ret.size} bars (need {BACKTEST_MIN_TRADES} and "
            f"{BACKTEST_MIN_BARS}); t = {tstat:.2f}"
        )
        return None, tstat, msg
    return ratio * math.sqrt(bars_year), tstat, ""


def _empty_trades() -> pd.DataFrame:
    """A trades frame without rows (a copy of one built once)."""
    return _EMPTY_TRADES.copy()


_EMPTY_TRADES = pd.DataFrame({c: [] for c in TRADE_COLUMNS})


def _trades_frame(
    trades: list[tuple[int, int, int, float, float]], ts: Any, z: np.ndarray
) -> pd.DataFrame:
    """The trades list as a DataFrame with TRADE_COLUMNS (timestamps when ts given,
    else bar numbers with -1 for an open trade's exit)."""
    entry_i, exit_i, side, pnl, ret = zip(*trades, strict=True)
    entry = np.array(entry_i, dtype="int64")
    exit_ = np.array(exit_i, dtype="int64")
    closed = exit_ >= 0
    if ts is None:
        entry_ts: Any = entry
        exit_ts: Any = exit_
    else:
        if isinstance(ts, pd.DatetimeIndex) and str(ts.tz) == "UTC":
            stamps = ts.array  # already what to_datetime(utc=True) gives
        else:
            stamps = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).array
        entry_ts = stamps.take(entry)
        exit_ts = stamps.take(exit_, allow_fill=True)  # -1 (open) -> NaT
    return pd.DataFrame(
        {
            "entry_ts": entry_ts,
            "exit_ts": exit_ts,
            "side": ["long spread" if s > 0 else "short spread" for s in side],
            "entry_z": z[entry],
            "exit_z": np.where(closed, z[np.maximum(exit_, 0)], np.nan),
            "pnl": np.array(pnl, dtype="float64"),
            "return": np.array(ret, dtype="float64"),
        }
    )


# ------------------------------------------------------------------ pair params


@dataclass(frozen=True, slots=True)
class PairParams:
    """Every choice behind a pair's analytics (carried by dashboard, alerts, exports).

    Attributes
    ----------
    symbol_y, symbol_x : the dependent and the hedge leg (validated, upper-cased).
    interval : bar interval such as "1s", "1m", "5m".
    window : bars per rolling regression, z-score and correlation (>= 3).
    hedge_method : "rolling_ols" (default), "kalman", or a static in-sample fit
        "ols" / "huber" / "theil_sen".
    kalman_delta, kalman_obs_var : Kalman state noise delta in (0, 1) and
        observation variance R (> 0, in the price space's units squared), or None
        (default) for R from the data (``kalman_scale``).
    price_space : "price" (default) or "log".
    corr_on : "returns" (default) or "prices".
    signal_rule : "z" (default): fixed z thresholds (``zscore_signals``);
        "bertram": cost-aware Ornstein-Uhlenbeck bands, refitted walk-forward
        (``band_signals``, ``pairdesk.numbers.ou``).
    z_entry, z_exit, z_stop : signal thresholds (see ``zscore_signals``).
    min_trades, min_notional : liquidity filter per leg and bar.
    fee_bps, slippage_bps : costs per side per leg, basis points.
    notional : Y-leg value of one unit of position (USDT).
    max_ffill : buckets a missing close may be carried forward when aligning.
    """

    symbol_y: str = "BTCUSDT"
    symbol_x: str = "ETHUSDT"
    interval: str = "1m"
    window: int = 60
    hedge_method: str = "rolling_ols"
    kalman_delta: float = KALMAN_DEFAULT_DELTA
    kalman_obs_var: float | None = None
    price_space: str = "price"
    corr_on: str = "returns"
    z_entry: float = 2.0
    z_exit: float = 0.0
    z_stop: float | None = None
    min_trades: int = 0
    min_notional: float = 0.0
    fee_bps: float = 4.0
    slippage_bps: float = 0.0
    notional: float = 10_000.0
    max_ffill: int = 5
    signal_rule: str = "z"

    def __post_init__(self) -> None:
        """Validate every field; ValueError names the field, rule and value."""
        object.__setattr__(self, "symbol_y", _field_symbol("symbol_y", self.symbol_y))
        object.__setattr__(self, "symbol_x", _field_symbol("symbol_x", self.symbol_x))
        if self.symbol_y == self.symbol_x:
            raise ValueError(
                f"symbol_x must differ from symbol_y, got {self.symbol_x!r} twice"
            )
        try:
            parse_interval(self.interval)
        except ValueError as exc:
            raise ValueError(f"interval: {exc}") from None
        _field_int("window", self.window, 3)
        _field_choice("hedge_method", self.hedge_method, HEDGE_METHODS)
        _field_choice("price_space", self.price_space, PRICE_SPACES)
        _field_choice("corr_on", self.corr_on, CORR_ON)
        _field_number(
            "kalman_delta", self.kalman_delta, "in (0, 1)", lambda v: 0 < v < 1
        )
        if self.kalman_obs_var is not None:
            _field_number(
                "kalman_obs_var", self.kalman_obs_var, "None or > 0", lambda v: v > 0
            )
        _field_number("z_entry", self.z_entry, "> 0", lambda v: v > 0)
        _field_number(
            "z_exit",
            self.z_exit,
            f"in (-z_entry, z_entry) = (-{self.z_entry}, {self.z_entry})",
            lambda v: -self.z_entry < v < self.z_entry,
        )
        if self.z_stop is not None:
            _field_number(
                "z_stop",
                self.z_stop,
                f"None or > z_entry ({self.z_entry})",
                lambda v: v > self.z_entry,
            )
        _field_int("min_trades", self.min_trades, 0)
        _field_number("min_notional", self.min_notional, ">= 0", lambda v: v >= 0)
        _field_number("fee_bps", self.fee_bps, ">= 0", lambda v: v >= 0)
        _field_number("slippage_bps", self.slippage_bps, ">= 0", lambda v: v >= 0)
        _field_number("notional", self.notional, "> 0", lambda v: v > 0)
        _field_int("max_ffill", self.max_ffill, 0)
        _field_choice("signal_rule", self.signal_rule, SIGNAL_RULES)

    @property
    def interval_s(self) -> int:
        """The interval in seconds."""
        return parse_interval(self.interval)

    def to_json(self) -> str:
        """JSON object of all fields (sorted keys)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PairParams:
        """Parse ``to_json`` output; missing fields take defaults.

        Raises
        ------
        ValueError
            Invalid JSON, not an object, unknown field, or an invalid value.
        """
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"params JSON is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"params JSON must be an object, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"params JSON has unknown fields {unknown}")
        return cls(**data)


def _field_symbol(name: str, value: Any) -> str:
    """Validated, upper-cased symbol."""
    try:
        return normalize_symbol(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _field_int(name: str, value: Any, minimum: int) -> None:
    """Raise unless value is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _field_choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    """Raise unless value is one of options."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def _field_number(name: str, value: Any, rule: str, test: Any) -> None:
    """Raise unless value is a finite real number passing test."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not test(value)
    ):
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")


# --------------------------------------------------------------- pair analytics


@dataclass(frozen=True, slots=True)
class LatestValues:
    """The newest bar's values (None where not available).

    ts : bar start. beta, alpha : hedge ratio used on that bar. spread : its spread.
    spread_mean, spread_std : the z-score window's mean and std (Kalman: 0 and the
    forecast error's standard deviation sqrt(S_t)).
    z : z-score. corr : rolling correlation. position : +1/0/-1. signal : its call.
    """

    ts: pd.Timestamp | None
    beta: float | None
    alpha: float | None
    spread: float | None
    spread_mean: float | None
    spread_std: float | None
    z: float | None
    corr: float | None
    position: int
    signal: str


@dataclass(frozen=True, slots=True)
class LiveBasis:
    """What the live z needs to treat the forming bar as the next closed bar.

    Attributes
    ----------
    method : "rolling_ols" or "kalman" (what is traded).
    price_space : "price" or "log".
    window : bars per rolling regression and z-score.
    y, x : the last window - 1 valid bars (in the price space).
    spreads : their traded spreads (rolling OLS only).
    kalman_state, kalman_delta, kalman_obs_var, kalman_center, kalman_noise : the
        filter after the newest bar and its settings (Kalman only).
    """

    method: str
    price_space: str
    window: int
    y: np.ndarray
    x: np.ndarray
    spreads: np.ndarray
    kalman_state: KalmanState | None = None
    kalman_delta: float = 0.0
    kalman_obs_var: float = 1.0
    kalman_center: float = 0.0
    kalman_noise: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True, slots=True)
class PairAnalytics:
    """Everything the dashboard shows for a pair, from one call.

    Attributes
    ----------
    params : the PairParams used. interval_s : bar length.
    n_bars : aligned bars analysed.
    table : one row per aligned bar (``TABLE_COLUMNS``): ts, y, x, the traded
        beta and its standard error (rolling OLS: classical; Kalman: sqrt(P_bb)),
        alpha, spread, spread_mean, spread_std and z (no look-ahead), the
        in-sample spread (descriptive), corr, position, signal, liquidity columns,
        excluded, equity (prices in quote currency; beta/alpha/spread in the chosen
        price space).
    in_sample : static fit over the whole view (the chosen static method, else OLS):
        descriptive, labelled in-sample, never used to trade.
    hedge_in_sample : True when the chosen hedge method is a static fit ("ols",
        "huber", "theil_sen"): it is shown as a description, and what is traded
        (spread, z, signals, backtest) uses rolling OLS over the window.
    adf : ADF on the in-sample spread, descriptive (None when with_tests=False).
    eg : Engle-Granger test of y on x (None when with_tests=False).
    coint : Engle-Granger in both directions; its p-value drives the badge.
    half_life : half-life of the in-sample spread (the one ADF and EG describe).
    half_life_traded : half-life of the traded spread (rolling OLS or Kalman).
    latest : newest bar's values. signal : latest.signal.
    regime : regime label from the two-way Engle-Granger p, the latest return
        correlation and the in-sample half-life.
    backtest : backtest of the traded positions with the no-look-ahead beta.
    excluded_bars : bars left out by the liquidity filter or a bad price.
    filled_y, filled_x : closes carried forward by the alignment.
    messages : remarks in words ("insufficient data: ...", labels, counts).
    trade_method : "rolling_ols" or "kalman": the hedge behind what is traded.
    live : what ``live_zscore`` needs (None without data).
    ou : Ornstein-Uhlenbeck fit of the traded spread (time step = the bar
        interval): over the whole view with the z rule (descriptive, computed with
        the tests: None when with_tests=False), the latest walk-forward refit
        with the Bertram rule.
    bands : Bertram's cost-aware bands of that fit (traded only with the Bertram
        rule, whose per-bar levels are the table's band_lower/band_upper).
    """

    params: PairParams
    interval_s: int
    n_bars: int
    table: pd.DataFrame
    in_sample: HedgeRatio
    hedge_in_sample: bool
    adf: AdfResult | None
    eg: EngleGrangerResult | None
    half_life: HalfLifeResult
    latest: LatestValues
    signal: str
    regime: RegimeResult
    backtest: BacktestResult
    excluded_bars: int
    filled_y: int
    filled_x: int
    messages: tuple[str, ...]
    coint: CointegrationResult | None = None
    half_life_traded: HalfLifeResult | None = None
    trade_method: str = "rolling_ols"
    live: LiveBasis | None = None
    ou: OUFit | None = None
    bands: BertramBands | None = None

    @property
    def ok(self) -> bool:
        """True when a z-score exists on the newest bar."""
        return self.latest.z is not None


TABLE_COLUMNS = (
    "ts",
    "y",
    "x",
    "beta",
    "beta_se",
    "alpha",
    "spread",
    "spread_mean",
    "spread_std",
    "z",
    "spread_in_sample",
    "band_lower",
    "band_upper",
    "corr",
    "position",
    "signal",
    "y_trades",
    "x_trades",
    "y_notional",
    "x_notional",
    "excluded",
    "equity",
)


def _expand(values: np.ndarray, valid_idx: np.ndarray, n: int) -> np.ndarray:
    """Scatter values computed on valid rows back onto n rows (NaN elsewhere)."""
    out = np.full(n, np.nan)
    out[valid_idx] = values
    return out


def _ffill(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs (as pandas ``ffill``; leading NaNs stay NaN)."""
    idx = np.where(np.isnan(values), 0, np.arange(values.size))
    np.maximum.accumulate(idx, out=idx)
    return values[idx]


def _none_if_nan(value: Any) -> float | None:
    """float(value), or None when NaN/inf."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Traded:
    """The causal hedge on the valid bars: beta, alpha, spread and its z-score."""

    beta: np.ndarray
    alpha: np.ndarray
    spread: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    z: np.ndarray
    beta_se: np.ndarray
    live: LiveBasis
    messages: tuple[str, ...]


def _traded_rolling(vy: np.ndarray, vx: np.ndarray, params: PairParams) -> _Traded:
    """Rolling OLS over the window, spread with each bar's own beta, rolling z."""
    window = params.window
    roll = rolling_hedge_ratio(vy, vx, window)
    s = spread(vy, vx, roll.beta, roll.alpha)
    zres = rolling_zscore(s, window)
    msgs = [] if roll.ok else [f"rolling OLS: {roll.message}"]
    if not zres.ok:
        msgs.append(f"z-score: {zres.message}")
    tail = slice(max(vy.size - window + 1, 0), vy.size)
    live = LiveBasis(
        "rolling_ols", params.price_space, window, vy[tail], vx[tail], s[tail]
    )
    return _Traded(
        roll.beta,
        roll.alpha,
        s,
        zres.mean,
        zres.std,
        zres.z,
        roll.beta_se,
        live,
        tuple(msgs),
    )


def _traded_kalman(vy: np.ndarray, vx: np.ndarray, params: PairParams) -> _Traded:
    """Kalman filter scaled to the first ``window`` bars; z = e_t / sqrt(S_t).

    Values before the end of the warm-up (which sets the scale) are NaN: they
    would depend on bars after them.
    """
    window = params.window
    nan_all = np.full(vy.size, np.nan)
    empty = LiveBasis("kalman", params.price_space, window, vy[:0], vx[:0], vy[:0])
    scale = kalman_scale(vy, vx, window, params.kalman_obs_var)
    if vy.size < window or not scale.ok:
        msg = _insufficient(vy.size, window, "bars") if scale.ok else scale.message
        arrays = (nan_all,) * 7
        return _Traded(*arrays, empty, (f"kalman: {msg}",))
    kf = kalman_hedge_ratio(
        vy,
        vx,
        params.kalman_delta,
        scale.obs_var,
        initial_state=scale.initial_state,
        initial_cov=scale.initial_cov,
        x_center=scale.x_center,
        state_noise=scale.state_noise,
    )
    cut = window - 1  # the warm-up's last bar: the first causal value
    early = np.arange(vy.size) < cut
    beta, alpha, err, z, beta_se = (
        np.where(early, np.nan, a)
        for a in (kf.beta, kf.alpha, kf.error, kf.z, np.sqrt(kf.beta_var))
    )
    std = np.where(np.isfinite(err), np.sqrt(kf.error_var), np.nan)
    mean = np.where(np.isfinite(err), 0.0, np.nan)
    live = LiveBasis(
        "kalman", params.price_space, window, vy[:0], vx[:0], vy[:0],
        kf.state, params.kalman_delta, scale.obs_var, scale.x_center,
        scale.state_noise,
    )  # fmt: skip
    msg = (
        f"Kalman hedge (delta {params.kalman_delta:g}, R {scale.obs_var:.4g} "
        f"{'given' if params.kalman_obs_var else f'from the first {window} bars'}): "
        "spread is the one-step forecast error, z = e / sqrt(S)"
    )
    return _Traded(beta, alpha, err, mean, std, z, beta_se, live, (msg,))


def _return_correlation(
    aligned: Any, valid_idx: np.ndarray, window: int
) -> tuple[np.ndarray, bool]:
    """Rolling log-return correlation over bars where both legs really traded.

    A close carried forward makes a zero return on one leg and a two-bucket return
    on the next: with 30 % of one leg's buckets empty a true 0.80 reads 0.56. So
    returns are taken only between consecutive bars where both legs have a close
    of their own (each return then spans the same time on both legs), the
    correlation of the last ``window`` such returns is stamped on the bar that
    ends the newest, and carried forward to the bars in between. Returns the
    per-valid-bar correlation and whether a full window was available.
    """
    both = ~(aligned.y_filled[valid_idx] | aligned.x_filled[valid_idx])
    own = np.flatnonzero(both)
    py, px = aligned.y[valid_idx][own], aligned.x[valid_idx][own]
    res = rolling_correlation(py, px, window, on="returns")
    out = np.full(valid_idx.size, np.nan)
    out[own] = res.corr
    return _ffill(out), res.ok


def _static_spread(vy: np.ndarray, vx: np.ndarray, in_sample: HedgeRatio) -> np.ndarray:
    """The in-sample spread y - beta x - alpha of the static fit (NaN when the fit
    failed or a leg is constant, where any test would run on rounding noise)."""
    if not in_sample.ok or _is_constant(vx[np.isfinite(vx)]):
        return vy * np.nan
    if _is_constant(vy[np.isfinite(vy)]):
        return vy * np.nan
    return spread(vy, vx, in_sample.beta, in_sample.alpha)


@dataclass(frozen=True, slots=True)
class _Bands:
    """Walk-forward Bertram bands on the valid bars, and the latest fit."""

    lower: np.ndarray
    upper: np.ndarray
    fit: OUFit
    bands: BertramBands


def _round_trip_cost(params: PairParams, y: float, x: float, beta: float) -> float:
    """Open + close cost of one unit of spread, in spread units.

    Each change pays (fee + slippage) per leg on the traded value, so a round trip
    of 1 unit of y and beta of x costs 2 rate (y + |beta| x) in quote currency; on
    log prices a unit of spread is a relative move, 2 rate (1 + |beta|).
    """
    rate = (params.fee_bps + params.slippage_bps) / 1e4
    if params.price_space == "log":
        return 2.0 * rate * (1.0 + abs(beta))
    return 2.0 * rate * (y + abs(beta) * x)


def _walk_forward_bands(
    traded: _Traded, vy: np.ndarray, vx: np.ndarray, params: PairParams
) -> _Bands:
    """Refit the OU and Bertram's bands on the traded spread up to each refit bar;
    each refit's bands apply from that bar to the next refit (no look-ahead)."""
    n = vy.size
    lower, upper = np.full(n, np.nan), np.full(n, np.nan)
    step = max(params.window, -(-n // BANDS_MAX_REFITS))
    fit = ou_fit(traded.spread[:0], params.interval_s)
    bands = bertram_bands(fit, 0.0)
    finite = np.flatnonzero(np.isfinite(traded.spread))
    if finite.size <= OU_MIN_OBS:
        return _Bands(lower, upper, fit, bands)
    first = int(finite[OU_MIN_OBS])
    refits = list(range(first, n, step))
    for k, r in enumerate(refits):
        fit = ou_fit(traded.spread[: r + 1], params.interval_s)
        beta = traded.beta[r]
        if not (fit.ok and math.isfinite(beta)):
            continue
        bands = bertram_bands(fit, _round_trip_cost(params, vy[r], vx[r], beta))
        if bands.ok:
            end = refits[k + 1] if k + 1 < len(refits) else n
            lower[r:end], upper[r:end] = bands.lower, bands.upper
    return _Bands(lower, upper, fit, bands)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Aligned bars, the excluded mask and the valid bars in the price space."""

    aligned: Any
    excluded: np.ndarray
    valid_idx: np.ndarray
    vy: np.ndarray
    vx: np.ndarray
    messages: tuple[str, ...]


def _prepare(
    bars_y: pd.DataFrame | Leg, bars_x: pd.DataFrame | Leg, params: PairParams
) -> _Prepared:
    """Align, apply the liquidity filter and transform to the price space."""
    messages: list[str] = []
    aligned = align_pair_arrays(
        bars_y, bars_x, max_ffill=params.max_ffill, interval_s=params.interval_s
    )
    py, px = aligned.y, aligned.x
    with np.errstate(invalid="ignore"):
        good_price = np.isfinite(py) & np.isfinite(px) & (py > 0) & (px > 0)
    excluded = ~good_price | liquidity_filter(
        aligned.y_trades,
        aligned.x_trades,
        aligned.y_notional,
        aligned.x_notional,
        min_trades=params.min_trades,
        min_notional=params.min_notional,
    )
    valid_idx = np.flatnonzero(~excluded)
    vy, vx = py[valid_idx], px[valid_idx]
    for frame, sym in ((bars_y, params.symbol_y), (bars_x, params.symbol_x)):
        dup = _duplicated_stamps(frame)
        if dup:
            messages.append(
                f"{sym}: {dup} bars repeat an earlier timestamp; the last row of "
                "each timestamp is used (aggregate duplicates before analysis)"
            )
    if params.price_space == "log":
        vy, vx = np.log(vy), np.log(vx)
    if aligned.filled_y or aligned.filled_x:
        messages.append(
            f"forward-filled {aligned.filled_y} {params.symbol_y} and "
            f"{aligned.filled_x} {params.symbol_x} closes (at most "
            f"{params.max_ffill} buckets)"
        )
    n_excl = int(excluded.sum())
    if n_excl:
        messages.append(
            f"{n_excl} of {py.size} bars excluded by the liquidity filter (trades < "
            f"{params.min_trades} or notional < {params.min_notional:g}) or a bad price"
        )
    return _Prepared(aligned, excluded, valid_idx, vy, vx, tuple(messages))


def _descriptive_bands(
    traded: _Traded, vy: np.ndarray, vx: np.ndarray, params: PairParams
) -> tuple[OUFit, BertramBands]:
    """OU fit of the whole traded spread and its bands at the newest bar's cost."""
    fit = ou_fit(traded.spread, params.interval_s)
    if not fit.ok or not vy.size or not math.isfinite(traded.beta[-1]):
        return fit, bertram_bands(fit, 0.0)
    cost = _round_trip_cost(params, vy[-1], vx[-1], traded.beta[-1])
    return fit, bertram_bands(fit, cost)


def _duplicated_stamps(bars: pd.DataFrame | Leg) -> int:
    """Rows whose ``ts`` repeats an earlier row's (0 for a strictly rising clock;
    a ``Leg`` is deduplicated already)."""
    if isinstance(bars, Leg) or "ts" not in bars.columns:
        return 0
    arr = bars["ts"].array  # ~10 us on a rising clock (is_unique hashes: 350 us)
    ts = arr.asi8 if hasattr(arr, "asi8") else np.asarray(arr)
    if ts.size < 2 or bool((ts[1:] > ts[:-1]).all()):
        return 0
    return int(ts.size - np.unique(ts).size)


def _static_fit(prep: _Prepared, params: PairParams) -> tuple[HedgeRatio, list[str]]:
    """The chosen static method (else OLS) over the view, and its labels."""
    method = params.hedge_method if params.hedge_method in STATIC_METHODS else "ols"
    fit = hedge_ratio(prep.vy, prep.vx, method=method)
    msgs = [] if fit.ok else [f"in-sample {method}: {fit.message}"]
    if params.hedge_method in STATIC_METHODS:
        msgs.append(
            f"the {method} hedge ratio is an in-sample fit over the view (look-ahead):"
            f" shown as a description, never traded; spread, z, signals and the "
            f"backtest use rolling OLS over {params.window} bars"
        )
    return fit, msgs


def _tests(
    vy: np.ndarray, vx: np.ndarray, in_spread: np.ndarray, with_tests: bool
) -> tuple[AdfResult | None, CointegrationResult | None, list[str]]:
    """ADF on the in-sample spread (descriptive) and two-way Engle-Granger."""
    if not with_tests:
        return None, None, []
    adf_res = adf_test(in_spread)
    coint = cointegration_test(vy, vx)
    msgs = [] if adf_res.ok else [f"ADF: {adf_res.message}"]
    if not coint.ok:
        msgs.append(f"Engle-Granger: {coint.message}")
    return adf_res, coint, msgs


def pair_analytics(
    bars_y: pd.DataFrame,
    bars_x: pd.DataFrame,
    params: PairParams,
    *,
    with_tests: bool = True,
) -> PairAnalytics:
    """All pair statistics for the dashboard, alerts and exports in one call.

    Parameters
    ----------
    bars_y, bars_x : bar frames (``BAR_COLUMNS``) already at ``params.interval``.
    params : PairParams.
    with_tests : run ADF and Engle-Granger (the costly part; the dashboard runs
        them once per closed bar).

    Returns
    -------
    PairAnalytics
        Minimum data: ``window`` valid bars for beta/z (``window + 1`` for the return
        correlation), 20 for ADF/Engle-Granger; below that the affected parts are
        NaN/None and ``messages`` says "insufficient data: have n, need m".

    Notes
    -----
    1. Align closes on a common clock (forward-fill at most ``max_ffill`` buckets).
    2. Transform to log prices if ``price_space="log"``.
    3. Exclude bars failing the liquidity filter or with a non-positive price; the
       regression and z-score run on the remaining bars, beta is carried forward
       over excluded bars, whose spread and z are NaN.
    4. What is traded is causal for every method: rolling OLS (beta_t from bars
       t-window+1..t, z the rolling z-score of that spread) or Kalman (scaled to
       the first window; spread = forecast error, z = e / sqrt(S)). A static
       method (OLS, Huber, Theil-Sen over the view) is shown, never traded.
    5. Positions from ``zscore_signals`` on the traded z; backtest with the traded
       beta, converted to units for log prices (beta * y / x).
    6. Correlation of log returns between bars where both legs traded (levels on
       request); ADF and half-life on the in-sample spread; Engle-Granger both ways.
    """
    if not isinstance(params, PairParams):
        raise ValueError(f"params must be a PairParams, got {type(params).__name__}")
    window = params.window
    prep = _prepare(bars_y, bars_x, params)
    aligned, valid_idx, vy, vx = prep.aligned, prep.valid_idx, prep.vy, prep.vx
    n = aligned.ts.size
    in_sample, messages = _static_fit(prep, params)
    messages = list(prep.messages) + messages
    if params.hedge_method == "kalman":
        traded = _traded_kalman(vy, vx, params)
    else:
        traded = _traded_rolling(vy, vx, params)
    messages += traded.messages
    ret_corr, corr_v, corr_msgs = _correlations(prep, params)
    messages += corr_msgs
    in_spread = _static_spread(vy, vx, in_sample)

    def col(values: np.ndarray) -> np.ndarray:
        return _expand(values, valid_idx, n)

    beta_col, alpha_col = _ffill(col(traded.beta)), _ffill(col(traded.alpha))
    z_col = col(traded.z)
    pos = _positions(traded, prep, params, col, with_tests)
    sig = pos.signals
    bt = _backtest_traded(aligned, beta_col, sig, z_col, params)
    hl = half_life(in_spread)
    adf_res, coint, test_msgs = _tests(vy, vx, in_spread, with_tests)
    messages += test_msgs
    reg = regime(
        coint.pvalue if coint is not None and coint.ok else None,
        _none_if_nan(ret_corr[-1]) if ret_corr.size else None,
        hl.bars,
        window,
    )
    if n == 0:
        messages.append(_insufficient(0, window, "bars"))
    columns = {
        "ts": aligned.ts,
        "y": aligned.y,
        "x": aligned.x,
        "beta": beta_col,
        "beta_se": _ffill(col(traded.beta_se)),
        "alpha": alpha_col,
        **_spread_columns(traded, col, z_col, in_spread),
        "band_lower": pos.lower,
        "band_upper": pos.upper,
        "corr": col(corr_v),
        "position": sig.position.astype("int64"),
        "signal": _call_column(sig.position, sig.calls),
        **_liquidity_columns(prep),
        "equity": bt.equity,
    }
    return PairAnalytics(
        params=params,
        interval_s=params.interval_s,
        n_bars=n,
        table=pd.DataFrame(columns),
        in_sample=in_sample,
        hedge_in_sample=params.hedge_method in STATIC_METHODS,
        adf=adf_res,
        eg=None if coint is None else coint.y_on_x,
        half_life=hl,
        latest=_latest(columns, sig),
        signal=sig.signal,
        regime=reg,
        backtest=bt,
        excluded_bars=int(prep.excluded.sum()),
        filled_y=aligned.filled_y,
        filled_x=aligned.filled_x,
        messages=tuple(messages),
        coint=coint,
        half_life_traded=half_life(traded.spread),
        trade_method="kalman" if params.hedge_method == "kalman" else "rolling_ols",
        live=traded.live if vy.size else None,
        ou=pos.ou,
        bands=pos.bands,
    )


def _spread_columns(
    traded: _Traded, col: Any, z: np.ndarray, in_spread: np.ndarray
) -> dict[str, np.ndarray]:
    """The table's spread, its z-score statistics and the in-sample spread."""
    return {
        "spread": col(traded.spread),
        "spread_mean": col(traded.mean),
        "spread_std": col(traded.std),
        "z": z,
        "spread_in_sample": col(in_spread),
    }


def _liquidity_columns(prep: _Prepared) -> dict[str, np.ndarray]:
    """Trades and notional per leg, and the bars the filter excluded."""
    a = prep.aligned
    return {
        "y_trades": a.y_trades,
        "x_trades": a.x_trades,
        "y_notional": a.y_notional,
        "x_notional": a.x_notional,
        "excluded": prep.excluded,
    }


def _correlations(
    prep: _Prepared, params: PairParams
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(return correlation for the regime, the correlation shown, messages)."""
    window = params.window
    ret_corr, ok = _return_correlation(prep.aligned, prep.valid_idx, window)
    shown = ret_corr
    if params.corr_on != "returns":
        shown = rolling_correlation(prep.vy, prep.vx, window, on="prices").corr
    msgs = [] if ok else [
        f"correlation: {_insufficient(prep.valid_idx.size, window + 1)}"
    ]  # fmt: skip
    return ret_corr, shown, msgs


@dataclass(frozen=True, slots=True)
class _Positions:
    """The signals of the chosen rule, its per-bar bands and the OU fit."""

    signals: SignalResult
    lower: np.ndarray
    upper: np.ndarray
    ou: OUFit | None
    bands: BertramBands | None


def _positions(
    traded: _Traded, prep: _Prepared, params: PairParams, col: Any, with_tests: bool
) -> _Positions:
    """z thresholds on the traded z, or Bertram's walk-forward bands on its spread
    (``col`` scatters values of the valid bars onto every bar)."""
    n = prep.aligned.ts.size
    if params.signal_rule == "bertram":
        wf = _walk_forward_bands(traded, prep.vy, prep.vx, params)
        lower, upper = col(wf.lower), col(wf.upper)
        sig = band_signals(col(traded.spread), lower, upper)
        return _Positions(sig, lower, upper, wf.fit, wf.bands)
    z = col(traded.z)
    sig = zscore_signals(z, params.z_entry, params.z_exit, params.z_stop)
    ou = bands = None
    if with_tests:  # descriptive here: computed with the tests, per closed bar
        ou, bands = _descriptive_bands(traded, prep.vy, prep.vx, params)
    nan = np.full(n, np.nan)
    return _Positions(sig, nan, nan.copy(), ou, bands)


def _backtest_traded(
    aligned: Any,
    beta: np.ndarray,
    sig: SignalResult,
    z: np.ndarray,
    params: PairParams,
) -> BacktestResult:
    """The backtest of the positions with the traded beta, in units of x per y."""
    if params.price_space == "log":
        with np.errstate(all="ignore"):
            beta = beta * aligned.y / aligned.x
    return backtest(
        aligned.y,
        aligned.x,
        beta,
        sig.position,
        fee_bps=params.fee_bps,
        slippage_bps=params.slippage_bps,
        notional=params.notional,
        interval_s=params.interval_s,
        ts=aligned.ts,
        z=z,
    )


def _latest(columns: dict[str, Any], sig: SignalResult) -> LatestValues:
    """The newest row's values (all None on an empty table)."""
    if not len(columns["ts"]):
        return LatestValues(
            None, None, None, None, None, None, None, None, 0, SIGNAL_NEUTRAL
        )
    keys = ("beta", "alpha", "spread", "spread_mean", "spread_std", "z", "corr")
    last = {k: _none_if_nan(columns[k][-1]) for k in keys}
    return LatestValues(
        ts=columns["ts"][-1],
        position=int(sig.position[-1]),
        signal=sig.signal,
        **last,
    )


@dataclass(frozen=True, slots=True)
class LiveValues:
    """The forming bar's hedge, spread and z as if it closed at the given prices.

    beta, alpha : the traded hedge with the forming bar in the window (rolling OLS)
    or the filter's prediction (Kalman). spread : f(y) - beta f(x) - alpha (f = ln
    for log prices). z : its z-score by the bar-close definition.
    """

    beta: float
    alpha: float
    spread: float
    z: float


def live_values(
    result: PairAnalytics, price_y: float, price_x: float
) -> LiveValues | None:
    """Hedge, spread and z of the forming bar closing at (price_y, price_x).

    The bar-close definition with the provisional bar in the window: rolling OLS
    over the last window - 1 closed bars and the provisional one, z over their
    spreads; Kalman: one predict step from the filtered state, z = e / sqrt(S).
    Comparing an out-of-sample spread with the in-sample window's statistics
    instead overstates |z| (std 1.79 against 1.27 at bar close on recorded BTC/ETH).
    None when the basis or a price is missing, or a price is not positive.
    """
    basis = result.live
    try:
        fy, fx = float(price_y), float(price_x)
    except (TypeError, ValueError):
        return None
    if basis is None or not (math.isfinite(fy) and math.isfinite(fx)):
        return None
    if fy <= 0 or fx <= 0:
        return None
    if basis.price_space == "log":
        fy, fx = math.log(fy), math.log(fx)
    if basis.method == "kalman":
        return _live_kalman(basis, fy, fx)
    w = basis.window
    if basis.y.size < w - 1:
        return None
    roll = rolling_hedge_ratio(np.append(basis.y, fy), np.append(basis.x, fx), w)
    beta, alpha = float(roll.beta[-1]), float(roll.alpha[-1])
    s = fy - beta * fx - alpha
    z = float(rolling_zscore(np.append(basis.spreads, s), w).z[-1])
    if not (math.isfinite(beta) and math.isfinite(z)):
        return None
    return LiveValues(beta, alpha, s, z)


def _live_kalman(basis: LiveBasis, fy: float, fx: float) -> LiveValues | None:
    """One Kalman predict step: the forecast error and its standardised value."""
    state = basis.kalman_state
    if state is None:
        return None
    step = kalman_update(
        state,
        fy,
        fx,
        delta=basis.kalman_delta,
        obs_var=basis.kalman_obs_var,
        x_center=basis.kalman_center,
        state_noise=basis.kalman_noise,
    )
    z = step.error / math.sqrt(step.error_var)
    new = step.state  # filtered with the provisional bar, as the table's beta
    alpha = new.alpha - new.beta * basis.kalman_center
    return LiveValues(new.beta, alpha, step.error, z) if math.isfinite(z) else None


def live_signal(result: PairAnalytics, live: LiveValues | None) -> str:
    """The call the strategy would make if the forming bar closed at ``live``.

    The closed bars' path extended by the live value: the live z under the z rule,
    the live spread against the newest bands under the Bertram rule. Without live
    values, the latest closed bar's call.
    """
    if live is None:
        return result.signal
    table, p = result.table, result.params
    if p.signal_rule == "bertram":
        lower = np.append(
            table["band_lower"].to_numpy(float), table["band_lower"].iloc[-1]
        )
        upper = np.append(
            table["band_upper"].to_numpy(float), table["band_upper"].iloc[-1]
        )
        path = np.append(table["spread"].to_numpy(float), live.spread)
        return band_signals(path, lower, upper).signal
    z_path = np.append(table["z"].to_numpy(float), live.z)
    return zscore_signals(z_path, p.z_entry, p.z_exit, p.z_stop).signal


def live_zscore(result: PairAnalytics, price_y: float, price_x: float) -> float | None:
    """z of the forming bar closing at the newest trade prices (``live_values``)."""
    live = live_values(result, price_y, price_x)
    return None if live is None else live.z


# -------------------------------------------------------------------- scanner

SCAN_COLUMNS = (
    "y",
    "x",
    "bars",
    "eg_p",
    "q_value",
    "significant",
    "eg_p_y_on_x",
    "eg_p_x_on_y",
    "beta",
    "half_life",
    "z",
    "corr",
    "signal",
)


def bh_qvalues(pvalues: Any) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values); NaN p-values stay NaN.

    q_(i) = min over j >= i of m p_(j) / j, capped at 1, with p sorted ascending and
    m the number of finite p-values. Rejecting q <= alpha controls the false
    discovery rate at alpha for independent or positively dependent tests
    (Benjamini & Hochberg 1995; statsmodels' ``multipletests(method="fdr_bh")``).
    """
    p = _as_float_array(pvalues, "pvalues")
    out = np.full(p.size, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


def _scan_row(bars_y: Leg, bars_x: Leg, params: PairParams) -> dict[str, Any]:
    """One scanner row: two-way Engle-Granger, traded beta and z, half-life, corr."""
    prep = _prepare(bars_y, bars_x, params)
    vy, vx = prep.vy, prep.vx
    if params.hedge_method == "kalman":
        traded = _traded_kalman(vy, vx, params)
    else:
        traded = _traded_rolling(vy, vx, params)
    corr, _ = _return_correlation(prep.aligned, prep.valid_idx, params.window)
    coint = cointegration_test(vy, vx)
    # the in-sample spread Engle-Granger tested (its first-stage OLS)
    in_spread = spread(vy, vx, coint.y_on_x.beta, coint.y_on_x.alpha)
    z = _none_if_nan(traded.z[-1]) if vy.size else None
    sig = zscore_signals(traded.z, params.z_entry, params.z_exit, params.z_stop)
    return {
        "y": params.symbol_y,
        "x": params.symbol_x,
        "bars": int(vy.size),
        "eg_p": coint.pvalue if coint.ok else np.nan,
        "eg_p_y_on_x": coint.y_on_x.pvalue,
        "eg_p_x_on_y": coint.x_on_y.pvalue,
        "beta": _none_if_nan(traded.beta[-1]) if vy.size else None,
        "half_life": half_life(in_spread).bars,
        "z": z,
        "corr": _none_if_nan(corr[-1]) if corr.size else None,
        "signal": sig.signal,
    }


def scan_pairs(
    bars_by_symbol: Mapping[str, pd.DataFrame],
    params: PairParams,
    fdr: float = 0.05,
) -> pd.DataFrame:
    """Every unordered pair of symbols tested for cointegration, with FDR control.

    Parameters
    ----------
    bars_by_symbol : symbol -> bars (``ts, open, high, low, close, volume, ...``)
        at ``params.interval``.
    params : PairParams; its symbols are ignored, every other field is used.
    fdr : false discovery rate in (0, 1) for ``significant``.

    Returns
    -------
    DataFrame with ``SCAN_COLUMNS``, one row per unordered pair, y the
    alphabetically first symbol: ``eg_p`` combines the two Engle-Granger
    p-values (``cointegration_test``), ``q_value`` its Benjamini-Hochberg
    q-value over all pairs of this scan, ``significant = q_value <= fdr`` (of the
    rows flagged, at most a share ``fdr`` are expected false discoveries);
    ``beta`` and ``z`` are the traded (no look-ahead) values on the newest bar,
    ``half_life`` that of the in-sample spread (the one Engle-Granger tests),
    ``corr`` the latest log-return correlation. Sorted by q-value, then |z|
    (descending), then names: the same for any order of the symbols. Pairs with
    too few bars have NaN p- and q-values and are not significant.
    """
    if not (isinstance(fdr, (int, float)) and 0 < fdr < 1):
        raise ValueError(f"fdr must be a number in (0, 1), got {fdr!r}")
    symbols = sorted({normalize_symbol(s): s for s in bars_by_symbol}.items())
    legs = {key: leg_arrays(bars_by_symbol[key], key) for _, key in symbols}
    rows = []
    for (sym_y, key_y), (sym_x, key_x) in itertools.combinations(symbols, 2):
        pair = replace(params, symbol_y=sym_y, symbol_x=sym_x)
        rows.append(_scan_row(legs[key_y], legs[key_x], pair))
    frame = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    for col in ("eg_p", "eg_p_y_on_x", "eg_p_x_on_y", "beta", "half_life", "z"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["corr"] = pd.to_numeric(frame["corr"], errors="coerce").astype("float64")
    frame["q_value"] = bh_qvalues(frame["eg_p"].to_numpy())
    frame["significant"] = (frame["q_value"] <= fdr).to_numpy()
    order = frame.assign(abs_z=-frame["z"].abs()).sort_values(
        ["q_value", "abs_z", "y", "x"], na_position="last", kind="stable"
    )
    return frame.loc[order.index].reset_index(drop=True)


__all__ = [
    "AdfResult",
    "BacktestResult",
    "BertramBands",
    "CointegrationResult",
    "EngleGrangerResult",
    "HalfLifeResult",
    "HedgeRatio",
    "KalmanResult",
    "KalmanScale",
    "KalmanState",
    "KalmanStep",
    "LatestValues",
    "LiveBasis",
    "LiveValues",
    "OUFit",
    "PairAnalytics",
    "PairParams",
    "PriceStats",
    "RegimeResult",
    "RollingCointegration",
    "RollingCorrelation",
    "RollingHedge",
    "RollingVolatility",
    "RollingZScore",
    "SignalResult",
    "adf_test",
    "annualization_factor",
    "backtest",
    "band_signals",
    "bertram_bands",
    "bh_qvalues",
    "cointegration_test",
    "engle_granger",
    "expected_cycle_s",
    "half_life",
    "hedge_ratio",
    "kalman_hedge_ratio",
    "kalman_scale",
    "kalman_update",
    "liquidity_filter",
    "live_signal",
    "live_values",
    "live_zscore",
    "log_returns",
    "ou_fit",
    "pair_analytics",
    "price_stats",
    "regime",
    "rolling_cointegration",
    "rolling_correlation",
    "rolling_hedge_ratio",
    "rolling_volatility",
    "rolling_zscore",
    "scan_pairs",
    "spread",
    "zscore_signals",
]
