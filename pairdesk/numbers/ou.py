"""Ornstein-Uhlenbeck fit of a spread and Bertram's cost-aware trading bands.

Pure: arrays in, frozen results out. The spread is assumed to follow
dS = theta (mu - S) dt + sigma dW, observed every ``dt_s`` seconds (the bar
interval), so the same fit serves 1 s and 1 m bars and its numbers are per second.

References: the exact discretisation S_{t+dt} = mu + (S_t - mu) e^{-theta dt} + e,
Var e = sigma^2 (1 - e^{-2 theta dt}) / (2 theta); Bertram, W. K. (2010), "Analytic
solutions for optimal statistical arbitrage trading", Physica A 389, 2234-2243.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

OU_MIN_OBS = 30
# Bands are searched up to this many stationary standard deviations from the mean.
BERTRAM_MAX_BAND_SD = 6.0


@dataclass(frozen=True, slots=True)
class OUFit:
    """Maximum-likelihood Ornstein-Uhlenbeck parameters of a spread.

    Attributes
    ----------
    theta : mean-reversion speed, 1/second (a deviation decays as e^{-theta t}).
    mu : long-run mean, in spread units.
    sigma : diffusion, spread units per sqrt(second).
    sigma_eq : stationary standard deviation sigma / sqrt(2 theta), spread units.
    half_life_s : ln 2 / theta, seconds.
    dt_s : the observation interval used.
    n : transitions (pairs of consecutive finite values) in the likelihood.
    loglik : maximised conditional log-likelihood (given the first value).
    ok, message : False and the reason ("insufficient data: have n, need m", or no
        mean reversion) when the parameters are not defined; they are then NaN.
    """

    theta: float
    mu: float
    sigma: float
    sigma_eq: float
    half_life_s: float
    dt_s: float
    n: int
    loglik: float
    ok: bool = True
    message: str = ""


def _failed_fit(dt_s: float, n: int, message: str) -> OUFit:
    """An OUFit that says why it has no parameters."""
    nan = float("nan")
    return OUFit(nan, nan, nan, nan, nan, dt_s, n, nan, False, message)


def ou_fit(spread: Any, dt_s: float) -> OUFit:
    """Fit an Ornstein-Uhlenbeck process to a spread by maximum likelihood.

    Parameters
    ----------
    spread : array-like; a NaN breaks the chain (only consecutive finite values
        form transitions).
    dt_s : float > 0, seconds between observations (the bar interval).

    Returns
    -------
    OUFit
        Minimum data: 30 transitions and an AR coefficient strictly inside (0, 1).

    Notes
    -----
    Given S_{t-1}, S_t is normal with mean a + b S_{t-1} and variance v, where
    b = e^{-theta dt}, a = mu (1 - b), v = sigma^2 (1 - b^2) / (2 theta). The map
    (theta, mu, sigma) -> (a, b, v) is one-to-one for 0 < b < 1, so the exact
    conditional MLE is the least-squares fit of S_t on (1, S_{t-1}) with
    v = SSR / n, mapped back: theta = -ln b / dt, mu = a / (1 - b),
    sigma^2 = 2 theta v / (1 - b^2).
    """
    if not (isinstance(dt_s, (int, float)) and 0 < dt_s < math.inf):
        raise ValueError(f"dt_s must be a finite number > 0, got {dt_s!r}")
    s = np.asarray(spread, dtype="float64").reshape(-1)
    prev, cur = s[:-1], s[1:]
    keep = np.isfinite(prev) & np.isfinite(cur)
    prev, cur = prev[keep], cur[keep]
    n = int(prev.size)
    if n < OU_MIN_OBS:
        return _failed_fit(dt_s, n, f"insufficient data: have {n}, need {OU_MIN_OBS}")
    pc = prev - prev.mean()
    sxx = float(pc @ pc)
    if not sxx > 0:
        return _failed_fit(dt_s, n, f"insufficient data: constant over {n} points")
    b = float(pc @ (cur - cur.mean())) / sxx
    a = float(cur.mean() - b * prev.mean())
    resid = cur - a - b * prev
    v = float(resid @ resid) / n
    if not (0.0 < b < 1.0) or not v > 0:
        return _failed_fit(dt_s, n, f"no mean reversion: AR coefficient {b:.4f}")
    theta = -math.log(b) / dt_s
    sigma = math.sqrt(2.0 * theta * v / (1.0 - b * b))
    return OUFit(
        theta=theta,
        mu=a / (1.0 - b),
        sigma=sigma,
        sigma_eq=sigma / math.sqrt(2.0 * theta),
        half_life_s=math.log(2.0) / theta,
        dt_s=float(dt_s),
        n=n,
        loglik=-0.5 * n * (math.log(2.0 * math.pi * v) + 1.0),
    )


def expected_cycle_s(theta: float, sigma: float, band: float) -> float:
    """Expected time for the centred OU to go from -band to +band and back, seconds.

    Bertram (2010), eq. 9 with entry a = -band and exit m = +band:
    E[T] = (pi / theta) (erfi(m sqrt(theta) / sigma) - erfi(a sqrt(theta) / sigma))
    = (2 pi / theta) erfi(band sqrt(theta) / sigma).
    """
    from scipy import special  # imported when used: ~70 MB that every CLI run paid

    return 2.0 * math.pi / theta * float(special.erfi(band * math.sqrt(theta) / sigma))


@dataclass(frozen=True, slots=True)
class BertramBands:
    """Symmetric entry/exit levels maximising the expected return per unit time.

    Attributes
    ----------
    band : d, distance of both levels from mu (spread units).
    band_z : d / sigma_eq (in stationary standard deviations).
    lower, upper : mu - d and mu + d: buy the spread at or below ``lower`` and
        hold it until ``upper``, where it is sold and shorted until ``lower``.
    expected_trade_s : expected time from one level to the other (half a cycle).
    return_per_s : expected profit per second, net of costs, spread units:
        (2 d - cost) / expected_trade_s.
    cost : the round-trip cost used, spread units.
    ok, message : False and the reason when the fit is missing or no band beats the
        cost within 6 stationary standard deviations.
    """

    band: float
    band_z: float
    lower: float
    upper: float
    expected_trade_s: float
    return_per_s: float
    cost: float
    ok: bool = True
    message: str = ""


def bertram_bands(fit: OUFit, cost: float) -> BertramBands:
    """Cost-aware optimal symmetric bands for an OU spread (Bertram 2010).

    Parameters
    ----------
    fit : an ``OUFit`` with ``ok``.
    cost : round-trip transaction cost (open and close) in spread units, >= 0.

    Returns
    -------
    BertramBands
        The d in (cost / 2, 6 sigma_eq] maximising (2 d - cost) / E[T](d), with
        E[T] from ``expected_cycle_s`` (the closed form), found by a bounded scalar
        search (the objective is unimodal in d).

    Notes
    -----
    A cycle -d -> +d -> -d holds a long for one leg and a short for the other;
    each earns 2 d - cost, and by symmetry each lasts E[T] / 2 on average, so
    the return per unit time (2 d - cost) / (E[T] / 2) has the same maximiser as
    Bertram's one-trade-per-cycle objective.
    """
    if not (isinstance(cost, (int, float)) and 0 <= cost < math.inf):
        raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
    nan = float("nan")
    if not fit.ok:
        return BertramBands(
            nan, nan, nan, nan, nan, nan, float(cost), False, fit.message
        )
    hi = BERTRAM_MAX_BAND_SD * fit.sigma_eq
    lo = cost / 2.0
    if not lo < hi:
        msg = f"costs of {cost:.4g} exceed any band within 6 sd ({hi:.4g})"
        return BertramBands(nan, nan, nan, nan, nan, nan, float(cost), False, msg)

    from scipy import optimize  # imported when used (see expected_cycle_s)

    def loss(d: float) -> float:
        return -(2.0 * d - cost) / expected_cycle_s(fit.theta, fit.sigma, d)

    best = optimize.minimize_scalar(
        loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10 * hi}
    )
    d = float(best.x)
    trade_s = expected_cycle_s(fit.theta, fit.sigma, d) / 2.0
    return BertramBands(
        band=d,
        band_z=d / fit.sigma_eq,
        lower=fit.mu - d,
        upper=fit.mu + d,
        expected_trade_s=trade_s,
        return_per_s=(2.0 * d - cost) / trade_s,
        cost=float(cost),
    )
