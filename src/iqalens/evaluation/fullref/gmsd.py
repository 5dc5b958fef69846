"""GMSD, gradient magnitude similarity deviation (Xue, Zhang, Mou & Bovik 2014).

Follows the authors' MATLAB script: the grey image of ``rgb2gray`` on the 8-bit image (rounded),
a 2 x 2 average filter and keeping every second pixel (the script's fixed viewing-distance step),
Prewitt gradients divided by 3 with zero padding ('same' ``conv2``), the gradient magnitude
similarity ``GMS = (2 m_r m_d + c) / (m_r^2 + m_d^2 + c)`` with ``c = 170`` for 0..255 images, and
the *standard deviation* of the GMS map (``std2``, normalised by N - 1) as the score. Why a
deviation rather than a mean: distortions that hit some regions much harder than others are the
ones people notice, and the spread of the local similarity captures that. 0 for identical images;
lower = better.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from iqalens.errors import InvalidInputError
from iqalens.evaluation.fullref._common import check_pair, grey_uint8

__all__ = ["gmsd"]

#: Stabilising constant of the GMS map for 0..255 images (the paper's T = 170).
C = 170.0
# Prewitt derivative, split into its separable halves: [1, 1, 1] / 3 across, [1, 0, -1] along.
_SMOOTH = np.full(3, 1.0 / 3.0)
_DIFF = np.array([1.0, 0.0, -1.0])


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """``sqrt(conv2(x, dx, 'same')^2 + conv2(x, dx', 'same')^2)`` with dx the Prewitt kernel / 3."""
    along_x = ndimage.correlate1d(
        ndimage.correlate1d(image, _DIFF, axis=1, mode="constant"), _SMOOTH, axis=0, mode="constant"
    )
    along_y = ndimage.correlate1d(
        ndimage.correlate1d(image, _DIFF, axis=0, mode="constant"), _SMOOTH, axis=1, mode="constant"
    )
    return np.hypot(along_x, along_y)


def _average_downsample(image: np.ndarray) -> np.ndarray:
    """``conv2(Y, ones(2)/4, 'same')`` then ``Y(1:2:end, 1:2:end)``, computed only where it is kept.

    The script's 'same' convolution averages each pixel with its right and lower neighbours and
    zero-pads beyond the last row/column (unlike :func:`~._common.average_downsample`, which
    reflects); that padding shows in the last kept row/column of an odd-sized image.
    """
    p = np.pad(image, ((0, 1), (0, 1)))
    return (p[:-1:2, :-1:2] + p[1::2, :-1:2] + p[:-1:2, 1::2] + p[1::2, 1::2]) / 4.0


def gmsd(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Standard deviation of the gradient magnitude similarity map; 0 = identical (lower = better)."""
    ref, dist = check_pair(reference, distorted)
    if min(ref.shape[:2]) < 3:
        raise InvalidInputError(f"GMSD needs at least 3 x 3 pixels, got {ref.shape[:2]}")
    x = _average_downsample(grey_uint8(ref))
    y = _average_downsample(grey_uint8(dist))
    m_x, m_y = _gradient_magnitude(x), _gradient_magnitude(y)
    gms = (2.0 * m_x * m_y + C) / (m_x * m_x + m_y * m_y + C)
    return float(np.std(gms, ddof=1))
