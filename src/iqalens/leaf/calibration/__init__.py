"""Few-label calibration: monotone maps from a student's (or teacher's) score to the human MOS scale.

A distilled student ranks images well but speaks the teacher's scale; a handful of MOS labels is
enough to fit a monotone map onto the human scale, because only a few parameters are learned.

The calibration API, one package by concern:

- :mod:`~iqalens.leaf.calibration.maps`: :func:`fit` (``linear``, ``logistic4``, ``logistic5``,
  ``isotonic``, ``auto``) and the stored map, :class:`Calibrator` (the measures layer's
  :class:`~iqalens.evaluation.mapping.MonotoneMap`), with :func:`save_calibrator`/:func:`load_calibrator`;
- :mod:`~iqalens.leaf.calibration.label_free_map`: :func:`label_free`, the map without labels (linear or
  quantile);
- :mod:`~iqalens.leaf.calibration.budgets`: :func:`parse_budget` and :func:`draw_budget`, which labels a
  budget buys;
- :mod:`~iqalens.leaf.calibration.finetune`: calibration mode (b), the head fine-tune on a few labels
  regularised by the teacher (``iqalens calibrate --method head-finetune``);
- :mod:`~iqalens.leaf.calibration.workflow`: :func:`~iqalens.leaf.calibration.workflow.calibrate_run`,
  the run folder of ``iqalens calibrate`` (mode (a)).

The last two import torch and the scorer, so this package's face does not import them: use
``from iqalens.leaf.calibration.workflow import calibrate_run``.
"""

from __future__ import annotations

from iqalens.evaluation.mapping import logistic5
from iqalens.leaf.calibration.budgets import draw_budget, parse_budget
from iqalens.leaf.calibration.label_free_map import label_free
from iqalens.leaf.calibration.maps import (
    AUTO_FOLDS,
    AUTO_LOO_MAX,
    Calibrator,
    fit,
    load_calibrator,
    save_calibrator,
)
from iqalens.leaf.names import CALIBRATION_KINDS as KINDS
from iqalens.leaf.names import CALIBRATION_METHODS as METHODS
from iqalens.leaf.names import CALIBRATION_MIN_POINTS as MIN_POINTS

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
