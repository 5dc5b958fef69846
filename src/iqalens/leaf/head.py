"""A student head on cached features, and its three trainings: distillation, labels only, fine-tune.

The head is the :class:`~iqalens.leaf.student.Student` head layout (dropout + ``Linear(d, 6)``: output
0 the score, 1..5 the level logits) on pooled backbone features (:mod:`iqalens.leaf.features`).

- :func:`distill_head`: a new head trained on the teacher's point and pair judgments only
  (:class:`~iqalens.leaf.losses.JointLoss`, no labels).
- :func:`train_labels_only`: a new head regressed on MOS scaled to [0, 1] of the labelled images
  alone; undefined below :data:`LABELS_ONLY_MIN` labels.
- :func:`finetune_head`: calibration mode (b), a copy of a distilled head fine-tuned on the labels,
  ``L = mean_i (s_i - y_i)^2 + lambda * L_distill``, the distillation loss on the teacher's judgments
  kept as a regulariser.

Every training adds ``l2 * sum(W^2)`` on the head's weights (:class:`HeadConfig`) and runs torch
single-threaded (:func:`single_thread`): the tensors are tiny.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.leaf.feature_head import FeatureHead
from iqalens.leaf.losses import JointLoss, LossConfig, PairTargets, PointTargets
from iqalens.leaf.ridge_head import ridge_distill, ridge_finetune, ridge_labels
from iqalens.leaf.targets import TeacherTargets

#: Fewest labels the labels-only arm trains on; below it the arm is undefined.
LABELS_ONLY_MIN = 2
#: How a head is fitted (:attr:`HeadConfig.solver`).
SOLVERS = ("adamw", "ridge")

HeadT = TypeVar("HeadT", bound=nn.Module)


@dataclass
class HeadConfig:
    """Optimisation of every head training (shared by the arms so that they differ only in signal)."""

    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.01
    distill_steps: int = 400
    label_steps: int = 400
    finetune_steps: int = 200
    finetune_lr: float = 3e-4
    point_batch: int = 64
    pair_batch: int = 64
    label_batch: int = 64
    loss: LossConfig = field(default_factory=LossConfig)
    finetune_reg: LossConfig = field(default_factory=lambda: LossConfig(w_reg=0.0))
    finetune_lambda: float = 1.0
    # l2 * (sum of the squared head weights) is added to every training loss. AdamW's decoupled
    # weight decay (lr * weight_decay per step) barely shrinks a head in a few hundred steps, and a
    # 1280-d head on a few dozen photos otherwise fits their content instead of their quality.
    l2: float = 0.0
    # When given, l2 is chosen per seed among these, without labels (:func:`select_l2`).
    l2_candidates: tuple[float, ...] = ()
    # "adamw": the step-wise trainings above; "ridge": the closed-form fits of
    # :mod:`iqalens.leaf.ridge_head` (same head layout, l2 the ridge penalty, steps and lr unused).
    solver: str = "adamw"

    def __post_init__(self) -> None:
        for name in ("loss", "finetune_reg"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, LossConfig(**getattr(self, name)))
        self.l2_candidates = tuple(float(v) for v in self.l2_candidates)
        if self.l2 < 0 or any(v < 0 for v in self.l2_candidates):
            raise ConfigError("l2 and l2_candidates must be >= 0")
        for name in ("distill_steps", "label_steps", "finetune_steps", "point_batch", "label_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_lambda < 0:
            raise ConfigError("finetune_lambda must be >= 0")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.solver == "ridge" and (self.l2 <= 0 or any(v <= 0 for v in self.l2_candidates)):
            raise ConfigError("the ridge solver needs l2 > 0 (and l2_candidates > 0)")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block, then restore the caller's setting.

    The head's tensors are tiny (a batch x 1280 matrix product): intra-op threads only add
    synchronisation, measured 4x slower with 2 threads than with 1 on two busy cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _new_head(dim: int, cfg: HeadConfig, seed: int) -> FeatureHead:
    torch.manual_seed(seed)  # same initialisation for every arm of one seed
    return FeatureHead(dim, cfg.dropout)


def _with_dropout(head: nn.Module, cfg: HeadConfig) -> FeatureHead:
    """A closed-form head with the configured dropout (it only acts if the head is trained further)."""
    assert isinstance(head, FeatureHead)
    head.dropout.p = cfg.dropout
    return head


def _penalty(module: nn.Module, cfg: HeadConfig) -> torch.Tensor | float:
    """``cfg.l2`` times the squared weights of the module's final ``Linear`` (its ``head``)."""
    if cfg.l2 <= 0:
        return 0.0
    head = module.head
    assert isinstance(head, nn.Linear)
    return cfg.l2 * head.weight.pow(2).sum()


