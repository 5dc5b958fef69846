"""Label budgets: how many labels a budget means, and which images are drawn.

Label budgets (:func:`draw_budget`): a count (``50``, ``"50"``), a percentage (``"10%"``) or a
fraction (``0.1``); the subset is drawn with ``numpy.random.default_rng(seed)``, optionally stratified
over equal-count quantile bins of a score (the teacher's), with proportional allocation.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.leaf.names import CALIBRATION_METHODS as METHODS
from iqalens.leaf.names import CALIBRATION_MIN_POINTS as MIN_POINTS


def parse_budget(budget: int | float | str, n: int) -> int:
    """Number of labels a budget means for ``n`` images.

    An int or a digit string is a count; ``"P%"`` a percentage; a float in [0, 1] a fraction.
    Percentages and fractions round to the nearest count (halves up). A budget above ``n`` is an error.
    """
    if n < 0:
        raise InvalidInputError(f"n must be >= 0, got {n}")
    if isinstance(budget, bool):
        raise InvalidInputError(f"budget must be a count, a percentage or a fraction, got {budget!r}")
    if isinstance(budget, str):
        text = budget.strip()
        try:
            if text.endswith("%"):
                pct = float(text[:-1])
                if not 0.0 <= pct <= 100.0:
                    raise ValueError
                count = math.floor(n * pct / 100.0 + 0.5)
            else:
                count = int(text)
        except ValueError:
            raise InvalidInputError(
                f"budget {budget!r} is neither a count (e.g. 50) nor a percentage in [0, 100]%"
            ) from None
    elif isinstance(budget, int | np.integer):
        count = int(budget)
    elif isinstance(budget, float):
        if not 0.0 <= budget <= 1.0:
            raise InvalidInputError(
                f"a float budget is a fraction in [0, 1], got {budget}; write '{budget:g}%' for a percentage"
            )
        count = math.floor(n * budget + 0.5)
    else:
        raise InvalidInputError(f"budget must be a count, a percentage or a fraction, got {budget!r}")
    if count < 0:
        raise InvalidInputError(f"budget must be >= 0, got {budget!r}")
    if count > n:
        raise InvalidInputError(
            f"budget {budget!r} asks for {count} labels but only {n} images are available"
        )
    return count


def _allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Proportional allocation of ``k`` draws over strata (largest remainder, ties to earlier bins)."""
    quota = sizes * k / sizes.sum()
    take = np.minimum(np.floor(quota).astype(np.int64), sizes)
    left = k - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    for i in order:
        if left == 0:
            break
        if take[i] < sizes[i]:
            take[i] += 1
            left -= 1
    return take


def draw_budget(
    n: int,
    budget: int | float | str,
    seed: int = 0,
    strata: ArrayLike | None = None,
    n_bins: int = 5,
    method: str | None = None,
) -> np.ndarray:
    """Sorted indices of the images to label: a reproducible draw of ``budget`` out of ``n``.

    ``strata`` (one score per image, e.g. the teacher's expected score) splits the images into
    ``n_bins`` equal-count bins by rank and draws from each in proportion to its size, so a small
    budget still covers the whole quality range. ``method`` (a :data:`METHODS` name) makes a budget
    below what that mapping needs an error; budget 0 is allowed only without a method (label-free).
    """
    k = parse_budget(budget, n)
    if method is not None:
        if method not in MIN_POINTS:
            raise UnknownNameError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
        if k < MIN_POINTS[method]:
            raise InvalidInputError(
                f"budget {budget!r} gives {k} labels out of {n}; {method} calibration needs at least "
                f"{MIN_POINTS[method]}"
            )
    rng = np.random.default_rng(seed)
    if strata is None or k == 0:
        return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    s = np.asarray(strata, dtype=np.float64)
    if s.shape != (n,) or not np.all(np.isfinite(s)):
        raise InvalidInputError(f"strata must hold {n} finite scores, got shape {s.shape}")
    if n_bins < 1:
        raise InvalidInputError(f"n_bins must be >= 1, got {n_bins}")
    order = np.argsort(s, kind="stable")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = np.arange(n) * min(n_bins, n) // n
    sizes = np.bincount(bins)
    take = _allocate(sizes, k)
    picked = [rng.choice(np.flatnonzero(bins == b), size=int(t), replace=False) for b, t in enumerate(take)]
    return np.sort(np.concatenate(picked)).astype(np.int64)
