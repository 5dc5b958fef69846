"""What every full-reference measure needs: input checks, colour conversions and local filters.

The original MATLAB implementations the measures are checked against convert colour with
``rgb2gray``/YIQ matrices and filter with ``filter2`` ('same' or 'valid'); these helpers reproduce
those conventions once, so the measures differ only in what they compute.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from iqalens.errors import InvalidInputError

#: MATLAB ``rgb2gray`` weights (ITU-R BT.601 luma, as rounded by MATLAB).
RGB2GRAY = np.array([0.2989, 0.5870, 0.1140])
#: RGB -> YIQ (rows Y, I, Q) as in the FSIM/VSI reference code.
RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def check_pair(reference: np.ndarray, distorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays in 0..255 after checking they are comparable.

    Accepts H x W (grey) or H x W x 3 (RGB) arrays of one shape; anything else raises
    :class:`InvalidInputError` naming the shapes, so a wrong reference never yields a number.
    """
    ref = np.asarray(reference)
    dist = np.asarray(distorted)
    if ref.shape != dist.shape:
        raise InvalidInputError(f"reference and distorted image differ in size: {ref.shape} vs {dist.shape}")
    if ref.ndim not in (2, 3) or (ref.ndim == 3 and ref.shape[2] != 3):
        raise InvalidInputError(f"expected an H x W or H x W x 3 image, got shape {ref.shape}")
    if min(ref.shape[:2]) < 1:
        raise InvalidInputError(f"empty image of shape {ref.shape}")
    return ref.astype(np.float64), dist.astype(np.float64)


def luma(image: np.ndarray) -> np.ndarray:
    """Grey image as MATLAB's ``rgb2gray`` makes it (kept in float, not rounded); grey passes through."""
    return image if image.ndim == 2 else image @ RGB2GRAY


def yiq(image: np.ndarray) -> np.ndarray:
    """RGB (0..255) -> YIQ channels (H x W x 3), the colour space of FSIMc and VSI's chroma term."""
    if image.ndim != 3:
        raise InvalidInputError("a YIQ conversion needs an RGB image")
    return image @ RGB2YIQ.T


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian window (MATLAB ``fspecial('gaussian', size, sigma)``)."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(window, image, 'valid')``: correlation, only where the window fits."""
    return signal.correlate(image, window, mode="valid", method="auto")


def filter_same(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(window, image, 'same')``: correlation with zero padding, same size."""
    return signal.correlate(image, window, mode="same", method="auto")


def average_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter then keep every ``factor``-th pixel (the SSIM/GMSD reference codes' downsampling).

    MATLAB: ``imfilter(img, ones(f)/f^2, 'symmetric', 'same')`` then ``img(1:f:end, 1:f:end)``.
    For even ``f`` MATLAB's 'same' centre is at index ``f/2`` (1-based), which scipy's ``origin``
    reproduces.
    """
    if factor <= 1:
        return image
    origin = -1 if factor % 2 == 0 else 0
    box = ndimage.uniform_filter(image, size=factor, mode="reflect", origin=origin)
    return box[::factor, ::factor]


def grey_uint8(image: np.ndarray) -> np.ndarray:
    """Grey image as the SSIM/MS-SSIM/GMSD/VIF reference scripts see it: ``rgb2gray`` of a uint8 image.

    Those scripts read images with ``imread`` (uint8), so MATLAB's ``rgb2gray`` returns the weighted
    sum *rounded* to integers (half away from zero). The rounding is not cosmetic: on nearly identical
    pairs it is most of the difference (GMSD 0.0003 unrounded vs the reference 0.0005), so it is
    reproduced here. A grey (H x W) image passes through unchanged, which also makes a
    grey-replicated RGB image and its grey original give the same value (``v * 0.9999`` rounds to
    ``v`` for every 8-bit ``v``).
    """
    if image.ndim == 2:
        return image
    return np.floor(luma(image) + 0.5)
