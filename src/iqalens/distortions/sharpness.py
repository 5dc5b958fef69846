"""KADID-10k sharpness and contrast distortions (types 24 and 25).

Type 24 over-sharpens with MATLAB's ``imsharpen`` (unsharp masking of L*a*b* lightness); type 25
pushes every channel through a tone curve, the not-a-knot cubic spline MATLAB's ``spline`` builds.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from iqalens.distortions._matlab import gaussian_filter_replicate, lab2rgb, rgb2lab
from iqalens.distortions._registry import DistortionType, pointwise, register
from iqalens.distortions.color import LAB_DEVIATION

_SHARPEN_RADIUS = 3.0  # imsharpenHi's default 'Radius' (Gaussian sigma of the unsharp mask)


def high_sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Type 24 kernel: ``imsharpen(I, 'Radius', 3, 'Amount', amount)`` then clip to [0, 1].

    imsharpen sharpens only L* (so edges gain contrast without colour fringes): L + amount * (L - blur(L)),
    blur = Gaussian sigma 3, size 2*ceil(2*sigma)+1 = 13, replicate borders, threshold 0; L* itself is
    not clipped before ``lab2rgb``. Amounts up to 12 overshoot strongly (halos, clipped highlights).
    """
    lab = rgb2lab(x)
    lightness = np.ascontiguousarray(lab[..., 0])
    blurred = gaussian_filter_replicate(lightness, _SHARPEN_RADIUS)
    lab[..., 0] = lightness + amount * (lightness - blurred)
    rgb = lab2rgb(lab)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def contrast_curve(amount: float) -> CubicSpline:
    """The tone curve of ``imcontrastc``: a spline through (0, 0), (0.3, 0.25 - a/4), (0.5, 0.5),
    (0.7, 0.75 + a/4) and (1, 1).

    a > 0 steepens the mid-tones (more contrast), a < 0 flattens them; a = 0 is already a mild S-curve,
    not the identity. ``bc_type='not-a-knot'`` is MATLAB's ``spline`` end condition for 5 points.
    """
    xs = [0.0, 0.3, 0.5, 0.7, 1.0]
    ys = [0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0]
    return CubicSpline(xs, ys, bc_type="not-a-knot")


def contrast_change(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Type 25 kernel: apply :func:`contrast_curve` to every channel and clip the spline's overshoot."""
    y = contrast_curve(amount)(x)
    return np.clip(y, 0.0, 1.0, out=y)


register(
    DistortionType(
        id=24,
        name="high_sharpen",
        group="sharpness_contrast",
        helper="imsharpenHi",
        levels=(1, 2, 3, 6, 12),
        stochastic=False,
        kernel=high_sharpen,
        description="Over-sharpens by unsharp masking the L*a*b* lightness (Gaussian radius 3) with "
        "amount p, creating halos and clipped edges.",
        deviation=LAB_DEVIATION,
    )
)

register(
    DistortionType(
        id=25,
        name="contrast_change",
        group="sharpness_contrast",
        helper="imcontrastc",
        levels=(0.3, 0.15, 0, -0.4, -0.6),
        stochastic=False,
        kernel=contrast_change,
        code_kernel=pointwise(contrast_change),
        description="Maps every channel through a spline tone curve whose mid-tone slope rises "
        "(p > 0) or falls (p < 0), changing contrast.",
    )
)
