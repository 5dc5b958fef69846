"""Where a quality model fails: its errors per distortion type of a synthetic benchmark.

One SRCC over thousands of images hides which distortions a model cannot see. On the label-budget
benchmark the label-free student ranked blur, noise and compression within their type at 0.7-0.8 but
desaturation, mean shift and contrast change at 0.1-0.2, and rated clean photos a full MOS point
too low (docs/leaf_fr_teacher.md): a table per type says what to fix (the crop, the features, the
teacher) where the overall number only says "0.65".

The labels are the caller's (``iqalens.datasets.distortion_names.distortion_label`` turns a
manifest's type ids into names). For each type: the SRCC *within* it (its levels and contents; how
well the model orders that distortion's severity), and the mean error and RMSE after the map the
overall evaluation fitted (so a raw, uncalibrated score is read on the MOS scale too; a positive
mean error = the type is rated better than its MOS).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from iqalens.evaluation.metrics import srcc

#: Fewest images of a type for its within-type SRCC (fewer: NaN, the errors are still given).
MIN_TYPE_IMAGES = 3


def distortion_breakdown(
    pred: Sequence[float] | np.ndarray,
    mos: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    mapping: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per label: ``n``, ``srcc`` within it (None when undefined: fewer than :data:`MIN_TYPE_IMAGES`
    images or a constant side), ``mean_error`` and ``rmse`` of ``mapping(pred)`` against ``mos``
    (``mapping`` None: the predictions as given). Ordered worst first (by RMSE)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    names = np.asarray(labels, dtype=str)
    if not x.shape == y.shape == names.shape:
        raise ValueError("pred, mos and labels need one entry per image")
    mapped = np.asarray(mapping(x), dtype=np.float64) if mapping is not None else x
    out: dict[str, dict[str, Any]] = {}
    for name in np.unique(names):
        mask = names == name
        err = mapped[mask] - y[mask]
        rho = srcc(x[mask], y[mask]) if mask.sum() >= MIN_TYPE_IMAGES else math.nan
        out[str(name)] = {
            "n": int(mask.sum()),
            "srcc": float(rho) if np.isfinite(rho) else None,  # JSON-ready: undefined is None
            "mean_error": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err**2))),
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["rmse"]))
