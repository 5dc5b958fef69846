"""VIF, visual information fidelity (Sheikh & Bovik 2006), in the wavelet domain of ``vifvec``.

The model: the reference's wavelet coefficients are a Gaussian scale mixture (GSM) ``C = s U`` over
3 x 3 blocks ``U`` with covariance ``C_U``; the distorted coefficients are ``D = g C + V`` (a local
gain and additive Gaussian noise of variance ``sigma_v^2``); the eye adds noise of variance
``sigma_n^2 = 0.4`` to both. VIF is the information the eye can extract from the distorted image
divided by what it could extract from the reference, summed over subbands and blocks::

    VIF = sum log2(1 + g^2 s^2 lambda_k / (sigma_v^2 + sigma_n^2)) / sum log2(1 + s^2 lambda_k / sigma_n^2)

(``lambda_k`` the eigenvalues of ``C_U``). As in the authors' ``vifvec.m``: grey image of
``rgb2gray`` on the 8-bit image (rounded); a steerable pyramid of 4 scales and 6 orientations of
which the 0 and 90 degree subbands of every scale are used; ``s^2`` from non-overlapping 3 x 3 blocks
(``s^2 = u^T C_U^-1 u / 9``); ``g`` and ``sigma_v^2`` by local regression in a window of
``2^k + 1`` coefficients around each block centre (k = 4 at the finest scale down to 1 at the
coarsest) with mirrored borders; borders of ``ceil(((2^k + 1) - 1) / 2 / 3)`` blocks excluded.
Those statistics reproduce the script exactly (checked to 1e-4 when fed the script's pyramid).

Deliberate deviation, the pyramid: the script's pyramid uses the tabulated ``sp5Filters`` spatial
kernels of matlabPyrTools. This module builds the steerable pyramid in the frequency domain from its
definition instead (Simoncelli & Freeman 1995; Portilla & Simoncelli 2000): a tight frame with a
high/low split at pi/2, at each scale oriented bands ``sqrt(c) cos^5(theta - pi k / 6)`` times a
radial high-pass centred at pi/4, and a low-pass centred at pi/4 before halving the resolution,
all radial transitions raised cosines in log2-frequency. The transitions are 2 octaves wide: the
short sp5 kernels have 2-3 octave transitions, and 2 octaves is the widest that keeps the halving
alias-free. The values then agree with the reference to about 0.013 (docs/fullref_metrics.md), and
the ordering of the reference pairs is the same. The image is mirror-padded by 16 pixels before the
FFT so that the pyramid sees mirrored, not wrapped-around, borders (as the script's 'reflect1').
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage

from iqalens.errors import InvalidInputError
from iqalens.evaluation.fullref._common import check_pair, grey_uint8

__all__ = ["MIN_SIDE", "vif"]

#: Pyramid scales and the orientations of which two (0 and 90 degrees) are used.
SCALES = 4
ORIENTATIONS = 6
USED_ORIENTATIONS = (0, 3)
#: Block size of the GSM vectors and the eye's noise variance (the script's M and sigma_nsq).
BLOCK = 3
SIGMA_NSQ = 0.4
#: Numerical floor of the script's regression (variances below it count as zero).
TOL = 1e-15
#: Width of the radial raised-cosine transitions, octaves (see the module docstring).
TRANSITION_OCTAVES = 2.0
#: Mirror padding before the FFT; a multiple of 2**(SCALES - 1) so that it halves exactly per scale.
PAD = 16
#: Smallest side for which every used subband keeps at least one block inside its border.
MIN_SIDE = 65

_ORDER = ORIENTATIONS - 1
# (-i)^order: turns the odd-order (imaginary, odd) band responses into real filters.
_PHASE = (1, -1j, -1, 1j)[_ORDER % 4]
# Angular gain so that the squared angular responses of the orientations sum to 1 (tight frame).
_ANGULAR_GAIN = math.sqrt(
    2 ** (2 * _ORDER) * math.factorial(_ORDER) ** 2 / (ORIENTATIONS * math.factorial(2 * _ORDER))
)


def _raised_cosine(radius: np.ndarray, centre: float) -> tuple[np.ndarray, np.ndarray]:
    """(high-pass, low-pass) pair in log2-frequency around ``centre``; their squares sum to 1."""
    with np.errstate(divide="ignore"):
        position = np.log2(radius / centre) / TRANSITION_OCTAVES + 0.5
    angle = (math.pi / 2) * np.clip(position, 0.0, 1.0)
    return np.sin(angle), np.cos(angle)


def _frequencies(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angular frequencies (wy, wx, radius) on the half-plane grid of ``rfft2`` of a rows x cols image."""
    wy = (2 * math.pi * np.fft.fftfreq(rows))[:, None]
    wx = (2 * math.pi * np.fft.rfftfreq(cols))[None, :]
    return wy, wx, np.hypot(wx, wy)


