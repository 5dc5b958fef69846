"""Distillation losses of the LEAF student: point-wise, pair-wise, reliability-weighted, joint.

Notation: for image i the student outputs a score ``s_i`` and level logits ``z_i`` (5, over
:data:`~iqalens.leaf.judgments.LEVELS`, excellent first); the teacher gives level probabilities ``t_i``,
expected score ``e_i`` in [0, 1] and reliability ``r_i`` in [0, 1]; for an ordered pair (a, b) it gives
``p`` = P(a better than b) and a reliability ``r_ab``.

Point-wise terms (per image):

- KL distillation  ``L_kl = KL(t || softmax(z)) = sum_k t_k (log t_k - log softmax(z)_k)``,
  with ``0 log 0 = 0`` (a one-hot teacher reduces it to cross-entropy);
- score regression ``L_reg = (s - e)^2``.

Pair-wise terms (per pair), with the student's preference ``q = sigmoid((s_a - s_b) / tau)``; ``tau``
(``pair_temperature``) converts a score difference into a logit: the score is trained towards ``e`` in
[0, 1], where one quality level is 0.25, so with tau = 0.15 a one-level gap means q = sigmoid(1.67) =
0.84, the same order of confidence that the Thurstone preferences derived from level distributions have:

- fidelity loss (Tsai et al. 2007, used by UNIQUE/LIQE) ``L_fid = 1 - sqrt(p q) - sqrt((1-p)(1-q))``,
  0 when q = p and bounded by 1, so a confidently wrong pair cannot dominate a batch;
- Bradley-Terry / logistic loss ``L_bt = -[p log q + (1 - p) log(1 - q)]`` (binary cross-entropy on the
  logit ``(s_a - s_b) / tau``, computed stably); its minimum over q is at q = p but not 0 (it is the
  entropy of p), so the reported value is comparable only between runs with the same teacher.

Reliability weighting: each per-item loss is multiplied by its reliability and the batch value is the
*plain mean* ``(1/n) sum_i r_i L_i`` (not divided by ``sum r_i``), so a batch of unreliable judgments
moves the student less in absolute terms rather than being rescaled back to full strength. Without
weighting, ``r_i = 1``.

Joint loss: ``L = w_kl L_kl + w_reg L_reg + w_pair L_pair`` with ``L_pair`` the fidelity or BT term;
a weight of 0 switches a term off (its input may then be omitted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from iqalens.errors import InvalidInputError

PAIR_LOSSES: tuple[str, ...] = ("fidelity", "bt")
_EPS = 1e-8


def _weighted_mean(per_item: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if per_item.numel() == 0:
        return per_item.sum()  # 0 with a gradient path, for a batch without this kind of item
    if weight is None:
        return per_item.mean()
    return (per_item * weight.to(per_item.dtype)).mean()


def kl_point_loss(
    teacher_probs: torch.Tensor, student_logits: torch.Tensor, reliability: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over images of ``r * KL(t || softmax(z))`` (see the module docstring)."""
    log_q = F.log_softmax(student_logits, dim=-1)
    t = teacher_probs.to(log_q.dtype)
    log_t = torch.where(t > 0, t.clamp_min(1e-30).log(), torch.zeros_like(t))
    per = (t * (log_t - log_q)).sum(dim=-1)
    return _weighted_mean(per, reliability)


