"""The typed results of LEAF's run folders: what each one's ``metrics.json`` holds.

``distill`` (:class:`DistillResult`), ``calibrate`` with any method, the head fine-tune included
(:class:`CalibrationResult`), ``evaluate`` (:class:`EvaluationResult`) and the label-budget protocol
(:class:`BudgetResult`) save these with :func:`iqalens.results.write_result`; ``iqalens report``
reads them by kind. A light module (no torch) so that readers need not import the trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from iqalens.results import optional

__all__ = ["BudgetResult", "CalibrationResult", "DistillResult", "EvaluationResult"]


@dataclass(kw_only=True)
class DistillResult:
    """A student distilled from a teacher's judgments (:func:`iqalens.leaf.distill.distill`)."""

    KIND: ClassVar[str] = "distill"
    VERSION: ClassVar[int] = 1

    steps: int
    stopped_early: bool = False
    best_step: int | None = None
    best_val_loss: float | None = None
    #: losses and agreement with the teacher on the validation split after training
    val: dict[str, Any] = field(default_factory=dict)
    #: one entry per validation: step, train loss and the validation measures
    history: list[dict[str, Any]] = field(default_factory=list)
    #: counts of images, points and pairs per split
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    #: the closed-form fit of ``solver="ridge"`` (penalty, how it was chosen, agreement), else None
    ridge: dict[str, Any] | None = None


@dataclass(kw_only=True)
class CalibrationResult:
    """A calibrated student: the map from raw scores onto the MOS scale and the labels it used.

    ``calibrate --method finetune`` also records the fields marked optional; other methods leave them
    out of the file.
    """

    KIND: ClassVar[str] = "calibrate"
    VERSION: ClassVar[int] = 1

    method: str | None = optional()
    labels_available: int | None = None
    labels_used: int | None = None
    used_paths: list[str] = field(default_factory=list)
    #: :meth:`iqalens.leaf.calibration.Calibrator.to_dict`
    calibration: dict[str, Any] = field(default_factory=dict)
    trained: str | None = optional()
    teacher_points: int | None = optional()
    teacher_pairs: int | None = optional()
    pool_unlabelled_before: dict[str, Any] | None = optional()
    pool_unlabelled_after: dict[str, Any] | None = optional()
    seconds: float | None = optional()


@dataclass(kw_only=True)
class EvaluationResult:
    """Predictions compared with MOS (:func:`iqalens.evaluation.metrics.evaluate` plus counts)."""

    KIND: ClassVar[str] = "evaluate"
    VERSION: ClassVar[int] = 1

    images: int | None = None
    unreadable: list[str] = field(default_factory=list)
    #: where the MOS came from (the manifest's proxy note, or "MOS as given by the manifest")
    mos_note: str | None = None
    n: int | None = None
    metrics: dict[str, Any]
    ci: dict[str, Any] = field(default_factory=dict)
    ci_level: float = 0.95
    #: why there are no intervals (too few groups to resample), or None
    ci_unavailable: str | None = None
    n_boot: int | None = None
    resampling: str | None = None
    fit: dict[str, Any] | None = None
    per_source: dict[str, Any] = field(default_factory=dict)
    #: per distortion type of the manifest (:mod:`iqalens.evaluation.by_distortion`), worst first;
    #: empty when the manifest names no types
    per_distortion: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class BudgetResult:
    """The label-budget protocol's headline (:func:`iqalens.leaf.label_budget.headline`); the full tables
    are ``summary.csv``, ``rows.csv`` and ``results.json`` next to it."""

    KIND: ClassVar[str] = "budget"
    VERSION: ClassVar[int] = 1

    #: budget -> {"n_labels", arm -> mean/std per metric and n_seeds, or {"status": "undefined"}}
    by_budget: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    #: the curve files written next to it (absent when plots were turned off)
    plots: list[str] | None = optional()
