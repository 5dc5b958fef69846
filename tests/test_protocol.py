"""The label-budget protocol (iqalens.leaf.label_budget, and the features, targets and heads it shares
with calibration) on tiny synthetic features (no backbone, no images): budgets, splits, arms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iqalens.evaluation.metrics import srcc
from iqalens.leaf.features import cache_features
from iqalens.leaf.head import HeadConfig, distill_head, finetune_head, head_scores, train_labels_only
from iqalens.leaf.label_budget import (
    ARMS,
    BudgetConfig,
    BudgetData,
    budget_indices,
    run_protocol,
    split_by_group,
    summarize,
    table_markdown,
    write_results,
)
from iqalens.leaf.targets import TeacherTargets

LEVEL_CENTRES = np.array([1.0, 0.75, 0.5, 0.25, 0.0])  # excellent .. bad, as the judgments


def synthetic(
    n_groups: int = 40, per_group: int = 10, dim: int = 32, seed: int = 0, teacher_noise: float = 0.0
) -> BudgetData:
    """Features whose hidden linear quality sets the MOS; a teacher that sees that quality (perfectly
    when ``teacher_noise`` is 0), on its own [0, 1] scale, with pairs derived from it."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    x = rng.normal(size=(n, dim))
    w = rng.normal(size=dim) / math.sqrt(dim)
    q = x @ w
    mos = 1.0 + 4.0 / (1.0 + np.exp(-q))  # MOS on 1..5, monotone in q
    seen = q + teacher_noise * rng.normal(size=n)
    e = 1.0 / (1.0 + np.exp(-seen))  # teacher's expected score in (0, 1): another monotone scale
    probs = np.exp(-((e[:, None] - LEVEL_CENTRES[None]) ** 2) / (2 * 0.1**2))
    probs /= probs.sum(axis=1, keepdims=True)
    groups = np.repeat([f"ref{g:02d}" for g in range(n_groups)], per_group)
    split = split_by_group(groups, 0.25, seed=0)
    a = rng.integers(0, n, size=3 * n)
    b = (a + rng.integers(1, n, size=3 * n)) % n
    same = split[a] == split[b]
    a, b = a[same], b[same]
    p = 1.0 / (1.0 + np.exp(-(seen[a] - seen[b]) * 4.0))
    return BudgetData(
        features=x,
        mos=mos,
        groups=groups,
        split=split,
        mos_range=(1.0, 5.0),
        teacher_probs=probs,
        teacher_expected=probs @ LEVEL_CENTRES,
        teacher_reliability=np.ones(n),
        pairs=np.stack([a, b], axis=1),
        pair_p=p,
        pair_reliability=np.ones(a.size),
    )


FAST = HeadConfig(distill_steps=150, label_steps=150, finetune_steps=60, lr=3e-3)


def test_split_by_group_is_content_disjoint_and_reproducible() -> None:
    groups = np.repeat([f"g{i}" for i in range(10)], 7)
    s1 = split_by_group(groups, 0.3, seed=4)
    assert np.array_equal(s1, split_by_group(groups, 0.3, seed=4))
    assert set(groups[s1 == "train"]).isdisjoint(groups[s1 == "test"])
    assert len(set(groups[s1 == "test"])) == 3  # 30% of 10 groups, whole groups only
    assert not np.array_equal(s1, split_by_group(groups, 0.3, seed=5))
    with pytest.raises(ValueError, match="two content groups"):
        split_by_group(["a", "a"])


def test_budget_data_refuses_a_test_split_sharing_content() -> None:
    d = synthetic(n_groups=8, per_group=4, dim=4)
    split = d.split.copy()
    first_test = int(np.flatnonzero(split == "test")[0])
    split[first_test] = "train"  # one distorted copy of a test photo leaks into train
    with pytest.raises(ValueError, match="content-disjoint"):
        BudgetData(
            d.features,
            d.mos,
            d.groups,
            split,
            d.mos_range,
            d.teacher_probs,
            d.teacher_expected,
            d.teacher_reliability,
        )


