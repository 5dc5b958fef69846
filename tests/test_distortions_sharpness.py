"""KADID-10k sharpness and contrast group (types 24 and 25): golden outputs and behaviour.

Both types are deterministic and reproduce the Octave golden outputs bit for bit (type 24 through
octave-image's L*a*b* constants, type 25 through MATLAB's not-a-knot spline).
"""

from __future__ import annotations

import numpy as np
import pytest

from golden import golden_cases, load_rgb, psnr, requires_golden
from iqalens.distortions import _matlab, distort, get_type
from iqalens.distortions.sharpness import contrast_curve, high_sharpen
from synthetic import synthetic_image


def _ids(cases: list) -> list[str]:
    return [f"t{c.type_id}-{c.reference.stem}-L{c.level}" for c in cases]


# --- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_id", "name", "helper", "levels", "has_deviation"),
    [
        (24, "high_sharpen", "imsharpenHi", (1, 2, 3, 6, 12), True),  # Lab constants (Octave's)
        (25, "contrast_change", "imcontrastc", (0.3, 0.15, 0, -0.4, -0.6), False),
    ],
)
def test_registry_entry(type_id: int, name: str, helper: str, levels: tuple, has_deviation: bool) -> None:
    t = get_type(type_id)
    assert (t.name, t.group, t.helper, t.levels) == (name, "sharpness_contrast", helper, levels)
    assert not t.stochastic
    assert get_type(name) is t
    assert t.description
    assert bool(t.deviation) == has_deviation


# --- golden outputs ------------------------------------------------------------------------------

_CASES = golden_cases(24) + golden_cases(25)


@requires_golden
@pytest.mark.parametrize("case", _CASES, ids=_ids(_CASES))
def test_golden_exact(case) -> None:
    out = distort(load_rgb(case.reference), case.type_id, case.level, seed=0)
    gold = load_rgb(case.output)
    diff = np.abs(out.astype(int) - gold.astype(int))
    # Bit-exact on the reference platform; allow a stray 1-LSB rounding flip elsewhere.
    assert diff.max() <= 1, f"max diff {diff.max()}, PSNR {psnr(out, gold):.2f} dB"
    assert np.mean(diff > 0) <= 1e-3


# --- type 24: high sharpen -----------------------------------------------------------------------


def _laplacian_energy(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.mean(lap**2))


def test_sharpen_strength_grows_with_level() -> None:
    img = synthetic_image(96, 128)
    energy = [_laplacian_energy(distort(img, 24, lvl)) for lvl in range(1, 6)]
    assert energy[0] > _laplacian_energy(img)
    assert all(b > a for a, b in zip(energy, energy[1:], strict=False)), energy


def test_sharpen_works_on_lightness_only() -> None:
    # imsharpen sharpens L* alone: a grey image stays grey (up to the 1e-6 mismatch of Octave's
    # 6-digit forward and inverse sRGB matrices), and a flat image is unchanged.
    grey = np.repeat(synthetic_image()[..., :1], 3, axis=2)
    out = distort(grey, 24, 5).astype(int)
    assert np.abs(out - out[..., :1]).max() <= 1
    flat = np.full((20, 30, 3), 0.4)
    np.testing.assert_allclose(high_sharpen(flat, 12, np.random.default_rng(0)), flat, atol=1e-5)


def test_sharpen_is_unsharp_mask_of_lightness() -> None:
    # L_out = L + a (L - G3 * L), Gaussian sigma 3, 13 x 13, replicate borders; checked at a step edge
    # where the overshoot on both sides equals amount * (L - blurred L).
    x = np.full((40, 40, 3), 0.4)  # mid-grey step: the overshoot stays inside the gamut, no clipping
    x[:, 20:] = 0.6
    lab = _matlab.rgb2lab(x)
    blurred = _matlab.filter_replicate(lab[..., 0], _matlab.gaussian_kernel(3.0, 13))
    out_lab = _matlab.rgb2lab(high_sharpen(x, 2.0, np.random.default_rng(0)))
    expected = lab[..., 0] + 2.0 * (lab[..., 0] - blurred)
    np.testing.assert_allclose(out_lab[..., 0], expected, atol=1e-3)


# --- type 25: contrast change --------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.3, 0.15, 0.0, -0.4, -0.6])
def test_contrast_curve_passes_through_its_knots(amount: float) -> None:
    curve = contrast_curve(amount)
    xs = [0.0, 0.3, 0.5, 0.7, 1.0]
    ys = [0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0]
    np.testing.assert_allclose(curve(xs), ys, atol=1e-12)


def test_contrast_curve_is_matlab_not_a_knot_spline() -> None:
    # Not-a-knot: the third derivative is continuous at the second and second-to-last knots, so the
    # 5-point spline consists of just two cubic pieces (over [0, 0.5] and [0.5, 1]).
    curve = contrast_curve(0.3)
    for knot in (0.3, 0.7):
        left = curve(knot - 1e-9, 3)
        right = curve(knot + 1e-9, 3)
        assert left == pytest.approx(right, rel=1e-6)


def test_contrast_levels_3_and_4_are_mirror_images_about_identity() -> None:
    # The spline is linear in its knot values; levels 3 (a = 0) and 4 (a = -0.4) move the inner knots
    # by -+0.05, so their curves average to the straight line (which not-a-knot reproduces exactly).
    t = np.linspace(0, 1, 101)
    np.testing.assert_allclose(contrast_curve(0.0)(t) + contrast_curve(-0.4)(t), 2 * t, atol=1e-12)
    assert np.abs(contrast_curve(0.0)(t) - t).max() > 0.03  # level 3 is not the identity


def test_contrast_direction() -> None:
    img = synthetic_image()
    std = [float(distort(img, 25, lvl).std()) for lvl in range(1, 6)]
    # Positive amounts steepen the mid-tones (more contrast), negative ones flatten them.
    assert std[0] > std[1] > std[2] > std[3] > std[4]
    assert std[2] > float(img.std()) > std[3]


@pytest.mark.parametrize("type_id", [24, 25])
@pytest.mark.parametrize("level", [1, 3, 5])
def test_output_shape_dtype_and_determinism(type_id: int, level: int) -> None:
    img = synthetic_image()
    out = distort(img, type_id, level, seed=1)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, distort(img, type_id, level, seed=2))
