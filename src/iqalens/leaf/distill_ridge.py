"""Distillation in closed form: the student's linear head fitted by weighted ridge on stored features.

Why: with a frozen backbone and no augmentation a distillation run is a least-squares problem on fixed
features (:mod:`iqalens.leaf.ridge_head`). Solved exactly it needs no learning rate or step count, and
on the label-budget protocol it ranked far better than the AdamW head on the same features and targets
(docs/leaf_fr_teacher.md: label-free SRCC 0.49 -> 0.61). The penalty is chosen on the run's validation
split by how well the head ranks the held-out images as the teacher does (no human label is read);
the head is then refitted on train + val with that penalty, and the feature standardisation is folded
into its weights, so the saved student is an ordinary one (score, export, calibrate all work).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.distill_data import PointItem, SplitData
from iqalens.leaf.features import cache_features
from iqalens.leaf.ridge_head import LABEL_L2_GRID, RidgePath, distill_targets, fold_standardisation
from iqalens.leaf.ridge_head import ridge_distill as fit_ridge_head
from iqalens.leaf.student import Student
from iqalens.leaf.targets import TeacherTargets

#: Penalties the validation split chooses among (mean-loss units on standardised features).
DISTILL_L2_GRID: tuple[float, ...] = LABEL_L2_GRID
#: Fewest validation points for which the penalty is chosen on them (else ``fallback_l2`` is used).
MIN_VAL_POINTS = 5


def _targets(points: list[PointItem]) -> TeacherTargets:
    """Point-only teacher targets of ``points``, rows in their order (pairs are not fitted: the
    package's teachers derive them from the same point judgments)."""
    n = len(points)
    empty = np.zeros(0)
    return TeacherTargets(
        np.arange(n),
        np.array([p.probs for p in points], dtype=np.float64).reshape(n, 5),
        np.array([p.expected for p in points], dtype=np.float64),
        np.array([p.reliability for p in points], dtype=np.float64),
        np.zeros((0, 2), np.int64),
        empty,
        empty,
    )


def ridge_distill_student(
    student: Student,
    train: SplitData,
    val: SplitData,
    feature_dir: str | os.PathLike[str],
    *,
    l2: float | None = None,
    fallback_l2: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit ``student``'s head (in place) to the teacher's point judgments of ``train`` (+ ``val``).

    ``l2`` None chooses the penalty from :data:`DISTILL_L2_GRID` by the validation points' SRCC with
    the teacher's expected score (``fallback_l2`` when there are fewer than :data:`MIN_VAL_POINTS`);
    features are cached in ``feature_dir`` (one folder per student setting). Returns what was chosen
    and measured, for the run's metrics.
    """
    if not student.backbone_frozen:
        raise InvalidInputError("the ridge solver fits the head on stored features: freeze the backbone")
    if not train.points:
        raise InvalidInputError("no training point judgments: the ridge solver fits point judgments only")
    points = train.points + val.points
    paths = [p.path for p in points]
    feats = cache_features(
        paths, Path(feature_dir), student.config, hashes=[p.hash for p in points], progress=progress
    ).astype(np.float64)
    n_train = len(train.points)
    mean = feats[:n_train].mean(axis=0)
    std = feats[:n_train].std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    z = (feats - mean) / std

    selection: dict[str, float] = {}
    chosen = l2
    if chosen is None:
        if len(val.points) >= MIN_VAL_POINTS:
            rows, y, weights = distill_targets(_targets(train.points))
            path = RidgePath(z[:n_train][rows], y, weights)
            held = np.array([p.expected for p in val.points])
            for value in DISTILL_L2_GRID:
                coef, bias = path.solve(value)
                rho = srcc(z[n_train:] @ coef[:, 0] + bias[0], held)
                selection[f"{value:g}"] = float(rho) if np.isfinite(rho) else float("nan")
            finite = {k: v for k, v in selection.items() if np.isfinite(v)}
            chosen = float(max(finite, key=lambda k: finite[k])) if finite else fallback_l2
        else:
            chosen = fallback_l2
    head = fold_standardisation(fit_ridge_head(z, _targets(points), chosen), mean, std)
    student.head.load_state_dict(head.head.state_dict())  # type: ignore[union-attr]
    with torch.no_grad():
        fitted = student.head(torch.as_tensor(feats, dtype=torch.float32))[:, 0].double().numpy()
    expected = np.array([p.expected for p in points])
    return {
        "solver": "ridge",
        "l2": chosen,
        "l2_chosen_by": "given" if l2 is not None else ("val_srcc_vs_teacher" if selection else "fallback"),
        # of the head fitted on train alone (the saved head is refitted on train + val)
        "val_srcc_vs_teacher_per_l2": selection,
        "fit_srcc_vs_teacher": float(srcc(fitted, expected)),
        "fitted_points": len(points),
        "feature_dir": str(Path(feature_dir).resolve()),
    }
