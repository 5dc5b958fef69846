"""Few-label calibration: monotone maps from a student's (or teacher's) score to the human MOS scale.

A distilled student ranks images well but speaks the teacher's scale; a handful of MOS labels is
enough to fit a monotone map onto the human scale, because only a few parameters are learned.

Mappings (``fit(x, y, method)``; fewest labelled points in :data:`MIN_POINTS`):

- ``linear``: ``y = slope * x + intercept`` (least squares).
- ``logistic4``: the VQEG logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``, fitted as in
  :func:`iqalens.evaluation.mapping.fit_logistic4`; when that falls back to a line, the calibrator is
  linear and its ``note`` says why.
- ``logistic5``: ``b1 * (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5`` (Sheikh et al. 2006), with
  b2 > 0 and b1, b4 of one sign (the sign of the data's rank correlation), so the map stays monotone.
- ``isotonic``: pool-adjacent-violators (:func:`scipy.optimize.isotonic_regression`) on the points
  sorted by score (equal scores pooled first),
  increasing or decreasing by the sign of the rank correlation; between the fitted points the map
  interpolates linearly, outside them it clamps to the end values (no extrapolation).
- ``auto``: the one of ``linear`` and ``logistic4`` with the lowest cross-validated RMSE on the
  labelled points (leave-one-out up to :data:`AUTO_LOO_MAX` points, else :data:`AUTO_FOLDS` seeded
  folds), ties to the simpler map. Why: with a few dozen labels of a weakly correlated score, the
  least-squares 4PL may be a near-step that maps almost every image to one asymptote;
  cross-validation sees that such a map does not generalise. Isotonic is not a candidate although it
  often wins on CV RMSE: its plateaus give one score to images the student ranks apart (the demo's 8
  photos came out as 3 distinct scores), and a calibration should not undo the student's ranking.
  The stored calibrator has the chosen kind; its ``extra["auto"]`` keeps every candidate's CV RMSE.

Label-free mode (:func:`label_free`): the teacher's expected score e in [0, 1] (1 = certainly
excellent) is mapped onto the dataset's MOS range. Default ``linear``: ``low + e (high - low)``.
``quantile``: the empirical quantiles of the scores to be mapped are matched to uniform quantiles of
the range (or, when given, to the quantiles of a reference MOS sample, e.g. a published histogram).
Both clamp to the range.

Every calibrator is a :class:`Calibrator`, the measures layer's
:class:`~iqalens.evaluation.mapping.MonotoneMap` (the fitting code lives there once): call it on an
array; ``to_dict``/``from_dict`` (and :func:`save_calibrator`/:func:`load_calibrator`) store it as
JSON in a run folder.

Label budgets (:func:`draw_budget`): a count (``50``, ``"50"``), a percentage (``"10%"``) or a
fraction (``0.1``); the subset is drawn with ``numpy.random.default_rng(seed)``, optionally stratified
over equal-count quantile bins of a score (the teacher's), with proportional allocation.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from iqalens.datasets.manifest import MosScale
from iqalens.evaluation.mapping import (
    MonotoneMap,
    fit_isotonic,
    fit_linear,
    fit_logistic4,
    fit_logistic5,
    logistic5,
)
from iqalens.evaluation.metrics import rmse
from iqalens.leaf.names import AUTO_CANDIDATES
from iqalens.leaf.names import CALIBRATION_KINDS as KINDS
from iqalens.leaf.names import CALIBRATION_METHODS as METHODS
from iqalens.leaf.names import CALIBRATION_MIN_POINTS as MIN_POINTS
from iqalens.runs import write_json

#: Up to this many points ``auto`` cross-validates leave-one-out, above it with :data:`AUTO_FOLDS` folds.
AUTO_LOO_MAX = 60
AUTO_FOLDS = 10

#: A fitted calibration: the measures layer's monotone map (``extra`` carries the MOS scale and
#: ``auto``'s cross-validation). Kept under this name because it is the calibration API's.
Calibrator = MonotoneMap

__all__ = [
    "AUTO_FOLDS",
    "AUTO_LOO_MAX",
    "KINDS",
    "METHODS",
    "MIN_POINTS",
    "Calibrator",
    "draw_budget",
    "fit",
    "label_free",
    "load_calibrator",
    "logistic5",
    "parse_budget",
    "save_calibrator",
]


def save_calibrator(calibrator: Calibrator, path: str | os.PathLike[str]) -> Path:
    """Write ``calibrator`` as JSON (atomically) and return the path."""
    return write_json(path, calibrator.to_dict())


def load_calibrator(path: str | os.PathLike[str]) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator`; errors name the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        return Calibrator.from_dict(data)
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read calibrator: {exc}") from exc


# ---------------------------------------------------------------------------------------------------
# fitting


def _validate(x: ArrayLike, y: ArrayLike, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in MIN_POINTS:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"scores and MOS must be 1-D of equal length, got {xs.shape} and {ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("scores and MOS must be finite (found NaN or inf)")
    need = MIN_POINTS[method]
    if xs.size < need:
        raise ValueError(
            f"{method} calibration needs at least {need} labelled points, got {xs.size}; "
            "use a larger budget or a simpler mapping"
        )
    if np.ptp(xs) == 0.0:
        raise ValueError("all scores are equal: no monotone map can be fitted from them")
    return xs, ys


def _logistic4(x: np.ndarray, y: np.ndarray) -> Calibrator:
    res = fit_logistic4(x, y)
    if res.kind != "logistic4":
        return fit_linear(x, y, f"logistic4 requested: {res.note}")
    return res


def _cv_rmse(x: np.ndarray, y: np.ndarray, method: str, folds: list[np.ndarray]) -> float:
    """RMSE of ``method``'s predictions of each held-out fold from a fit on the other points."""
    pred = np.empty_like(y)
    for held in folds:
        keep = np.ones(y.size, dtype=bool)
        keep[held] = False
        if np.ptp(x[keep]) == 0.0:  # the training part has one score: the map is undefined
            return math.inf
        pred[held] = fit(x[keep], y[keep], method)(x[held])
    return rmse(pred, y)


