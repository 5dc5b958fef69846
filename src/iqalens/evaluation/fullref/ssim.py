"""SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) and MS-SSIM (Wang, Simoncelli & Bovik 2003).

Both follow the authors' MATLAB scripts, which is what the published reference values come from:
the grey image of ``rgb2gray`` on the 8-bit image (rounded), an 11 x 11 Gaussian window with
sigma 1.5 applied only where it fits ('valid'), ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2`` with
``L = 255``, and the mean of the map.

* :func:`ssim` is ``ssim_index.m`` (2004): the full-resolution image, no downsampling. This is what
  the reference values of ``metric-reference/values.csv`` are (agreement 1e-4). ``downsample=True``
  gives the 2009 ``ssim.m`` instead, which first averages over ``f x f`` blocks,
  ``f = max(1, round(min(H, W) / 256))``, to look at the image from a typical viewing distance.
* :func:`ms_ssim` is ``msssim.m``: five scales, between scales a 2 x 2 box filter ('symmetric'
  borders) and keeping every second pixel; the contrast-structure term at scales 1-4 and the full
  SSIM (with luminance) at scale 5, combined with the weights of the paper
  ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]`` as a product of powers (the paper's definition and the
  script's default). ``method="wtd_sum"`` gives the script's other combination, the weighted sum,
  which is what the reference values were evidently computed with (docs/fullref_metrics.md).

The Gaussian window is separable, so the five local moments are filtered with two 1-D passes over
one stacked array: 22 instead of 121 multiplications per pixel, same result as the 2-D ``filter2``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage

from iqalens.errors import InvalidInputError
from iqalens.evaluation.fullref._common import average_downsample, check_pair, gaussian_window, grey_uint8

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "ssim"]

#: Window size and width of the local statistics (both scripts).
WINDOW = 11
SIGMA = 1.5
#: Dynamic range and the stabilising constants' factors.
L = 255.0
K1, K2 = 0.01, 0.03
#: Per-scale exponents of MS-SSIM, fine to coarse (Wang et al. 2003, from their psychophysics).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_C1 = (K1 * L) ** 2
_C2 = (K2 * L) ** 2
# The 1-D factor of fspecial('gaussian', 11, 1.5): its outer product is the normalised 2-D window.
_G1 = gaussian_window(WINDOW, SIGMA).sum(axis=0)


def _valid_gauss(stack: np.ndarray) -> np.ndarray:
    """``filter2(window, x, 'valid')`` for every 2-D slice of ``stack`` (last two axes)."""
    half = WINDOW // 2
    out = ndimage.correlate1d(stack, _G1, axis=-1, mode="nearest")[..., half:-half]
    out = ndimage.correlate1d(out, _G1, axis=-2, mode="nearest")[..., half:-half, :]
    return out


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean SSIM map and mean contrast-structure map of two grey images (the scripts' mssim, mcs)."""
    if min(x.shape) < WINDOW:
        raise InvalidInputError(
            f"SSIM needs images of at least {WINDOW} x {WINDOW} pixels (at every scale), got {x.shape}"
        )
    mu_x, mu_y, xx, yy, xy = _valid_gauss(np.stack([x, y, x * x, y * y, x * y]))
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    cs = (2.0 * cov + _C2) / (var_x + var_y + _C2)
    lum = (2.0 * mu_x * mu_y + _C1) / (mu_x * mu_x + mu_y * mu_y + _C1)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def ssim(reference: np.ndarray, distorted: np.ndarray, *, downsample: bool = False) -> float:
    """Mean structural similarity of the grey images, 1 for identical images (higher = better).

    ``downsample=False`` is ``ssim_index.m`` (the published reference values); ``True`` is the 2009
    ``ssim.m``, which first averages ``f x f`` blocks with ``f = max(1, round(min(H, W) / 256))``.
    """
    ref, dist = check_pair(reference, distorted)
    x, y = grey_uint8(ref), grey_uint8(dist)
    if downsample:
        factor = max(1, math.floor(min(x.shape) / 256 + 0.5))  # MATLAB round: half away from zero
        x, y = average_downsample(x, factor), average_downsample(y, factor)
    return _ssim_terms(x, y)[0]


def ms_ssim(
    reference: np.ndarray, distorted: np.ndarray, *, method: Literal["product", "wtd_sum"] = "product"
) -> float:
    """Multi-scale SSIM over five dyadic scales, 1 for identical images (higher = better).

    ``product``: ``prod(mcs[1:4] ** w[1:4]) * mssim[5] ** w[5]``. A mean contrast-structure term
    below 0 (anti-correlated structure; the script would return a complex number) counts as 0, so
    the product is 0 instead of undefined. ``wtd_sum``: ``sum(w * [mcs1..mcs4, mssim5]) / sum(w)``.
    Needs at least 176 pixels per side (11 at the fifth scale), as the script does.
    """
    if method not in ("product", "wtd_sum"):
        raise InvalidInputError(f"unknown MS-SSIM combination {method!r}; use 'product' or 'wtd_sum'")
    ref, dist = check_pair(reference, distorted)
    x, y = grey_uint8(ref), grey_uint8(dist)
    scales = len(MS_SSIM_WEIGHTS)
    min_side = WINDOW * 2 ** (scales - 1)
    if min(x.shape) < min_side:
        raise InvalidInputError(f"MS-SSIM needs at least {min_side} pixels per side, got {x.shape[:2]}")
    terms = []
    for scale in range(scales):
        mssim, mcs = _ssim_terms(x, y)
        terms.append(mssim if scale == scales - 1 else mcs)
        if scale < scales - 1:
            x, y = average_downsample(x, 2), average_downsample(y, 2)
    values = np.array(terms)
    weights = np.array(MS_SSIM_WEIGHTS)
    if method == "wtd_sum":
        return float(np.sum(weights * values) / np.sum(weights))
    return float(np.prod(np.maximum(values, 0.0) ** weights))
