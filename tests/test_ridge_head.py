"""Closed-form ridge heads (iqalens.leaf.ridge_head) and the protocol's ridge solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.head import (
    FeatureHead,
    HeadConfig,
    distill_head,
    finetune_head,
    head_scores,
    train_labels_only,
)
from iqalens.leaf.label_budget import BudgetConfig, run_protocol
from iqalens.leaf.ridge_head import (
    LABEL_L2_GRID,
    RidgePath,
    choose_l2_by_labels,
    fold_standardisation,
    ridge_distill,
    ridge_finetune,
    ridge_labels,
)
from iqalens.leaf.targets import TeacherTargets
from test_protocol import synthetic

RIDGE = HeadConfig(solver="ridge", l2=0.1)


def _direct_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """The weighted mean-loss ridge solved by a plain linear system (the reference for RidgePath)."""
    w = w / w.sum()
    xm, ym = w @ x, w @ y
    xc = x - xm
    coef = np.linalg.solve(xc.T @ (xc * w[:, None]) + l2 * np.eye(x.shape[1]), xc.T @ (w * (y - ym)))
    return coef, float(ym - xm @ coef)


@pytest.mark.parametrize("n", [50, 12])  # primal (n >= d) and dual (n < d) forms
def test_ridge_path_matches_the_normal_equations(n: int) -> None:
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(n, 20)), rng.normal(size=n), rng.uniform(0.2, 2.0, size=n)
    path = RidgePath(x, y, w)
    for l2 in (0.01, 1.0, 100.0):
        coef, bias = path.solve(l2)
        ref_coef, ref_bias = _direct_ridge(x, y, w, l2)
        np.testing.assert_allclose(coef[:, 0], ref_coef, rtol=1e-6, atol=1e-9)
        assert bias[0] == pytest.approx(ref_bias, rel=1e-6, abs=1e-9)
    with pytest.raises(InvalidInputError, match="> 0"):
        path.solve(0.0)
    with pytest.raises(InvalidInputError, match="weights"):
        RidgePath(x, y, -w)


def test_ridge_distill_recovers_a_linear_teacher_on_unseen_rows() -> None:
    data = synthetic(teacher_noise=0.0)
    pool, test = data.indices("train"), data.indices("test")
    x = torch.as_tensor(data.features)
    head = ridge_distill(x, TeacherTargets.of(data, pool), l2=0.01)
    assert isinstance(head, FeatureHead)
    s = head_scores(head, x[test])
    assert srcc(s, data.teacher_expected[test]) > 0.9
    # the level logits follow the teacher's distribution: argmax agrees on most unseen rows
    with torch.no_grad():
        logits = head(x[test])[1].numpy()
    agree = np.mean(logits.argmax(1) == data.teacher_probs[test].argmax(1))
    assert agree > 0.6


def test_a_larger_penalty_shrinks_the_head() -> None:
    data = synthetic()
    x, teacher = torch.as_tensor(data.features), TeacherTargets.of(data, data.indices("train"))
    small, large = ridge_distill(x, teacher, 0.01), ridge_distill(x, teacher, 1000.0)
    assert large.head.weight[0].norm() < 0.2 * small.head.weight[0].norm()


def test_labels_only_ridge_fits_the_labels_and_refuses_too_few() -> None:
    data = synthetic()
    x = torch.as_tensor(data.features)
    lab = data.indices("train")[:80]
    y01 = (data.mos - 1.0) / 4.0
    head = train_labels_only(x, lab, y01, RIDGE, seed=0)
    test = data.indices("test")
    assert srcc(head_scores(head, x[test]), data.mos[test]) > 0.8
    np.testing.assert_allclose(
        head_scores(head, x[test]), head_scores(ridge_labels(x, lab, y01, 0.1), x[test])
    )
    with pytest.raises(InvalidInputError, match="at least 2 labels"):
        train_labels_only(x, lab[:1], y01, RIDGE, seed=0)


def test_finetune_with_a_huge_penalty_is_the_linearly_mapped_prior() -> None:
    data = synthetic(teacher_noise=0.5)
    x = torch.as_tensor(data.features)
    teacher = TeacherTargets.of(data, data.indices("train"))
    prior = distill_head(x, teacher, RIDGE, seed=0)
    lab = data.indices("train")[:30]
    y01 = (data.mos - 1.0) / 4.0
    stiff = ridge_finetune(prior, x, lab, y01, l2=1e9)
    s0, s1 = head_scores(prior, x), head_scores(stiff, x)
    assert np.corrcoef(s0, s1)[0, 1] > 0.9999  # same ranking: only the scale map moved it
    a = np.polyfit(s0[lab], y01[lab], 1)
    np.testing.assert_allclose(s1, np.polyval(a, s0), atol=1e-4)  # the least-squares line on the labels
    loose = finetune_head(prior, x, lab, y01, teacher, HeadConfig(solver="ridge", l2=1e-3), seed=0)
    train_err = np.mean((head_scores(loose, x[lab]) - y01[lab]) ** 2)
    assert train_err < np.mean((s1[lab] - y01[lab]) ** 2)  # a small penalty follows the labels
    # the level logits are the prior's
    with torch.no_grad():
        np.testing.assert_allclose(loose.head.weight[1:].numpy(), prior.head.weight[1:].numpy())


def test_label_cv_reads_only_the_labelled_rows_and_needs_enough_groups() -> None:
    data = synthetic()
    x = torch.as_tensor(data.features)
    y01 = (data.mos - 1.0) / 4.0
    lab = data.indices("train")[:100]
    chosen, scores = choose_l2_by_labels(x, lab, y01, data.groups)
    assert chosen is not None and set(scores) == {f"{v:g}" for v in LABEL_L2_GRID}
    poisoned = y01.copy()
    outside = np.setdiff1d(np.arange(y01.size), lab)
    poisoned[outside] = np.random.default_rng(1).uniform(size=outside.size)
    assert choose_l2_by_labels(x, lab, poisoned, data.groups) == (chosen, scores)
    one_group = np.array(["same"] * y01.size)
    assert choose_l2_by_labels(x, lab, y01, one_group) == (None, {})
    assert choose_l2_by_labels(x, lab[:5], y01, data.groups) == (None, {})


def test_ridge_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="solver"):
        HeadConfig(solver="lbfgs")
    with pytest.raises(ConfigError, match="l2 > 0"):
        HeadConfig(solver="ridge")
    with pytest.raises(ConfigError, match="l2 > 0"):
        HeadConfig(solver="ridge", l2=1.0, l2_candidates=(0.0, 1.0))


def test_protocol_with_the_ridge_solver_beats_labels_only_at_a_small_budget() -> None:
    data = synthetic(teacher_noise=0.2)
    cfg = BudgetConfig(
        budgets=(0, 12, 1.0),
        seeds=(0, 1),
        head=HeadConfig(solver="ridge", l2=1.0, l2_candidates=(0.01, 0.1, 1.0, 10.0)),
    )
    out = run_protocol(data, cfg, progress=False)
    again = run_protocol(data, cfg, progress=False)["rows"]
    assert [{**r, "seconds": 0} for r in again] == [{**r, "seconds": 0} for r in out["rows"]]  # deterministic
    by = {(r["arm"], r["budget"], r["seed"]): r for r in out["rows"]}
    for seed in (0, 1):
        assert by[("leaf", "0", seed)]["srcc"] > 0.8  # label-free from a good teacher
        assert by[("leaf_ft", "12", seed)]["srcc"] > by[("labels_only", "12", seed)]["srcc"]
        assert by[("labels_only", "1.0", seed)]["l2"] in LABEL_L2_GRID


def test_folding_the_standardisation_gives_the_same_scores_on_raw_features() -> None:
    rng = np.random.default_rng(5)
    raw = rng.normal(3.0, 5.0, size=(60, 8))
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    data = synthetic(n_groups=6, per_group=10, dim=8)
    teacher = TeacherTargets.of(data, data.indices("train"))
    head = ridge_distill((raw - mean) / std, teacher, 0.1)
    folded = fold_standardisation(head, mean, std)
    z = torch.as_tensor((raw - mean) / std, dtype=torch.float32)
    np.testing.assert_allclose(
        head_scores(folded, torch.as_tensor(raw, dtype=torch.float32)), head_scores(head, z), atol=1e-4
    )
