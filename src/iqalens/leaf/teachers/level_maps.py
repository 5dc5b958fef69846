"""The maps every metric-based teacher shares: a metric onto the 1..5 scale, a score onto five levels.

A metric teacher (NIQE + BRISQUE in :mod:`~iqalens.leaf.teachers.classical`, full-reference measures
in :mod:`~iqalens.leaf.teachers.fullref`) turns each measure into a score on the 1..5 quality scale
with a fitted monotone logistic, combines the scores, and spreads the combination over the five
levels with a Gaussian whose width grows as the measures disagree. These are those pieces, once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from iqalens.errors import InvalidInputError
from iqalens.leaf.judgments import LEVEL_SCORES

__all__ = ["LogisticMap", "fit_bounded_logistic", "fit_logistic", "level_distribution"]


@dataclass(frozen=True)
class LogisticMap:
    """Decreasing logistic q(m) = lo + (hi - lo) / (1 + exp((m - mid) / width))."""

    lo: float
    hi: float
    mid: float
    width: float

    def __call__(self, m: float | np.ndarray) -> np.ndarray:
        z = (np.asarray(m, dtype=np.float64) - self.mid) / self.width
        return self.lo + (self.hi - self.lo) * special.expit(-z)


def level_distribution(mu: float, sigma: float) -> np.ndarray:
    """N(mu, sigma^2) discretised onto the level scores 5..1 (in ``LEVELS`` order), open end bins."""
    if sigma <= 0:
        raise InvalidInputError(f"sigma must be positive, got {sigma}")
    upper = np.append(np.inf, LEVEL_SCORES[:-1] - 0.5)  # 5: [4.5, inf), 4: [3.5, 4.5), ...
    lower = np.append(LEVEL_SCORES[:-1] - 0.5, -np.inf)
    p = special.ndtr((upper - mu) / sigma) - special.ndtr((lower - mu) / sigma)
    p = np.clip(p, 0.0, None)
    return p / p.sum()


def _finite_pairs(metric: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (metric, MOS) pairs where both are finite; a fit needs at least 4 of them."""
    m = np.asarray(metric, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    ok = np.isfinite(m) & np.isfinite(y)
    m, y = m[ok], y[ok]
    if len(m) < 4:
        raise InvalidInputError(f"need at least 4 finite (metric, MOS) pairs to fit, got {len(m)}")
    return m, y


def fit_logistic(metric: np.ndarray, mos: np.ndarray) -> LogisticMap:
    """Least-squares decreasing logistic from metric values (lower = better) to MOS."""
    m, y = _finite_pairs(metric, mos)
    spread = float(np.std(m)) or 1.0

    def unpack(theta: np.ndarray) -> LogisticMap:
        # hi = lo + exp(.), width = exp(.): keeps the map decreasing during the search.
        return LogisticMap(
            float(theta[0]), float(theta[0] + math.exp(theta[1])), float(theta[2]), float(math.exp(theta[3]))
        )

    def residuals(theta: np.ndarray) -> np.ndarray:
        return unpack(theta)(m) - y

    start = np.array([y.min(), math.log(max(np.ptp(y), 1e-3)), float(np.median(m)), math.log(spread / 2)])
    res = optimize.least_squares(residuals, start, method="lm", max_nfev=5000)
    return unpack(res.x)


def fit_bounded_logistic(
    metric: np.ndarray, mos: np.ndarray, scale: tuple[float, float] = (1.0, 5.0)
) -> LogisticMap:
    """Least-squares decreasing logistic whose asymptotes stay within ``scale`` (widened by half a level).

    :func:`fit_logistic` leaves ``hi`` free; when the data cover only one tail of the sigmoid (a
    full-reference measure near its perfect value), it returns an exponential in disguise with
    ``hi`` in the millions. Bounding the asymptotes keeps every fitted map a readable S-curve on the
    quality scale, and its values inside the scale wherever the measure goes.
    """
    m, y = _finite_pairs(metric, mos)
    low, high = scale[0] - 0.5, scale[1] + 0.5
    spread = float(np.std(m)) or 1.0

    def residuals(theta: np.ndarray) -> np.ndarray:
        return LogisticMap(*(float(t) for t in theta))(m) - y

    start = np.array([max(low, y.min()), min(high, y.max()), float(np.median(m)), spread / 2])
    res = optimize.least_squares(
        residuals,
        start,
        bounds=([low, low, -np.inf, spread * 1e-4], [high, high, np.inf, np.inf]),
        method="trf",
        max_nfev=5000,
    )
    lo, hi, mid, width = (float(t) for t in res.x)
    return LogisticMap(min(lo, hi), max(lo, hi), mid, width)
