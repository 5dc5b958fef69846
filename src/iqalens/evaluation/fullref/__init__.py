"""Full-reference (FR) quality measures: how far a distorted image is from its pristine reference.

Why they are here: on synthetic benchmarks the reference of every image is known, and FR measures
agree with human ratings far better than no-reference ones (published SRCCs on KADID-10k: MS-SSIM
about 0.82, FSIM/GMSD about 0.85, VSI about 0.88). The reference-aware LEAF teacher
(:mod:`iqalens.leaf.teachers.fullref`) maps a vector of them onto five quality levels.

Every measure is a function ``measure(reference, distorted) -> float`` of two RGB ``uint8`` arrays
(H x W x 3) of the same shape, a pure function of the arrays, registered in :data:`FR_METRICS` with
its direction (``higher`` or ``lower`` = better, the entry's ``direction`` extra). Each is checked
against its original implementation on the five TID2013 pairs of ``../shared/data/metric-reference``
(tests/test_fullref_ssim_gmsd_vif.py and tests/test_fullref_fsim_vsi_colour.py; per-metric agreement
and known deviations in docs/fullref_metrics.md). The published ``fsim`` values are FSIMc (``fsimc``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.registry import Registry

__all__ = ["FR_METRICS", "FRMeasure", "compute", "direction", "list_metrics"]

#: ``measure(reference, distorted) -> float`` on two RGB uint8 arrays of one shape.
FRMeasure = Callable[[np.ndarray, np.ndarray], float]

#: The full-reference measures by name; ``extra['direction']`` is ``higher`` or ``lower`` (= better).
FR_METRICS: Registry[Any] = Registry("full-reference metric")

_ENTRIES = (
    ("psnr", "iqalens.evaluation.fidelity:psnr", "higher", "peak signal-to-noise ratio (dB), RGB"),
    ("ssim", "iqalens.evaluation.fullref.ssim:ssim", "higher", "SSIM (Wang et al. 2004), luma"),
    ("ms_ssim", "iqalens.evaluation.fullref.ssim:ms_ssim", "higher", "multi-scale SSIM, luma"),
    ("gmsd", "iqalens.evaluation.fullref.gmsd:gmsd", "lower", "gradient magnitude similarity deviation"),
    ("vif", "iqalens.evaluation.fullref.vif:vif", "higher", "visual information fidelity"),
    ("fsim", "iqalens.evaluation.fullref.fsim:fsim", "higher", "feature similarity (luma FSIM)"),
    ("fsimc", "iqalens.evaluation.fullref.fsim:fsimc", "higher", "feature similarity with chroma (FSIMc)"),
    ("vsi", "iqalens.evaluation.fullref.vsi:vsi", "higher", "visual saliency-induced index"),
    (
        "ciede2000",
        "iqalens.evaluation.fullref.colour:ciede2000",
        "lower",
        "mean CIEDE2000 colour difference (sees colour, brightness and contrast changes)",
    ),
)
for _name, _target, _direction, _summary in _ENTRIES:
    FR_METRICS.register_lazy(_name, _target, _summary, direction=_direction)


def list_metrics() -> list[str]:
    """The registered measure names."""
    return [e.name for e in FR_METRICS]


def direction(name: str) -> str:
    """``higher`` or ``lower``: which way a measure's values mean better quality."""
    return FR_METRICS.entry(name).extra["direction"]


def compute(reference: np.ndarray, distorted: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The named measures of one (reference, distorted) pair; shapes must match."""
    if reference.shape != distorted.shape:
        raise InvalidInputError(
            f"reference and distorted image differ in size: {reference.shape} vs {distorted.shape}"
        )
    return {name: float(FR_METRICS.get(name)(reference, distorted)) for name in names}