def test_budgets_are_drawn_from_train_as_specified_and_reproducible() -> None:
    d = synthetic(n_groups=20, per_group=10, dim=4)
    pool = d.indices("train")
    assert pool.size == 150  # 15 of 20 groups
    for budget, count in (("0%", 0), ("1%", 2), ("10%", 15), ("30%", 45), ("100%", 150), (7, 7), (0.2, 30)):
        idx = budget_indices(d, budget, seed=3)
        assert idx.size == count
        assert np.all(d.split[idx] == "train")
        assert np.unique(idx).size == idx.size
        assert np.array_equal(idx, budget_indices(d, budget, seed=3))
    assert not np.array_equal(budget_indices(d, "10%", seed=3), budget_indices(d, "10%", seed=4))
    assert np.array_equal(np.sort(budget_indices(d, "100%", seed=1)), pool)
    # stratified by the teacher's score: each fifth of the pool (by teacher rank) gets its share
    strat = budget_indices(d, "10%", seed=0, stratify=True)
    ranks = np.argsort(np.argsort(d.teacher_expected[pool]))
    bins = ranks[np.searchsorted(pool, strat)] * 5 // pool.size
    assert np.bincount(bins, minlength=5).tolist() == [3, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="only 150 images"):
        budget_indices(d, 151, seed=0)


def test_labels_only_is_refused_below_two_labels() -> None:
    d = synthetic(n_groups=8, per_group=4, dim=4)
    x = torch.as_tensor(d.features)
    y = (d.mos - 1) / 4
    for k in (0, 1):
        with pytest.raises(ValueError, match="undefined at this budget"):
            train_labels_only(x, d.indices("train")[:k], y, FAST, seed=0)


def test_leaf_with_a_perfect_teacher_beats_labels_only_at_small_budgets() -> None:
    d = synthetic()
    cfg = BudgetConfig(budgets=("0%", "2%", "5%", "100%"), seeds=(0, 1), head=FAST)
    out = run_protocol(d, cfg, progress=False)
    s = {(e["budget"], e["arm"]): e for e in out["summary"]}
    for b in ("2%", "5%"):
        leaf, ft, lab = s[(b, "leaf")], s[(b, "leaf_ft")], s[(b, "labels_only")]
        assert leaf["srcc_mean"] > 0.95  # the teacher ranks perfectly; a monotone map keeps that
        assert leaf["srcc_mean"] > lab["srcc_mean"] + 0.1
        assert ft["srcc_mean"] > lab["srcc_mean"] + 0.1
        assert leaf["plcc_mean"] > lab["plcc_mean"]
    # budget 0: LEAF is label-free (defined), labels-only undefined (NaN, not trained)
    assert s[("0%", "leaf")]["status"] == "label_free" and s[("0%", "leaf")]["srcc_mean"] > 0.95
    assert s[("0%", "labels_only")]["status"] == "undefined"
    assert math.isnan(s[("0%", "labels_only")]["srcc_mean"])
    rows0 = [r for r in out["rows"] if r["budget"] == "0%" and r["arm"] == "labels_only"]
    assert len(rows0) == 2 and all(r["status"] == "undefined" and math.isnan(r["srcc"]) for r in rows0)
    # with every label the labels-only head learns the (linear) quality too
    assert s[("100%", "labels_only")]["srcc_mean"] > 0.9
    # calibration lowers the error below the label-free scale mismatch
    assert s[("5%", "leaf")]["rmse_mean"] < s[("0%", "leaf")]["rmse_mean"]


def test_protocol_is_reproducible_and_the_table_has_its_shape(tmp_path) -> None:
    d = synthetic(n_groups=12, per_group=6, dim=8)
    budgets = ("0%", "10%", "50%")
    cfg = BudgetConfig(
        budgets=budgets, seeds=(0, 1, 2), head=HeadConfig(distill_steps=20, label_steps=20, finetune_steps=10)
    )
    a = run_protocol(d, cfg, progress=False)
    b = run_protocol(d, cfg, progress=False)
    # the same computation twice in one process: bit-identical (NaN where undefined)
    np.testing.assert_array_equal([r["srcc"] for r in a["rows"]], [r["srcc"] for r in b["rows"]])
    assert len(a["rows"]) == len(budgets) * 3 * len(ARMS)
    assert len(a["summary"]) == len(budgets) * len(ARMS)
    assert {(e["budget"], e["arm"]) for e in a["summary"]} == {(x, y) for x in budgets for y in ARMS}
    n_train = d.indices("train").size
    assert [e["n_labels"] for e in a["summary"] if e["arm"] == "leaf"] == [
        0,
        round(0.1 * n_train),
        round(0.5 * n_train),
    ]
    table = table_markdown(a["summary"])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(budgets)
    assert all(line.count("|") == 2 + 2 * len(ARMS) + 1 for line in lines)  # budget, labels, 2 x 3 arms
    assert "undefined" in lines[2] and "±" in lines[3]
    write_results(tmp_path, a, cfg)
    for name in ("results.json", "rows.csv", "summary.csv", "table.md"):
        assert (tmp_path / name).is_file()


