"""A deterministic textured test image shared by the distortion tests."""

from __future__ import annotations

import numpy as np


def synthetic_image(h: int = 48, w: int = 64) -> np.ndarray:
    """A textured uint8 RGB test image spanning 0..255 (edges, gradient, fine stripes)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 0.5 + 0.3 * np.sin(xx / 2.0) * np.cos(yy / 3.0) + 0.2 * (xx / w - 0.5)
    base[h // 4 : h // 2, w // 4 : w // 2] = 1.0
    base[h // 2 :, w // 2 :] *= 0.3
    rgb = np.stack([base, np.roll(base, 5, axis=1), base[::-1]], axis=2)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
    return np.round(rgb * 255).astype(np.uint8)
