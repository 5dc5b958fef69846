"""Image preprocessing shared by the image backbones (PIL/numpy only, no model code).

The recipe (used by the LEAF student, the mini VLM and its aligned variant): the image is converted
to RGB, its *shorter side* resized (:func:`resize_shorter`: bicubic, Pillow's antialiasing filter,
aspect ratio kept), then square crops are cut (:func:`crop_boxes`: the centre, or an evenly spaced
grid) and scaled to [0, 1] and normalised per channel (:func:`normalise`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from iqalens.errors import InvalidInputError

__all__ = ["crop_boxes", "normalise", "resize_shorter"]


def resize_shorter(image: np.ndarray | Image.Image, shorter: int) -> np.ndarray:
    """RGB uint8 H x W x 3 with the shorter side resized to ``shorter`` (bicubic, aspect kept)."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = im.convert("RGB")
    w, h = im.size
    scale = shorter / min(w, h)
    size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
    if size != (w, h):
        im = im.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def crop_boxes(height: int, width: int, size: int, grid: int = 1) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` squares: the centre for ``grid == 1``, else an evenly spaced grid.

    Positions along each axis are ``round(i * (L - size) / (grid - 1))`` for i = 0..grid-1, so the first
    and last crops touch the borders; repeated corners (an axis with no slack) are listed once.
    """
    if size > height or size > width:
        raise InvalidInputError(f"crop {size} larger than image {height}x{width}")

    def axis(length: int) -> list[int]:
        if grid == 1:
            return [(length - size) // 2]
        return sorted({round(i * (length - size) / (grid - 1)) for i in range(grid)})

    return [(top, left) for top in axis(height) for left in axis(width)]


def normalise(crops: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 tensor, (x / 255 - mean) / std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().div_(255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    return x.permute(0, 3, 1, 2).contiguous()
