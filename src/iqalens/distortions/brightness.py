"""KADID-10k brightness change types: 16 brighten, 17 darken, 18 mean shift.

The KADIS helpers ``imbrighten`` and ``imdarken`` push values through a tone curve that MATLAB
builds with ``spline`` through (0, 0), (0.5, m), (1, 1) and then truncates to [0, 1]. With three
knots and MATLAB's default not-a-knot end conditions the cubic spline degenerates to the single
parabola through the three points, so the curve is evaluated in that closed form.
"""

from __future__ import annotations

import numpy as np

from iqalens.distortions._matlab import lab2rgb, rgb2lab
from iqalens.distortions._registry import DistortionType, pointwise, register


def midpoint_curve(values: np.ndarray, mid: float) -> np.ndarray:
    """KADIS ``curves(values, mid)``: the not-a-knot spline through (0,0), (0.5,mid), (1,1), clipped.

    The parabola y = (4m - 1) x + (2 - 4m) x^2 is exactly what ``spline`` returns for three knots;
    clipping matters for strong levels, where the curve overshoots 1 (brighten) or dips below 0 (darken).
    """
    y = (2.0 - 4.0 * mid) * values
    y += 4.0 * mid - 1.0
    y *= values
    return np.clip(y, 0.0, 1.0, out=y)


def brighten(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``imbrighten``: average of the curve on RGB (weight 2) and on Lab lightness (weight 1).

    Brightening R, G and B alone desaturates; the Lab branch keeps chroma, and the original mixes the
    two 2:1. The Lab result is truncated to [0, 1] before mixing, the RGB branch is already clipped.
    """
    mid = 0.5 + amount / 2
    lab = rgb2lab(x)
    lab[..., 0] = midpoint_curve(lab[..., 0] / 100.0, mid) * 100.0
    via_lab = np.clip(lab2rgb(lab), 0.0, 1.0)
    out = midpoint_curve(x, mid)
    out *= 2.0
    out += via_lab
    out /= 3.0
    return out


def darken(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``imdarken``: the tone curve through (0.5, 0.5 - amount/2) on each RGB channel."""
    return midpoint_curve(x, 0.5 - amount / 2)


def mean_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``immeanshift``: add a constant and truncate to [0, 1].

    The generator's final min-max mapping then stretches the clipped range back to [0, 1], so the
    visible effect is a shift plus lost highlights (amount > 0) or shadows (amount < 0).
    """
    return np.clip(x + amount, 0.0, 1.0)


register(
    DistortionType(
        id=16,
        name="brighten",
        group="brightness_change",
        helper="imbrighten",
        levels=(0.1, 0.2, 0.4, 0.7, 1.1),
        stochastic=False,
        kernel=brighten,
        description="Brightens with a spline tone curve applied 2:1 to RGB and to Lab lightness.",
        deviation=(
            "Lab conversions use octave-image's full-precision sRGB/D65 constants, as the golden outputs do; "
            "MATLAB's 4-digit white point can move a rare pixel by one grey level."
        ),
    )
)

register(
    DistortionType(
        id=17,
        name="darken",
        group="brightness_change",
        helper="imdarken",
        levels=(0.05, 0.1, 0.2, 0.4, 0.8),
        stochastic=False,
        kernel=darken,
        code_kernel=pointwise(darken),
        description="Darkens each RGB channel with a spline tone curve through (0.5, 0.5 - amount/2).",
    )
)

register(
    DistortionType(
        id=18,
        name="mean_shift",
        group="brightness_change",
        helper="immeanshift",
        levels=(0.15, 0.08, 0.0, -0.08, -0.15),
        stochastic=False,
        kernel=mean_shift,
        code_kernel=pointwise(mean_shift),
        description="Adds a constant to all channels and truncates to [0, 1] (level 3 is the identity).",
    )
)