def _batch(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.choice(n, size=size, replace=n < size) if n else np.zeros(0, dtype=np.int64)


def _distill_terms(
    head: nn.Module,
    x: torch.Tensor,
    data: TeacherTargets,
    rng: np.random.Generator,
    cfg: HeadConfig,
    loss: JointLoss,
) -> torch.Tensor:
    pi = data.points[_batch(rng, data.points.size, cfg.point_batch)]
    qi = _batch(rng, data.pairs.shape[0], cfg.pair_batch)
    a, b = data.pairs[qi, 0], data.pairs[qi, 1]
    idx = np.concatenate([pi, a, b])
    s, z = head(x[idx])
    n, m = pi.size, qi.size

    def t(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32)

    pt = PointTargets(t(data.probs[pi]), t(data.expected[pi]), t(data.reliability[pi])) if n else None
    pr = PairTargets(t(data.pair_p[qi]), t(data.pair_rel[qi])) if m else None
    total, _ = loss(s[:n], z[:n], pt, s[n : n + m], s[n + m :], pr)
    return total


def _adamw(head: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)


@single_thread()
def distill_head(x: torch.Tensor, teacher: TeacherTargets, cfg: HeadConfig, seed: int) -> FeatureHead:
    """Train a new head on the teacher's judgments only (joint loss, fixed number of steps)."""
    if teacher.points.size == 0 and teacher.pairs.shape[0] == 0:
        raise InvalidInputError("no teacher judgments on the train pool: nothing to distil")
    if cfg.solver == "ridge":
        return _with_dropout(ridge_distill(x, teacher, cfg.l2), cfg)
    head = _new_head(x.shape[1], cfg, seed)
    opt, loss = _adamw(head, cfg.lr, cfg.weight_decay), JointLoss(cfg.loss)
    rng = np.random.default_rng([seed, 1])
    head.train()
    for _ in range(cfg.distill_steps):
        total = _distill_terms(head, x, teacher, rng, cfg, loss) + _penalty(head, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return head.eval()


@single_thread()
def train_labels_only(
    x: torch.Tensor, labelled: np.ndarray, y: np.ndarray, cfg: HeadConfig, seed: int
) -> FeatureHead:
    """A new head regressed on ``y`` (MOS scaled to [0, 1]) of the labelled images alone.

    Refuses fewer than :data:`LABELS_ONLY_MIN` labels: with none there is nothing to learn, and one
    label determines no ranking.
    """
    if labelled.size < LABELS_ONLY_MIN:
        raise InvalidInputError(
            f"a labels-only student needs at least {LABELS_ONLY_MIN} labels, got {labelled.size}; "
            "it is undefined at this budget"
        )
    if cfg.solver == "ridge":
        return _with_dropout(ridge_labels(x, labelled, y, cfg.l2), cfg)
    head = _new_head(x.shape[1], cfg, seed)
    opt = _adamw(head, cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng([seed, 2])
    yt = torch.as_tensor(y, dtype=torch.float32)
    head.train()
    for _ in range(cfg.label_steps):
        i = _batch(rng, labelled.size, min(cfg.label_batch, labelled.size))
        s, _ = head(x[labelled[i]])
        total = ((s - yt[labelled[i]]) ** 2).mean() + _penalty(head, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return head.eval()


@single_thread()
def finetune_head(
    head: HeadT,
    x: torch.Tensor,
    labelled: np.ndarray,
    y: np.ndarray,
    teacher: TeacherTargets,
    cfg: HeadConfig,
    seed: int,
) -> HeadT:
    """Calibration mode (b): a copy of ``head`` fine-tuned on the labels with the distillation loss
    (``cfg.finetune_reg``, weight ``cfg.finetune_lambda``) on the teacher's judgments as a regulariser.

    ``head`` is any module mapping rows of ``x`` to ``(score, level logits)``: a :class:`FeatureHead`
    on pooled features, or a student's last block plus head on cached activations
    (:mod:`iqalens.leaf.calibration.finetune`)."""
    if labelled.size == 0:
        raise InvalidInputError("fine-tuning needs at least one label")
    if cfg.solver == "ridge":
        if not isinstance(head, FeatureHead):
            raise ConfigError("the ridge solver fine-tunes a FeatureHead on pooled features only")
        return ridge_finetune(head, x, labelled, y, cfg.l2)  # type: ignore[return-value]
    tuned = copy.deepcopy(head)
    opt = _adamw(tuned, cfg.finetune_lr, cfg.weight_decay)
    reg = JointLoss(cfg.finetune_reg)
    rng = np.random.default_rng([seed, 3])
    yt = torch.as_tensor(y, dtype=torch.float32)
    tuned.train()
    for _ in range(cfg.finetune_steps):
        i = _batch(rng, labelled.size, min(cfg.label_batch, labelled.size))
        s, _ = tuned(x[labelled[i]])
        total = ((s - yt[labelled[i]]) ** 2).mean() + _penalty(tuned, cfg)
        if cfg.finetune_lambda > 0:
            total = total + cfg.finetune_lambda * _distill_terms(tuned, x, teacher, rng, cfg, reg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return tuned.eval()


@torch.no_grad()
def head_scores(head: FeatureHead, x: torch.Tensor) -> np.ndarray:
    """The head's score output (eval mode, no dropout) as float64."""
    head.eval()
    return head(x)[0].double().numpy()
