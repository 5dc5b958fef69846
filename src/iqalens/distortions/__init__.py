"""KADID-10k's 25 distortion types x 5 levels, faithful to the original MATLAB generator.

Usage::

    from iqalens.distortions import distort, all_types, get_type
    out = distort(rgb_uint8, "gaussian_blur", 3, seed=0)

Every type is addressable by its KADID id (1-25) or its snake_case name. ``distort`` applies
the generator's processing order (min-max map the input to [0, 1], run the type's kernel,
min-max map the result, convert with MATLAB's ``im2uint8`` rounding) and is deterministic for a
given seed. See ``docs/distortions.md`` for the per-type parameters and measured agreement with
the original code.
"""

from __future__ import annotations

import numpy as np

from iqalens.distortions import (  # noqa: F401  (importing registers the types)
    blur,
    brightness,
    color,
    compression,
    noise,
    sharpness,
    spatial,
)
from iqalens.distortions._registry import (
    GROUPS,
    DistortionType,
    all_types,
    apply,
    check_level,
    get_type,
    mapmm,
    register,
    unregister,
)

__all__ = [
    "GROUPS",
    "DistortionType",
    "all_types",
    "distort",
    "get_type",
    "mapmm",
    "register",
    "seed_for",
    "unregister",
]


def seed_for(base_seed: int, type_id: int, level: int) -> int:
    """Per-(type, level) seed derived from one base seed, so variants are independent but reproducible."""
    return int(base_seed) * 10_000 + 100 * int(type_id) + int(level)


def distort(image: np.ndarray, dist_type: int | str, level: int, seed: int | None = 0) -> np.ndarray:
    """Apply one KADID-10k distortion to an H x W x 3 uint8 RGB image; return uint8 RGB, same size.

    ``seed`` drives the random draws of stochastic types (``None`` draws fresh entropy);
    deterministic types ignore it. The same (image, type, level, seed) always gives the same bytes.
    """
    dist = get_type(dist_type)
    check_level(level)
    rng = np.random.default_rng(None if seed is None else seed_for(seed, dist.id, level))
    return apply(dist, np.ascontiguousarray(image), level, rng)
