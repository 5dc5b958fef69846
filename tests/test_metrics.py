"""Correlation metrics, the VQEG logistic mapping and bootstrap evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from iqalens.evaluation.mapping import MonotoneMap, fit_logistic4, logistic4
from iqalens.evaluation.metrics import (
    METRIC_NAMES,
    MIN_BOOTSTRAP_GROUPS,
    ci_unavailable,
    evaluate,
    krcc,
    plcc,
    rmse,
    srcc,
)

# --- hand-computed small cases -------------------------------------------------------------------


def test_hand_computed_five_points() -> None:
    # x = 1..5, y = 2 1 4 3 5: rank differences d = -1 1 -1 1 0, sum d^2 = 4
    # SRCC = 1 - 6*4 / (5*24) = 0.8; pairs: (1,2) and (3,4) discordant, 8 concordant -> tau = 6/10;
    # deviations dx = -2..2, dy = -1 -2 1 0 2: sum dx dy = 8, sum dx^2 = sum dy^2 = 10 -> r = 0.8
    x = [1, 2, 3, 4, 5]
    y = [2, 1, 4, 3, 5]
    assert srcc(x, y) == pytest.approx(0.8, abs=1e-12)
    assert krcc(x, y) == pytest.approx(0.6, abs=1e-12)
    assert plcc(x, y) == pytest.approx(0.8, abs=1e-12)


def test_hand_computed_ties() -> None:
    # x ranks 1 2.5 2.5 4, y ranks 1 3 2 4: sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    # -> SRCC = 4.5 / sqrt(22.5) = sqrt(0.9). tau-b: 5 concordant, 0 discordant, one x-tie among 6
    # pairs -> 5 / sqrt((6 - 1) * 6) = 5 / sqrt(30)
    x = [1, 2, 2, 3]
    y = [1, 3, 2, 4]
    assert srcc(x, y) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert krcc(x, y) == pytest.approx(5 / math.sqrt(30), abs=1e-12)


def test_hand_computed_plcc_three_points() -> None:
    # x = 0 1 2, y = 0 0 3: dx = -1 0 1, dy = -1 -1 2 -> 3 / sqrt(2 * 6) = sqrt(3)/2
    assert plcc([0, 1, 2], [0, 0, 3]) == pytest.approx(math.sqrt(3) / 2, abs=1e-12)


# --- against scipy on random data -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_scipy_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    y = 0.6 * x + rng.normal(size=200)
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_against_scipy_with_many_ties() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(1, 6, size=300).astype(float)  # five-level scores: heavy ties
    y = x + rng.integers(-1, 2, size=300)
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


# --- monotone, constant, too few ------------------------------------------------------------------


def test_perfect_and_inverse_monotone() -> None:
    x = np.linspace(-2, 2, 30)
    y = np.exp(x)  # monotone but not linear
    assert srcc(x, y) == pytest.approx(1.0)
    assert krcc(x, y) == pytest.approx(1.0)
    assert plcc(x, y) < 0.95
    assert srcc(x, -y) == pytest.approx(-1.0)
    assert krcc(x, -y) == pytest.approx(-1.0)


def test_logistic_data_is_recovered_exactly() -> None:
    x = np.linspace(0, 1, 40)
    y = logistic4(x, 4.6, 1.3, 0.55, 0.08)
    res = evaluate(x, y, n_boot=0)
    assert res.fit.kind == "logistic4"
    assert res.fit.params["b"] == pytest.approx([4.6, 1.3, 0.55, 0.08], abs=1e-4)
    assert res.metrics["plcc_fitted"] == pytest.approx(1.0, abs=1e-9)
    assert res.metrics["rmse"] == pytest.approx(0.0, abs=1e-5)
    assert res.metrics["plcc"] < 0.99  # the raw PLCC is hurt by the non-linearity


def test_decreasing_logistic_gives_positive_fitted_plcc() -> None:
    x = np.linspace(0, 10, 50)
    y = logistic4(x, 1.0, 5.0, 5.0, 1.5)  # b1 < b2: quality falls as x rises (e.g. a distance)
    res = evaluate(x, y, n_boot=0)
    assert res.metrics["srcc"] == pytest.approx(-1.0)
    assert res.metrics["plcc"] < 0
    assert res.metrics["plcc_fitted"] == pytest.approx(1.0, abs=1e-9)
    assert res.metrics["rmse"] == pytest.approx(0.0, abs=1e-5)


def test_constant_input_gives_nan_and_a_note() -> None:
    x = np.full(10, 0.5)
    y = np.arange(10.0)
    assert math.isnan(srcc(x, y)) and math.isnan(plcc(x, y)) and math.isnan(krcc(x, y))
    assert math.isnan(srcc(y, x))
    res = evaluate(x, y, n_boot=20)
    assert res.fit.kind == "constant"
    assert math.isnan(res.metrics["plcc_fitted"])
    assert res.metrics["rmse"] == pytest.approx(float(np.std(y)))  # mean MOS is predicted
    assert any("constant" in note for note in res.notes)
    json.dumps(res.to_dict(), allow_nan=False)  # NaN became null


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_points_raise(n: int) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        srcc(np.arange(n), np.arange(n))
    with pytest.raises(ValueError, match="at least 3"):
        evaluate(np.arange(n), np.arange(n))


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="length"):
        plcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        plcc([1, 2, np.nan], [1, 2, 3])
    with pytest.raises(ValueError, match="1-D"):
        plcc(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="sources"):
        evaluate([1, 2, 3], [1, 2, 3], sources=["a", "b"])


# --- the logistic fit's fallbacks -----------------------------------------------------------------


def test_few_points_fall_back_to_linear_with_note() -> None:
    fit = fit_logistic4([1, 2, 3, 4], [1.0, 2.5, 2.9, 4.2])
    assert fit.kind == "linear"
    assert fit.note is not None and "fewer than 5" in fit.note
    res = evaluate([1, 2, 3, 4], [1.0, 2.5, 2.9, 4.2], n_boot=0)
    assert any("linear" in note for note in res.notes)


def test_the_fit_of_an_evaluation_keeps_its_json_layout() -> None:
    # metrics.json's "fit" holds positional params; the one map type reads and writes that layout
    x = np.linspace(0, 1, 40)
    res = evaluate(x, logistic4(x, 4.6, 1.3, 0.55, 0.08), n_boot=0)
    written = json.loads(json.dumps(res.to_dict()))["fit"]
    assert set(written) == {"kind", "params", "note"} and len(written["params"]) == 4
    again = MonotoneMap.from_dict(written)
    np.testing.assert_array_equal(again(x), res.fit(x))
    assert again.to_fit_dict() == written
    line = MonotoneMap.from_dict({"kind": "linear", "params": [2.0, 1.0], "note": "fewer than 5 points"})
    assert line(1.0) == 3.0 and line.params == {"slope": 2.0, "intercept": 1.0}
    flat = MonotoneMap.from_dict({"kind": "constant", "params": [3.5], "note": None})
    assert flat([0.0, 9.0]).tolist() == [3.5, 3.5]
    with pytest.raises(ValueError, match="positional"):
        MonotoneMap.from_dict({"kind": "linear", "params": [1.0]})


def test_rmse() -> None:
    assert rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(math.sqrt(4 / 3))
    assert rmse(np.zeros(4), np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        rmse([1.0, 2.0], [1.0])


def test_linear_data_never_fits_worse_than_a_line() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 60)
    y = 2 * x + 1 + rng.normal(0, 0.05, 60)
    fit = fit_logistic4(x, y)
    line = np.polyfit(x, y, 1)
    sse_line = float(np.sum((np.polyval(line, x) - y) ** 2))
    assert float(np.sum((fit(x) - y) ** 2)) <= sse_line * (1 + 1e-6)


def test_fit_is_scale_free() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=80)
    y = logistic4(x, 4.5, 1.2, 0.2, 0.5) + rng.normal(0, 0.1, 80)
    a = fit_logistic4(x, y)
    b = fit_logistic4(1000 * x + 7, 100 * y)
    assert b(1000 * x + 7) / 100 == pytest.approx(a(x), abs=1e-4)


# --- evaluate: intervals, groups, sources --------------------------------------------------------


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, logistic4(x, 4.5, 1.2, 0.0, 0.6) + rng.normal(0, 0.3, n)


def test_evaluate_matches_point_functions_and_cis_bracket() -> None:
    x, y = _noisy(120, 0)
    res = evaluate(x, y, n_boot=200, seed=1)
    assert set(res.metrics) == set(METRIC_NAMES) == set(res.ci)
    assert res.metrics["srcc"] == pytest.approx(srcc(x, y))
    assert res.metrics["krcc"] == pytest.approx(krcc(x, y))
    assert res.metrics["plcc"] == pytest.approx(plcc(x, y))
    for name in METRIC_NAMES:
        lo, hi = res.ci[name]
        assert lo < res.metrics[name] < hi
        assert hi - lo < 0.3
    assert res.resampling == "images"


def test_evaluate_is_seed_deterministic() -> None:
    x, y = _noisy(60, 2)
    a = evaluate(x, y, n_boot=100, seed=7)
    b = evaluate(x, y, n_boot=100, seed=7)
    c = evaluate(x, y, n_boot=100, seed=8)
    assert a.ci == b.ci
    assert a.ci != c.ci


def test_group_bootstrap_is_wider_for_clustered_data() -> None:
    # 10 references, 12 images each that share the reference's quality: images are not independent
    rng = np.random.default_rng(9)
    ref_quality = rng.normal(size=10)
    groups = np.repeat(np.arange(10), 12)
    mos = ref_quality[groups] + rng.normal(0, 0.05, 120)
    pred = ref_quality[groups] + rng.normal(0, 0.6, 10)[groups] + rng.normal(0, 0.05, 120)
    by_image = evaluate(pred, mos, n_boot=200, seed=0)
    by_group = evaluate(pred, mos, n_boot=200, seed=0, groups=groups)
    width = {k: by_group.ci[k][1] - by_group.ci[k][0] for k in ("srcc", "plcc")}
    for k, w in width.items():
        assert w > 1.5 * (by_image.ci[k][1] - by_image.ci[k][0])
    assert by_group.resampling == "groups (10)"


def _grouped(n_groups: int, per_group: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    quality = rng.normal(size=n_groups)
    pred = quality[groups] + rng.normal(0, 0.5, groups.size)
    mos = quality[groups] + rng.normal(0, 0.2, groups.size)
    return pred, mos, groups


def test_group_bootstrap_needs_five_groups() -> None:
    assert MIN_BOOTSTRAP_GROUPS == 5
    # 4 groups: no interval, and the reason, in the object and in its JSON
    pred, mos, groups = _grouped(4, 10, 0)
    few = evaluate(pred, mos, n_boot=50, seed=0, groups=groups, group_name="reference images")
    assert few.ci == {}
    assert few.ci_unavailable == (
        "only 4 reference images, a bootstrap over whole reference images needs at least 5"
    )
    assert few.metrics["srcc"] == pytest.approx(srcc(pred, mos))  # the point estimates stay
    assert few.resampling == "groups (4)"
    data = json.loads(json.dumps(few.to_dict(), allow_nan=False))
    assert data["ci"] == {} and data["ci_unavailable"] == few.ci_unavailable
    assert ci_unavailable(data) == few.ci_unavailable
    # 5 groups: every metric has a computed interval
    pred, mos, groups = _grouped(5, 10, 0)
    enough = evaluate(pred, mos, n_boot=50, seed=0, groups=groups)
    assert enough.ci_unavailable is None and set(enough.ci) == set(METRIC_NAMES)
    for lo, hi in enough.ci.values():
        assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    assert enough.ci["srcc"][1] - enough.ci["srcc"][0] > 0.0
    assert ci_unavailable(enough.to_dict()) is None


def test_image_bootstrap_has_no_group_floor() -> None:
    # resampling images is unchanged: 4 images (of one reference each) still get intervals
    x, y = _noisy(4, 5)
    res = evaluate(x, y, n_boot=50, seed=0)
    assert res.ci_unavailable is None and set(res.ci) == set(METRIC_NAMES)
    assert res.resampling == "images"
    assert res.ci == evaluate(x, y, n_boot=50, seed=0).ci


def test_no_draws_is_said() -> None:
    x, y = _noisy(20, 6)
    res = evaluate(x, y, n_boot=0)
    assert res.ci == {} and "n_boot=0" in (res.ci_unavailable or "")


def test_ci_unavailable_reads_old_files() -> None:
    # evaluation JSON written before the rule: no ci_unavailable key
    old = {"ci": {"srcc": [0.31, 0.37]}, "n_boot": 200, "resampling": "groups (2)"}
    assert ci_unavailable(old) == "only 2 groups, a bootstrap over whole groups needs at least 5"
    assert ci_unavailable({**old, "resampling": "groups (12)"}) is None
    assert ci_unavailable({**old, "resampling": "images"}) is None
    assert ci_unavailable({"ci": {}, "n_boot": 0, "resampling": "images"}) is not None
    assert ci_unavailable({"ci": {}, "resampling": "groups (x)"}) is None  # malformed: nothing inferred


def test_an_estimate_outside_its_interval_is_kept_with_a_note() -> None:
    # 5 small clustered groups: refits on duplicated groups overfit, so the bootstrap RMSEs fall
    # below the full-data RMSE; the interval is reported as computed, with a note saying so
    rng = np.random.default_rng(13)
    groups = np.repeat(np.arange(5), 3)
    quality = rng.normal(size=5)
    pred = quality[groups] + rng.normal(0, 1.0, 15)
    mos = quality[groups] + rng.normal(0, 0.2, 15)
    res = evaluate(pred, mos, n_boot=100, seed=0, groups=groups)
    lo, hi = res.ci["rmse"]
    assert not lo <= res.metrics["rmse"] <= hi
    assert any("rmse lies outside its percentile interval" in n for n in res.notes)


def test_per_source_breakdown() -> None:
    x, y = _noisy(90, 3)
    sources = np.array(["a"] * 40 + ["b"] * 48 + ["tiny"] * 2)
    res = evaluate(x, y, sources=sources, n_boot=0)
    assert set(res.per_source) == {"a", "b", "tiny"}
    assert res.per_source["a"]["n"] == 40
    assert res.per_source["a"]["srcc"] == pytest.approx(srcc(x[:40], y[:40]))
    assert res.per_source["b"]["krcc"] == pytest.approx(krcc(x[40:88], y[40:88]))
    assert math.isnan(res.per_source["tiny"]["srcc"]) and "fewer than" in res.per_source["tiny"]["note"]
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["per_source"]["tiny"]["srcc"] is None
