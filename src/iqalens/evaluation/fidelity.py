"""Full-reference fidelity measures used to summarise how strongly an image was changed."""

from __future__ import annotations

import numpy as np

from iqalens.errors import InvalidInputError

#: PSNR reported for identical images (a finite stand-in for infinity, so tables and means stay finite).
PSNR_IDENTICAL = 99.0


def mse(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean squared error in 8-bit units over all pixels and channels."""
    if reference.shape != distorted.shape:
        raise InvalidInputError(f"shape mismatch: {reference.shape} vs {distorted.shape}")
    diff = reference.astype(np.float64) - distorted.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, distorted: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; :data:`PSNR_IDENTICAL` when the images are equal."""
    err = mse(reference, distorted)
    if err == 0.0:
        return PSNR_IDENTICAL
    return min(PSNR_IDENTICAL, 10.0 * float(np.log10(peak * peak / err)))
