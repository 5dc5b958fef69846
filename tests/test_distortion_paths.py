"""The 8-bit code path of a type must give exactly the bytes of its float path.

``apply`` prefers a type's ``code_kernel`` for speed; the float ``kernel`` is the readable
reference implementation. Both must agree bit for bit, on full-range images and on images whose
input min-max mapping is not the identity.
"""

from __future__ import annotations

import numpy as np
import pytest

from iqalens.distortions import all_types
from iqalens.distortions._registry import DistortionType, apply, mapped_input, mapped_output
from iqalens.images import load_rgb
from iqalens.samples import sample_paths

WITH_CODES = [t for t in all_types() if t.code_kernel is not None]


def _images() -> list[np.ndarray]:
    photo = load_rgb(next(p for p in sample_paths() if p.name == "palace.png"))[:96, :128]
    narrow = (photo // 3 + 40).astype(np.uint8)  # range 40..125: the input mapping stretches it
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, size=(33, 47, 3), dtype=np.uint8)
    return [photo, narrow, noise]


def test_code_paths_exist_for_the_cheap_types() -> None:
    assert {t.id for t in WITH_CODES} >= {10, 17, 18, 21, 25}


@pytest.mark.parametrize("dist", WITH_CODES, ids=lambda t: t.name)
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_code_path_matches_float_path(dist: DistortionType, level: int) -> None:
    for image in _images():
        param = dist.parameter(level)
        float_out = mapped_output(dist.kernel(mapped_input(image), param, np.random.default_rng(0)))
        code_out = apply(dist, image, level, np.random.default_rng(0))
        np.testing.assert_array_equal(code_out, float_out)