@lru_cache(maxsize=8)
def _masks(rows: int, cols: int) -> tuple[np.ndarray, tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """The pyramid's frequency responses for a padded rows x cols image (cached: same-size batches).

    Returns the initial low-pass and, per scale, (the two used oriented band masks stacked, the
    low-pass applied before halving). All are real; the band filters' factor ``(-i)^order``
    (:data:`_PHASE`) is applied to the spectrum once per scale by :func:`_pyramid`.
    """
    radius = _frequencies(rows, cols)[2]
    lo0 = _raised_cosine(radius, math.pi / 2)[1]
    scales = []
    for scale in range(SCALES):
        wy, wx, radius = _frequencies(rows >> scale, cols >> scale)
        high, low = _raised_cosine(radius, math.pi / 4)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_theta = np.where(radius > 0, wx / radius, 0.0)
            sin_theta = np.where(radius > 0, wy / radius, 0.0)
        # cos(theta - pi k / 6) for k = 0 and 3 (0 and 90 degrees).
        angular = np.stack([cos_theta, sin_theta]) ** _ORDER * _ANGULAR_GAIN
        scales.append((angular * high, low))
    return lo0, tuple(scales)


def _halve(spectrum: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The ``rfft2`` spectrum of a rows x cols image reduced to the frequencies of a half-size grid.

    Keeps the lowest frequencies of each sign as ``fftfreq``/``rfftfreq`` of the new size list
    them, so the inverse transform samples the (already low-passed) image at every second pixel.
    """
    new_rows, new_cols = rows // 2, cols // 2
    positive, negative = (new_rows + 1) // 2, new_rows // 2
    kept_rows = np.concatenate([spectrum[..., :positive, :], spectrum[..., rows - negative :, :]], axis=-2)
    return kept_rows[..., : new_cols // 2 + 1]


def _pyramid(images: np.ndarray) -> list[np.ndarray]:
    """Used subbands of a stack of grey images (n x H x W), finest first: n x 2 x h_s x w_s each."""
    _, rows, cols = images.shape
    # Pad by PAD on top/left and up to a multiple of 2**(SCALES - 1) bottom/right, mirrored.
    step = 2 ** (SCALES - 1)
    pad_rows = (PAD, PAD + (-rows) % step)
    pad_cols = (PAD, PAD + (-cols) % step)
    padded = np.pad(images, ((0, 0), pad_rows, pad_cols), mode="reflect")
    full_rows, full_cols = padded.shape[1:]
    lo0, scales = _masks(full_rows, full_cols)
    low = np.fft.rfft2(padded, norm="ortho") * lo0
    bands = []
    for scale, (band_masks, low_mask) in enumerate(scales):
        shape = (full_rows >> scale, full_cols >> scale)
        spectra = (low * _PHASE)[:, None] * band_masks[None]
        coefficients = np.fft.irfft2(spectra, s=shape, norm="ortho")
        offset = PAD >> scale
        bands.append(
            coefficients[..., offset : offset + -(-rows // 2**scale), offset : offset + -(-cols // 2**scale)]
        )
        if scale < SCALES - 1:
            low = _halve(low * low_mask, *shape)
    return bands


def _block_means(stack: np.ndarray, window: int) -> np.ndarray:
    """Means over ``window`` x ``window`` neighbourhoods (mirrored borders) at the block centres.

    Separable: the pass along the rows (contiguous memory) runs first, and the strided pass down
    the columns only on the columns that are kept, a third of the work.
    """
    centre = BLOCK // 2
    cols = ndimage.uniform_filter1d(stack, window, axis=-1, mode="mirror")[..., centre::BLOCK]
    return ndimage.uniform_filter1d(cols, window, axis=-2, mode="mirror")[..., centre::BLOCK, :]


def _subband_information(ref: np.ndarray, dist: np.ndarray, window: int) -> tuple[float, float]:
    """(information in the distorted, information in the reference) of one subband, bits."""
    rows, cols = (ref.shape[0] // BLOCK) * BLOCK, (ref.shape[1] // BLOCK) * BLOCK
    x, y = ref[:rows, :cols], dist[:rows, :cols]
    # C_U from all overlapping 3 x 3 blocks (population covariance), one row per block position.
    span_r, span_c = rows - BLOCK + 1, cols - BLOCK + 1
    vectors = np.empty((BLOCK * BLOCK, span_r, span_c))
    for i in range(BLOCK):
        for j in range(BLOCK):
            vectors[i * BLOCK + j] = x[i : i + span_r, j : j + span_c]
    vectors = vectors.reshape(BLOCK * BLOCK, -1)
    mean = vectors.mean(axis=1)
    cov_u = vectors @ vectors.T / vectors.shape[1] - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(cov_u)
    # s^2 = u^T C_U^-1 u / 9 on non-overlapping blocks; directions without variance carry nothing.
    blocks = (
        x.reshape(rows // BLOCK, BLOCK, cols // BLOCK, BLOCK)
        .transpose(0, 2, 1, 3)
        .reshape(rows // BLOCK, cols // BLOCK, BLOCK * BLOCK)
    )
    usable = eigenvalues > max(eigenvalues.max(), 0.0) * 1e-12
    projections = blocks @ eigenvectors[:, usable]
    s2 = np.sum(projections**2 / eigenvalues[usable], axis=-1) / (BLOCK * BLOCK)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    # Distortion channel D = g C + V by local regression around each block centre.
    mean_x, mean_y, xx, yy, xy = _block_means(np.stack([x, y, x * x, y * y, x * y]), window)
    var_x = np.maximum(xx - mean_x**2, 0.0)
    var_y = np.maximum(yy - mean_y**2, 0.0)
    cov = xy - mean_x * mean_y
    gain = cov / (var_x + TOL)
    noise = var_y - gain * cov
    flat_ref = var_x < TOL  # no reference signal: everything in the distorted image is noise
    gain[flat_ref] = 0.0
    noise[flat_ref] = var_y[flat_ref]
    flat_dist = var_y < TOL  # nothing left in the distorted image
    gain[flat_dist] = 0.0
    noise[flat_dist] = 0.0
    negative = gain < 0  # anti-correlated: no information passes, the whole signal is noise
    noise[negative] = var_y[negative]
    gain[negative] = 0.0
    noise = np.maximum(noise, TOL)
    border = math.ceil((window - 1) / 2 / BLOCK)
    inner = (slice(border, -border), slice(border, -border))
    gain, noise, s2 = gain[inner], noise[inner], s2[inner]
    signal = s2[..., None] * eigenvalues
    distorted = np.sum(np.log2(1.0 + (gain * gain / (noise + SIGMA_NSQ))[..., None] * signal))
    reference = np.sum(np.log2(1.0 + signal / SIGMA_NSQ))
    return float(distorted), float(reference)


def vif(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Visual information fidelity: 1 for identical images, 0 when no information survives.

    Higher = better; above 1 for contrast enhancement (the model's gain ``g`` exceeds 1). Raises
    :class:`InvalidInputError` for images under :data:`MIN_SIDE` pixels per side and for a flat
    reference (no information to preserve, so the ratio is undefined).
    """
    ref, dist = check_pair(reference, distorted)
    if min(ref.shape[:2]) < MIN_SIDE:
        raise InvalidInputError(f"VIF needs at least {MIN_SIDE} pixels per side, got {ref.shape[:2]}")
    x, y = grey_uint8(ref), grey_uint8(dist)
    if np.ptp(x) == 0:
        raise InvalidInputError("VIF is undefined for a flat reference image (it holds no information)")
    subbands = _pyramid(np.stack([x, y]))
    information_dist = information_ref = 0.0
    for scale, bands in enumerate(subbands):
        window = 2 ** (SCALES - scale) + 1
        for orientation in range(len(USED_ORIENTATIONS)):
            d, r = _subband_information(bands[0, orientation], bands[1, orientation], window)
            information_dist += d
            information_ref += r
    if not information_ref > 0:
        raise InvalidInputError("VIF is undefined for a reference image without detail")
    return information_dist / information_ref
