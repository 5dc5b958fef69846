"""Few-label calibration: monotone maps, isotonic fits, serialisation, label-free mode, label budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from iqalens.datasets.manifest import MosScale
from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.evaluation.mapping import MonotoneMap, logistic4
from iqalens.evaluation.metrics import rmse
from iqalens.leaf.calibration import (
    MIN_POINTS,
    Calibrator,
    draw_budget,
    fit,
    label_free,
    load_calibrator,
    logistic5,
    parse_budget,
    save_calibrator,
)

# --- each mapping recovers a known monotone transform ----------------------------------------------


def _samples(truth, n: int, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    return x, truth(x) + rng.normal(0, noise, n)


GRID = np.linspace(0.05, 0.95, 50)


def test_linear_recovers_line() -> None:
    x, y = _samples(lambda t: 4 * t + 1, 40, 0)
    cal = fit(x, y, "linear")
    assert cal.kind == "linear"
    assert cal.params["slope"] == pytest.approx(4, abs=0.1)
    assert cal.params["intercept"] == pytest.approx(1, abs=0.05)


def test_logistic4_recovers_logistic() -> None:
    def truth(t):
        return logistic4(t, 4.6, 1.2, 0.45, 0.1)

    x, y = _samples(truth, 60, 1)
    cal = fit(x, y, "logistic4")
    assert cal.kind == "logistic4"
    assert np.max(np.abs(cal(GRID) - truth(GRID))) < 0.1


def test_logistic4_decreasing() -> None:
    def truth(t):
        return logistic4(t, 1.0, 5.0, 0.5, 0.15)

    x, y = _samples(truth, 60, 2)
    cal = fit(x, y, "logistic4")
    assert np.max(np.abs(cal(GRID) - truth(GRID))) < 0.1


def test_logistic5_recovers_asymmetric_curve_and_is_monotone() -> None:
    def truth(t):
        return logistic5(t, 3.0, 12.0, 0.6, 1.0, 2.5)

    x, y = _samples(truth, 80, 3)
    cal = fit(x, y, "logistic5")
    assert cal.kind == "logistic5"
    assert np.max(np.abs(cal(GRID) - truth(GRID))) < 0.1
    dense = cal(np.linspace(-1, 2, 500))
    assert np.all(np.diff(dense) >= -1e-12)


def test_logistic5_decreasing_is_monotone() -> None:
    x, y = _samples(lambda t: 5 - 3 * t**2, 50, 4)
    cal = fit(x, y, "logistic5")
    assert np.all(np.diff(cal(np.linspace(-1, 2, 500))) <= 1e-12)
    assert np.max(np.abs(cal(GRID) - (5 - 3 * GRID**2))) < 0.15


def test_isotonic_recovers_convex_transform() -> None:
    def truth(t):
        return 1 + 4 * t**3

    x, y = _samples(truth, 400, 5)
    cal = fit(x, y, "isotonic")
    assert cal.kind == "isotonic"
    assert np.mean(np.abs(cal(GRID) - truth(GRID))) < 0.05


def test_few_labels_calibrate_well() -> None:
    # the use case: 20 labelled images of 1000 give a map that is close everywhere
    def truth(t):
        return logistic4(t, 4.6, 1.2, 0.45, 0.15)

    x, y = _samples(truth, 1000, 6, noise=0.1)
    idx = draw_budget(1000, "2%", seed=0, strata=x)
    for method in ("logistic4", "logistic5", "isotonic", "linear"):
        cal = fit(x[idx], y[idx], method)
        assert rmse(cal(x), y) < (0.35 if method == "linear" else 0.2), method


# --- isotonic details -----------------------------------------------------------------------------


def _brute_isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Max-min formula: f_i = max_{j<=i} min_{k>=i} weighted mean of y[j..k]."""
    n = len(y)
    out = np.empty(n)
    for i in range(n):
        out[i] = max(
            min(float(np.average(y[j : k + 1], weights=w[j : k + 1])) for k in range(i, n))
            for j in range(i + 1)
        )
    return out


@pytest.mark.parametrize("seed", range(8))
def test_isotonic_matches_brute_force(seed: int) -> None:
    # integer scores with repeats: equal scores pool into one knot weighted by its count
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    x = rng.integers(0, 6, size=n).astype(float)
    x[:2] = [0.0, 5.0]  # never constant
    y = rng.normal(size=n).round(1) + (x if seed % 2 else -x) / 3
    knots, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y) / counts
    rising = stats.spearmanr(x, y).statistic >= 0
    expected = _brute_isotonic(means, counts) if rising else -_brute_isotonic(-means, counts)
    cal = fit(x, y, "isotonic")
    assert cal.params["xs"] == knots.tolist()
    assert cal.params["ys"] == pytest.approx(expected, abs=1e-12)


