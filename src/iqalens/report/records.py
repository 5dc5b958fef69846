"""The report's records: each reportable result loaded into a typed record, with its provenance.

A record is what a section renderer draws: the run's numbers plus a :class:`Provenance` (command,
model, data, protocol, seed, versions and, where MOS enters, where the labels came from). Loaders in
:mod:`iqalens.report.perception_kinds` and :mod:`iqalens.report.leaf_kinds` build them from the typed
results the commands save (:mod:`iqalens.results`); a new kind of run may bring its own record class
(any subclass of :class:`Run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# -- provenance -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosSource:
    """Where the MOS labels behind a number came from; ``proxy`` is None when that is unknown."""

    note: str
    proxy: bool | None


@dataclass(frozen=True)
class Provenance:
    """What produced a run's numbers: the report prints this next to every section."""

    command: str
    model: str
    data: str
    protocol: str
    seed: int | None = None
    started: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    mos: MosSource | None = None


# -- runs -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One reportable result; ``name`` is its path relative to the folder the user named, ``kind`` the
    name of its entry in :data:`iqalens.report.kinds.REPORT_KINDS` (set when it is loaded)."""

    path: Path
    name: str
    provenance: Provenance
    kind: str = ""


@dataclass
class PerceptionRun(Run):
    """``iqalens perceive``: forced choice, per-site probes and semantic distance (``metrics.json``)."""

    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def forced_choice(self) -> dict[str, Any]:
        return self.metrics["forced_choice"]

    @property
    def probes(self) -> dict[str, Any]:
        return self.metrics["probes"]

    @property
    def semantic(self) -> dict[str, Any]:
        return self.metrics["semantic"]

    @property
    def model_id(self) -> str:
        return str(self.metrics.get("model_id", "?"))


@dataclass
class AlignRun(Run):
    """``iqalens align``: a fine-tuned model with the same diagnostics before and after training."""

    metrics: dict[str, Any] = field(default_factory=dict)
    before: PerceptionRun | None = None
    after: PerceptionRun | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    train_log: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TeacherJudgments:
    """One teacher and prompt version of a judgments store, with the reliabilities it gave."""

    teacher_id: str
    prompt_version: str
    point_reliability: np.ndarray
    pair_reliability: np.ndarray
    pairs_asked: int
    pairs_derived: int


@dataclass
class JudgmentsRun(Run):
    """A judgments store written by ``iqalens teach`` (an SQLite file)."""

    teachers: list[TeacherJudgments] = field(default_factory=list)


@dataclass
class DistillRun(Run):
    """``iqalens distill``: a student trained on a teacher's judgments (history of validation losses)."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalibrationRun(Run):
    """``iqalens calibrate``: a monotone map from raw student scores onto the MOS scale."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationRun(Run):
    """``iqalens evaluate``: correlations with MOS plus every prediction (``predictions.csv``)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    mos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class BudgetRun(Run):
    """The label-budget protocol: mean and std over seeds per (budget, arm) from ``summary.csv``."""

    summary: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreRun(Run):
    """The CSV or JSON output of ``iqalens score``."""

    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_failed: int = 0
    model: dict[str, Any] | None = None


@dataclass
class Collection:
    """Everything found: the runs in discovery order and what was passed over, with the reason."""

    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def of(self, kind: type[Run] | str) -> list[Any]:
        """The runs of one kind (a record class, or a kind name), in discovery order."""
        if isinstance(kind, str):
            return [r for r in self.runs if r.kind == kind]
        return [r for r in self.runs if type(r) is kind]