def test_summary_mean_and_sample_std_by_hand() -> None:
    rows = [
        {"arm": "leaf", "budget": "5", "status": "ok", "srcc": v, "plcc": v, "rmse": 1.0}
        for v in (0.5, 0.7, 0.9)
    ]
    (e,) = summarize(rows, ["leaf"], ["5"], {"5": 5})
    assert e["srcc_mean"] == pytest.approx(0.7)
    assert e["srcc_std"] == pytest.approx(0.2)  # sqrt(((-.2)^2 + 0 + .2^2) / 2)
    assert e["rmse_std"] == 0.0 and e["n_seeds"] == 3


def test_finetune_keeps_the_distilled_ranking_as_regulariser() -> None:
    """Mode (b) with the regulariser on vs off, from a head that knows the teacher's ranking, on three
    labels: the regulariser keeps the teacher's ranking (high SRCC on test)."""
    d = synthetic()
    x = torch.as_tensor(d.features)
    pool, test = d.indices("train"), d.indices("test")
    teacher = TeacherTargets.of(d, pool)

    head = distill_head(x, teacher, FAST, seed=0)
    lab = pool[:3]
    y = (d.mos - 1) / 4
    with_reg = finetune_head(head, x, lab, y, teacher, HeadConfig(finetune_steps=150, finetune_lr=3e-3), 0)
    no_reg = finetune_head(
        head, x, lab, y, teacher, HeadConfig(finetune_steps=150, finetune_lr=3e-3, finetune_lambda=0.0), 0
    )
    s_reg = srcc(head_scores(with_reg, x[test]), d.mos[test])
    s_no = srcc(head_scores(no_reg, x[test]), d.mos[test])
    assert s_reg > 0.9
    assert s_reg > s_no
    # the original head is untouched (fine-tuning works on a copy)
    assert srcc(head_scores(head, x[test]), d.mos[test]) > 0.95
    with pytest.raises(ValueError, match="at least one label"):
        finetune_head(head, x, lab[:0], y, teacher, FAST, 0)


def test_feature_cache_writes_once_per_image(tmp_path) -> None:
    from PIL import Image

    from iqalens.leaf.student import StudentConfig

    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((40, 48, 3), 60 * i, dtype=np.uint8)).save(p)
        paths.append(p)
    cfg = StudentConfig(backbone="tiny", pretrained=False, image_size=32, resize_shorter=32)
    f1 = cache_features(paths, tmp_path / "feat", cfg, batch_size=2, progress=False)
    assert f1.shape == (3, 16) and f1.dtype == np.float32
    assert len(list((tmp_path / "feat").glob("*.npy"))) == 3
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "feat").glob("*.npy")}
    f2 = cache_features(paths, tmp_path / "feat", cfg, progress=False)
    assert np.array_equal(f1, f2)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "feat").glob("*.npy")} == stamp
    paths.append(tmp_path / "im9.png")
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(paths[-1])
    other = StudentConfig(backbone="tiny", pretrained=False, image_size=32, resize_shorter=40)
    with pytest.raises(ValueError, match="another backbone setting"):
        cache_features(paths, tmp_path / "feat", other, progress=False)


