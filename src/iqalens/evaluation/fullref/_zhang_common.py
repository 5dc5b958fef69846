"""What FSIM/FSIMc and VSI share: both come from Lin Zhang's MATLAB codes, which use the same steps.

Both codes downsample every map by ``F = max(1, round(min(H, W) / 256))`` with MATLAB's
``conv2(map, fspecial('average', F), 'same')`` (zero padding) followed by ``map(1:F:end, 1:F:end)``,
take a Scharr gradient magnitude with ``conv2`` ('same', zero padding), compare maps with the
SSIM-like ratio ``(2ab + c) / (a^2 + b^2 + c)`` and pool with a weight map. Keeping these steps in one
place keeps the two measures' conventions identical, as they are in the originals.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Scharr derivative kernels of FSIM.m/VSI.m, ``[3 0 -3; 10 0 -10; 3 0 -3] / 16`` and its transpose.
_SMOOTH = np.array([3.0, 10.0, 3.0]) / 16.0
_DIFF = np.array([1.0, 0.0, -1.0])


def downsample_factor(shape: tuple[int, ...]) -> int:
    """``F = max(1, round(min(H, W) / 256))``: the codes' rule for a ~256-pixel short side.

    MATLAB's ``round`` rounds halves away from zero (Python's rounds them to even), so 384/256 = 1.5
    must give 2 here as it does there.
    """
    return max(1, int(np.floor(min(shape[0], shape[1]) / 256.0 + 0.5)))


def conv2_average_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """``conv2(image, ones(F)/F^2, 'same')`` then every ``F``-th pixel, on the first two axes.

    Zero padding as ``conv2`` does (``_common.average_downsample`` pads symmetrically, the
    SSIM/GMSD convention); the two differ only in the last row/column of an image whose size is
    not a multiple of ``F``. The 'same' window of ``conv2`` at pixel ``j`` (0-based) starts at
    ``j - (ceil(F/2) - 1)``, so the kept pixels' windows tile the zero-padded image in F x F blocks:
    F^2 strided sums compute exactly them, without filtering pixels that are thrown away.
    """
    if factor <= 1:
        return image
    rows, cols = image.shape[:2]
    before = (factor + 1) // 2 - 1
    out_rows, out_cols = -(-rows // factor), -(-cols // factor)
    padded = image
    if before or rows % factor or cols % factor:
        # The last output window may reach past the image (zeros), the first one before it.
        padded = np.zeros((out_rows * factor, out_cols * factor, *image.shape[2:]))
        take_rows = min(rows, out_rows * factor - before)
        take_cols = min(cols, out_cols * factor - before)
        padded[before : before + take_rows, before : before + take_cols] = image[:take_rows, :take_cols]
    total = np.zeros((out_rows, out_cols, *image.shape[2:]))
    for i in range(factor):
        for j in range(factor):
            total += padded[i::factor, j::factor]
    return total / float(factor * factor)


def scharr_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude with the codes' Scharr kernels, zero padded like ``conv2(.., 'same')``.

    The kernels are separable (smoothing ``[3 10 3]/16`` times difference ``[1 0 -1]``), so two
    1-D passes per direction replace the 3 x 3 filters; the sign of a derivative (convolution vs
    correlation) does not matter for the magnitude.
    """
    gx = ndimage.correlate1d(
        ndimage.correlate1d(image, _SMOOTH, axis=0, mode="constant"), _DIFF, axis=1, mode="constant"
    )
    gy = ndimage.correlate1d(
        ndimage.correlate1d(image, _SMOOTH, axis=1, mode="constant"), _DIFF, axis=0, mode="constant"
    )
    return np.sqrt(gx * gx + gy * gy)


def similarity(a: np.ndarray, b: np.ndarray, constant: float) -> np.ndarray:
    """``(2ab + c) / (a^2 + b^2 + c)``: 1 where the maps agree, towards 0 as they part."""
    return (2.0 * a * b + constant) / (a * a + b * b + constant)


def real_power(values: np.ndarray, exponent: float) -> np.ndarray:
    """MATLAB's ``real(values .^ exponent)``, also for negative values.

    The chroma similarity product of FSIMc and VSI turns negative where the two images' chroma
    have opposite signs; MATLAB then takes a complex power whose real part is
    ``|x|^p cos(p pi)`` (about 0.998 |x|^p for p = 0.02 or 0.03), not 0 or NaN.
    """
    magnitude = np.abs(values) ** exponent
    return np.where(values >= 0.0, magnitude, magnitude * np.cos(exponent * np.pi))


def weighted_pool(similarity_map: np.ndarray, weight: np.ndarray) -> float:
    """``sum(sim * w) / sum(w)``, the pooling of FSIM and VSI.

    Where the weight is zero everywhere (both images flat, so neither has phase congruency or
    saliency) the originals divide 0 by 0; the unweighted mean is used instead, which gives 1 for
    two identical flat images and still sees a difference in colour between two flat ones.
    """
    total = float(weight.sum())
    if total <= 0.0:
        return float(similarity_map.mean())
    return float((similarity_map * weight).sum() / total)
