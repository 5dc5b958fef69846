"""The label-budget experiment: LEAF (distil, then calibrate) vs a student trained on the labels alone.

The question the LEAF paper asks is how many human labels a teacher saves. This package answers it on
any manifest with MOS (for the synthetic benchmark: the KADID-10k *proxy* MOS, always named as a proxy)
and a teacher's judgments in a :class:`~iqalens.leaf.store.JudgmentStore`.

**Data.** Images of the manifest's ``train`` split are the pool: all of them are *unlabelled* for the
teacher arm, and the label budget is drawn from them. Images of the ``test`` split are only scored.
``val`` rows (and rows without MOS) are not used. Train and test must be *content-disjoint*: no
content group (the manifest's ``reference``: every distorted version of one photo) may appear in both,
otherwise :class:`BudgetData` refuses (a distorted copy of a training photo is not new content).
:func:`split_by_group` makes such a split for data without one.

**Arms**, for every budget b (a count, ``"P%"`` or a fraction of the train pool, drawn by
:func:`iqalens.leaf.calibration.draw_budget` with the repetition's seed, optionally stratified by the
teacher's expected score) and every seed:

- ``leaf`` (calibration mode (a)): a head distilled from the teacher's point and pair judgments on the
  train pool (:class:`~iqalens.leaf.losses.JointLoss`, no labels), then a monotone map fitted on the b
  labelled images (:func:`iqalens.leaf.calibration.fit`, default ``logistic4``; a simpler ``linear``
  map when b is below what the method needs; b = 0 uses :func:`~iqalens.leaf.calibration.label_free`).
  A monotone map cannot change the ranking, so this arm's SRCC does not depend on b (except through
  ties of the isotonic map); PLCC and RMSE do.
- ``leaf_ft`` (calibration mode (b)): the distilled head fine-tuned on the b labelled images,
  ``L = mean_i (s_i - y_i)^2 + lambda * L_distill`` with ``y = (MOS - low) / (high - low)`` on the
  MOS scale's range and ``L_distill`` the joint distillation loss on the teacher's judgments of the
  train pool, kept as a regulariser; the prediction is ``low + s (high - low)``. By default the
  regulariser keeps the KL and pair terms but drops the score regression to the teacher's expected
  score (``LossConfig(w_reg=0)``), which would pull the same output towards the teacher's scale.
  At b = 0 there is nothing to fine-tune on: the row is the label-free map of ``leaf`` and says so.
- ``labels_only``: the same head (same architecture, initialisation, optimiser and number of steps),
  trained from scratch by regression of its score on ``y`` of the b labelled images alone; prediction
  ``low + s (high - low)``. **At b < 2 it is undefined** (nothing to regress on; one label fixes no
  direction): the protocol does not train it and reports the row with status ``undefined`` and NaN
  metrics, and :func:`train_labels_only` raises :class:`ValueError` if asked.

Each (budget, seed) shares one labelled subset between the arms (a paired comparison); the distilled
head depends only on the seed. Every head training adds ``l2 * sum(W^2)`` on the head's weights; with
``HeadConfig.l2_candidates`` (the default protocol's :data:`DEFAULT_L2_CANDIDATES`) ``l2`` is chosen per
seed *without labels* by :func:`select_l2` (how well a head distilled on three quarters of the train
photos ranks the held-out quarter as the teacher does) and shared by every arm of that seed.

Metrics on the test split: SRCC, PLCC and RMSE of the predicted MOS
(raw, no further fitting, so calibration quality shows in PLCC/RMSE). Summaries are mean and sample
standard deviation (ddof = 1) over seeds.

**Cached features - a CPU-budget protocol.** Both arms share the *frozen* backbone of the default
student (EfficientNet-Lite0, ImageNet weights, centre crop of the student's preprocessing) and train
only the head (dropout + ``Linear(d, 6)``, the :class:`~iqalens.leaf.student.Student` head layout:
output 0 the score, 1..5 the level logits) on its pooled features (``student_config.pooling``: the last
map's mean, or with ``"multiscale"`` also mean and std of earlier stages), computed once per image and
stored as ``<content hash>.npy`` (:func:`iqalens.leaf.features.cache_features`; one folder per
backbone setting). This makes dozens of trainings fit on two CPU cores; it is *not* the paper's
protocol, which fine-tunes the whole student. Features are standardised with the mean and standard
deviation of the train pool (no labels involved), the same for every arm.

**An experiment, not product code.** Calibration, scoring and every command but ``iqalens budget``
never import this package (tests/test_architecture.py); what it shares with them lives in
:mod:`iqalens.leaf.features`, :mod:`iqalens.leaf.targets` and :mod:`iqalens.leaf.head`.
"""

from __future__ import annotations

from iqalens.leaf.head import (
    LABELS_ONLY_MIN,
    FeatureHead,
    HeadConfig,
    distill_head,
    finetune_head,
    head_scores,
    train_labels_only,
)
from iqalens.leaf.label_budget.config import (
    DEFAULT_BUDGETS,
    DEFAULT_L2_CANDIDATES,
    RIDGE_L2_CANDIDATES,
    BudgetConfig,
)
from iqalens.leaf.label_budget.data import BudgetData, load_budget_data, split_by_group
from iqalens.leaf.label_budget.results import headline, table_markdown, write_results
from iqalens.leaf.label_budget.run import (
    budget_indices,
    describe,
    run_label_budget,
    run_protocol,
    select_l2,
    summarize,
)
from iqalens.leaf.names import ARM_TITLES, ARMS
from iqalens.leaf.targets import TeacherTargets, choose_teacher

__all__ = [
    "ARMS",
    "ARM_TITLES",
    "BudgetConfig",
    "BudgetData",
    "DEFAULT_BUDGETS",
    "DEFAULT_L2_CANDIDATES",
    "RIDGE_L2_CANDIDATES",
    "FeatureHead",
    "HeadConfig",
    "LABELS_ONLY_MIN",
    "TeacherTargets",
    "budget_indices",
    "choose_teacher",
    "describe",
    "distill_head",
    "finetune_head",
    "head_scores",
    "headline",
    "load_budget_data",
    "run_label_budget",
    "run_protocol",
    "select_l2",
    "split_by_group",
    "summarize",
    "table_markdown",
    "train_labels_only",
    "write_results",
]
