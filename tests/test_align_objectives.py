"""The loss terms, settings, LoRA helpers and report arithmetic of ``iqalens align`` (no pretrained model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from iqalens.align.config import AlignConfig, parse_components, short_name
from iqalens.align.lora import add_lora, default_lora_targets, lora_deltas, merge_lora
from iqalens.align.objectives import (
    accuracy,
    feature_drift,
    info_nce,
    logit_drift,
    similarity_cross_entropy,
    weight_drift,
)
from iqalens.align.report import comparison_rows, drift_measure
from iqalens.align.train import touched_indices, training_order
from tolerances import TINY_CNN_DEPTH, float32_atol


def test_info_nce_on_a_two_class_case() -> None:
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[3.0, 0.0]])  # along word 0; the length must not matter (cosine)
    # -log(e^{1/T} / (e^{1/T} + e^{0/T})) = log(1 + e^{-1/T})
    assert info_nce(visual, words, torch.tensor([0]), 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert info_nce(visual, words, torch.tensor([1]), 1.0).item() == pytest.approx(math.log(1 + math.exp(1)))
    assert info_nce(visual, words, torch.tensor([0]), 0.1).item() == pytest.approx(
        math.log(1 + math.exp(-10)), rel=1e-3
    )
    # halfway between the words: both classes equally likely
    assert info_nce(torch.tensor([[1.0, 1.0]]), words, torch.tensor([1]), 0.5).item() == pytest.approx(
        math.log(2)
    )


def test_info_nce_gradient_pulls_towards_the_true_word() -> None:
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    visual = torch.tensor([[1.0, 1.0]], requires_grad=True)
    info_nce(visual, words, torch.tensor([0]), 0.5).backward()
    assert visual.grad is not None
    assert visual.grad[0, 0] < 0 < visual.grad[0, 1]  # descent increases x (word 0), decreases y


def test_template_cross_entropy_of_similarities() -> None:
    sims = torch.tensor([[0.5, 0.1]])
    expected = math.log(1 + math.exp((0.1 - 0.5) / 0.1))
    assert similarity_cross_entropy(sims, torch.tensor([0]), 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_feature_drift_is_zero_unchanged_and_relative() -> None:
    ref = torch.tensor([[1.0, 2.0], [0.0, -2.0]])
    assert feature_drift(ref.clone(), ref).item() == 0.0
    assert feature_drift(torch.zeros_like(ref), ref).item() == pytest.approx(1.0)  # collapsed features
    assert feature_drift(2 * ref, ref).item() == pytest.approx(1.0)
    # one coordinate off by 1: 1 / (1 + 4 + 4)
    moved = ref.clone()
    moved[0, 0] += 1
    assert feature_drift(moved, ref).item() == pytest.approx(1 / 9)


def test_weight_drift_is_l2_sp() -> None:
    w0 = [torch.ones(2, 2), torch.zeros(3)]
    assert weight_drift([t.clone() for t in w0], w0).item() == 0.0
    moved = [torch.ones(2, 2) * 1.5, torch.tensor([0.0, 2.0, 0.0])]
    assert weight_drift(moved, w0).item() == pytest.approx(4 * 0.25 + 4)
    with pytest.raises(ValueError):
        weight_drift([], [])


def test_accuracy() -> None:
    assert accuracy(
        torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1])
    ) == pytest.approx(2 / 3)


def test_components_parse_short_forms_and_reject_unknown_ones() -> None:
    assert parse_components("P+V") == ("vision_encoder", "projector")
    assert parse_components("language_model, projector") == ("projector", "language_model")
    assert short_name(parse_components("v,p,l")) == "V+P+L"
    with pytest.raises(ValueError, match="unknown component 'decoder'"):
        parse_components("projector,decoder")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="LoRA components must also be trained"):
        AlignConfig(train=("projector",), lora=("language_model",))
    with pytest.raises(ValueError, match="at least one component"):
        AlignConfig(train=())
    with pytest.raises(ValueError, match="constraint"):
        AlignConfig(constraint="magic")
    with pytest.raises(ValueError, match="nothing to train for"):
        AlignConfig(w_template=0, w_align=0, w_constraint=0)
    cfg = AlignConfig(train="V+P", lora="V")
    assert AlignConfig.from_dict(cfg.to_dict()) == cfg
    assert "progress" not in cfg.comparable() and cfg.comparable()["train"] == ["vision_encoder", "projector"]


def test_schedule_touches_each_image_once_per_epoch() -> None:
    cfg = AlignConfig(max_steps=3, batch_size=4, grad_accum=2)
    assert len(touched_indices(np.arange(100), cfg)) == 24  # 6 micro-batches of 4, first epoch: no repeats
    assert touched_indices(np.arange(10), cfg).tolist() == list(range(10))


def test_balanced_order_draws_every_class_equally_often() -> None:
    labels = np.array([0] * 10 + [1] * 4 + [2] * 3)
    assert training_order(labels, False, 0).tolist() == list(range(17))
    order = training_order(labels, True, 0)
    assert np.bincount(labels[order]).tolist() == [10, 10, 10]
    # every row kept; a rare class's rows repeated as evenly as the counts allow (10 = 2 * 4 + 2)
    assert set(order.tolist()) == set(range(17))
    assert sorted(np.bincount(order[labels[order] == 1])[10:14].tolist()) == [2, 2, 3, 3]
    assert np.array_equal(order, training_order(labels, True, 0))  # seeded
    cfg = AlignConfig(max_steps=100, batch_size=4, balance_classes=True)
    assert touched_indices(order, cfg).tolist() == list(range(17))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.depthwise = nn.Conv2d(4, 4, 3, groups=4, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.depthwise(self.conv(x)).mean(dim=(2, 3)))


def test_lora_trains_only_adapters_and_merges_exactly() -> None:
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(5, 3, 6, 6)
    base_out = net(x).detach()
    base_state = {k: v.clone() for k, v in net.state_dict().items()}
    targets = default_lora_targets(net)
    assert targets == ["conv", "fc"]  # grouped convolutions cannot be merged
    params = add_lora(net, targets, rank=2, alpha=4.0, seed=3)
    assert params and all(p.requires_grad for p in params)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        n for n, _ in net.named_parameters() if ".lora_" in f".{n}"
    ]
    torch.testing.assert_close(net(x), base_out, rtol=0, atol=0)  # B starts at zero
    assert all(float(d.detach().abs().sum()) == 0 for d in lora_deltas(net))
    with torch.no_grad():
        for p in params:
            p.add_(0.3)
    adapted = net(x).detach()
    assert not torch.allclose(adapted, base_out)
    assert merge_lora(net) == 2
    assert not any(".lora_" in n for n, _ in net.named_parameters())
    assert net.state_dict().keys() == base_state.keys()
    # merged: W + s B A rounded once, then one product instead of two summed; the float32 bound of a
    # small net (tests/tolerances.py; this one's depth is ~60, under the tiny-CNN constant's 400)
    torch.testing.assert_close(net(x), adapted, rtol=0, atol=float32_atol(TINY_CNN_DEPTH, adapted))
    torch.testing.assert_close(net.depthwise.weight, base_state["depthwise.weight"], rtol=0, atol=0)


def test_lora_initialisation_is_seeded() -> None:
    a, b = _Net(), _Net()
    b.load_state_dict(a.state_dict())
    pa = add_lora(a, ["fc"], 2, 4.0, seed=7)
    pb = add_lora(b, ["fc"], 2, 4.0, seed=7)
    for x, y in zip(pa, pb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_drift_measure_and_comparison_rows() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 2.0]])
    same = drift_measure(
        {"features": feats, "top1": np.array([3, 4])}, {"features": feats, "top1": np.array([3, 4])}
    )
    assert same["imagenet_top1_agreement"] == 1.0 and same["feature_cosine"] == pytest.approx(1.0)
    moved = drift_measure(
        {"features": feats, "top1": np.array([3, 4])},
        {"features": np.array([[1.0, 1.0], [0.0, 5.0]]), "top1": np.array([3, 5])},
    )
    assert moved["imagenet_top1_agreement"] == 0.5
    assert moved["feature_cosine"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert (
        drift_measure({"features": feats, "top1": None}, {"features": feats, "top1": None})[
            "imagenet_top1_agreement"
        ]
        is None
    )

    e = {"before": 0.5, "after": 0.75, "change": 0.25, "relative_change": 0.5}
    comparison = {
        "forced_choice": {"accuracy": e},
        "probes": {"vision.0": {"test_accuracy": e}},
        "semantic": {"overall": {"mean_margin": e}, "per_class": {"blur": {"mean_rank": e}}},
        "drift": moved,
    }
    rows = comparison_rows(comparison)
    assert ["forced_choice", "all", "accuracy", 0.5, 0.75, 0.25, 0.5] in rows
    assert ["semantic", "blur", "mean_rank", 0.5, 0.75, 0.25, 0.5] in rows
    assert ["drift", "vision_encoder", "imagenet_top1_agreement", 1.0, 0.5, None, None] in rows


def test_logit_drift_is_the_kl_of_the_class_distributions() -> None:
    ref = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert logit_drift(ref.clone(), ref).item() == pytest.approx(0.0, abs=1e-7)
    assert logit_drift(ref + 5.0, ref).item() == pytest.approx(0.0, abs=1e-6)  # a shift keeps softmax
    # hand-computed: p = softmax([ln 3, 0]) = (0.75, 0.25) against q = (0.5, 0.5)
    p_logits, q_logits = torch.tensor([[np.log(3.0), 0.0]]), torch.zeros(1, 2)
    expected = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    assert logit_drift(q_logits, p_logits).item() == pytest.approx(expected, rel=1e-5)
    assert logit_drift(p_logits, q_logits).item() != pytest.approx(expected, rel=1e-3)  # KL is asymmetric