def _auto(x: np.ndarray, y: np.ndarray) -> Calibrator:
    n = x.size
    if n <= AUTO_LOO_MAX:
        folds = [np.array([i]) for i in range(n)]
        scheme = "leave-one-out"
    else:
        order = np.random.default_rng(0).permutation(n)
        folds = list(np.array_split(order, AUTO_FOLDS))
        scheme = f"{AUTO_FOLDS}-fold (seed 0)"
    usable = [m for m in AUTO_CANDIDATES if n - max(map(len, folds)) >= MIN_POINTS[m]]
    rmse = {m: _cv_rmse(x, y, m, folds) for m in usable}
    best = min(usable, key=lambda m: (round(rmse[m], 12), usable.index(m)))
    chosen = fit(x, y, best)
    summary = ", ".join(f"{m} {v:.4g}" for m, v in rmse.items())
    note = f"auto: {chosen.kind} by {scheme} CV RMSE ({summary})"
    if chosen.note:
        note += f"; {chosen.note}"
    return Calibrator(
        chosen.kind,
        chosen.params,
        chosen.n_fit,
        note,
        chosen.clip,
        {
            **chosen.extra,
            "auto": {
                "cv": scheme,
                "cv_rmse": {m: (v if math.isfinite(v) else None) for m, v in rmse.items()},
                "chosen": best,
            },
        },
    )


def fit(x: ArrayLike, y: ArrayLike, method: str = "logistic4") -> Calibrator:
    """Fit a monotone map from scores ``x`` to MOS ``y`` (see the module docstring for methods).

    Raises :class:`ValueError` for an unknown method, fewer points than :data:`MIN_POINTS` asks,
    non-finite values, or constant scores.
    """
    xs, ys = _validate(x, y, method)
    if method == "linear":
        return fit_linear(xs, ys)
    if method == "logistic4":
        return _logistic4(xs, ys)
    if method == "logistic5":
        return fit_logistic5(xs, ys)
    if method == "auto":
        return _auto(xs, ys)
    return fit_isotonic(xs, ys)


# ---------------------------------------------------------------------------------------------------
# label-free mode


