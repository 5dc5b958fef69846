"""KADID-10k compression group (types 9 JPEG 2000, 10 JPEG) against the Octave golden outputs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import features

from golden import golden_cases, load_rgb, psnr, requires_golden
from iqalens.distortions import distort, get_type
from synthetic import synthetic_image

_CASES = golden_cases(9) + golden_cases(10)


def test_pillow_has_the_codecs() -> None:
    assert features.check("jpg"), "Pillow was built without libjpeg: type 10 cannot run"
    assert features.check("jpg_2000"), "Pillow was built without OpenJPEG: type 9 cannot run"


@pytest.mark.parametrize(
    ("type_id", "name", "helper", "levels"),
    [
        (9, "jpeg2000", "imcompressjp2k", (16, 32, 45, 120, 400)),
        (10, "jpeg", "imcompressjpeg", (43, 36, 24, 7, 4)),
    ],
)
def test_registry_entry(type_id: int, name: str, helper: str, levels: tuple) -> None:
    t = get_type(type_id)
    assert (t.name, t.group, t.helper, t.levels, t.stochastic) == (name, "compression", helper, levels, False)
    assert t.description and t.deviation  # the encoder library differs from MATLAB's


@requires_golden
@pytest.mark.parametrize("case", _CASES, ids=[f"t{c.type_id}-{c.reference.stem}-L{c.level}" for c in _CASES])
def test_golden_exact(case) -> None:
    # Same codec libraries and settings as the reference run: expected bit for bit.
    out = distort(load_rgb(case.reference), case.type_id, case.level, seed=0)
    gold = load_rgb(case.output)
    diff = np.abs(out.astype(int) - gold.astype(int))
    assert diff.max() <= 1, f"max diff {diff.max()}, PSNR {psnr(out, gold):.2f} dB"
    assert np.mean(diff > 0) <= 1e-3


@pytest.mark.parametrize("type_id", [9, 10])
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_shape_dtype_and_seed_independence(type_id: int, level: int) -> None:
    img = synthetic_image()
    out = distort(img, type_id, level, seed=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, distort(img, type_id, level, seed=123))


@pytest.mark.parametrize("type_id", [9, 10])
def test_strength_grows_with_level(type_id: int) -> None:
    img = synthetic_image(96, 128)
    quality = [psnr(distort(img, type_id, lv), img) for lv in range(1, 6)]
    assert all(a > b for a, b in zip(quality, quality[1:], strict=False)), quality
    assert quality[0] < 60  # even the mildest level is lossy
