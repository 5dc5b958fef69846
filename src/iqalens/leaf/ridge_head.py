"""Closed-form ridge trainings of the student's linear head: distillation, labels only, fine-tune.

Why not SGD: a linear head on cached features is a least-squares problem. Solved exactly it has no
learning rate, step count or batch noise, and its only knob, the ridge penalty, can be chosen over a
whole grid from one eigendecomposition. The AdamW head it replaces was measured badly regularised
(``docs/leaf_fr_teacher.md``: the label-free student at SRCC 0.49 where ridge on the same features and
targets reached 0.62).

Every fit minimises a *mean* loss, ``sum_i w_i (x_i W + b - y_i)^2 / sum_i w_i + l2 * |W - W0|^2``, so
``l2`` means the same thing whatever the number of rows; the bias is not penalised.

- :func:`ridge_distill`: output 0 regresses the teacher's expected score, outputs 1..5 its centred log
  level probabilities (their softmax approximates the teacher's distribution, the KL term's minimiser),
  rows weighted by the teacher's reliability. Pairs are not used: the teachers in this package derive
  their pairs from the same point judgments, so they carry no extra ranking information.
- :func:`ridge_labels`: output 0 regresses the labels alone (labels-only arm).
- :func:`ridge_finetune`: calibration mode (b) in closed form. The distilled head's score is mapped
  linearly onto the labels' scale (fitted on the labels), and the labels then move the weights away
  from that prior by a ridge *centred on it* (``W0`` above): few labels leave the teacher's solution
  nearly intact, many labels override it. It is the Bayesian reading of "fine-tune with the
  distillation loss as a regulariser".

With content groups of the labelled images, :func:`choose_l2_by_labels` picks the penalty of the two
label arms by grouped cross-validation on the labels alone (the same procedure for both arms);
:func:`choose_l2_by_teacher` picks the distillation's penalty without any label, by how well heads
fitted on some photos rank the other photos' images as the teacher does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.feature_head import FeatureHead
from iqalens.leaf.targets import TeacherTargets

#: Ridge penalties (mean-loss units, standardised features) the label cross-validation chooses among.
LABEL_L2_GRID: tuple[float, ...] = (
    1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0
)  # fmt: skip
#: Fewest labels, and content groups among them, for which the penalty is cross-validated.
CV_MIN_LABELS = 10
CV_MIN_GROUPS = 3
_LOGP_FLOOR = 1e-4


class RidgePath:
    """Weighted ridge solutions of one design for any number of penalties (one eigendecomposition).

    ``x`` (n x d), ``y`` (n x k), ``weights`` (n) or None. A ridge centred on a prior is fitted by
    passing the residual ``y - prior(x)`` (:func:`ridge_finetune`).
    """

    _dual: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    _primal: tuple[np.ndarray, np.ndarray, np.ndarray]

    def __init__(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)
        if x.shape[0] < 1:
            raise InvalidInputError("ridge needs at least one row")
        w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (x.shape[0],) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InvalidInputError("ridge weights must be finite, >= 0 and not all zero")
        w = w / w.sum()
        self.x_mean = w @ x
        self.y_mean = w @ y
        xc, yc = x - self.x_mean, y - self.y_mean
        xw = xc * w[:, None]
        n, d = x.shape
        if n < d:  # dual form: the n x n Gram matrix is the smaller problem
            sw = np.sqrt(w)
            evals, evecs = np.linalg.eigh((xc * sw[:, None]) @ (xc * sw[:, None]).T)
            self._dual = (xc * sw[:, None], evals, evecs, yc * sw[:, None])
        else:
            evals, evecs = np.linalg.eigh(xc.T @ xw)
            self._dual = None
            self._primal = (evals, evecs, evecs.T @ (xw.T @ yc))

    def solve(self, l2: float) -> tuple[np.ndarray, np.ndarray]:
        """``(W (d x k), b (k))`` for penalty ``l2`` (> 0)."""
        if not l2 > 0:
            raise InvalidInputError(f"the ridge penalty must be > 0, got {l2}")
        if self._dual is not None:
            xs, evals, evecs, ys = self._dual
            alpha = evecs @ ((evecs.T @ ys) / (np.clip(evals, 0, None) + l2)[:, None])
            coef = xs.T @ alpha
        else:
            evals, evecs, rhs = self._primal
            coef = evecs @ (rhs / (np.clip(evals, 0, None) + l2)[:, None])
        return coef, self.y_mean - self.x_mean @ coef


def _as_head(
    template: torch.nn.Module | None, dim: int, coef: np.ndarray, bias: np.ndarray
) -> torch.nn.Module:
    head = copy.deepcopy(template) if template is not None else FeatureHead(dim)
    assert isinstance(head, FeatureHead)
    with torch.no_grad():
        head.head.weight.copy_(torch.as_tensor(coef.T, dtype=torch.float32))
        head.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return head.eval()


def standardise(
    x: np.ndarray, fit_rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z, mean, std)``: ``x`` standardised by the mean and std of ``fit_rows`` (all rows if None;
    constant columns keep std 1). The inverse of :func:`fold_standardisation`'s folding."""
    ref = x if fit_rows is None else x[fit_rows]
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return (x - mean) / std, mean, std


