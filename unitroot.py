"""Augmented Dickey-Fuller and Engle-Granger tests with a one-QR lag search.

The results are those of statsmodels' ``adfuller`` and ``coint`` (0.15) with the same
arguments: the same chosen lag and nobs, the same critical values, and statistic,
p-value and best information criterion within 1e-9 relative (typically 1e-13).

Speed. statsmodels fits one OLS per candidate lag ``0..maxlag`` (33 fits at 5 000
points). Every candidate uses the same rows and its regressors are a prefix of the
widest design ``[trend terms, x_{t-1}, dx_{t-1}, ..., dx_{t-maxlag}]`` (the order
statsmodels' search uses), so one Householder QR of ``[X | y]`` gives all of them:

    z = Q'y,   RSS_k = R[K, K]**2 + sum_{j >= k} z_j**2,
    t of the k-th column in the k-column model = sign(R_kk) z_k / sqrt(RSS_k / (m - k))

(no subtraction, hence no cancellation). The QR is streamed over blocks of rows, so
the design matrix is never built whole. The chosen lag is refitted on its own longer
sample as statsmodels does, without a second pass over the data: its columns of R,
stacked on the ``maxlag - lag`` extra rows, have the R of that regression.

Accuracy. The QR runs on a design whose price level is shifted by one of its values
when a constant is in the model (same column span, same t-statistic), which removes
the near-collinearity of a level of 6e4 +- 5 with the constant. Against an 80-bit
long-double refit the statistic is good to about 1e-14; statsmodels' pinv on the raw
design is itself off by up to ~1e-9 without a constant (price levels beside 0.1
ticks) and with "ctt" at 5 000 points, so that is where the two differ most.

Fallbacks. Where the fast path cannot promise statsmodels' choice (a possibly
rank-deficient design, an information-criterion near-tie, a t-statistic near the 5 %
stop of the "t-stat" rule, a series moving in exactly equal steps, which makes
statsmodels drop the constant) the regressions concerned are refitted with
statsmodels' ``OLS`` on the very matrices ``adfuller`` builds. P-values and critical
values are statsmodels' ``mackinnonp`` and ``mackinnoncrit`` (MacKinnon 1994, 2010).

Pure: numpy arrays (or anything ``numpy.asarray`` accepts) in, frozen results out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp

__all__ = [
    "AUTOLAGS",
    "REGRESSIONS",
    "AdfOutcome",
    "CointOutcome",
    "InsufficientDataError",
    "adf",
    "adf_min_nobs",
    "coint",
    "default_maxlag",
]

REGRESSIONS = ("c", "ct", "ctt", "n")
AUTOLAGS = ("aic", "bic", "t-stat")
# statsmodels _autolag: stats.norm.ppf(0.95), the 5 % one-sided stop of the t-stat rule
TSTAT_STOP = 1.6448536269514722
# statsmodels coint: residual R² at or above this means y and x are (almost) collinear
COLLINEAR_RSQUARED = 1.0 - 100.0 * math.sqrt(float(np.finfo(np.float64).eps))
# |R_kk| of the column-scaled design below this: treat as possibly rank-deficient and
# refit with statsmodels' pinv-based OLS (the sine of the angle between a column and
# the span of the columns before it; well-posed ADF designs sit far above it)
RANK_TOL = 1e-7
# information criteria closer than this (relative to |ic| + nobs) are refitted exactly
TIE_TOL = 1e-8
# |t| within this relative distance of TSTAT_STOP is refitted exactly ("t-stat" rule);
# statsmodels' own t-values can be off by ~1e-8 on badly scaled designs
TSTAT_TIE_TOL = 1e-6
# rows per block of the streamed QR
CHUNK_ROWS = 2048
# residual sum of squares below this fraction of ||y||² counts as an exact fit
EXACT_FIT_TOL = 1e-24


class InsufficientDataError(ValueError):
    """The data cannot support the test: too short, constant, or an exact fit.

    The message starts with ``"insufficient data:"``; ``have`` and ``need`` give the
    numbers behind it (observations, or distinct values for a constant series; both
    ``None`` for a degenerate regression).
    """

    def __init__(
        self, message: str, *, have: int | None = None, need: int | None = None
    ):
        super().__init__(message)
        self.have = have
        self.need = need


@dataclass(frozen=True, slots=True)
class AdfOutcome:
    """Result of :func:`adf` (null hypothesis: x has a unit root).

    Attributes
    ----------
    stat : float
        t-statistic of the lagged level ``x_{t-1}`` in the ADF regression; more
        negative is more evidence against the unit root.
    pvalue : float
        MacKinnon (1994, 2010 tables) approximate p-value of ``stat``.
    usedlag : int
        Number of lagged differences in the reported regression.
    nobs : int
        Observations in the reported regression (``len(x) - 1 - usedlag``).
    critvalues : dict[str, float]
        Critical values at "1%", "5%" and "10%" for ``nobs`` (MacKinnon 2010).
    icbest : float | None
        AIC or BIC of the chosen lag on the common search sample, the absolute
        t-statistic of the last lag for "t-stat", ``None`` without a search.
    regression : str
        Deterministic terms: "c" constant, "ct" constant and trend, "ctt" plus a
        quadratic trend, "n" none.
    autolag : str | None
        Lag choice: "aic", "bic", "t-stat" or ``None`` (``maxlag`` lags).
    maxlag : int
        Largest lag considered.
    """

    stat: float
    pvalue: float
    usedlag: int
    nobs: int
    critvalues: dict[str, float]
    icbest: float | None
    regression: str
    autolag: str | None
    maxlag: int


@dataclass(frozen=True, slots=True)
class CointOutcome:
    """Result of :func:`coint`, augmented Engle-Granger (null: no cointegration).

    Attributes
    ----------
    stat : float
        ADF t-statistic (no deterministic terms) on the residuals of
        ``y = beta x + alpha [+ trend terms]``; ``-inf`` when ``collinear``.
    pvalue : float
        MacKinnon (1994) approximate asymptotic p-value for two variables.
    critvalues : dict[str, float]
        Critical values at "1%", "5%", "10%" for ``len(y) - 1`` observations
        (MacKinnon 2010); NaN for trend "n", for which there are no tables.
    usedlag : int | None
        Lagged differences in the residual ADF regression (``None`` when collinear).
    nobs : int | None
        Observations in the residual ADF regression (``None`` when collinear).
    beta : float
        Slope of y on x in the cointegrating regression (units of y per unit of x).
    alpha : float | None
        Intercept of the cointegrating regression (units of y); ``None`` for "n".
    trend : str
        Deterministic terms of the cointegrating regression: "c", "ct", "ctt", "n".
    autolag : str | None
        Lag choice of the residual ADF: "aic", "bic", "t-stat" or ``None``.
    maxlag : int | None
        Largest lag considered in the residual ADF (``None`` when collinear).
    collinear : bool
        True when the regression R² is at least ``1 - 100 sqrt(eps)``: the test is
        not computed, the statistic is ``-inf`` and the p-value 0 (as statsmodels).
    """

    stat: float
    pvalue: float
    critvalues: dict[str, float]
    usedlag: int | None
    nobs: int | None
    beta: float
    alpha: float | None
    trend: str
    autolag: str | None
    maxlag: int | None
    collinear: bool


# ---------------------------------------------------------------- argument checks


def _as_series(values: object, name: str) -> np.ndarray:
    """Return values as a finite 1-D float64 array or raise ValueError naming them."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional: got shape {arr.shape}")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(
            f"{name} must be finite: found {bad} NaN or infinite values "
            f"of {arr.shape[0]}; drop or fill them first"
        )
    return arr


