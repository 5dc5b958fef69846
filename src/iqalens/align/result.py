"""The typed result of ``iqalens align``: what a finished align run's ``metrics.json`` holds.

Saved by :func:`iqalens.align.run.run_align` with :func:`iqalens.results.write_result` (kind
``align``, version 1) once training and, if asked for, the before/after diagnostics are done; the
interim ``metrics.json`` that training writes first carries no kind (an unfinished run). The
before/after diagnostics themselves are ``perceive`` results in ``before/`` and ``after/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["AlignResult"]


@dataclass(kw_only=True)
class AlignResult:
    """One fine-tuning run: what was trained, how, and the headline numbers before and after."""

    KIND: ClassVar[str] = "align"
    VERSION: ClassVar[int] = 1

    model_id: str | None = None
    base_model: str | None = None
    base_model_id: str | None = None
    base_checkpoint_id: str | None = None
    checkpoint: str | None = None
    train: list[str] = field(default_factory=list)
    lora: list[str] = field(default_factory=list)
    objectives: dict[str, Any] = field(default_factory=dict)
    constraint: str | None = None
    steps_run: int | None = None
    stopped_early: bool | None = None
    best_step: int | None = None
    best_val_accuracy: float | None = None
    val_accuracy_before: float | None = None
    trainable_parameters: int | None = None
    frozen_unchanged: dict[str, bool] = field(default_factory=dict)
    precision: str | None = None
    world_size: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    #: whether the before/after diagnostics were run
    report: bool | None = None
    #: forced-choice and semantic headline of ``before/`` and ``after/`` (None without the report)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: how much of the encoder the constraint kept (ImageNet agreement, feature cosine)
    drift: dict[str, Any] | None = None
    complete: bool = False
