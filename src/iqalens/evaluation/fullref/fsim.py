"""FSIM and FSIMc, the feature similarity index (Zhang, Zhang, Mou and Zhang, IEEE TIP 2011).

Why it is here: FSIM is among the FR measures closest to human ratings on synthetic distortions
(KADID-10k SRCC about 0.85); it compares where the two images have structure (phase congruency,
PC) and how strong it is (gradient magnitude), weighting every place by how much structure it has.
FSIMc adds the chroma channels I and Q of YIQ, so that colour distortions are seen too.

Followed: the authors' FeatureSIM.m.

- YIQ (the FSIM matrix), each channel downsampled by ``F = max(1, round(min(H, W)/256))`` with an
  F x F average filter (``conv2`` 'same', keep every F-th pixel);
- PC of Y by Kovesi's ``phasecong2`` as FSIM ships it: log-Gabor filters in frequency, 4 scales
  (``minWaveLength = 6``, ``mult = 2``, ``sigmaOnf = 0.55``), 4 orientations
  (``dThetaOnSigma = 1.2``), a low-pass (radius 0.45, order 15) on every filter, the noise threshold
  estimated per orientation from the median energy of the smallest scale (``k = 2``, divided by
  the empirical 1.7), ``PC = sum_o max(E_o - T_o, 0) / sum_o sum_s A_so``;
- Scharr gradient magnitude of Y; ``S_PC`` with ``T1 = 0.85``, ``S_G`` with ``T2 = 160``, for FSIMc
  ``S_I``, ``S_Q`` with ``T3 = T4 = 200`` and ``lambda = 0.03``; pooled with ``PC_m = max(PC1, PC2)``.

FSIMc reproduces the published FeatureSIM.m values (values.csv row ``fsim``, which is FSIMc) to all
4 decimals. Where the original divides by zero (a flat image has no phase congruency anywhere, so
all weights are zero) this module pools with the unweighted mean instead of returning NaN.

Every filter depends only on the image size, so the filter bank and its noise constants are built
once per size (cached); a call is two forward FFTs and 32 inverse ones of the downsampled image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft

from iqalens.evaluation.fullref._common import check_pair, yiq
from iqalens.evaluation.fullref._zhang_common import (
    conv2_average_downsample,
    downsample_factor,
    real_power,
    scharr_magnitude,
    similarity,
    weighted_pool,
)

__all__ = ["feature_similarity", "fsim", "fsimc", "phase_congruency"]

N_SCALES = 4
N_ORIENTS = 4
MIN_WAVELENGTH = 6.0
MULT = 2.0
SIGMA_ON_F = 0.55
D_THETA_ON_SIGMA = 1.2
K_NOISE = 2.0
EPSILON = 1e-4
T1 = 0.85
T2 = 160.0
T3 = 200.0
T4 = 200.0
LAMBDA = 0.03


def _matlab_axis(n: int) -> np.ndarray:
    """Normalised frequencies of one axis as phasecong2 lays them out (odd and even ``n``), shifted."""
    if n % 2:
        values = np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1) if n > 1 else np.zeros(1)
    else:
        values = np.arange(-n / 2, n / 2) / n
    return values


@lru_cache(maxsize=8)
def _filter_bank(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The log-Gabor filters (orient x scale x rows x cols) and each orientation's noise sums.

    Returns the filters and, per orientation, ``(EM_n, sum_s sum(f_s^2), sum_{i<j} sum(f_i f_j))``
    with ``f_s`` the spatial filter ``real(ifft2(filter)) * sqrt(rows * cols)``: the three numbers
    phasecong2 needs to turn the median energy into a noise threshold. They depend on the size only.
    """
    x, y = np.meshgrid(_matlab_axis(cols), _matlab_axis(rows))
    radius = np.fft.ifftshift(np.sqrt(x * x + y * y))
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius[0, 0] = 1.0
    low_pass = 1.0 / (1.0 + (radius / 0.45) ** 30)
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    theta_sigma = np.pi / N_ORIENTS / D_THETA_ON_SIGMA

    radial = np.empty((N_SCALES, rows, cols))
    for s in range(N_SCALES):
        centre = 1.0 / (MIN_WAVELENGTH * MULT**s)
        radial[s] = np.exp(-(np.log(radius / centre) ** 2) / (2.0 * np.log(SIGMA_ON_F) ** 2)) * low_pass
        radial[s, 0, 0] = 0.0
    bank = np.empty((N_ORIENTS, N_SCALES, rows, cols))
    noise = np.empty((N_ORIENTS, 3))
    for o in range(N_ORIENTS):
        angle = o * np.pi / N_ORIENTS
        ds = sin_t * np.cos(angle) - cos_t * np.sin(angle)
        dc = cos_t * np.cos(angle) + sin_t * np.sin(angle)
        spread = np.exp(-(np.arctan2(ds, dc) ** 2) / (2.0 * theta_sigma**2))
        bank[o] = radial * spread
        spatial = fft.ifft2(bank[o], axes=(-2, -1)).real * np.sqrt(rows * cols)
        total = spatial.sum(axis=0)
        sum_sq = float((spatial**2).sum())
        # sum_{i<j} f_i f_j = ((sum_i f_i)^2 - sum_i f_i^2) / 2
        cross = float(((total**2).sum() - sum_sq) / 2.0)
        noise[o] = (float((bank[o, 0] ** 2).sum()), sum_sq, cross)
    bank32 = bank.astype(np.float32)
    bank32.setflags(write=False)
    noise.setflags(write=False)
    return bank32, noise


