"""KADID-10k brightness change group (types 16-18): brighten, darken, mean shift.

All three are deterministic. Darken and mean shift match the Octave golden outputs bit for bit;
brighten goes through Lab, where last-digit differences of the conversion flip a rare pixel that
sits on a rounding boundary by one grey level (>= 80 dB).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from golden import golden_cases, load_rgb, psnr, requires_golden
from iqalens.distortions import distort, get_type
from iqalens.distortions.brightness import midpoint_curve


def synthetic_image(h: int = 48, w: int = 64) -> np.ndarray:
    """A colourful uint8 RGB image spanning 0..255 (gradients plus a saturated block)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([xx / (w - 1), yy / (h - 1), 0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 4.0)], axis=2)
    rgb[h // 4 : h // 2, w // 4 : w // 2] = (0.9, 0.1, 0.2)
    return np.round(rgb * 255).astype(np.uint8)


@requires_golden
@pytest.mark.parametrize("case", golden_cases(17) + golden_cases(18), ids=lambda c: c.output.name)
def test_darken_and_mean_shift_match_golden_exactly(case):
    ref = load_rgb(case.reference)
    assert np.array_equal(distort(ref, case.type_id, case.level), load_rgb(case.output))


@requires_golden
@pytest.mark.parametrize("case", golden_cases(16), ids=lambda c: c.output.name)
def test_brighten_matches_golden(case):
    ref = load_rgb(case.reference)
    out = distort(ref, 16, case.level)
    gold = load_rgb(case.output)
    assert psnr(out, gold) >= 80.0
    assert np.abs(out.astype(int) - gold).max() <= 1


@requires_golden
@pytest.mark.parametrize("case", [c for c in golden_cases(18) if c.level == 3], ids=lambda c: c.output.name)
def test_mean_shift_level_3_is_the_identity_on_golden_inputs(case):
    ref = load_rgb(case.reference)
    assert np.array_equal(distort(ref, 18, 3), ref)
    assert np.array_equal(load_rgb(case.output), ref)


@pytest.mark.parametrize("mid", [0.275, 0.45, 0.55, 0.75, 1.05])
def test_midpoint_curve_is_matlab_not_a_knot_spline(mid):
    # MATLAB's spline() defaults to not-a-knot ends, as does scipy's CubicSpline.
    v = np.linspace(0.0, 1.0, 1001)
    expected = np.clip(CubicSpline([0.0, 0.5, 1.0], [0.0, mid, 1.0])(v), 0.0, 1.0)
    np.testing.assert_allclose(midpoint_curve(v, mid), expected, atol=1e-12)


def test_registry_entries():
    for tid, name, helper, levels in [
        (16, "brighten", "imbrighten", (0.1, 0.2, 0.4, 0.7, 1.1)),
        (17, "darken", "imdarken", (0.05, 0.1, 0.2, 0.4, 0.8)),
        (18, "mean_shift", "immeanshift", (0.15, 0.08, 0.0, -0.08, -0.15)),
    ]:
        t = get_type(tid)
        assert (t.name, t.helper, t.levels, t.group, t.stochastic) == (
            name,
            helper,
            levels,
            "brightness_change",
            False,
        )
        assert get_type(name) is t and t.description


@pytest.mark.parametrize("tid", [16, 17, 18])
def test_deterministic_uint8_same_shape_and_seed_independent(tid):
    img = synthetic_image()
    for level in range(1, 6):
        out = distort(img, tid, level, seed=0)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.array_equal(out, distort(img, tid, level, seed=123))


def test_brighten_and_darken_strength_grows_with_level():
    img = synthetic_image()
    bright = [distort(img, 16, lvl).mean() for lvl in range(1, 6)]
    dark = [distort(img, 17, lvl).mean() for lvl in range(1, 6)]
    assert img.mean() < bright[0] and np.all(np.diff(bright) > 0)
    assert img.mean() > dark[0] and np.all(np.diff(dark) < 0)


def test_mean_shift_direction_and_identity():
    img = synthetic_image()
    means = [distort(img, 18, lvl).astype(float).mean() for lvl in range(1, 6)]
    assert np.array_equal(distort(img, 18, 3), img)
    # A positive shift clips highlights and the final min-max map turns it into min(x, 1-a)/(1-a),
    # a brightening; a negative one gives max(x-a, 0)/(1-a), a darkening: the mean falls with level.
    assert np.all(np.diff(means) < 0)