def _check_regression(regression: object, name: str) -> str:
    """Return the lower-cased regression code or raise ValueError."""
    if isinstance(regression, str) and regression.lower() in REGRESSIONS:
        return regression.lower()
    raise ValueError(f"{name} must be one of {REGRESSIONS}: got {regression!r}")


def _check_autolag(autolag: object) -> str | None:
    """Return the lower-cased autolag method (or None) or raise ValueError."""
    if autolag is None:
        return None
    if isinstance(autolag, str) and autolag.lower() in AUTOLAGS:
        return autolag.lower()
    raise ValueError(
        f"autolag must be one of ('AIC', 'BIC', 't-stat', None): got {autolag!r}"
    )


def _check_maxlag(maxlag: object) -> int | None:
    """Return maxlag as a non-negative int (or None) or raise ValueError."""
    if maxlag is None:
        return None
    if isinstance(maxlag, bool) or not isinstance(maxlag, int | np.integer):
        raise ValueError(
            f"maxlag must be a non-negative integer or None: got {maxlag!r}"
        )
    if maxlag < 0:
        raise ValueError(f"maxlag must be a non-negative integer or None: got {maxlag}")
    return int(maxlag)


def _check_not_constant(arr: np.ndarray, name: str) -> None:
    """Raise InsufficientDataError when every value of arr is equal, or when its
    variation is so small that its sum of squares underflows to zero (no
    regression statistic can be formed from it)."""
    if arr.max() == arr.min():
        raise InsufficientDataError(
            f"insufficient data: {name} is constant (have 1 distinct value, need 2)",
            have=1,
            need=2,
        )
    with np.errstate(under="ignore"):
        centered_ss = float(np.sum((arr - arr.mean()) ** 2))
    if centered_ss == 0.0:
        raise InsufficientDataError(
            f"insufficient data: {name} varies by less than floating point can "
            f"square (range {arr.max() - arr.min():.3g})",
            have=1,
            need=2,
        )