def phase_congruency(image: np.ndarray) -> np.ndarray:
    """Phase congruency (0..1) of a grey float image, as FSIM's phasecong2 computes it.

    The image's mean is removed first: every filter is zero at DC, so the result is the same, but
    a flat image then gives exact zeros instead of rounding noise (its PC is 0, not noise / noise).
    """
    rows, cols = image.shape
    bank, noise = _filter_bank(rows, cols)
    spectrum = fft.fft2(image - image.mean()).astype(np.complex64)
    energy = np.zeros((rows, cols))
    amplitude_sum = np.zeros((rows, cols))
    # One orientation at a time keeps the working set (4 complex responses) small; single precision
    # for the responses halves the time of the dominant step and moves PC by ~1e-6.
    for o in range(N_ORIENTS):
        responses = fft.ifft2(spectrum[None] * bank[o], axes=(-2, -1))  # scale x H x W
        amplitude = np.abs(responses)
        summed = responses.sum(axis=0)
        mean_phase = summed / (np.abs(summed) + EPSILON)  # weighted mean phase as a unit vector
        # Per scale, with z = response * conj(mean phase): E.ME + O.MO = Re z, E.MO - O.ME = -Im z.
        rotated = responses * np.conj(mean_phase)
        oriented = (rotated.real - np.abs(rotated.imag)).sum(axis=0)
        # Noise: under Gaussian noise the smallest scale's squared amplitude is Rayleigh-distributed;
        # its median gives the mean, which the filters' energies turn into this orientation's
        # threshold (divided by phasecong2's empirical 1.7).
        median_e2 = float(np.median(amplitude[0] ** 2))
        noise_power = (-median_e2 / np.log(0.5)) / noise[o, 0]
        tau = np.sqrt((2.0 * noise_power * noise[o, 1] + 4.0 * noise_power * noise[o, 2]) / 2.0)
        threshold = (tau * np.sqrt(np.pi / 2.0) + K_NOISE * np.sqrt((2.0 - np.pi / 2.0) * tau**2)) / 1.7
        energy += np.maximum(oriented - threshold, 0.0)
        amplitude_sum += amplitude.sum(axis=0)
    out = np.zeros_like(energy)
    np.divide(energy, amplitude_sum, out=out, where=amplitude_sum > 0)
    return out


def feature_similarity(reference: np.ndarray, distorted: np.ndarray) -> tuple[float, float]:
    """``(FSIM, FSIMc)`` of one pair; both share the PC and gradient maps, so compute them once."""
    ref, dist = check_pair(reference, distorted)
    factor = downsample_factor(ref.shape)
    if ref.ndim == 2:
        channels = [conv2_average_downsample(img, factor)[..., None] for img in (ref, dist)]
    else:
        channels = [conv2_average_downsample(yiq(img), factor) for img in (ref, dist)]
    y1, y2 = channels[0][..., 0], channels[1][..., 0]
    pc1, pc2 = phase_congruency(y1), phase_congruency(y2)
    structure = similarity(pc1, pc2, T1) * similarity(scharr_magnitude(y1), scharr_magnitude(y2), T2)
    weight = np.maximum(pc1, pc2)
    luma_only = weighted_pool(structure, weight)
    if ref.ndim == 2:  # FeatureSIM.m: grey images have I = Q = 1, so FSIMc = FSIM
        return luma_only, luma_only
    chroma = similarity(channels[0][..., 1], channels[1][..., 1], T3) * similarity(
        channels[0][..., 2], channels[1][..., 2], T4
    )
    return luma_only, weighted_pool(structure * real_power(chroma, LAMBDA), weight)


def fsim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """FSIM (luma only) of a distorted image against its reference: 1 = identical, lower = worse."""
    return feature_similarity(reference, distorted)[0]


def fsimc(reference: np.ndarray, distorted: np.ndarray) -> float:
    """FSIMc (FSIM with the I, Q chroma terms): 1 = identical, lower = worse."""
    return feature_similarity(reference, distorted)[1]