def _three_images(folder) -> list:
    from PIL import Image

    paths = []
    for i in range(3):
        p = folder / f"im{i}.png"
        Image.fromarray(np.full((40, 48, 3), 60 * i, dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_feature_cache_of_multiscale_pooling_has_its_own_folder(tmp_path) -> None:
    import json

    from iqalens.leaf.student import StudentConfig

    paths = _three_images(tmp_path)
    last = StudentConfig(backbone="tiny", pretrained=False, image_size=32, resize_shorter=32)
    multi = StudentConfig(
        backbone="tiny", pretrained=False, image_size=32, resize_shorter=32, pooling="multiscale"
    )
    f_last = cache_features(paths, tmp_path / "last", last, progress=False)
    f_multi = cache_features(paths, tmp_path / "multi", multi, progress=False)
    assert f_last.shape == (3, 16) and f_multi.shape == (3, 64)
    # same seeded weights; the last map (4 x 4) averaged by another op: a float32 mean of n = 16 values
    # in another order is within n eps = 1.9e-6 relative (tests/tolerances.py)
    np.testing.assert_allclose(f_multi[:, -16:], f_last, rtol=1e-5, atol=1e-6)
    assert (
        json.loads((tmp_path / "multi" / "features.json").read_text())["student"]["pooling"] == "multiscale"
    )
    # Every feature is cached, yet the other setting is refused: it would return features of another kind.
    with pytest.raises(ValueError, match="another backbone setting"):
        cache_features(paths, tmp_path / "last", multi, progress=False)
    with pytest.raises(ValueError, match="another backbone setting"):
        cache_features(paths, tmp_path / "multi", last, progress=False)
    # A folder written before the pooling field existed holds "last" features.
    meta = tmp_path / "last" / "features.json"
    old = json.loads(meta.read_text())
    del old["student"]["pooling"]
    meta.write_text(json.dumps(old))
    assert np.array_equal(cache_features(paths, tmp_path / "last", last, progress=False), f_last)
    with pytest.raises(ValueError, match="another backbone setting"):
        cache_features(paths, tmp_path / "last", multi, progress=False)


def test_an_interrupted_feature_cache_resumes(tmp_path) -> None:
    """The folder's own setting, read back from JSON (lists, not tuples), is accepted when features are
    still missing."""
    from iqalens.leaf.student import StudentConfig

    paths = _three_images(tmp_path)
    cfg = StudentConfig(
        backbone="tiny", pretrained=False, image_size=32, resize_shorter=32, pooling="multiscale"
    )
    first = cache_features(paths[:2], tmp_path / "feat", cfg, progress=False)
    full = cache_features(paths, tmp_path / "feat", cfg, progress=False)
    assert full.shape == (3, 64) and np.array_equal(full[:2], first)


def test_l2_selection_uses_neither_labels_nor_the_test_split() -> None:
    from dataclasses import replace

    from iqalens.leaf.label_budget import select_l2

    data = synthetic(n_groups=16, per_group=6, teacher_noise=0.5)
    cfg = replace(FAST, distill_steps=60, l2_candidates=(0.0, 0.1, 3.0))
    x = torch.as_tensor(data.features, dtype=torch.float32)
    chosen, criteria = select_l2(x, data, cfg, seed=0)
    assert set(criteria) == {"0", "0.1", "3"} and chosen in cfg.l2_candidates
    assert criteria[f"{chosen:g}"] == max(criteria.values())
    # scrambling every MOS and every test image's features changes nothing
    rng = np.random.default_rng(1)
    test = data.indices("test")
    feats = data.features.copy()
    feats[test] = rng.normal(size=feats[test].shape)
    scrambled = replace(data, mos=rng.permutation(data.mos), features=feats)
    x2 = torch.as_tensor(scrambled.features, dtype=torch.float32)
    assert select_l2(x2, scrambled, cfg, seed=0) == (chosen, criteria)
    # the protocol records the choice per seed and trains every arm of that seed with it
    config = BudgetConfig(budgets=("10%",), seeds=(0,), head=cfg, standardize=False)  # the x above
    result = run_protocol(data, config, progress=False)
    assert result["l2_selection"]["0"]["l2"] == chosen
    assert {r["l2"] for r in result["rows"]} == {chosen}


def test_a_step_shaped_logistic_falls_back_to_a_line() -> None:
    from iqalens.leaf.label_budget.run import _calibrate

    data = synthetic(n_groups=8, per_group=5)
    scores = np.linspace(0.0, 1.0, 40)
    step_mos = np.where(scores < 0.5, 1.0, 5.0)  # labels that a logistic fits as a near-step
    pool = np.random.default_rng(0).uniform(0.0, 1.0, 500)
    cal = _calibrate(scores, step_mos, BudgetConfig(), data, pool)
    assert cal.kind == "linear"
    assert np.unique(cal(pool)).size == pool.size  # the ranking of the pool survives
    smooth_mos = 1.0 + 4.0 / (1.0 + np.exp(-(scores - 0.5) * 6))
    assert _calibrate(scores, smooth_mos, BudgetConfig(), data, pool).kind == "logistic4"
