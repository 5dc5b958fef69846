"""The table of KADID-10k distortion types and the machinery that applies them.

Each distortion module registers its types with :func:`register`. A type's kernel works on
float64 RGB images in [0, 1] (H x W x 3), exactly as the MATLAB helpers of the original
``imdist_generator`` do; the min-max mapping before and after the kernel and the final
conversion to uint8 live in :func:`apply` so every type shares the generator's processing order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iqalens.errors import InvalidInputError, UnknownNameError

#: KADID-10k's seven groups, in the order of the database paper.
GROUPS: tuple[str, ...] = (
    "blur",
    "color",
    "compression",
    "noise",
    "brightness_change",
    "spatial",
    "sharpness_contrast",
)

Kernel = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

#: A kernel on 8-bit codes: given the uint8 image ``codes`` and the 256 float values its codes
#: stand for after the input mapping, return output codes and the 256 float values they stand for.
#: It must describe exactly the float kernel's output (``values_out[codes_out] == kernel(values[codes])``).
CodeKernel = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def pointwise(kernel: Kernel) -> CodeKernel:
    """Code kernel of a kernel that maps every value on its own (a tone curve, a shift).

    Such a kernel only ever sees the 256 possible input values, so it is evaluated on those and
    the image is indexed, instead of evaluating it on every pixel of every channel.
    """

    def on_codes(
        codes: np.ndarray, values: np.ndarray, param: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return codes, kernel(values.copy(), param, rng)

    return on_codes


@dataclass(frozen=True)
class DistortionType:
    """One KADID-10k distortion type: identity, level parameters and the kernel that applies it.

    ``levels`` holds the value the original generator passes to its helper for levels 1..5.
    ``stochastic`` types draw random numbers (seeded through :func:`iqalens.distortions.distort`).
    ``deviation`` says, in one sentence, where and why this port cannot match the original
    MATLAB code bit for bit (empty when it does). ``code_kernel``, where given, computes the same
    output as ``kernel`` on 8-bit codes (for kernels that only map or move values); :func:`apply`
    prefers it because it skips the full-image float conversions.
    """

    id: int
    name: str
    group: str
    helper: str
    levels: tuple[float, float, float, float, float]
    stochastic: bool
    kernel: Kernel
    description: str
    deviation: str = ""
    code_kernel: CodeKernel | None = None

    def parameter(self, level: int) -> float:
        """Return the helper parameter for ``level`` (1..5)."""
        return self.levels[check_level(level) - 1]


_TYPES: dict[int, DistortionType] = {}


def register(dist: DistortionType) -> DistortionType:
    """Add ``dist`` to the table; ids and names must be unique."""
    if dist.id in _TYPES:
        raise InvalidInputError(f"distortion id {dist.id} registered twice")
    if any(t.name == dist.name for t in _TYPES.values()):
        raise InvalidInputError(f"distortion name {dist.name!r} registered twice")
    if dist.group not in GROUPS:
        raise InvalidInputError(f"unknown group {dist.group!r} for {dist.name}")
    if len(dist.levels) != 5:
        raise InvalidInputError(f"{dist.name} must have exactly 5 level parameters")
    _TYPES[dist.id] = dist
    return dist


def unregister(key: int | str) -> DistortionType:
    """Remove a registered type (by id or name) and return it; for plug-ins and tests of the table."""
    dist = get_type(key)
    del _TYPES[dist.id]
    return dist


def all_types() -> tuple[DistortionType, ...]:
    """All registered types ordered by id."""
    return tuple(_TYPES[k] for k in sorted(_TYPES))


def check_level(level: int) -> int:
    """Validate a KADID level (1 = mildest .. 5 = strongest)."""
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 1 <= level <= 5:
        raise InvalidInputError(f"level must be an integer from 1 to 5, got {level!r}")
    return int(level)


def get_type(key: int | str) -> DistortionType:
    """Look a type up by KADID id (1-25, int or digit string) or snake_case name."""
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        if int(key) in _TYPES:
            return _TYPES[int(key)]
    elif isinstance(key, str):
        name = key.strip().lower().replace("-", "_").replace(" ", "_")
        for t in _TYPES.values():
            if t.name == name:
                return t
    known = ", ".join(f"{t.id}={t.name}" for t in all_types())
    raise UnknownNameError(f"unknown distortion type {key!r}; known types: {known}")


def mapmm(x: np.ndarray) -> np.ndarray:
    """Min-max map an array to [0, 1] over all its values, like KADIS ``mapmm``.

    A constant array is returned unchanged (the MATLAB helper only rescales when min < max).
    """
    lo = float(np.min(x))
    hi = float(np.max(x))
    if lo < hi:
        return (x - lo) / (hi - lo)
    return x


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float64 in [0, 1] (MATLAB ``im2double``)."""
    _check_rgb8(image)
    return image.astype(np.float64) / 255.0