def test_isotonic_hand_case() -> None:
    # 1 3 2 4 -> pool (3, 2) to 2.5; 5 1 1 1 -> the decreasing direction keeps it (rank correlation < 0)
    assert fit([0, 1, 2, 3], [1, 3, 2, 4], "isotonic").params["ys"] == pytest.approx([1, 2.5, 2.5, 4])
    assert fit([0, 1, 2, 3], [5, 1, 2, 1], "isotonic").params["ys"] == pytest.approx([5, 1.5, 1.5, 1])


def test_isotonic_interpolates_clamps_and_pools_ties() -> None:
    cal = fit([0, 1, 1, 2, 4], [1.0, 2.0, 4.0, 3.0, 5.0], "isotonic")
    # x=1 pooled to 3.0, then (3.0 at x=1, 3.0 at x=2) already monotone
    assert cal.params["xs"] == [0, 1, 2, 4]
    assert cal.params["ys"] == pytest.approx([1.0, 3.0, 3.0, 5.0])
    assert cal([0.5, 3.0]) == pytest.approx([2.0, 4.0])  # linear between knots
    assert cal([-10.0, 10.0]) == pytest.approx([1.0, 5.0])  # clamped outside
    dense = cal(np.linspace(-1, 5, 100))
    assert np.all(np.diff(dense) >= 0)


def test_isotonic_decreasing() -> None:
    x, y = _samples(lambda t: 5 - 4 * t, 100, 7, noise=0.3)
    cal = fit(x, y, "isotonic")
    assert np.all(np.diff(cal.params["ys"]) <= 0)
    assert cal(0.0) > cal(1.0)


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(MIN_POINTS))
def test_too_few_points_raise(method: str) -> None:
    k = MIN_POINTS[method] - 1
    with pytest.raises(ValueError, match=f"{method} calibration needs at least {MIN_POINTS[method]}"):
        fit(np.arange(k, dtype=float), np.arange(k, dtype=float), method)
    cal = fit(np.arange(k + 1.0), np.arange(k + 1.0) * 2, method)  # exactly the minimum works
    assert cal(1.0) == pytest.approx(2.0, abs=1e-3)


def test_fit_errors() -> None:
    with pytest.raises(UnknownNameError, match="unknown calibration method 'spline'; known: linear"):
        fit([1, 2, 3], [1, 2, 3], "spline")
    with pytest.raises(UnknownNameError, match="unknown calibration method"):
        draw_budget(10, 5, method="spline")
    with pytest.raises(InvalidInputError, match="all scores are equal"):
        fit([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6], "logistic4")
    with pytest.raises(ValueError, match="finite"):
        fit([1, 2, np.nan], [1, 2, 3], "linear")


def test_logistic_with_constant_mos_falls_back_to_linear_with_note() -> None:
    cal = fit(np.arange(10.0), np.full(10, 3.0), "logistic4")
    assert cal.kind == "linear" and cal.note and "logistic4 requested" in cal.note
    assert cal([0.0, 100.0]) == pytest.approx([3.0, 3.0])


# --- auto: the mapping chosen by cross-validation -------------------------------------------------


def test_auto_avoids_a_step_logistic_on_weak_noisy_labels() -> None:
    # 38 labels of a weakly correlated score: least squares makes the 4PL a near-step that maps
    # most images to one asymptote (what the demo once showed); leave-one-out sees it generalise worse.
    rng = np.random.default_rng(1)
    x = rng.normal(size=38)
    y = 3 + 0.2 * x + 0.8 * rng.normal(size=38)
    step = fit(x, y, "logistic4")
    assert np.mean(np.isclose(step(x), np.median(step(x)), atol=0.01)) > 0.7  # the collapse is real
    cal = fit(x, y, "auto")
    cv = cal.extra["auto"]["cv_rmse"]
    assert cal.kind == "linear" and cv["linear"] < cv["logistic4"]
    assert cal.note and cal.note.startswith("auto: linear by leave-one-out")
    # the linear CV RMSE is the leave-one-out error computed by hand
    errs = [fit(np.delete(x, i), np.delete(y, i), "linear")(x[i])[()] - y[i] for i in range(x.size)]
    assert cv["linear"] == pytest.approx(float(np.sqrt(np.mean(np.square(errs)))))
    np.testing.assert_allclose(cal(x), fit(x, y, "linear")(x))


def test_auto_keeps_the_logistic_when_the_data_are_sigmoidal() -> None:
    x, y = _samples(lambda t: logistic4(t, 4.5, 1.5, 0.5, 0.08), 200, 3)
    cal = fit(x, y, "auto")
    assert cal.kind == "logistic4" and cal.extra["auto"]["cv"] == "10-fold (seed 0)"
    assert set(cal.extra["auto"]["cv_rmse"]) == {"linear", "logistic4"}


