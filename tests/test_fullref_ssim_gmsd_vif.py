"""SSIM, MS-SSIM, GMSD and VIF: agreement with the original scripts' values, and their behaviour."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from iqalens.errors import InvalidInputError
from iqalens.evaluation import fullref
from iqalens.evaluation.fullref import gmsd as gmsd_module
from iqalens.evaluation.fullref import vif as vif_module
from iqalens.evaluation.fullref._common import grey_uint8
from iqalens.evaluation.fullref.gmsd import gmsd
from iqalens.evaluation.fullref.ssim import ms_ssim, ssim
from iqalens.evaluation.fullref.vif import vif
from iqalens.images import load_rgb
from iqalens.samples import sample_paths

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = SHARED / "metric-reference"
PAIRS = ("I03.bmp", "I04.bmp", "I06.bmp", "I08.bmp", "I19.bmp")

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"shared reference data not found at {REFERENCE}"
)

#: Stated tolerances against values.csv (4 decimals; measured deviations in docs/fullref_metrics.md).
#: SSIM and GMSD follow the scripts step for step and agree to 1e-4 (the last printed digit); 1e-3
#: leaves room for rgb2gray's coefficient precision and rounding ties, while any wrong step (no
#: rounding of the grey image, another window, 'same' instead of 'valid', downsampling) moves a pair
#: by 2e-4 (GMSD, near-identical pairs) to 0.1 (SSIM). MS-SSIM as a product of powers (the paper,
#: the script's default) is 0.0043 off on the two heavily distorted pairs because the reference was
#: computed as the script's weighted sum, which agrees to 1e-4; hence 0.006 and 1e-3. VIF: the
#: statistics are the script's, the steerable pyramid is built in the frequency domain instead of
#: the tabulated sp5 kernels, measured 0.0133 at most; 0.015 is that plus margin, and the ranking of
#: the five pairs is checked separately.
TOLERANCE = {"ssim": 1e-3, "ms_ssim": 6e-3, "ms_ssim_wtd_sum": 1e-3, "gmsd": 1e-3, "vif": 0.015}


def _ms_ssim_wtd_sum(reference: np.ndarray, distorted: np.ndarray) -> float:
    return ms_ssim(reference, distorted, method="wtd_sum")


MEASURES = {"ssim": ssim, "ms_ssim": ms_ssim, "ms_ssim_wtd_sum": _ms_ssim_wtd_sum, "gmsd": gmsd, "vif": vif}


def _reference_values() -> dict[str, dict[str, float]]:
    with (REFERENCE / "values.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        row["metric"]: {name: float(row[name]) for name in PAIRS}
        for row in rows
        if row["metric"] in ("ssim", "ms_ssim", "gmsd", "vif")
    }


@pytest.fixture(scope="module")
def reference_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {n: (load_rgb(REFERENCE / "ref_dir" / n), load_rgb(REFERENCE / "dist_dir" / n)) for n in PAIRS}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_rgb(sample_paths()[0])


def _noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


@needs_reference
@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_agrees_with_the_original_scripts_on_every_reference_pair(measure, reference_pairs) -> None:
    expected = _reference_values()[measure.removesuffix("_wtd_sum")]
    got = {n: MEASURES[measure](*reference_pairs[n]) for n in PAIRS}
    off = {n: round(got[n] - expected[n], 4) for n in PAIRS if abs(got[n] - expected[n]) > TOLERANCE[measure]}
    assert not off, f"{measure} deviates beyond {TOLERANCE[measure]} on {off} (got {got})"


@needs_reference
def test_vif_orders_the_reference_pairs_as_the_original(reference_pairs) -> None:
    expected = _reference_values()["vif"]
    got = {n: vif(*reference_pairs[n]) for n in PAIRS}
    assert sorted(PAIRS, key=got.__getitem__) == sorted(PAIRS, key=expected.__getitem__)


def test_ssim_uses_the_full_resolution_unless_asked_to_downsample(photo) -> None:
    # ssim_index.m (no downsampling) and the 2009 ssim.m (2 x 2 averaging at 384 x 512) differ.
    noisy = _noisy(photo, 20.0)
    full, down = ssim(photo, noisy), ssim(photo, noisy, downsample=True)
    assert down > full + 0.05  # averaging removes much of the noise
    assert ssim(photo, photo, downsample=True) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("measure", "perfect"),
    [(ssim, 1.0), (ms_ssim, 1.0), (_ms_ssim_wtd_sum, 1.0), (gmsd, 0.0), (vif, 1.0)],
)
def test_identical_images_give_the_perfect_value(measure, perfect, photo) -> None:
    assert measure(photo, photo.copy()) == pytest.approx(perfect, abs=1e-9)


@pytest.mark.parametrize("name", ["ssim", "ms_ssim", "gmsd", "vif"])
def test_values_move_the_right_way_as_noise_grows(name, photo) -> None:
    values = [fullref.compute(photo, _noisy(photo, sigma), [name])[name] for sigma in (3.0, 10.0, 30.0)]
    if fullref.direction(name) == "higher":
        assert values[0] > values[1] > values[2], values
    else:
        assert values[0] < values[1] < values[2], values


@pytest.mark.parametrize("measure", [ssim, ms_ssim, gmsd, vif])
def test_a_shape_mismatch_is_a_user_error(measure, photo) -> None:
    with pytest.raises(InvalidInputError, match="differ in size"):
        measure(photo, photo[:-1])
    with pytest.raises(InvalidInputError):
        measure(photo[..., :2], photo[..., :2])  # neither grey nor RGB


@pytest.mark.parametrize("measure", [ssim, ms_ssim, gmsd, vif])
def test_grey_input_equals_its_grey_replicated_rgb(measure, photo) -> None:
    grey = grey_uint8(photo.astype(np.float64)).astype(np.uint8)
    noisy = grey_uint8(_noisy(photo, 10.0).astype(np.float64)).astype(np.uint8)
    as_rgb = [np.repeat(g[..., None], 3, axis=2) for g in (grey, noisy)]
    assert measure(grey, noisy) == measure(*as_rgb)


def test_grey_uint8_rounds_like_rgb2gray() -> None:
    img = np.array([[[255, 255, 255], [0, 0, 0], [10, 20, 30]]], dtype=np.float64)
    assert grey_uint8(img).tolist() == [[255.0, 0.0, 18.0]]  # 18.1508 rounded, as rgb2gray of uint8
    assert np.array_equal(grey_uint8(img[..., 0]), img[..., 0])  # grey passes through


@pytest.mark.parametrize("shape", [(201, 177), (177, 201, 3)])
def test_odd_sizes_work_and_identical_odd_images_are_perfect(shape) -> None:
    rng = np.random.default_rng(1)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    image = np.clip(128 + 40 * smooth / np.abs(smooth).max(), 0, 255).astype(np.uint8)
    noisy = _noisy(image, 8.0)
    for measure, perfect in ((ssim, 1.0), (ms_ssim, 1.0), (gmsd, 0.0), (vif, 1.0)):
        assert measure(image, image) == pytest.approx(perfect, abs=1e-9)
        assert math.isfinite(measure(image, noisy))


def test_gmsd_downsampling_is_conv2_same_then_every_second_pixel() -> None:
    image = np.arange(35.0).reshape(5, 7)
    padded = np.pad(image, ((0, 1), (0, 1)))  # conv2 'same' with a 2 x 2 kernel zero-pads the end
    full = (padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4
    assert np.array_equal(gmsd_module._average_downsample(image), full[::2, ::2])


def test_vif_orientation_gain_makes_the_band_responses_a_partition_of_unity() -> None:
    theta = np.linspace(0, 2 * np.pi, 97)
    order, n = vif_module.ORIENTATIONS - 1, vif_module.ORIENTATIONS
    total = sum((vif_module._ANGULAR_GAIN * np.cos(theta - np.pi * k / n) ** order) ** 2 for k in range(n))
    assert np.allclose(total, 1.0)


@pytest.mark.parametrize(("rows", "cols"), [(56, 60), (54, 70)])  # half sizes even and odd
def test_vif_halving_samples_every_second_pixel_with_the_tight_frame_gain(rows, cols) -> None:
    yy, xx = np.mgrid[0:rows, 0:cols]
    image = np.cos(2 * np.pi * 3 * yy / rows + 1) + np.sin(2 * np.pi * 5 * xx / cols)
    spectrum = np.fft.rfft2(image, norm="ortho")
    half = np.fft.irfft2(vif_module._halve(spectrum, rows, cols), s=(rows // 2, cols // 2), norm="ortho")
    # Energy is kept (Parseval), so a band-limited image comes back sampled and scaled by 2.
    assert np.allclose(half, 2 * image[::2, ::2], atol=1e-12)


def test_too_small_or_flat_images_are_user_errors(photo) -> None:
    small = photo[:100, :100]
    with pytest.raises(InvalidInputError, match="MS-SSIM needs at least 176"):
        ms_ssim(small, small)
    tiny = photo[:60, :60]
    with pytest.raises(InvalidInputError, match="VIF needs at least"):
        vif(tiny, tiny)
    with pytest.raises(InvalidInputError, match="SSIM needs images of at least 11"):
        ssim(photo[:10], photo[:10])
    flat = np.full((80, 80, 3), 128, np.uint8)
    with pytest.raises(InvalidInputError, match="flat reference"):
        vif(flat, photo[:80, :80])
    with pytest.raises(InvalidInputError, match="unknown MS-SSIM combination"):
        ms_ssim(photo, photo, method="mean")  # type: ignore[arg-type]


def test_the_registry_entries_resolve_to_finite_floats(photo) -> None:
    values = fullref.compute(photo, _noisy(photo, 10.0), ["ssim", "ms_ssim", "gmsd", "vif"])
    assert set(values) == {"ssim", "ms_ssim", "gmsd", "vif"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())
