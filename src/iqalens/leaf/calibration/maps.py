"""Few-label calibration by a monotone map fitted on labelled points: the methods and ``auto``.

Mappings (``fit(x, y, method)``; fewest labelled points in :data:`MIN_POINTS`):

- ``linear``: ``y = slope * x + intercept`` (least squares).
- ``logistic4``: the VQEG logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``, fitted as in
  :func:`iqalens.evaluation.mapping.fit_logistic4`; when that falls back to a line, the calibrator is
  linear and its ``note`` says why.
- ``logistic5``: ``b1 * (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5`` (Sheikh et al. 2006), with
  b2 > 0 and b1, b4 of one sign (the sign of the data's rank correlation), so the map stays monotone.
- ``isotonic``: pool-adjacent-violators (:func:`scipy.optimize.isotonic_regression`) on the points
  sorted by score (equal scores pooled first), increasing or decreasing by the sign of the rank
  correlation; between the fitted points the map interpolates linearly, outside them it clamps to
  the end values (no extrapolation).
- ``auto``: the one of ``linear`` and ``logistic4`` with the lowest cross-validated RMSE on the
  labelled points (leave-one-out up to :data:`AUTO_LOO_MAX` points, else :data:`AUTO_FOLDS` seeded
  folds), ties to the simpler map. Why: with a few dozen labels of a weakly correlated score, the
  least-squares 4PL may be a near-step that maps almost every image to one asymptote;
  cross-validation sees that such a map does not generalise. Isotonic is not a candidate although it
  often wins on CV RMSE: its plateaus give one score to images the student ranks apart (the demo's 8
  photos came out as 3 distinct scores), and a calibration should not undo the student's ranking.
  The stored calibrator has the chosen kind; its ``extra["auto"]`` keeps every candidate's CV RMSE.

Every calibrator is a :class:`Calibrator`, the measures layer's
:class:`~iqalens.evaluation.mapping.MonotoneMap` (the fitting code lives there once): call it on an
array; ``to_dict``/``from_dict`` (and :func:`save_calibrator`/:func:`load_calibrator`) store it as
JSON in a run folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.evaluation.mapping import (
    MonotoneMap,
    fit_isotonic,
    fit_linear,
    fit_logistic4,
    fit_logistic5,
    paired_scores,
)
from iqalens.evaluation.metrics import rmse
from iqalens.leaf.names import AUTO_CANDIDATES
from iqalens.leaf.names import CALIBRATION_METHODS as METHODS
from iqalens.leaf.names import CALIBRATION_MIN_POINTS as MIN_POINTS
from iqalens.runs import write_json

#: Up to this many points ``auto`` cross-validates leave-one-out, above it with :data:`AUTO_FOLDS` folds.
AUTO_LOO_MAX = 60
AUTO_FOLDS = 10
#: A fitted calibration: the measures layer's monotone map (``extra`` carries the MOS scale and
#: ``auto``'s cross-validation). Kept under this name because it is the calibration API's.
Calibrator = MonotoneMap


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
        raise InvalidInputError(f"{p}: cannot read calibrator: {exc}") from exc


def _validate(x: ArrayLike, y: ArrayLike, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in MIN_POINTS:
        raise UnknownNameError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")
    xs, ys = paired_scores(x, y)
    need = MIN_POINTS[method]
    if xs.size < need:
        raise InvalidInputError(
            f"{method} calibration needs at least {need} labelled points, got {xs.size}; "
            "use a larger budget or a simpler mapping"
        )
    if np.ptp(xs) == 0.0:
        raise InvalidInputError("all scores are equal: no monotone map can be fitted from them")
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

    Raises :class:`~iqalens.errors.UnknownNameError` for an unknown method and
    :class:`~iqalens.errors.InvalidInputError` for fewer points than :data:`MIN_POINTS` asks,
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
