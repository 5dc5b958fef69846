"""KADID-10k noise group (types 11-15).

Types 11-14 draw random numbers, so they are compared with the Octave golden outputs in distribution.
Our statistic is averaged over 2 seeds and both references and compared with the golden average over
both references. Each golden image holds 256 x 192 x 3 = 147k samples, so noise standard deviations
are pinned to well under 1% and a 5% tolerance leaves margin. Impulse counts are binomial (at
level 1 only about 147 samples per image are hit), so their fractions must agree within 4 standard
errors of the difference of the two means. Type 15 has no
golden output (DnCNN did not run under Octave); its substitute denoiser is tested for behaviour.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from golden import golden_cases, load_rgb, requires_golden
from iqalens.distortions import distort, get_type
from iqalens.distortions.noise import gaussian_noise, salt_and_pepper, speckle, wiener_denoise
from synthetic import synthetic_image

_SEEDS = (0, 1)


def smooth_image(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth float RGB image in [0.1, 0.9], where a denoiser has something to gain."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.5 + 0.25 * np.sin(xx / 11.0) + 0.15 * np.cos(yy / 7.0)
    return np.stack([base, base[::-1], base[:, ::-1]], axis=2).clip(0.1, 0.9)


# --- statistics ----------------------------------------------------------------------------------


def _noise_std(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.std(out / 255.0 - ref / 255.0))


def _channel_std(channel: int):
    return lambda ref, out: float(np.std(out[..., channel] / 255.0 - ref[..., channel] / 255.0))


def _clipped_fraction(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean((out == 0) | (out == 255)))


def _pepper_fraction(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean((out == 0) & (ref != 0)))


def _salt_fraction(ref: np.ndarray, out: np.ndarray) -> float:
    return float(np.mean((out == 255) & (ref != 255)))


def _relative_std(ref: np.ndarray, out: np.ndarray) -> float:
    # Speckle noise scales with the intensity: (out - in) / in has a level-only spread.
    bright = ref > 30
    return float(np.std((out[bright] / 255.0 - ref[bright] / 255.0) / (ref[bright] / 255.0)))


STATISTICS = {
    11: {"std": (_noise_std, 0.05), "clipped": (_clipped_fraction, 0.10)},
    12: {"std": (_noise_std, 0.05), "std_red": (_channel_std(0), 0.05), "std_blue": (_channel_std(2), 0.05)},
    13: {"std": (_noise_std, 0.15), "pepper": (_pepper_fraction, None), "salt": (_salt_fraction, None)},
    14: {"std": (_noise_std, 0.05), "relative_std": (_relative_std, 0.05)},
}


@pytest.mark.parametrize(
    ("type_id", "name", "helper", "levels"),
    [
        (11, "white_noise", "imnoisegauss", (0.001, 0.002, 0.003, 0.005, 0.01)),
        (12, "white_noise_color_component", "imnoisecolorcomp", (0.0001, 0.0005, 0.001, 0.002, 0.003)),
        (13, "impulse_noise", "imnoiseimpulse", (0.001, 0.005, 0.01, 0.02, 0.03)),
        (14, "multiplicative_noise", "imnoisemultiplicative", (0.001, 0.005, 0.01, 0.02, 0.05)),
        (15, "denoise", "imdenoise", (0.01, 0.03, 0.05, 0.1, 0.15)),
    ],
)
def test_registry_entry(type_id: int, name: str, helper: str, levels: tuple) -> None:
    t = get_type(type_id)
    assert (t.name, t.group, t.helper, t.levels, t.stochastic) == (name, "noise", helper, levels, True)
    assert t.description and t.deviation
    if type_id == 15:
        assert "DnCNN" in t.deviation


@requires_golden
@pytest.mark.parametrize("type_id", [11, 12, 13, 14])
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_golden_in_distribution(type_id: int, level: int) -> None:
    cases = [c for c in golden_cases(type_id) if c.level == level]
    assert len(cases) == 2
    for stat, (fn, rel) in STATISTICS[type_id].items():
        golden, ours = [], []
        for case in cases:
            ref = load_rgb(case.reference)
            golden.append(fn(ref, load_rgb(case.output)))
            ours.extend(fn(ref, distort(ref, type_id, level, seed=s)) for s in _SEEDS)
        if rel is None:  # a fraction of samples: binomial standard error of each mean
            p = (np.mean(golden) + np.mean(ours)) / 2
            n = load_rgb(cases[0].reference).size
            tolerance = 4 * math.sqrt(p * (1 - p) / n * (1 / len(golden) + 1 / len(ours)))
            assert abs(np.mean(ours) - np.mean(golden)) <= tolerance, (stat, np.mean(ours), np.mean(golden))
        else:
            assert np.mean(ours) == pytest.approx(np.mean(golden), rel=rel), stat


# --- imnoise definitions -------------------------------------------------------------------------


def test_gaussian_noise_moments_and_clipping() -> None:
    x = np.full((200, 200, 3), 0.5)
    y = gaussian_noise(x, 0.01, np.random.default_rng(0))
    assert np.mean(y - x) == pytest.approx(0.0, abs=1e-3)
    assert np.std(y - x) == pytest.approx(0.1, rel=0.01)
    edge = gaussian_noise(np.zeros((100, 100, 3)), 0.01, np.random.default_rng(0))
    assert edge.min() == 0.0 and np.mean(edge == 0.0) == pytest.approx(0.5, abs=0.02)


def test_salt_and_pepper_per_sample() -> None:
    x = np.full((300, 300, 3), 0.5)
    y = salt_and_pepper(x, 0.1, np.random.default_rng(0))
    changed = y != x
    assert set(np.unique(y[changed])) == {0.0, 1.0}
    assert np.mean(y == 0.0) == pytest.approx(0.05, rel=0.05)
    assert np.mean(y == 1.0) == pytest.approx(0.05, rel=0.05)
    # Channels are hit independently (MATLAB draws one number per sample, not per pixel).
    per_pixel = changed.sum(axis=2)
    assert np.mean(per_pixel == 1) > 5 * np.mean(per_pixel == 3)


def test_speckle_is_multiplicative_uniform() -> None:
    x = np.full((300, 300, 3), 0.4)
    x[:, :100] = 0.0
    y = speckle(x, 0.03, np.random.default_rng(0))
    np.testing.assert_array_equal(y[:, :100], 0.0)  # no signal, no noise
    rel = y[:, 100:] / 0.4 - 1
    half_width = math.sqrt(12 * 0.03) / 2
    assert rel.min() >= -half_width and rel.max() < half_width
    assert np.std(rel) == pytest.approx(math.sqrt(0.03), rel=0.02)


def test_color_component_noise_lives_in_ycbcr() -> None:
    # Equal noise on Y, Cb, Cr maps to a larger spread in blue (Cb coefficient 2.03) than in red
    # (Cr coefficient 1.60), and to correlated channel errors; RGB white noise has neither.
    img = synthetic_image(96, 128)
    d12 = distort(img, 12, 5, seed=0).astype(float) - img
    d11 = distort(img, 11, 5, seed=0).astype(float) - img
    assert np.std(d12[..., 2]) > 1.05 * np.std(d12[..., 0])
    corr = np.corrcoef(d12[..., 0].ravel(), d12[..., 2].ravel())[0, 1]
    assert abs(corr) > 3 * abs(np.corrcoef(d11[..., 0].ravel(), d11[..., 2].ravel())[0, 1])


# --- behaviour without golden data ---------------------------------------------------------------


@pytest.mark.parametrize("type_id", [11, 12, 13, 14, 15])
@pytest.mark.parametrize("level", [1, 3, 5])
def test_shape_dtype_determinism_and_seeds(type_id: int, level: int) -> None:
    img = synthetic_image(96, 128)
    out = distort(img, type_id, level, seed=7)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, distort(img, type_id, level, seed=7))
    assert not np.array_equal(out, distort(img, type_id, level, seed=8))


@pytest.mark.parametrize("type_id", [11, 12, 13, 14, 15])
def test_strength_grows_with_level(type_id: int) -> None:
    img = synthetic_image(96, 128)
    spread = [_noise_std(img, distort(img, type_id, lv, seed=0)) for lv in range(1, 6)]
    assert all(a < b for a, b in zip(spread, spread[1:], strict=False)), spread


# --- type 15: substitute denoiser ----------------------------------------------------------------


@pytest.mark.parametrize("variance", get_type(15).levels)
def test_denoiser_removes_most_of_the_noise(variance: float) -> None:
    x = smooth_image()
    noisy = gaussian_noise(x, variance, np.random.default_rng(0))
    denoised = wiener_denoise(noisy, variance)
    mse_noisy = np.mean((noisy - x) ** 2)
    mse_denoised = np.mean((denoised - x) ** 2)
    assert mse_denoised < 0.25 * mse_noisy
    assert denoised.min() >= 0.0 and denoised.max() <= 1.0  # convex mix of the pixel and its local mean


@requires_golden
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_denoiser_helps_on_natural_images(level: int) -> None:
    variance = get_type(15).parameter(level)
    for reference in {c.reference for c in golden_cases(1)}:
        x = load_rgb(reference) / 255.0
        noisy = gaussian_noise(x, variance, np.random.default_rng(level))
        gain_db = 10 * math.log10(
            np.mean((noisy - x) ** 2) / np.mean((wiener_denoise(noisy, variance) - x) ** 2)
        )
        assert gain_db > 3.0, (reference.name, gain_db)


def test_denoiser_smooths_more_at_higher_levels() -> None:
    # Same noisy input, denoised as each level would: the output's fine detail (mean absolute
    # Laplacian) falls monotonically as the assumed noise variance grows.
    x = synthetic_image(96, 128) / 255.0
    noisy = gaussian_noise(x, 0.05, np.random.default_rng(0))

    def roughness(im: np.ndarray) -> float:
        lap = 4 * im[1:-1, 1:-1] - im[:-2, 1:-1] - im[2:, 1:-1] - im[1:-1, :-2] - im[1:-1, 2:]
        return float(np.mean(np.abs(lap)))

    rough = [roughness(wiener_denoise(noisy, v)) for v in get_type(15).levels]
    assert all(a > b for a, b in zip(rough, rough[1:], strict=False)), rough
    assert rough[0] < roughness(noisy)


def test_denoise_output_is_smoother_than_noisy_input() -> None:
    # End to end: the type's output keeps far less pixel-level noise than white noise of the same
    # variance would leave (type 11 at level 5 and type 15 at level 1 both have variance 0.01).
    img = synthetic_image(96, 128)
    noisy = distort(img, 11, 5, seed=0).astype(float)
    denoised = distort(img, 15, 1, seed=0).astype(float)
    assert np.mean((denoised - img) ** 2) < 0.5 * np.mean((noisy - img) ** 2)