def _check_rgb8(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInputError(
            f"expected an H x W x 3 uint8 RGB array, got dtype {image.dtype} shape {image.shape}"
        )


def input_values(image: np.ndarray) -> np.ndarray:
    """The 256 float values ``mapmm(im2double(image))`` assigns to the uint8 codes of ``image``.

    The input mapping depends only on each pixel's code, so evaluating MATLAB's formula once per
    possible code and indexing gives bit-identical numbers at a fraction of the cost of four
    full-image passes (this runs 125 times per image in ``distort --all``).
    """
    _check_rgb8(image)
    levels = np.arange(256, dtype=np.float64) / 255.0
    lo, hi = levels[int(image.min())], levels[int(image.max())]
    return (levels - lo) / (hi - lo) if lo < hi else levels


def mapped_input(image: np.ndarray) -> np.ndarray:
    """``mapmm(im2double(image))`` as a float64 image (through :func:`input_values`)."""
    return np.take(input_values(image), image)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 with MATLAB ``im2uint8`` rounding (round half away from zero)."""
    scaled = np.clip(image, 0.0, 1.0) * 255.0
    return np.floor(scaled + 0.5).astype(np.uint8)


def mapped_output(y: np.ndarray) -> np.ndarray:
    """``im2uint8(mapmm(y))``, in place on ``y`` (a fresh kernel output) to avoid temporaries."""
    lo = float(np.min(y))
    hi = float(np.max(y))
    if not lo < hi:
        return to_uint8(y)
    y = y if y.flags.writeable and y.flags.c_contiguous else np.array(y)
    np.subtract(y, lo, out=y)
    np.divide(y, hi - lo, out=y)
    np.multiply(y, 255.0, out=y)
    np.add(y, 0.5, out=y)
    np.floor(y, out=y)
    return y.astype(np.uint8)


def mapped_codes(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``im2uint8(mapmm(values[codes]))`` without building the float image.

    mapmm's minimum and maximum are taken over the values of the codes that occur (cheaply, via
    the smallest and largest code, when ``values`` never decreases), and the final mapping is
    evaluated once per code with the same arithmetic as :func:`mapped_output`.
    """
    if np.all(np.diff(values) >= 0):
        lo, hi = float(values[codes.min()]), float(values[codes.max()])
    else:
        used = values[np.bincount(codes.ravel(), minlength=256)[:256] > 0]
        lo, hi = float(used.min()), float(used.max())
    table = to_uint8((values - lo) / (hi - lo) if lo < hi else values)
    if np.array_equal(table, _IDENTITY_CODES):  # common: full-range output of a full-range input
        return codes if codes.flags.writeable else codes.copy()
    return np.take(table, codes)


_IDENTITY_CODES = np.arange(256, dtype=np.uint8)


def apply(dist: DistortionType, image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Run ``dist`` at ``level`` with the generator's order: mapmm -> kernel -> mapmm -> uint8."""
    if dist.code_kernel is not None:
        values = input_values(image)
        codes, out_values = dist.code_kernel(image, values, dist.parameter(level), rng)
        if codes.shape != image.shape:
            raise RuntimeError(f"{dist.name} changed the image shape {image.shape} -> {codes.shape}")
        return mapped_codes(codes, out_values)
    x = mapped_input(image)
    y = dist.kernel(x, dist.parameter(level), rng)
    if y.shape != x.shape:
        raise RuntimeError(f"{dist.name} changed the image shape {x.shape} -> {y.shape}")
    return mapped_output(y)