def test_auto_with_few_points_skips_the_logistic() -> None:
    cal = fit([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.9, 4.2], "auto")
    assert set(cal.extra["auto"]["cv_rmse"]) == {"linear"} and cal.kind == "linear"  # 3 points < 5


def test_auto_keeps_the_ranking_where_isotonic_would_tie() -> None:
    # a noisy monotone relation: isotonic fits it with plateaus (ties), auto stays strictly monotone
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, 40)
    y = 1.0 + 3.0 * x + rng.normal(0, 0.6, 40)
    assert len(np.unique(fit(x, y, "isotonic")(x))) < 40
    cal = fit(x, y, "auto")
    assert cal.kind in {"linear", "logistic4"}
    order = np.argsort(x)
    assert np.all(np.diff(cal(x[order])) > 0)


# --- serialisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(MIN_POINTS))
def test_round_trip(method: str, tmp_path) -> None:
    x, y = _samples(lambda t: logistic4(t, 4.5, 1.5, 0.5, 0.12), 50, 8)
    cal = fit(x, y, method)
    probe = np.linspace(-0.5, 1.5, 41)
    text = json.dumps(cal.to_dict(), allow_nan=False)
    again = Calibrator.from_dict(json.loads(text))
    assert again == cal
    np.testing.assert_array_equal(again(probe), cal(probe))
    path = save_calibrator(cal, tmp_path / "run" / "calibration.json")
    loaded = load_calibrator(path)
    np.testing.assert_array_equal(loaded(probe), cal(probe))
    assert loaded.n_fit == 50


def test_a_calibration_file_of_an_earlier_version_loads(tmp_path) -> None:
    # calibration.json as iqalens wrote it before the map type moved to the measures layer
    old = {
        "kind": "logistic4",
        "params": {"b": [4.6, 1.2, 0.45, 0.1]},
        "n_fit": 12,
        "note": None,
        "clip": [1.0, 5.0],
        "extra": {"scale": {"low": 1.0, "high": 5.0, "higher_is_better": True, "name": "MOS of m.csv"}},
    }
    (tmp_path / "calibration.json").write_text(json.dumps(old))
    cal = load_calibrator(tmp_path / "calibration.json")
    assert isinstance(cal, MonotoneMap) and Calibrator is MonotoneMap  # one map type
    assert cal.to_dict() == old
    assert cal(0.45) == pytest.approx(2.9)


def test_round_trip_label_free_keeps_clip(tmp_path) -> None:
    cal = label_free((1.0, 5.0))
    loaded = load_calibrator(save_calibrator(cal, tmp_path / "c.json"))
    assert loaded.clip == (1.0, 5.0)
    assert loaded(1.5) == pytest.approx(5.0)