# ---------------------------------------------------------------- sample-size rules


def _ntrend(regression: str) -> int:
    """Number of deterministic terms of a regression code."""
    return 0 if regression == "n" else len(regression)


def default_maxlag(nobs: int, regression: str = "c") -> int:
    """Largest lag searched by default, as statsmodels ``adfuller``.

    Parameters
    ----------
    nobs : int
        Length of the series.
    regression : {"c", "ct", "ctt", "n"}
        Deterministic terms.

    Returns
    -------
    int
        ``min(ceil(12 (nobs / 100) ** (1 / 4)), nobs // 2 - ntrend - 1)`` (Schwert 1989
        via Greene), negative when the series is too short for any regression.
    """
    regression = _check_regression(regression, "regression")
    schwert = int(np.ceil(12.0 * np.power(nobs / 100.0, 1 / 4.0)))
    return min(nobs // 2 - _ntrend(regression) - 1, schwert)


def _feasible(nobs: int, ntrend: int, maxlag: int) -> bool:
    """True when statsmodels accepts maxlag and every lag fit keeps a residual dof."""
    cap_ok = 0 <= maxlag <= nobs // 2 - ntrend - 1
    # widest regression: nobs - 1 - maxlag rows, ntrend + 1 + maxlag columns
    return cap_ok and nobs - 2 * maxlag - ntrend - 2 >= 1


def _resolve_maxlag(nobs: int, regression: str, maxlag: int | None, what: str) -> int:
    """Return the maxlag to use, or raise InsufficientDataError with the need."""
    ntrend = _ntrend(regression)
    lag = default_maxlag(nobs, regression) if maxlag is None else maxlag
    if _feasible(nobs, ntrend, lag):
        return lag
    need = nobs + 1
    if maxlag is None:
        while not _feasible(need, ntrend, default_maxlag(need, regression)):
            need += 1
        rule = "the default maxlag"
    else:
        need = max(2 * (maxlag + ntrend + 1), 2 * maxlag + ntrend + 3)
        rule = f"maxlag={maxlag}"
    raise InsufficientDataError(
        f"insufficient data: have {nobs}, need {need} observations for {what} with "
        f"regression={regression!r} and {rule} (maxlag <= n // 2 - ntrend - 1 and "
        "at least one residual degree of freedom)",
        have=nobs,
        need=need,
    )


def adf_min_nobs(regression: str = "c", maxlag: int | None = None) -> int:
    """Smallest series length :func:`adf` accepts.

    Parameters
    ----------
    regression : {"c", "ct", "ctt", "n"}
        Deterministic terms.
    maxlag : int or None
        Fixed largest lag, or ``None`` for the default ``12 (n / 100) ** (1 / 4)``.

    Returns
    -------
    int
        4 for "c", 6 for "ct", 8 for "ctt", 3 for "n" with the default maxlag; with a
        fixed maxlag ``max(2 (maxlag + ntrend + 1), 2 maxlag + ntrend + 3)``. With
        ``regression="n"`` and the default maxlag some even lengths below about 30
        are refused although a shorter length is accepted (an exact fit otherwise).
    """
    regression = _check_regression(regression, "regression")
    maxlag = _check_maxlag(maxlag)
    ntrend = _ntrend(regression)
    if maxlag is not None:
        return max(2 * (maxlag + ntrend + 1), 2 * maxlag + ntrend + 3)
    n = 1
    while not _feasible(n, ntrend, default_maxlag(n, regression)):
        n += 1
    return n


# ---------------------------------------------------------------- statsmodels' matrices


def _lag_block(x: np.ndarray, xdiff: np.ndarray, lags: int) -> np.ndarray:
    """``[x_{t-1}, dx_{t-1}, ..., dx_{t-lags}]``, as statsmodels builds it."""
    nobs = xdiff.shape[0] - lags
    block = np.empty((nobs, lags + 1))
    block[:, 0] = x[-nobs - 1 : -1]
    for j in range(1, lags + 1):
        block[:, j] = xdiff[lags - j : lags - j + nobs]
    return block


def _trend_block(block: np.ndarray, regression: str) -> np.ndarray:
    """Deterministic columns as statsmodels' ``add_trend`` (const skipped if any)."""
    nobs = block.shape[0]
    if regression == "n":
        return np.empty((nobs, 0))
    t = np.arange(1, nobs + 1, dtype=np.float64)
    cols = [np.ones(nobs), t, t * t][: len(regression)]
    # add_trend(has_constant="skip"): a constant non-zero column makes it drop "const"
    if np.any((np.ptp(block, axis=0) == 0) & (block[0] != 0)):
        cols = cols[1:]
    return np.column_stack(cols) if cols else np.empty((nobs, 0))


@dataclass(frozen=True, slots=True)
class _ExactFit:
    """The parts of a statsmodels OLS fit used here."""

    aic: float
    bic: float
    tvalues: np.ndarray


def _exact_ols(y: np.ndarray, design: np.ndarray) -> _ExactFit:
    """statsmodels OLS fit (pinv) on exactly these arrays, degenerate-case noise off.

    Its lazily computed AIC, BIC and t-values are read inside the silenced block:
    an exact fit gives log(0) = -inf and 0 / 0 there, as in statsmodels.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = OLS(y, design).fit()
        return _ExactFit(float(res.aic), float(res.bic), np.asarray(res.tvalues))


def _search_full(x: np.ndarray, xdiff: np.ndarray, maxlag: int, regression: str):
    """(y, [trend, level, lags], startlag) of the search, as statsmodels' adfuller."""
    block = _lag_block(x, xdiff, maxlag)
    trend = _trend_block(block, regression)
    full = np.column_stack([trend, block])  # add_trend(prepend=True)
    return xdiff[-block.shape[0] :], full, trend.shape[1] + 1


def _exact_search(
    x: np.ndarray, xdiff: np.ndarray, maxlag: int, regression: str, method: str
) -> tuple[float, int]:
    """statsmodels ``_autolag``: one OLS per candidate lag."""
    y, full, startlag = _search_full(x, xdiff, maxlag, regression)
    fits = {k: _exact_ols(y, full[:, :k]) for k in range(startlag, full.shape[1] + 1)}
    if method == "t-stat":
        tabs = {k: abs(float(f.tvalues[-1])) for k, f in fits.items()}
        return _tstat_choice(tabs, startlag, maxlag)
    ics = {k: f.aic if method == "aic" else f.bic for k, f in fits.items()}
    icbest, kbest = min((v, k) for k, v in ics.items())
    return icbest, kbest - startlag


def _exact_stat(x: np.ndarray, xdiff: np.ndarray, lag: int, regression: str) -> float:
    """Lagged-level t-statistic of statsmodels' final ADF regression."""
    block = _lag_block(x, xdiff, lag)
    design = np.column_stack([block, _trend_block(block, regression)])
    return float(_exact_ols(xdiff[-block.shape[0] :], design).tvalues[0])


# ---------------------------------------------------------------- one streamed QR


def _rows(
    x: np.ndarray,
    xdiff: np.ndarray,
    lo: int,
    hi: int,
    lags: int,
    ntrend: int,
    t0: int,
    center: float,
) -> np.ndarray:
    """Rows i in [lo, hi) of ``[1, t, t², x_i - center, dx_{i-1..i-lags}, dx_i]``.

    ``t = i - t0 + 1``; the first ``ntrend`` deterministic columns are kept. Built
    straight from slices of x, in Fortran order for LAPACK.
    """
    a = np.empty((hi - lo, ntrend + lags + 2), order="F")
    if ntrend:
        a[:, 0] = 1.0
    if ntrend >= 2:
        t = np.arange(lo - t0 + 1, hi - t0 + 1, dtype=np.float64)
        a[:, 1] = t
        if ntrend == 3:
            a[:, 2] = t * t
    np.subtract(x[lo:hi], center, out=a[:, ntrend])
    for j in range(1, lags + 1):
        a[:, ntrend + j] = xdiff[lo - j : hi - j]
    a[:, -1] = xdiff[lo:hi]
    return a


def _triu_r(a: np.ndarray) -> np.ndarray:
    """Upper-triangular (trapezoidal) R of a Householder QR of a (a is overwritten)."""
    qr, _tau, _work, info = lapack.dgeqrf(np.asfortranarray(a), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgeqrf failed: info={info}")
    return np.triu(qr[: min(a.shape)])


def _streamed_r(
    x: np.ndarray,
    xdiff: np.ndarray,
    lo: int,
    hi: int,
    lags: int,
    ntrend: int,
    center: float,
) -> np.ndarray:
    """R of ``[X | y]`` over rows [lo, hi), by QR of row blocks then of their Rs.

    Blocks of CHUNK_ROWS rows stay in cache and the full matrix is never built: at
    100 000 rows this is several times faster than one QR of the whole matrix.
    """
    parts = [
        _triu_r(_rows(x, xdiff, s, min(s + CHUNK_ROWS, hi), lags, ntrend, lo, center))
        for s in range(lo, hi, CHUNK_ROWS)
    ]
    return parts[0] if len(parts) == 1 else _triu_r(np.vstack(parts))


def _scaled(r: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """R with unit-norm columns and the norms; None if a regressor column is zero.

    Column norms of R are those of ``[X | y]`` (Q is orthogonal), and Householder
    QR is column-wise backward stable, so scaling afterwards loses nothing.
    """
    norms = np.sqrt(np.einsum("ij,ij->j", r, r))
    if not np.all(norms[:-1] > 0.0):
        return None
    safe = np.where(norms > 0.0, norms, 1.0)
    return r / safe, norms


def _well_posed(rs: np.ndarray) -> bool:
    """Full column rank with margin, and y not fitted exactly (scaled R)."""
    k = rs.shape[1] - 1
    diag = np.abs(np.diag(rs))
    return bool(diag[:k].min() >= RANK_TOL and diag[k] ** 2 >= EXACT_FIT_TOL)


def _llf(ssr: np.ndarray | float, nobs: int) -> np.ndarray | float:
    """Concentrated Gaussian log-likelihood, written as statsmodels' OLS.loglike."""
    nobs2 = nobs / 2.0
    return -nobs2 * np.log(2 * np.pi) - nobs2 * np.log(ssr / float(nobs)) - nobs2


def _ic(ssr: np.ndarray | float, nobs: int, k: np.ndarray | int, method: str):
    """AIC ``-2 llf + 2 k`` or BIC ``-2 llf + log(nobs) k`` (k = rank, statsmodels)."""
    penalty = 2.0 if method == "aic" else np.log(nobs)
    return -2.0 * _llf(ssr, nobs) + penalty * k


def _tstat_choice(
    tabs: dict[int, float], startlag: int, maxlag: int
) -> tuple[float, int]:
    """From the largest lag down, the first whose last-lag |t| >= 1.645."""
    icbest, bestlag = 0.0, startlag + maxlag
    for k in range(startlag + maxlag, startlag - 1, -1):
        icbest, bestlag = tabs[k], k
        if icbest >= TSTAT_STOP:
            break
    return icbest, bestlag - startlag


def _search_from_r(
    rs: np.ndarray,
    ynorm: float,
    nobs: int,
    startlag: int,
    method: str,
    exact_fit: Callable[[int], _ExactFit],
) -> tuple[float, int]:
    """statsmodels ``_autolag`` from the scaled R of the widest search regression.

    The k-column candidate has ``RSS_k = RSS_K + sum_{j >= k} z_j²`` and its last
    column the t-statistic ``sign(R_kk) z_k / sqrt(RSS_k / (nobs - k))``, with
    ``z = Q'y``. Near-ties (and t near the 1.645 stop) are refitted by exact_fit.
    """
    kmax = rs.shape[1] - 1
    maxlag = kmax - startlag
    ks = np.arange(startlag, kmax + 1)
    z = rs[:kmax, kmax] * ynorm
    tail = np.append(np.cumsum((z * z)[::-1])[::-1], 0.0)  # tail[j] = sum_{i>=j} z_i²
    rss = (rs[kmax, kmax] * ynorm) ** 2 + tail[ks]
    if method == "t-stat":
        signed = z[ks - 1] * np.sign(np.diag(rs)[ks - 1])
        tabs = {
            int(k): float(t)
            for k, t in zip(
                ks, np.abs(signed / np.sqrt(rss / (nobs - ks))), strict=True
            )
        }
        for k, t in tabs.items():
            if abs(t - TSTAT_STOP) <= TSTAT_TIE_TOL * TSTAT_STOP:
                tabs[k] = abs(float(exact_fit(k).tvalues[-1]))
        return _tstat_choice(tabs, startlag, maxlag)
    ics = _ic(rss, nobs, ks, method)
    best = int(np.argmin(ics))
    near = np.flatnonzero(ics - ics[best] <= TIE_TOL * (abs(ics[best]) + nobs))
    if near.size > 1:
        fits = [(exact_fit(int(ks[i])), int(ks[i])) for i in near]
        icbest, kbest = min((f.aic if method == "aic" else f.bic, k) for f, k in fits)
        return icbest, kbest - startlag
    return float(ics[best]), best


def _final_stat(
    r: np.ndarray,
    x: np.ndarray,
    xdiff: np.ndarray,
    maxlag: int,
    lag: int,
    ntrend: int,
    center: float,
) -> float | None:
    """Lagged-level t-statistic for ``lag`` lags on rows [lag, n - 1), from r.

    r is the R of the search regression on rows [maxlag, n - 1); the chosen model's
    columns of it, stacked on the ``maxlag - lag`` earlier rows, have the R of the
    chosen model on its own sample (QR is invariant to orthogonal row mixing). The
    trend keeps the search's origin: with a constant in the model a shifted trend
    spans the same space, so the level's t-statistic is unchanged. None: take
    statsmodels' path.
    """
    kmax = r.shape[1] - 1
    # columns [trend, lags 1..lag, level, y]: the level last, so t comes from R
    cols = [*range(ntrend), *range(ntrend + 1, ntrend + 1 + lag), ntrend, kmax]
    stacked = [r[:, cols]]
    if lag < maxlag:
        extra = _rows(x, xdiff, lag, maxlag, lag, ntrend, maxlag, center)
        order = [
            *range(ntrend),
            *range(ntrend + 1, ntrend + 1 + lag),
            ntrend,
            lag + ntrend + 1,
        ]
        stacked.append(extra[:, order])
    r2 = _triu_r(np.vstack(stacked))
    scaled = _scaled(r2)
    if scaled is None or not _well_posed(scaled[0]):
        return None
    k = r2.shape[1] - 1
    nobs = xdiff.shape[0] - lag
    s = abs(r2[k, k]) / math.sqrt(nobs - k)
    return float(np.sign(r2[k - 1, k - 1]) * r2[k - 1, k] / s)


def _adf_core(
    x: np.ndarray, regression: str, autolag: str | None, maxlag: int, what: str
) -> AdfOutcome:
    """ADF on a checked series with a feasible maxlag (statsmodels' adfuller steps)."""
    xdiff = np.diff(x)
    ntrend = _ntrend(regression)
    lo, hi = maxlag, xdiff.shape[0]
    # statsmodels drops "const" when a regressor column is a non-zero constant (a
    # series moving in exact equal steps); such data goes to statsmodels' path
    quirk = ntrend > 0 and _may_hold_constant_column(x, xdiff, maxlag)
    # shift the level by one of its values when a constant is in the model: the same
    # span, but no near-collinearity of a price (6e4 +- 5) with the constant
    center = float(x[(lo + hi) // 2]) if ntrend else 0.0
    r = None if quirk else _streamed_r(x, xdiff, lo, hi, maxlag, ntrend, center)
    scaled = None if r is None else _scaled(r)
    fast = scaled is not None and _well_posed(scaled[0])
    icbest: float | None = None
    usedlag = maxlag
    if autolag is not None:
        if not np.any(xdiff[lo:]):
            # every candidate fits exactly (RSS 0): statsmodels gets AIC = BIC = -inf
            # and t = 0 / 0 for all of them and so settles on lag 0
            icbest, usedlag = (math.nan if autolag == "t-stat" else -math.inf), 0
        elif fast:
            cache: dict[str, tuple] = {}

            def exact_fit(k: int) -> _ExactFit:
                if "full" not in cache:
                    cache["full"] = _search_full(x, xdiff, maxlag, regression)
                y, full, _ = cache["full"]
                return _exact_ols(y, full[:, :k])

            icbest, usedlag = _search_from_r(
                scaled[0], float(scaled[1][-1]), hi - lo, ntrend + 1, autolag, exact_fit
            )
        else:
            icbest, usedlag = _exact_search(x, xdiff, maxlag, regression, autolag)
    nobs = hi - usedlag
    if not np.any(xdiff[usedlag:]):
        raise InsufficientDataError(
            f"insufficient data: {what} does not change over the last {nobs} "
            "differences the ADF regression uses"
        )
    stat = None
    if r is not None and not quirk:
        stat = _final_stat(r, x, xdiff, maxlag, usedlag, ntrend, center)
    if stat is None:
        stat = _exact_stat(x, xdiff, usedlag, regression)
        if not math.isfinite(stat):
            raise InsufficientDataError(
                "insufficient data: the ADF regression is degenerate (exact fit), "
                "its t-statistic is undefined"
            )
    crit = mackinnoncrit(N=1, regression=regression, nobs=nobs)
    return AdfOutcome(
        stat=stat,
        pvalue=float(mackinnonp(stat, regression=regression, N=1)),
        usedlag=int(usedlag),
        nobs=int(nobs),
        critvalues={"1%": float(crit[0]), "5%": float(crit[1]), "10%": float(crit[2])},
        icbest=None if icbest is None else float(icbest),
        regression=regression,
        autolag=autolag,
        maxlag=int(maxlag),
    )


def _may_hold_constant_column(x: np.ndarray, xdiff: np.ndarray, maxlag: int) -> bool:
    """True if a level or lag column of some ADF regression could be constant non-zero.

    A lag column spans at least ``n - 1 - maxlag`` consecutive differences, so it can
    be constant only if the differences hold a run of equal values that long; the
    level can be constant only if x does not change over as many steps.
    """
    need = xdiff.shape[0] - maxlag - 1
    change = np.flatnonzero(np.diff(xdiff) != 0.0)
    edges = np.concatenate(([-1], change, [xdiff.shape[0] - 1]))
    return bool(np.max(np.diff(edges)) >= need)


# ---------------------------------------------------------------- public tests


def adf(
    x: object,
    *,
    regression: str = "c",
    autolag: str | None = "AIC",
    maxlag: int | None = None,
) -> AdfOutcome:
    """Augmented Dickey-Fuller unit-root test, equal to statsmodels ``adfuller``.

    Parameters
    ----------
    x : array_like, 1-D
        The series (finite values, in time order).
    regression : {"c", "ct", "ctt", "n"}, default "c"
        Deterministic terms: constant, constant and trend, plus quadratic trend, none.
    autolag : {"AIC", "BIC", "t-stat", None}, default "AIC"
        Lag choice among ``0..maxlag`` on the common sample of the ``maxlag``
        regression: smallest information criterion (ties to the smaller lag);
        "t-stat" walks down from ``maxlag`` to the first lag whose last difference
        has ``|t| >= 1.645``; ``None`` uses ``maxlag`` lags.
    maxlag : int or None, default None
        Largest lag; ``None`` means ``min(ceil(12 (n / 100) ** (1 / 4)),
        n // 2 - ntrend - 1)`` as statsmodels.

    Returns
    -------
    AdfOutcome
        Statistic, p-value, chosen lag, nobs, critical values, best criterion.

    Raises
    ------
    ValueError
        x not 1-D or not finite, unknown regression or autolag, negative maxlag.
    InsufficientDataError
        Fewer observations than :func:`adf_min_nobs` (``maxlag <= n // 2 - ntrend
        - 1`` as statsmodels, and one residual degree of freedom in every lag
        regression), a constant series, or no change in the regressed differences.

    Notes
    -----
    With ``dx_t = x_t - x_{t-1}`` and p lags, OLS of

        dx_t = gamma x_{t-1} + sum_{i=1..p} phi_i dx_{t-i} + d_t' delta + e_t,

    ``t = 1 .. n - 1 - p``, ``d_t`` the deterministic terms (1, t, t²); the statistic
    is ``gamma_hat / se(gamma_hat)``. The criteria are ``AIC = -2 llf + 2 k`` and
    ``BIC = -2 llf + log(m) k`` with ``llf = -m/2 (log(2 pi RSS / m) + 1)``, m rows,
    k regressors. All candidate RSS come from one QR (module docstring), so the
    search costs one regression instead of ``maxlag + 1``; the chosen lag is refitted
    on its own ``n - 1 - p`` rows, as statsmodels. Cost O(n maxlag²), with the default
    maxlag growing as n^(1/4): about 3 ms at 5 000 points, 0.4 s at 100 000.

    Minimum data: :func:`adf_min_nobs` (4 points for "c" with the default maxlag);
    a meaningful test wants a few hundred. When the search rows never change (a
    series that moved only at its start) every criterion is -inf, as in statsmodels:
    lag 0 is chosen and ``icbest`` is -inf ("aic", "bic") or NaN ("t-stat").

    Reference: statsmodels 0.15 ``adfuller``; MacKinnon (1994) p-values, MacKinnon
    (2010) critical values.
    """
    regression = _check_regression(regression, "regression")
    method = _check_autolag(autolag)
    lag = _check_maxlag(maxlag)
    arr = _as_series(x, "x")
    lag = _resolve_maxlag(arr.shape[0], regression, lag, "the ADF test")
    _check_not_constant(arr, "x")
    return _adf_core(arr, regression, method, lag, "x")


def _first_stage(
    y: np.ndarray, design: np.ndarray, trend: str
) -> tuple[float, float | None, np.ndarray, float]:
    """(beta, alpha, residuals, R^2) of the cointegrating regression.

    statsmodels' own arithmetic (``pinv_extended``: SVD, singular values below
    1e-15 of the largest dropped, ``params = pinv @ y``; R^2 against the centred
    sum of squares when there is a constant), without building an OLS model and
    its results, which cost twenty times the fit itself at a few hundred points
    (a pair scanner pays it hundreds of times).
    """
    u, s, vt = np.linalg.svd(design, full_matrices=False)
    s_inv = np.where(s > 1e-15 * s.max(), 1.0 / np.where(s > 0, s, 1.0), 0.0)
    pinv = np.dot(np.transpose(vt), np.multiply(s_inv[:, np.newaxis], np.transpose(u)))
    params = np.dot(pinv, y)
    resid = y - np.dot(design, params)
    ssr = float(np.dot(resid, resid))
    centred = y - y.mean() if trend != "n" else y
    tss = float(np.dot(centred, centred))
    rsquared = 1.0 - ssr / tss if tss > 0 else float("nan")
    alpha = None if trend == "n" else float(params[1])
    return float(params[0]), alpha, resid, rsquared


def coint(
    y: object,
    x: object,
    *,
    trend: str = "c",
    autolag: str | None = "aic",
    maxlag: int | None = None,
) -> CointOutcome:
    """Augmented Engle-Granger test of y on x, equal to statsmodels ``coint``.

    Parameters
    ----------
    y, x : array_like, 1-D, same length
        The two price series, aligned in time (finite values).
    trend : {"c", "ct", "ctt", "n"}, default "c"
        Deterministic terms of the cointegrating regression.
    autolag : {"AIC", "BIC", "t-stat", None}, default "aic"
        Lag choice of the residual ADF (see :func:`adf`).
    maxlag : int or None, default None
        Largest lag of the residual ADF; ``None`` for the default.

    Returns
    -------
    CointOutcome
        Statistic, p-value, critical values, residual ADF lag and nobs, beta, alpha.

    Raises
    ------
    ValueError
        Inputs not 1-D, not finite or of different lengths; unknown trend or autolag.
    InsufficientDataError
        Too short for the residual ADF (regression "n", :func:`adf_min_nobs`) or for
        the cointegrating regression (``ntrend + 2`` points), or y or x constant.

    Notes
    -----
    Step 1, OLS (statsmodels' pinv arithmetic, see ``_first_stage``) of
    ``y_t = beta x_t + alpha + ... + u_t``. If its
    R² is at least ``1 - 100 sqrt(eps)`` the statistic is ``-inf`` (p-value 0).
    Step 2, the ADF statistic of the residuals ``u_t`` without deterministic terms.
    The p-value uses MacKinnon's cointegration surfaces for N = 2 variables and the
    critical values ``nobs = len(y) - 1`` (as statsmodels, after Stata's egranger).
    Reference: statsmodels 0.15 ``coint``; Engle and Granger (1987).
    """
    trend = _check_regression(trend, "trend")
    method = _check_autolag(autolag)
    lag = _check_maxlag(maxlag)
    ya = _as_series(y, "y")
    xa = _as_series(x, "x")
    if ya.shape[0] != xa.shape[0]:
        raise ValueError(
            f"y and x must have the same length: got {ya.shape[0]} and {xa.shape[0]}"
        )
    n = ya.shape[0]
    need_first = _ntrend(trend) + 2
    if n < need_first:
        raise InsufficientDataError(
            f"insufficient data: have {n}, need {need_first} observations for the "
            f"cointegrating regression with trend={trend!r}",
            have=n,
            need=need_first,
        )
    lag = _resolve_maxlag(n, "n", lag, "the Engle-Granger residual ADF")
    _check_not_constant(ya, "y")
    _check_not_constant(xa, "x")
    design = (
        xa[:, None]
        if trend == "n"
        else np.column_stack([xa, _trend_block(xa[:, None], trend)])
    )
    # statsmodels' rank rule (matrix_rank of diag(s)): below full rank x is constant
    # to working precision beside the trend terms and beta is not determined
    sv = np.linalg.svd(design, compute_uv=False)
    rank = int(np.sum(sv > sv.max() * design.shape[1] * np.finfo(np.float64).eps))
    if rank < design.shape[1]:
        raise InsufficientDataError(
            f"insufficient data: x is numerically constant beside the trend terms "
            f"(have rank {rank}, need {design.shape[1]})",
            have=rank,
            need=design.shape[1],
        )
    beta, alpha, resid, rsquared = _first_stage(ya, design, trend)
    if trend == "n":
        crit = [np.nan] * 3
    else:
        crit = mackinnoncrit(N=2, regression=trend, nobs=n - 1)
    critvalues = {"1%": float(crit[0]), "5%": float(crit[1]), "10%": float(crit[2])}
    if rsquared >= COLLINEAR_RSQUARED:
        return CointOutcome(
            stat=-math.inf,
            pvalue=float(mackinnonp(-np.inf, regression=trend, N=2)),
            critvalues=critvalues,
            usedlag=None,
            nobs=None,
            beta=beta,
            alpha=alpha,
            trend=trend,
            autolag=method,
            maxlag=None,
            collinear=True,
        )
    _check_not_constant(resid, "the cointegrating residual")
    res = _adf_core(resid, "n", method, lag, "the cointegrating residual")
    return CointOutcome(
        stat=res.stat,
        pvalue=float(mackinnonp(res.stat, regression=trend, N=2)),
        critvalues=critvalues,
        usedlag=res.usedlag,
        nobs=res.nobs,
        beta=beta,
        alpha=alpha,
        trend=trend,
        autolag=method,
        maxlag=res.maxlag,
        collinear=False,
    )
