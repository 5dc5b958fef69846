"""MATLAB / octave-image compatible primitives used by the KADID-10k kernels.

The original generator is MATLAB code; matching it pixel-closely means matching MATLAB's
conventions exactly: kernel sizes and normalisation of ``fspecial``, ``imfilter`` with
'replicate' padding (correlation, not convolution), the sRGB/Lab constants and the BT.601
YCbCr matrix. Each function names the MATLAB routine it stands in for.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

# sRGB (D65) <-> XYZ as used by octave-image's rgb2lab/lab2rgb (full precision constants).
_RGB_TO_XYZ = np.array(
    [
        [0.412456439089692, 0.357576077643909, 0.180437483266399],
        [0.212672851405623, 0.715152155287818, 0.072174993306559],
        [0.019333895582329, 0.119192025881303, 0.950304078536368],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_D65 = np.array([0.95047, 1.0, 1.08883])


def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """``fspecial('gaussian', size, sigma)``; default size is ``imgaussfilt``'s 2*ceil(2*sigma)+1."""
    if size is None:
        size = 2 * math.ceil(2 * sigma) + 1
    half = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - half
    xx, yy = np.meshgrid(ax, ax)
    h = np.exp(-(xx**2 + yy**2) / (2.0 * sigma**2))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


def filter_replicate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``imfilter(image, kernel, 'replicate')`` applied to each 2-D plane (correlation).

    MATLAB centres an even-sized kernel at floor((size+1)/2) (1-based); scipy's origin
    convention is shifted by one for even sizes, which the ``origin`` argument corrects.
    """
    origin = [-1 if n % 2 == 0 else 0 for n in kernel.shape]
    if image.ndim == 2:
        return ndimage.correlate(image, kernel, mode="nearest", origin=origin)
    out = np.empty_like(image, dtype=np.float64)
    for c in range(image.shape[2]):
        out[..., c] = ndimage.correlate(image[..., c], kernel, mode="nearest", origin=origin)
    return out


def gaussian_filter_replicate(image: np.ndarray, sigma: float) -> np.ndarray:
    """``imgaussfilt(image, sigma)``: separable Gaussian, size 2*ceil(2*sigma)+1, replicate edges."""
    size = 2 * math.ceil(2 * sigma) + 1
    half = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - half
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    g /= g.sum()

    def plane(p: np.ndarray) -> np.ndarray:
        p = ndimage.correlate1d(p, g, axis=0, mode="nearest")
        return ndimage.correlate1d(p, g, axis=1, mode="nearest")

    if image.ndim == 2:
        return plane(image)
    return np.stack([plane(image[..., c]) for c in range(image.shape[2])], axis=2)


def rgb2gray(image: np.ndarray) -> np.ndarray:
    """``rgb2gray``: the rounded BT.601 luma weights MATLAB uses."""
    return image @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.abs(c), 1 / 2.4) * np.sign(c) - 0.055)


def rgb2lab(image: np.ndarray) -> np.ndarray:
    """``rgb2lab`` (sRGB, D65): L in [0, 100], a*, b* unbounded."""
    xyz = _srgb_to_linear(image) @ _RGB_TO_XYZ.T / _D65
    eps = 216 / 24389
    kappa = 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.empty_like(xyz)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def lab2rgb(lab: np.ndarray) -> np.ndarray:
    """``lab2rgb`` (sRGB, D65); out-of-gamut values are *not* clipped, as in MATLAB for double."""
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    eps = 216 / 24389
    kappa = 24389 / 27
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f**3 > eps, f**3, (116 * f - 16) / kappa)
    xyz[..., 1] = np.where(lab[..., 0] > kappa * eps, fy**3, lab[..., 0] / kappa)
    rgb_lin = (xyz * _D65) @ _XYZ_TO_RGB.T
    return _linear_to_srgb(rgb_lin)


def rgb2ycbcr(image: np.ndarray) -> np.ndarray:
    """``rgb2ycbcr`` for double input: BT.601, Y in [16, 235]/255, Cb/Cr in [16, 240]/255."""
    m = np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    offset = np.array([16.0, 128.0, 128.0])
    return (image @ m.T + offset) / 255.0


def ycbcr2rgb(image: np.ndarray) -> np.ndarray:
    """``ycbcr2rgb`` for double input, clipped to [0, 1] as MATLAB does."""
    m = np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    offset = np.array([16.0, 128.0, 128.0])
    rgb = (image * 255.0 - offset) @ np.linalg.inv(m).T
    return np.clip(rgb, 0.0, 1.0)


def resize_nearest(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``imresize(image, [out_h out_w], 'nearest')`` with MATLAB's pixel-centre mapping."""
    h, w = image.shape[:2]
    rows = _matlab_nearest_index(h, out_h)
    cols = _matlab_nearest_index(w, out_w)
    return image[rows][:, cols]


def _matlab_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """MATLAB's source index for output pixel x (1-based): round(x/scale + 0.5*(1 - 1/scale))."""
    scale = n_out / n_in
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    idx = np.floor(u + 0.5).astype(int) - 1  # MATLAB round half away from zero, u > 0
    return np.clip(idx, 0, n_in - 1)