def test_from_dict_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="kind"):
        Calibrator.from_dict({"params": {}})
    with pytest.raises(ValueError, match="unknown monotone map kind"):
        Calibrator.from_dict({"kind": "spline", "params": {}})
    with pytest.raises(ValueError, match="lacks slope"):
        Calibrator.from_dict({"kind": "linear", "params": {"intercept": 1.0}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_calibrator(bad)


def test_soft_clip_bounds_without_ties() -> None:
    from iqalens.evaluation.mapping import soft_clip

    x = np.linspace(-3.0, 9.0, 2001)
    y = soft_clip(x, 1.0, 5.0)
    assert np.all(np.diff(y) > 0) and y.min() > 1.0 and y.max() < 5.0  # strictly increasing, inside
    inside = (x >= 1.2) & (x <= 4.8)  # the range shrunk by 5% of its width at each end
    np.testing.assert_array_equal(y[inside], x[inside])
    eps = 1e-7  # continuous with slope 1 where the compression starts
    assert soft_clip(1.2 - eps, 1.0, 5.0) == pytest.approx(1.2 - eps, abs=1e-12)
    assert soft_clip(-100.0, 1.0, 5.0) == 1.0  # far beyond a bound it rounds onto it (float64)


# --- label-free mode --------------------------------------------------------------------------------


def test_label_free_linear() -> None:
    cal = label_free(MosScale(1.0, 5.0))
    assert cal([0.25, 0.5, 0.75]) == pytest.approx([2.0, 3.0, 4.0])
    # bounded softly: the ends of the range are approached, never reached, and order is kept
    ends = cal([-0.2, 0.0, 1.0, 1.3])
    assert 1.0 < ends[0] < ends[1] < 1.1 and 4.9 < ends[2] < ends[3] < 5.0
    assert cal.note and "linearly" in cal.note
    assert label_free((0.0, 100.0))(0.37) == pytest.approx(37.0)


def test_label_free_quantile() -> None:
    rng = np.random.default_rng(0)
    scores = rng.beta(8, 3, 2001)  # a teacher crowding its scores near the top of [0, 1]
    cal = label_free((1.0, 5.0), "quantile", scores=scores)
    mapped = cal(scores)
    assert np.median(mapped) == pytest.approx(3.0, abs=0.01)  # median score -> middle of the range
    assert np.quantile(mapped, 0.25) == pytest.approx(2.0, abs=0.02)
    assert 1.0 < mapped.min() < 1.1 and 4.9 < mapped.max() < 5.0  # the ends approached softly
    assert np.all(np.diff(cal(np.sort(scores))) >= 0)
    ref = rng.normal(3.5, 0.4, 5000)
    cal_ref = label_free((1.0, 5.0), "quantile", scores=scores, reference_mos=ref)
    assert np.median(cal_ref(scores)) == pytest.approx(np.median(ref), abs=0.02)


def test_label_free_errors() -> None:
    with pytest.raises(ValueError, match="low < high"):
        label_free((5.0, 1.0))
    with pytest.raises(ValueError, match="needs the unlabelled scores"):
        label_free((1.0, 5.0), "quantile")
    with pytest.raises(UnknownNameError, match="'linear' or 'quantile'"):
        label_free((1.0, 5.0), "cdf")


# --- budgets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "n", "expected"),
    [
        (50, 300, 50),
        ("50", 300, 50),
        ("10%", 300, 30),
        ("10%", 25, 3),
        (" 5% ", 41, 2),
        (0.1, 300, 30),
        (1.0, 7, 7),
        ("100%", 7, 7),
        (0, 10, 0),
        ("0%", 10, 0),
    ],
)
def test_parse_budget(budget, n: int, expected: int) -> None:
    assert parse_budget(budget, n) == expected


@pytest.mark.parametrize("budget", [301, "301", "101%", "-1%", "ten", 10.0, -1, True])
def test_parse_budget_errors(budget) -> None:
    with pytest.raises(ValueError):
        parse_budget(budget, 300)


def test_draw_budget_count_percent_and_bounds() -> None:
    idx = draw_budget(300, 50, seed=1)
    assert idx.size == 50 and np.unique(idx).size == 50
    assert idx.min() >= 0 and idx.max() < 300 and np.all(np.diff(idx) > 0)
    assert draw_budget(300, "10%", seed=1).size == 30
    assert draw_budget(7, "100%").tolist() == list(range(7))
    assert draw_budget(10, 0).size == 0
    with pytest.raises(ValueError, match="only 10 images"):
        draw_budget(10, 11)


def test_draw_budget_seed_determinism() -> None:
    a = draw_budget(1000, "5%", seed=3)
    assert np.array_equal(a, draw_budget(1000, "5%", seed=3))
    assert not np.array_equal(a, draw_budget(1000, "5%", seed=4))
    s = np.random.default_rng(0).uniform(size=1000)
    b = draw_budget(1000, 50, seed=3, strata=s)
    assert np.array_equal(b, draw_budget(1000, 50, seed=3, strata=s))


def test_draw_budget_minimum_for_method() -> None:
    with pytest.raises(ValueError, match="logistic4 calibration needs at least 5"):
        draw_budget(100, "4%", method="logistic4")
    with pytest.raises(ValueError, match="needs at least 2"):
        draw_budget(100, 0, method="linear")
    assert draw_budget(100, "5%", method="logistic4").size == 5


def test_draw_budget_stratified_proportions() -> None:
    rng = np.random.default_rng(1)
    scores = rng.beta(5, 2, 1000)  # skewed: plain random draws would under-sample the low end
    idx = draw_budget(1000, 50, seed=0, strata=scores, n_bins=5)
    edges = np.quantile(scores, [0.2, 0.4, 0.6, 0.8])
    per_bin = np.bincount(np.searchsorted(edges, scores[idx]), minlength=5)
    assert per_bin.tolist() == [10, 10, 10, 10, 10]
    # uneven bins (n = 13, 3 bins by rank -> sizes 5, 4, 4; quotas 2.31, 1.85, 1.85): 2, 2, 2
    idx = draw_budget(13, 6, seed=0, strata=np.arange(13.0), n_bins=3)
    assert np.bincount(np.arange(13) * 3 // 13)[0] == 5  # bins by rank: sizes 5, 4, 4
    assert np.bincount(idx * 3 // 13, minlength=3).tolist() == [2, 2, 2]


def test_draw_budget_strata_errors() -> None:
    with pytest.raises(ValueError, match="strata must hold 10"):
        draw_budget(10, 3, strata=np.arange(9.0))