def regression_point_loss(
    teacher_expected: torch.Tensor, student_score: torch.Tensor, reliability: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over images of ``r * (s - e)^2``."""
    per = (student_score - teacher_expected.to(student_score.dtype)) ** 2
    return _weighted_mean(per, reliability)


def pair_probability(score_a: torch.Tensor, score_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's P(a better than b) = sigmoid((s_a - s_b) / tau)."""
    return torch.sigmoid((score_a - score_b) / temperature)


def fidelity_pair_loss(
    p: torch.Tensor,
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    reliability: torch.Tensor | None = None,
    temperature: float = 0.15,
) -> torch.Tensor:
    """Mean over pairs of ``r * (1 - sqrt(p q) - sqrt((1-p)(1-q)))``.

    ``eps`` inside the square roots keeps the gradient finite when q saturates at 0 or 1.
    """
    q = pair_probability(score_a, score_b, temperature)
    p = p.to(q.dtype)
    per = 1.0 - torch.sqrt(p * q + _EPS) - torch.sqrt((1.0 - p) * (1.0 - q) + _EPS)
    return _weighted_mean(per, reliability)


def bt_pair_loss(
    p: torch.Tensor,
    score_a: torch.Tensor,
    score_b: torch.Tensor,
    reliability: torch.Tensor | None = None,
    temperature: float = 0.15,
) -> torch.Tensor:
    """Mean over pairs of ``r * BCE(p, sigmoid((s_a - s_b) / tau))`` (Bradley-Terry likelihood)."""
    logit = (score_a - score_b) / temperature
    per = F.binary_cross_entropy_with_logits(logit, p.to(logit.dtype), reduction="none")
    return _weighted_mean(per, reliability)


@dataclass
class LossConfig:
    """Weights and options of the joint distillation loss (saved in the run's config)."""

    w_kl: float = 1.0
    w_reg: float = 1.0
    w_pair: float = 1.0
    pair_loss: str = "fidelity"  # or "bt"
    pair_temperature: float = 0.15
    use_reliability: bool = True

    def __post_init__(self) -> None:
        if self.pair_loss not in PAIR_LOSSES:
            raise InvalidInputError(
                f"pair_loss must be one of {', '.join(PAIR_LOSSES)}, got {self.pair_loss!r}"
            )
        if min(self.w_kl, self.w_reg, self.w_pair) < 0 or self.w_kl + self.w_reg + self.w_pair <= 0:
            raise InvalidInputError("loss weights must be >= 0 and not all 0")
        if self.pair_temperature <= 0:
            raise InvalidInputError(f"pair_temperature must be > 0, got {self.pair_temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PointTargets:
    """Teacher targets of a batch of images: probs [N, 5], expected [N], reliability [N]."""

    probs: torch.Tensor
    expected: torch.Tensor
    reliability: torch.Tensor


@dataclass
class PairTargets:
    """Teacher targets of a batch of pairs: p [M] = P(first better), reliability [M]."""

    p: torch.Tensor
    reliability: torch.Tensor


class JointLoss:
    """``w_kl L_kl + w_reg L_reg + w_pair L_pair``; returns the total and each weighted-off term."""

    def __init__(self, config: LossConfig | None = None) -> None:
        self.config = config or LossConfig()

    def __call__(
        self,
        point_scores: torch.Tensor | None = None,
        point_logits: torch.Tensor | None = None,
        points: PointTargets | None = None,
        score_a: torch.Tensor | None = None,
        score_b: torch.Tensor | None = None,
        pairs: PairTargets | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and the unweighted terms (as floats, for logging). Missing inputs skip a term."""
        c = self.config
        total: torch.Tensor | None = None
        terms: dict[str, float] = {}

        def add(name: str, weight: float, value: torch.Tensor) -> None:
            nonlocal total
            terms[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value

        if points is not None:
            r = points.reliability if c.use_reliability else None
            if c.w_kl > 0 and point_logits is not None:
                add("kl", c.w_kl, kl_point_loss(points.probs, point_logits, r))
            if c.w_reg > 0 and point_scores is not None:
                add("reg", c.w_reg, regression_point_loss(points.expected, point_scores, r))
        if pairs is not None and c.w_pair > 0 and score_a is not None and score_b is not None:
            r = pairs.reliability if c.use_reliability else None
            fn = fidelity_pair_loss if c.pair_loss == "fidelity" else bt_pair_loss
            add("pair", c.w_pair, fn(pairs.p, score_a, score_b, r, c.pair_temperature))
        if total is None:
            raise InvalidInputError("no loss term could be computed: give point and/or pair inputs")
        terms["total"] = float(total.detach())
        return total, terms