def label_free(
    mos_range: tuple[float, float] | MosScale,
    method: str = "linear",
    scores: ArrayLike | None = None,
    reference_mos: ArrayLike | None = None,
    n_knots: int = 101,
) -> Calibrator:
    """Map the teacher's expected-score scale [0, 1] onto a MOS range without any labels.

    ``linear`` (default) needs nothing else. ``quantile`` needs ``scores`` (the unlabelled scores that
    will be mapped) and matches their ``n_knots`` quantiles to uniform quantiles of the range, or to
    those of ``reference_mos`` when a reference MOS sample is known; this spreads scores that the
    teacher crowds into part of its scale.
    """
    low, high = (mos_range.low, mos_range.high) if isinstance(mos_range, MosScale) else mos_range
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"MOS range must have low < high, got ({low}, {high})")
    if method == "linear":
        return Calibrator(
            "linear",
            {"slope": high - low, "intercept": low},
            note=f"label-free: teacher score [0, 1] mapped linearly onto MOS [{low:g}, {high:g}]",
            clip=(low, high),
        )
    if method != "quantile":
        raise ValueError(f"label-free method must be 'linear' or 'quantile', got {method!r}")
    if scores is None:
        raise ValueError("quantile label-free mapping needs the unlabelled scores")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)) or np.ptp(s) == 0:
        raise ValueError("quantile label-free mapping needs at least 2 finite, non-constant scores")
    q = np.linspace(0.0, 1.0, max(2, int(n_knots)))
    xs = np.quantile(s, q)
    if reference_mos is None:
        ys = low + q * (high - low)
        target = f"uniform over MOS [{low:g}, {high:g}]"
    else:
        ref = np.asarray(reference_mos, dtype=np.float64)
        if ref.ndim != 1 or ref.size < 2 or not np.all(np.isfinite(ref)):
            raise ValueError("reference_mos must hold at least 2 finite values")
        ys = np.clip(np.quantile(ref, q), low, high)
        target = f"quantiles of a reference MOS sample (n={ref.size})"
    # repeated score quantiles would make np.interp ambiguous: keep one knot per score value
    xs, first = np.unique(xs, return_index=True)
    return Calibrator(
        "quantile",
        {"xs": xs.tolist(), "ys": ys[first].tolist()},
        note=f"label-free: score quantiles (n={s.size}) matched to {target}",
        clip=(low, high),
    )


# ---------------------------------------------------------------------------------------------------
# label budgets


def parse_budget(budget: int | float | str, n: int) -> int:
    """Number of labels a budget means for ``n`` images.

    An int or a digit string is a count; ``"P%"`` a percentage; a float in [0, 1] a fraction.
    Percentages and fractions round to the nearest count (halves up). A budget above ``n`` is an error.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if isinstance(budget, bool):
        raise ValueError(f"budget must be a count, a percentage or a fraction, got {budget!r}")
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
            raise ValueError(
                f"budget {budget!r} is neither a count (e.g. 50) nor a percentage in [0, 100]%"
            ) from None
    elif isinstance(budget, int | np.integer):
        count = int(budget)
    elif isinstance(budget, float):
        if not 0.0 <= budget <= 1.0:
            raise ValueError(
                f"a float budget is a fraction in [0, 1], got {budget}; write '{budget:g}%' for a percentage"
            )
        count = math.floor(n * budget + 0.5)
    else:
        raise ValueError(f"budget must be a count, a percentage or a fraction, got {budget!r}")
    if count < 0:
        raise ValueError(f"budget must be >= 0, got {budget!r}")
    if count > n:
        raise ValueError(f"budget {budget!r} asks for {count} labels but only {n} images are available")
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
            raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
        if k < MIN_POINTS[method]:
            raise ValueError(
                f"budget {budget!r} gives {k} labels out of {n}; {method} calibration needs at least "
                f"{MIN_POINTS[method]}"
            )
    rng = np.random.default_rng(seed)
    if strata is None or k == 0:
        return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    s = np.asarray(strata, dtype=np.float64)
    if s.shape != (n,) or not np.all(np.isfinite(s)):
        raise ValueError(f"strata must hold {n} finite scores, got shape {s.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    order = np.argsort(s, kind="stable")
    bins = np.empty(n, dtype=np.int64)
    bins[order] = np.arange(n) * min(n_bins, n) // n
    sizes = np.bincount(bins)
    take = _allocate(sizes, k)
    picked = [rng.choice(np.flatnonzero(bins == b), size=int(t), replace=False) for b, t in enumerate(take)]
    return np.sort(np.concatenate(picked)).astype(np.int64)
