"""Calibration without labels: the teacher's [0, 1] score mapped onto a MOS range.

Label-free mode (:func:`label_free`): the teacher's expected score e in [0, 1] (1 = certainly
excellent) is mapped onto the dataset's MOS range. Default ``linear``: ``low + e (high - low)``.
``quantile``: the empirical quantiles of the scores to be mapped are matched to uniform quantiles of
the range (or, when given, to the quantiles of a reference MOS sample, e.g. a published histogram).
Both clamp to the range.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from iqalens.datasets.manifest import MosScale
from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.leaf.calibration.maps import Calibrator


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
        raise InvalidInputError(f"MOS range must have low < high, got ({low}, {high})")
    if method == "linear":
        return Calibrator(
            "linear",
            {"slope": high - low, "intercept": low},
            note=f"label-free: teacher score [0, 1] mapped linearly onto MOS [{low:g}, {high:g}]",
            clip=(low, high),
        )
    if method != "quantile":
        raise UnknownNameError(f"label-free method must be 'linear' or 'quantile', got {method!r}")
    if scores is None:
        raise InvalidInputError("quantile label-free mapping needs the unlabelled scores")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size < 2 or not np.all(np.isfinite(s)) or np.ptp(s) == 0:
        raise InvalidInputError("quantile label-free mapping needs at least 2 finite, non-constant scores")
    q = np.linspace(0.0, 1.0, max(2, int(n_knots)))
    xs = np.quantile(s, q)
    if reference_mos is None:
        ys = low + q * (high - low)
        target = f"uniform over MOS [{low:g}, {high:g}]"
    else:
        ref = np.asarray(reference_mos, dtype=np.float64)
        if ref.ndim != 1 or ref.size < 2 or not np.all(np.isfinite(ref)):
            raise InvalidInputError("reference_mos must hold at least 2 finite values")
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