def fold_standardisation(head: torch.nn.Module, mean: np.ndarray, std: np.ndarray) -> torch.nn.Module:
    """The same head on raw features: a head fitted on ``(x - mean) / std`` with the standardisation
    folded into its weights and bias (how a shipped student keeps one ``Linear`` on raw features)."""
    out = copy.deepcopy(head)
    linear = out.head
    assert isinstance(linear, torch.nn.Linear)
    with torch.no_grad():
        w = linear.weight.double() / torch.as_tensor(std, dtype=torch.float64)[None]
        b = linear.bias.double() - w @ torch.as_tensor(mean, dtype=torch.float64)
        linear.weight.copy_(w.float())
        linear.bias.copy_(b.float())
    return out


def _features(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def distill_targets(teacher: TeacherTargets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, targets n x 6, weights)`` of the teacher's point judgments: expected score, then the
    centred log level probabilities."""
    rows = teacher.points
    if rows.size == 0:
        raise InvalidInputError("no teacher point judgments on the train pool: nothing to distil")
    logp = np.log(np.clip(teacher.probs[rows], _LOGP_FLOOR, None))
    y = np.concatenate([teacher.expected[rows, None], logp - logp.mean(axis=1, keepdims=True)], axis=1)
    weights = np.clip(teacher.reliability[rows], 0.0, None)
    if not np.any(weights > 0):
        weights = np.ones(rows.size)
    return rows, y, weights


def ridge_distill_path(x: torch.Tensor | np.ndarray, teacher: TeacherTargets) -> RidgePath:
    """The distillation fit of every penalty at once (the label-free penalty search uses it)."""
    rows, y, weights = distill_targets(teacher)
    return RidgePath(_features(x)[rows], y, weights)


def ridge_distill(x: torch.Tensor | np.ndarray, teacher: TeacherTargets, l2: float) -> torch.nn.Module:
    """A :class:`~iqalens.leaf.head.FeatureHead` fitted in closed form to the teacher's point judgments."""
    coef, bias = ridge_distill_path(x, teacher).solve(l2)
    return _as_head(None, coef.shape[0], coef, bias)


def _label_design(
    xs: np.ndarray, labelled: np.ndarray, y: np.ndarray, prior: torch.nn.Module | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """``(targets, offsets, (a, c))`` of a label fit: the labels, and the prior's score mapped onto
    their scale by ``a s0 + c`` (zeros and ``(0, 0)`` without a prior); the fit regresses the residual."""
    target = np.asarray(y, dtype=np.float64)[labelled]
    if prior is None:
        return target, np.zeros_like(target), (0.0, 0.0)
    s0 = _prior_scores(prior, xs[labelled])
    a, c = _scale_map(s0, target)
    return target, a * s0 + c, (a, c)


def _prior_scores(prior: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return prior.eval()(torch.as_tensor(x, dtype=torch.float32))[0].double().numpy()


def _scale_map(s0: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ~ a s0 + c`` with ``a >= 0`` (a teacher is never read upside down)."""
    if s0.size < 2 or np.ptp(s0) == 0:
        return 0.0, float(np.mean(y))
    a = float(np.cov(s0, y, bias=True)[0, 1] / np.var(s0))
    a = max(a, 0.0)
    return a, float(np.mean(y) - a * np.mean(s0))


def ridge_labels(
    x: torch.Tensor | np.ndarray, labelled: np.ndarray, y: np.ndarray, l2: float
) -> torch.nn.Module:
    """A head whose score regresses ``y`` of the labelled rows alone (level logits left at zero)."""
    xs = _features(x)
    coef, bias = RidgePath(xs[labelled], np.asarray(y, np.float64)[labelled]).solve(l2)
    full = np.zeros((xs.shape[1], 6))
    full[:, 0] = coef[:, 0]
    return _as_head(None, xs.shape[1], full, np.concatenate([bias, np.zeros(5)]))


def ridge_finetune(
    head: FeatureHead, x: torch.Tensor | np.ndarray, labelled: np.ndarray, y: np.ndarray, l2: float
) -> torch.nn.Module:
    """Mode (b): the distilled ``head``'s score mapped onto the labels' scale, then moved towards the
    labels by a ridge centred on it (penalty ``l2``); the level logits are kept."""
    xs = _features(x)
    if labelled.size == 0:
        raise InvalidInputError("fine-tuning needs at least one label")
    target, offset, (a, c) = _label_design(xs, labelled, y, head)
    delta, delta_b = RidgePath(xs[labelled], target - offset).solve(l2)
    weight = head.head.weight.detach().double().numpy().T.copy()
    bias = head.head.bias.detach().double().numpy().copy()
    weight[:, 0] = a * weight[:, 0] + delta[:, 0]
    bias[0] = a * bias[0] + c + delta_b[0]
    return _as_head(head, xs.shape[1], weight, bias)


def choose_l2_by_labels(
    x: torch.Tensor | np.ndarray,
    labelled: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    prior: torch.nn.Module | None = None,
    grid: Sequence[float] = LABEL_L2_GRID,
    folds: int = 4,
) -> tuple[float | None, dict[str, float]]:
    """The ridge penalty of a label fit (labels-only, or centred on ``prior``) by grouped K-fold
    cross-validation on the labelled rows: the SRCC of the pooled out-of-fold predictions with the
    labels, the first (smallest) penalty on ties. ``(None, {})`` when there are fewer than
    :data:`CV_MIN_LABELS` labels or :data:`CV_MIN_GROUPS` content groups among them (the caller keeps
    its default). Only the budget's labels are read."""
    xs = _features(x)
    g = np.asarray(groups, dtype=str)[labelled]
    uniq = np.unique(g)
    if labelled.size < CV_MIN_LABELS or uniq.size < CV_MIN_GROUPS:
        return None, {}
    k = min(folds, uniq.size)
    fold_of = {name: i % k for i, name in enumerate(uniq)}
    fold = np.array([fold_of[name] for name in g])
    target, offset, _ = _label_design(xs, labelled, y, prior)
    predictions = {value: np.zeros(labelled.size) for value in grid}
    for f in range(k):
        fit, held = fold != f, fold == f
        if prior is not None:  # the prior's scale map is refitted inside the fold: no held-out label leaks
            sub_target, sub_offset, (a, c) = _label_design(xs, labelled[fit], y, prior)
            held_offset = a * _prior_scores(prior, xs[labelled[held]]) + c
        else:
            sub_target, sub_offset = target[fit], offset[fit]
            held_offset = np.zeros(int(held.sum()))
        path = RidgePath(xs[labelled[fit]], sub_target - sub_offset)
        for value in grid:
            coef, bias = path.solve(value)
            predictions[value][held] = held_offset + xs[labelled[held]] @ coef[:, 0] + bias[0]
    scores = {f"{v:g}": srcc(predictions[v], target) for v in grid}
    clean = {key: (val if np.isfinite(val) else -np.inf) for key, val in scores.items()}
    best = max(grid, key=lambda v: (clean[f"{v:g}"], -list(grid).index(v)))
    return float(best), {key: float(val) for key, val in scores.items()}


def teacher_folds(groups: np.ndarray, pool: np.ndarray, folds: int, seed: int) -> np.ndarray | None:
    """The fold (0..k-1) of each ``pool`` row: its content group's, groups dealt into
    ``k = min(folds, groups)`` folds in a seeded order; None with fewer than two groups."""
    uniq = np.unique(groups[pool])
    k = min(folds, uniq.size)
    if k < 2:
        return None
    order = np.random.default_rng([seed, 4]).permutation(uniq.size)
    fold_of = {g: i % k for i, g in enumerate(uniq[order])}
    return np.array([fold_of[g] for g in groups[pool]])


def choose_l2_by_teacher(
    x: torch.Tensor | np.ndarray,
    teacher: TeacherTargets,
    pool: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    grid: Sequence[float] = LABEL_L2_GRID,
    folds: int = 4,
    seed: int = 0,
) -> tuple[float | None, dict[str, float]]:
    """The distillation penalty among ``grid`` without labels: ``pool``'s content ``groups`` (one per
    row of ``x``) are dealt into folds (:func:`teacher_folds`); per fold a head is distilled on the
    others and scored by the SRCC of its held-out scores with the teacher's expected score; the best
    mean wins, the first on ties. ``(None, {})`` when no fold can be held out (fewer than two groups,
    or no fold with 3 judged images). ``teacher`` holds the judgments of every row (its ``points`` are
    ignored: each fold restricts them)."""
    xs = _features(x)
    group_of = np.asarray(groups, dtype=str)
    fold = teacher_folds(group_of, pool, folds, seed)
    if fold is None:
        return None, {}
    per_value: dict[float, list[float]] = {value: [] for value in grid}
    for f in range(int(fold.max()) + 1):
        held = pool[(fold == f) & np.isfinite(teacher.expected[pool])]
        fit = TeacherTargets.restricted(
            pool[fold != f],
            teacher.probs,
            teacher.expected,
            teacher.reliability,
            teacher.pairs,
            teacher.pair_p,
            teacher.pair_rel,
        )
        if held.size < 3 or fit.points.size == 0:
            continue
        path = ridge_distill_path(xs, fit)
        for value in grid:
            coef, bias = path.solve(value)
            per_value[value].append(srcc(xs[held] @ coef[:, 0] + bias[0], teacher.expected[held]))
    # a fold whose held-out teacher scores are constant has no SRCC: leave it out, not every candidate
    means = {v: float(np.nanmean(per_value[v])) if np.any(np.isfinite(per_value[v])) else None for v in grid}
    if all(m is None for m in means.values()):
        return None, {}
    scored = [v for v in grid if means[v] is not None]
    best = max(scored, key=lambda v: (means[v], -list(grid).index(v)))
    return float(best), {f"{v:g}": float(means[v]) for v in scored}  # type: ignore[arg-type]
