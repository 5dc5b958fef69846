"""FSIM/FSIMc, VSI and CIEDE2000: agreement with the originals, behaviour, registry entries.

Reference values: ../shared/data/metric-reference/values.csv (the originals' MATLAB outputs on five
TID2013 pairs, rounded to 4 decimals); the tests that need them skip when that folder is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve2d

from iqalens.errors import InvalidInputError
from iqalens.evaluation.fullref import FR_METRICS, compute, direction
from iqalens.evaluation.fullref._zhang_common import conv2_average_downsample, downsample_factor
from iqalens.evaluation.fullref.colour import ciede2000, delta_e_2000, srgb_to_lab
from iqalens.evaluation.fullref.fsim import feature_similarity, fsim, fsimc
from iqalens.evaluation.fullref.vsi import imresize_bilinear, vsi
from iqalens.images import load_rgb
from iqalens.samples import sample_paths

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = SHARED / "metric-reference"
PAIRS = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"shared reference data not found at {REFERENCE}"
)

#: FSIMc reproduces the row ``fsim`` (FeatureSIM.m's FSIMc output) to all 4 published decimals:
#: the tolerance is the rounding of the published values plus a margin for FFT rounding.
FSIMC_TOL = 1e-3
#: VSI differs from the row ``vsi`` by up to 0.0123 (I04). The steps follow VSI.m line by line and
#: give the same values as IQA-PyTorch's independent port does in the same table (0.9244, 0.9497
#: on I03, I04); the cause of the remaining gap lies in how the published row was produced, not in a
#: step we can identify (docs/fullref_metrics.md). The tolerance bounds that gap ...
VSI_REFERENCE_TOL = 0.015
#: ... and our own values are pinned tightly, so that a change to the implementation is noticed.
VSI_OURS = {"I03.bmp": 0.9244, "I04.bmp": 0.9497, "I06.bmp": 0.9876, "I08.bmp": 0.9539, "I19.bmp": 0.9272}
VSI_OURS_TOL = 5e-4

#: Sharma, Wu and Dalal (2005), Table 1: pairs (L, a, b), (L, a, b) and their published CIEDE2000,
#: chosen to cover the formula's traps: hue wrap-around near 0/360 degrees (pairs 9-15), an
#: achromatic colour (pair 7), large differences (17-19), the blue region with R_T (1-3), dark
#: colours (pair 33).
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _reference_row(metric: str) -> dict[str, float]:
    with (REFERENCE / "values.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["metric"] == metric:
                return {name: float(row[name]) for name in PAIRS}
    raise AssertionError(f"no row {metric!r} in values.csv")


def _pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    return load_rgb(REFERENCE / "ref_dir" / name), load_rgb(REFERENCE / "dist_dir" / name)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_rgb(sample_paths()[0])


def _noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


# --- agreement with the originals ---------------------------------------------------------------


@needs_reference
@pytest.mark.parametrize("name", PAIRS)
def test_fsimc_matches_featuresim_m(name: str) -> None:
    ref, dist = _pair(name)
    # values.csv's row "fsim" is FeatureSIM.m's second output, FSIMc (luma-only FSIM is further off
    # on the colour distortions I04/I06: 0.9998 and 0.9999 against 0.9702 and 0.9927).
    assert fsimc(dist, ref) == pytest.approx(_reference_row("fsim")[name], abs=FSIMC_TOL)


@needs_reference
@pytest.mark.parametrize("name", PAIRS)
def test_vsi_close_to_vsi_m(name: str) -> None:
    ref, dist = _pair(name)
    value = vsi(dist, ref)
    assert value == pytest.approx(_reference_row("vsi")[name], abs=VSI_REFERENCE_TOL)
    assert value == pytest.approx(VSI_OURS[name], abs=VSI_OURS_TOL)


def test_delta_e_2000_reproduces_sharma_test_data() -> None:
    data = np.array(SHARMA)
    forward = delta_e_2000(data[:, :3], data[:, 3:6])
    assert np.abs(forward - data[:, 6]).max() <= 1e-4
    # The formula is symmetric (the test data are given in one order only).
    assert np.allclose(delta_e_2000(data[:, 3:6], data[:, :3]), forward, atol=1e-12)


def test_srgb_to_lab_known_colours() -> None:
    lab = srgb_to_lab(np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]]], np.uint8))[0]
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=1e-6)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    assert lab[2] == pytest.approx([53.2408, 80.0925, 67.2032], abs=1e-3)
    assert lab[3] == pytest.approx([53.5850, 0.0, 0.0], abs=1e-3)
    # The uint8 table look-up and the float path agree.
    assert np.allclose(
        srgb_to_lab(np.array([[[12, 200, 77]]], np.uint8)), srgb_to_lab(np.array([[[12.0, 200.0, 77.0]]]))
    )


# --- the MATLAB conventions the originals rely on -----------------------------------------------


def test_downsampling_follows_conv2_same_and_matlab_round() -> None:
    assert downsample_factor((384, 512, 3)) == 2  # round(1.5) = 2 in MATLAB, not Python's 2-to-even
    assert downsample_factor((128, 128)) == 1
    assert downsample_factor((640, 1000)) == 3
    rng = np.random.default_rng(3)
    for factor in (2, 3, 4):
        for shape in ((12, 17), (9, 8)):
            image = rng.random(shape)
            full = convolve2d(image, np.ones((factor, factor)) / factor**2, mode="full")
            off = factor // 2  # MATLAB's 'same' keeps the central part starting at floor(k/2)
            same = full[off : off + shape[0], off : off + shape[1]]
            assert np.allclose(conv2_average_downsample(image, factor), same[::factor, ::factor])


def test_imresize_bilinear_matches_matlab() -> None:
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    # MATLAB: imresize([1 2 3 4], [1 2], 'bilinear') = [1.625 3.375] (antialiased shrink),
    # imresize([1 2 3 4], [1 8], 'bilinear') = [1 1.25 1.75 2.25 2.75 3.25 3.75 4].
    assert imresize_bilinear(row, (1, 2)) == pytest.approx(np.array([[1.625, 3.375]]))
    assert imresize_bilinear(row, (1, 8)) == pytest.approx(
        np.array([[1, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4]])
    )
    image = np.random.default_rng(0).random((30, 40, 3))
    out = imresize_bilinear(image, (16, 16))
    assert out.shape == (16, 16, 3)
    assert np.allclose(out[..., 2], imresize_bilinear(image[..., 2], (16, 16)))


# --- behaviour -----------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", [fsim, fsimc, vsi])
def test_identical_images_score_one(measure, photo: np.ndarray) -> None:
    assert measure(photo, photo.copy()) == pytest.approx(1.0, abs=1e-12)


def test_identical_images_have_zero_colour_difference(photo: np.ndarray) -> None:
    assert ciede2000(photo, photo.copy()) == 0.0


def test_flat_images_give_numbers_not_nan() -> None:
    grey = np.full((64, 64, 3), 120, np.uint8)
    for measure in (fsim, fsimc, vsi):
        assert measure(grey, grey.copy()) == pytest.approx(1.0)
    red = grey.copy()
    red[..., 0] = 200
    assert fsimc(grey, red) < 1.0
    assert vsi(grey, red) < 1.0
    assert np.isfinite(fsim(grey, red))


@pytest.mark.parametrize("measure", [fsim, fsimc, vsi, ciede2000])
def test_scores_move_the_right_way_as_noise_grows(measure, photo: np.ndarray) -> None:
    values = [measure(photo, _noisy(photo, sigma)) for sigma in (5.0, 15.0, 35.0)]
    if direction(measure.__name__) == "higher":
        assert values[0] > values[1] > values[2]
        assert values[0] < 1.0
    else:
        assert 0.0 < values[0] < values[1] < values[2]


def test_fsimc_never_exceeds_fsim(photo: np.ndarray) -> None:
    luma_only, with_chroma = feature_similarity(photo, _noisy(photo, 20.0))
    assert with_chroma <= luma_only


def test_ciede2000_sees_saturation_and_brightness_changes_that_keep_grey_structure(photo: np.ndarray) -> None:
    image = photo.astype(np.float64)
    grey = image @ np.array([0.299, 0.587, 0.114])
    desaturated = np.clip(np.rint(grey[..., None] + 0.4 * (image - grey[..., None])), 0, 255).astype(np.uint8)
    brighter = np.clip(image + 25.0, 0, 255).astype(np.uint8)
    # The grey structure is nearly untouched (luma FSIM barely moves) ...
    assert fsim(photo, desaturated) > 0.99
    # ... but the colour difference is several just-noticeable differences, and grows with the change.
    assert ciede2000(photo, desaturated) > 3.0
    assert ciede2000(photo, brighter) > 3.0
    half = np.clip(np.rint(grey[..., None] + 0.7 * (image - grey[..., None])), 0, 255).astype(np.uint8)
    assert ciede2000(photo, half) < ciede2000(photo, desaturated)
    # FSIMc and VSI see the saturation change too, through their chroma terms.
    assert fsimc(photo, desaturated) < fsim(photo, desaturated)


@pytest.mark.parametrize("measure", [fsim, fsimc, vsi, ciede2000])
def test_shape_mismatch_raises(measure, photo: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        measure(photo, photo[:-8])


@pytest.mark.parametrize("measure", [vsi, ciede2000])
def test_rgb_only_measures_refuse_grey_images(measure) -> None:
    with pytest.raises(InvalidInputError):
        measure(np.zeros((32, 32)), np.zeros((32, 32)))


def test_delta_e_2000_refuses_mismatched_arrays() -> None:
    with pytest.raises(InvalidInputError):
        delta_e_2000(np.zeros((4, 3)), np.zeros((5, 3)))


# --- registry ------------------------------------------------------------------------------------


def test_registry_entries_resolve_and_agree_with_the_functions(photo: np.ndarray) -> None:
    small = photo[:128, :160]
    noisy = _noisy(small, 10.0)
    names = ["fsim", "fsimc", "vsi", "ciede2000"]
    values = compute(small, noisy, names)
    assert values == pytest.approx(
        {
            "fsim": fsim(small, noisy),
            "fsimc": fsimc(small, noisy),
            "vsi": vsi(small, noisy),
            "ciede2000": ciede2000(small, noisy),
        }
    )
    assert [direction(n) for n in names] == ["higher", "higher", "higher", "lower"]
    assert all(callable(FR_METRICS.get(n)) for n in names)
