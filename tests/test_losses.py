"""Distillation losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from iqalens.leaf.losses import (
    JointLoss,
    LossConfig,
    PairTargets,
    PointTargets,
    bt_pair_loss,
    fidelity_pair_loss,
    kl_point_loss,
    pair_probability,
    regression_point_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_kl_point_loss_by_hand() -> None:
    teacher = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[0.0] * 5, [math.log(4.0), 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # Row 1: student uniform (0.2 each) -> KL = 2 * 0.5 * ln(0.5 / 0.2) = ln 2.5 (zero levels add 0).
    # Row 2: student softmax = (4/8, 1/8, ...) -> KL = 1 * ln(1 / 0.5) = ln 2.
    assert kl_point_loss(teacher, logits).item() == pytest.approx(
        (math.log(2.5) + math.log(2.0)) / 2, abs=1e-12
    )
    # Reliability multiplies each row; the batch value is the plain mean (not divided by sum r).
    weighted = kl_point_loss(teacher, logits, t(0.5, 1.0)).item()
    assert weighted == pytest.approx((0.5 * math.log(2.5) + math.log(2.0)) / 2, abs=1e-12)


def test_kl_is_zero_when_student_matches_teacher_and_gradient_is_finite() -> None:
    probs = t(0.1, 0.2, 0.3, 0.25, 0.15).reshape(1, 5)
    logits = probs.log().clone().requires_grad_(True)
    loss = kl_point_loss(probs, logits)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(logits.grad, torch.zeros_like(logits), atol=1e-12)
    onehot = t(0, 0, 1, 0, 0).reshape(1, 5)  # zeros in the teacher must not give NaN
    z = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    kl_point_loss(onehot, z).backward()
    assert torch.isfinite(z.grad).all()


def test_regression_point_loss_by_hand() -> None:
    # (0.5 - 0.2)^2 = 0.09 with r = 1; (0.4 - 0.8)^2 = 0.16 with r = 0.5 -> (0.09 + 0.08) / 2
    assert regression_point_loss(t(0.2, 0.8), t(0.5, 0.4), t(1.0, 0.5)).item() == pytest.approx(0.085)
    assert regression_point_loss(t(0.2, 0.8), t(0.5, 0.4)).item() == pytest.approx(0.125)


def test_pair_probability_uses_the_temperature() -> None:
    assert pair_probability(t(0.15), t(0.0), 0.15).item() == pytest.approx(1 / (1 + math.exp(-1)))
    assert pair_probability(t(0.0), t(0.3), 0.15).item() == pytest.approx(1 / (1 + math.exp(2)))


def test_fidelity_pair_loss_by_hand() -> None:
    q = 1 / (1 + math.exp(-1.0))  # (s_a - s_b) / tau = 0.15 / 0.15 = 1
    expected = 1 - math.sqrt(0.9 * q) - math.sqrt(0.1 * (1 - q))
    assert expected == pytest.approx(0.0248628, abs=1e-6)
    got = fidelity_pair_loss(t(0.9), t(0.15), t(0.0), temperature=0.15).item()
    assert got == pytest.approx(expected, abs=1e-6)  # eps 1e-8 in the roots
    # Weighted: second pair has q = p = 0.5 (equal scores), loss ~0, r = 0.25.
    got2 = fidelity_pair_loss(t(0.9, 0.5), t(0.15, 0.3), t(0.0, 0.3), t(0.5, 0.25), 0.15).item()
    assert got2 == pytest.approx(0.5 * expected / 2, abs=1e-6)


def test_fidelity_is_minimal_at_q_equals_p_and_bounded() -> None:
    p = t(0.8)
    diffs = torch.linspace(-1, 1, 201, dtype=torch.float64)
    losses = torch.stack([fidelity_pair_loss(p, d.reshape(1), t(0.0), temperature=0.15) for d in diffs])
    best = diffs[losses.argmin()].item()
    assert 1 / (1 + math.exp(-best / 0.15)) == pytest.approx(0.8, abs=0.01)
    assert losses.min().item() < 1e-4
    assert losses.max().item() <= 1.0


def test_bt_pair_loss_by_hand_and_its_gradient() -> None:
    q = 1 / (1 + math.exp(-1.0))
    expected = -(0.9 * math.log(q) + 0.1 * math.log(1 - q))
    assert expected == pytest.approx(0.4132617, abs=1e-6)
    sa = t(0.15).requires_grad_(True)
    loss = bt_pair_loss(t(0.9), sa, t(0.0), temperature=0.15)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    # d/ds_a of BCE(p, sigmoid((s_a - s_b)/tau)) = (q - p) / tau
    assert sa.grad.item() == pytest.approx((q - 0.9) / 0.15, abs=1e-12)
    # Stable for huge score gaps (no inf/NaN from log(0)).
    assert math.isfinite(bt_pair_loss(t(0.0), t(500.0), t(0.0)).item())
    # Reliability weighting: plain mean of r * loss.
    assert bt_pair_loss(t(0.9, 0.9), t(0.15, 0.15), t(0.0, 0.0), t(1.0, 0.0), 0.15).item() == pytest.approx(
        expected / 2
    )


def test_empty_batches_give_zero() -> None:
    assert kl_point_loss(torch.zeros(0, 5), torch.zeros(0, 5)).item() == 0.0
    assert fidelity_pair_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0)).item() == 0.0


def _inputs() -> dict[str, object]:
    pts = PointTargets(
        probs=torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]], dtype=torch.float64),
        expected=t(0.875),
        reliability=t(0.5),
    )
    prs = PairTargets(p=t(0.9), reliability=t(0.4))
    return {
        "point_scores": t(0.5),
        "point_logits": torch.zeros(1, 5, dtype=torch.float64),
        "points": pts,
        "score_a": t(0.15),
        "score_b": t(0.0),
        "pairs": prs,
    }


def test_joint_loss_is_the_weighted_sum_of_reliability_weighted_terms() -> None:
    cfg = LossConfig(w_kl=2.0, w_reg=3.0, w_pair=0.5, pair_loss="bt", pair_temperature=0.15)
    total, terms = JointLoss(cfg)(**_inputs())
    q = 1 / (1 + math.exp(-1.0))
    kl = 0.5 * math.log(2.5)
    reg = 0.5 * (0.5 - 0.875) ** 2
    bt = 0.4 * -(0.9 * math.log(q) + 0.1 * math.log(1 - q))
    assert terms["kl"] == pytest.approx(kl)
    assert terms["reg"] == pytest.approx(reg)
    assert terms["pair"] == pytest.approx(bt)
    assert total.item() == pytest.approx(2 * kl + 3 * reg + 0.5 * bt)
    assert terms["total"] == pytest.approx(total.item())


def test_joint_loss_without_reliability_and_with_terms_switched_off() -> None:
    cfg = LossConfig(w_kl=0.0, w_reg=1.0, w_pair=0.0, use_reliability=False)
    total, terms = JointLoss(cfg)(**_inputs())
    assert set(terms) == {"reg", "total"}
    assert total.item() == pytest.approx((0.5 - 0.875) ** 2)
    # Pairs only: the point inputs may be left out.
    total, terms = JointLoss(LossConfig())(score_a=t(0.15), score_b=t(0.0), pairs=PairTargets(t(0.9), t(1.0)))
    assert set(terms) == {"pair", "total"}
    with pytest.raises(ValueError, match="no loss term"):
        JointLoss(LossConfig(w_pair=0.0))(score_a=t(0.1), score_b=t(0.0), pairs=PairTargets(t(0.9), t(1.0)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pair_loss": "hinge"},
        {"w_kl": -1.0},
        {"w_kl": 0.0, "w_reg": 0.0, "w_pair": 0.0},
        {"pair_temperature": 0.0},
    ],
)
def test_loss_config_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LossConfig(**kwargs)  # type: ignore[arg-type]
