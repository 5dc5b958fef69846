"""What a teacher says about images and pairs, and the formulas that turn raw outputs into it.

A point-wise judgment is a probability over five quality levels plus two numbers derived from it:
the expected score and a reliability. A pair-wise judgment is the probability that the first image
of an ordered pair is better, with a reliability. The formulas live here, once, so every backend
(HF model, inference server, classical metrics) produces comparable judgments:

- expected score  e = (sum_i p_i * s_i - 1) / 4 with level scores s = 5, 4, 3, 2, 1
  (excellent .. bad), so e is in [0, 1] and 1 means "certainly excellent";
- point reliability r = 1 - H(p) / ln 5 (H = Shannon entropy): 1 for a one-hot answer, 0 for a
  uniform one;
- pair probability from both orders: p = (p_ab + 1 - p_ba) / 2, where p_ab = P(first better) asked
  as (a, b) and p_ba the same asked as (b, a); this cancels a constant position bias;
- pair reliability r = c * d with order consistency c = 1 - |p_ab - (1 - p_ba)| and decisiveness
  d = |2p - 1|: a teacher that flips with the order, or cannot decide, gives little signal;
- pair derived from two point judgments (Thurstone case V on the level distributions):
  p = Phi((mu_a - mu_b) / sqrt(var_a + var_b + eps)) with mu, var the mean and variance of the level
  score under each distribution; reliability = sqrt(r_a * r_b) * |2p - 1|; marked ``derived``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iqalens.errors import InvalidInputError

#: The five quality levels, best first, as the prompts name them.
LEVELS: tuple[str, ...] = ("excellent", "good", "fair", "poor", "bad")
#: Score of each level (excellent = 5 .. bad = 1).
LEVEL_SCORES = np.array([5.0, 4.0, 3.0, 2.0, 1.0])

_EPS = 1e-9


@dataclass(frozen=True)
class PointJudgment:
    """A teacher's judgment of one image."""

    probs: tuple[float, float, float, float, float]  # over LEVELS, sums to 1
    expected: float  # in [0, 1]
    reliability: float  # in [0, 1]

    @classmethod
    def from_probs(cls, probs: Sequence[float]) -> PointJudgment:
        """Normalise ``probs`` (non-negative, over LEVELS) and derive expected score and reliability."""
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (5,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
            raise InvalidInputError(f"need 5 non-negative level probabilities, got {list(probs)}")
        p = p / p.sum()
        return cls(
            probs=tuple(float(v) for v in p),  # type: ignore[arg-type]
            expected=expected_score(p),
            reliability=point_reliability(p),
        )

    @classmethod
    def from_logits(cls, logits: Sequence[float]) -> PointJudgment:
        """Softmax over the five level logits (e.g. a model's next-token log-probabilities)."""
        z = np.asarray(logits, dtype=np.float64)
        z = np.exp(z - np.max(z))
        return cls.from_probs(z)

    def mean_variance(self) -> tuple[float, float]:
        """Mean and variance of the level score (1..5) under ``probs``."""
        p = np.asarray(self.probs)
        mu = float(p @ LEVEL_SCORES)
        return mu, float(p @ (LEVEL_SCORES - mu) ** 2)


@dataclass(frozen=True)
class PairJudgment:
    """A teacher's preference for an ordered pair (a, b)."""

    p_first_better: float
    reliability: float
    p_ab: float  # P(first better) asked in the order (a, b); NaN when derived
    p_ba: float  # P(first better) asked in the order (b, a); NaN when derived
    derived: bool = False

    @classmethod
    def from_orders(cls, p_ab: float, p_ba: float) -> PairJudgment:
        """Combine the answers of both presentation orders (see module docstring)."""
        for v in (p_ab, p_ba):
            if not 0.0 <= v <= 1.0 or math.isnan(v):
                raise InvalidInputError(f"pair probabilities must be in [0, 1], got {p_ab}, {p_ba}")
        p = (p_ab + 1.0 - p_ba) / 2.0
        consistency = 1.0 - abs(p_ab - (1.0 - p_ba))
        return cls(p, consistency * abs(2.0 * p - 1.0), p_ab, p_ba, derived=False)

    @classmethod
    def from_points(cls, a: PointJudgment, b: PointJudgment) -> PairJudgment:
        """Thurstone case V preference from two point judgments (marked ``derived``)."""
        mu_a, var_a = a.mean_variance()
        mu_b, var_b = b.mean_variance()
        z = (mu_a - mu_b) / math.sqrt(var_a + var_b + 1e-3)
        p = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
        reliability = math.sqrt(a.reliability * b.reliability) * abs(2.0 * p - 1.0)
        return cls(p, reliability, math.nan, math.nan, derived=True)


def expected_score(p: np.ndarray) -> float:
    """(sum p_i s_i - 1) / 4, in [0, 1]."""
    return float((np.asarray(p) @ LEVEL_SCORES - 1.0) / 4.0)


def point_reliability(p: np.ndarray) -> float:
    """1 - H(p) / ln 5."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0)
    entropy = float(-(np.asarray(p) * np.log(q)).sum())
    return float(min(1.0, max(0.0, 1.0 - entropy / math.log(5.0))))
