"""KADID-10k spatial types: 19 jitter, 20 non-eccentricity patch, 21 pixelate, 22 quantization,
23 colour block.

Jitter is the expensive one: five rounds of warping every pixel by its own random shift with
MATLAB's bicubic ``interp2``. A per-pixel 4 x 4 cubic-convolution stencil is a sparse matrix with
16 entries per row, so each round is one sparse matrix-vector product per channel; that keeps the
gather and the multiply-add in compiled code instead of 48 full-image numpy passes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse

from iqalens.distortions._matlab import nearest_index, nearest_scale_indices, take_grid
from iqalens.distortions._registry import DistortionType, register
from iqalens.errors import InvalidInputError


def _round_half_away(v: np.ndarray | float) -> np.ndarray:
    """MATLAB ``round`` (halves away from zero); numpy's ``round`` goes to even."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --- 19: jitter --------------------------------------------------------------------------------

# Keys' cubic-convolution kernel with a = -0.5 (MATLAB's 'cubic'/'bicubic' interp2) in power form:
# the weight of tap j (offsets -1, 0, 1, 2) at fractional position t is sum_m _KEYS[m, j] * t**m.
_KEYS = np.array(
    [
        [0.0, 1.0, 0.0, 0.0],
        [-0.5, 0.0, 0.5, 0.0],
        [1.0, -2.5, 2.0, -0.5],
        [-0.5, 1.5, -1.5, 0.5],
    ]
)


def cubic_weights(t: np.ndarray) -> np.ndarray:
    """Cubic-convolution weights (4, n) float32 for fractional offsets ``t`` in [0, 1] (tap-major)."""
    t = np.asarray(t, dtype=np.float32).ravel()
    w = np.empty((4, t.size), dtype=np.float32)
    k = _KEYS.astype(np.float32)
    for j in range(4):  # Horner per tap: 4 passes of (n,) instead of a (n, 4) broadcast
        np.multiply(t, k[3, j], out=w[j])
        for m in (2, 1, 0):
            w[j] += k[m, j]
            if m:
                w[j] *= t
    return w


def _extend_cubic(planes: np.ndarray) -> np.ndarray:
    """Add one sample on every side with MATLAB's cubic boundary rule f(0) = 3 f(1) - 3 f(2) + f(3).

    This is the extension the old MATLAB ``interp2(..., 'cubic')`` uses (and the golden data's
    Octave shim reproduces); it keeps quadratics exact up to the border.
    """
    c, h, w = planes.shape
    e = np.empty((c, h + 2, w + 2), dtype=planes.dtype)
    e[:, 1:-1, 1:-1] = planes
    e[:, 0, 1:-1] = 3 * planes[:, 0] - 3 * planes[:, 1] + planes[:, 2]
    e[:, -1, 1:-1] = 3 * planes[:, -1] - 3 * planes[:, -2] + planes[:, -3]
    e[:, :, 0] = 3 * e[:, :, 1] - 3 * e[:, :, 2] + e[:, :, 3]
    e[:, :, -1] = 3 * e[:, :, -2] - 3 * e[:, :, -3] + e[:, :, -4]
    return e


def _cells(shift: np.ndarray, pad: int, n_pad: int, along_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation cell of every output pixel along one axis: (first padded index, fraction t).

    The sample position is q = index + pad - shift in the padded image; the cell is floor(q) (at
    most n_pad - 2, so q = n_pad - 1 is taken as t = 1 of the last cell). When every |shift| is below
    the pad, q stays inside and the cell follows from -shift alone, without full-size coordinates.
    """
    n_out = shift.shape[0] if along_rows else shift.shape[1]
    grid = np.arange(n_out, dtype=np.int32)
    grid = grid[:, None] if along_rows else grid[None, :]
    if float(np.max(np.abs(shift))) < pad:
        step = np.floor(-shift)
        t = -shift - step
        return grid + (pad + step.astype(np.int32)), t
    q = grid + (pad - shift.astype(np.float64))
    np.clip(q, 0, n_pad - 1, out=q)
    first = np.minimum(np.floor(q), n_pad - 2)
    q -= first
    return first.astype(np.int32), q


class CubicWarper:
    """KADIS ``imwarpmap(im, cat(3, sy, sx), 'bicubic', true)`` for (C, H, W) float32 planes.

    Output pixel (y, x) samples the input at (y - sy, x - sx) with cubic convolution. As in the
    original, the image is first padded by replication, rows by ceil(max|sx|) and columns by
    ceil(max|sy|) (the original's margins are crossed), and the cubic boundary rule applies at the
    edge of that padded image. A sample that still falls outside it (only possible when a border
    pixel's shift exceeds the other axis' margin) gives NaN in MATLAB; here it is clamped to the edge.

    The 16-tap stencils form a sparse matrix, built tap-major in COO form (no transposition needed)
    one strip of rows at a time: with 16 entries per pixel the full matrix is tens of megabytes,
    and keeping a strip's entries in cache makes the products ~1.5x faster. Buffers are reused.
    """

    _STRIP_PIXELS = 32768

    def __init__(self, height: int, width: int) -> None:
        if height < 3 or width < 3:
            raise InvalidInputError(f"cubic warping needs at least 3 x 3 pixels, got {height} x {width}")
        self.shape = (height, width)
        strip = max(1, self._STRIP_PIXELS // width) * width
        self._strip = min(strip, height * width)
        self._rows = np.tile(np.arange(self._strip, dtype=np.int32), 16)
        self._data = np.empty((16, self._strip), dtype=np.float32)
        self._cols = np.empty((16, self._strip), dtype=np.int32)

    def __call__(self, planes: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
        c, h, w = planes.shape
        if (h, w) != self.shape or sy.shape != self.shape or sx.shape != self.shape:
            raise InvalidInputError(f"planes {planes.shape} and shifts {sy.shape} must match {self.shape}")
        pad_r = math.ceil(float(np.max(np.abs(sx))))
        pad_c = math.ceil(float(np.max(np.abs(sy))))
        padding = ((0, 0), (pad_r, pad_r), (pad_c, pad_c))
        padded = np.pad(planes.astype(np.float32, copy=False), padding, mode="edge")
        hp, wp = padded.shape[1:]
        ext = _extend_cubic(padded).reshape(c, -1)
        row_len = wp + 2
        iy, ty = _cells(sy, pad_r, hp, along_rows=True)
        ix, tx = _cells(sx, pad_c, wp, along_rows=False)
        # Tap (i, j) of output pixel p reads ext[iy + i, ix + j] (ext is offset by one from padded).
        base = (iy * row_len + ix).ravel()
        wy = cubic_weights(ty)
        wx = cubic_weights(tx)
        taps = np.arange(4, dtype=np.int32)
        offsets = (taps[:, None] * row_len + taps).reshape(16, 1)
        n = h * w
        out = np.empty((c, n), dtype=np.float32)
        for p0 in range(0, n, self._strip):
            p1 = min(p0 + self._strip, n)
            m = p1 - p0
            data, cols = self._data[:, :m], self._cols[:, :m]
            for i in range(4):
                np.multiply(wx[:, p0:p1], wy[i, p0:p1], out=data[4 * i : 4 * i + 4])
            np.add(base[p0:p1], offsets, out=cols)
            rows = self._rows if m == self._strip else np.tile(np.arange(m, dtype=np.int32), 16)
            stencil = sparse.coo_array((data.ravel(), (rows, cols.ravel())), shape=(m, ext.shape[1]))
            for k in range(c):
                out[k, p0:p1] = stencil @ ext[k]
        return out.reshape(c, h, w)


def jitter(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """``imjitter``: five rounds of warping by i.i.d. N(0, amount^2) shifts per pixel and axis.

    Works in float32 (shifts included): the result is quantised to 8 bits, and float32 halves the
    memory traffic of the sparse products (interpolation error ~1e-7).
    """
    h, w = x.shape[:2]
    warp = CubicWarper(h, w)
    planes = np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)
    shifts = np.empty((2, h, w), dtype=np.float32)
    for _ in range(5):
        rng.standard_normal(dtype=np.float32, out=shifts)
        shifts *= amount
        planes = warp(planes, shifts[0], shifts[1])
    return np.moveaxis(planes, 0, -1).astype(np.float64)


# --- 20: non-eccentricity patch ----------------------------------------------------------------


def non_eccentricity(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoneccentricity``: copy ``count`` 16 x 16 patches to a spot at most 8 px away.

    Patches are taken from the image as modified so far, in order, like the original loop. From
    48 x 48 pixels up the source stays 16 px clear of the borders and every destination lies inside
    the image; on smaller images the original would index outside it (a MATLAB error), so there both
    corners are clipped to the image, and an image under 16 px is returned unchanged.
    """
    out = x.copy()
    h, w = x.shape[:2]
    size, radius = 16, 16
    if h < size or w < size:
        return out
    span_w = (w - size - radius) - radius
    span_h = (h - size - radius) - radius

    def inside(start: float | np.ndarray, n: int) -> int:  # 1-based start of a patch that fits in n pixels
        return min(max(int(start), 1), n - size + 1)

    for u in rng.random((int(count), 4)):
        # 1-based coordinates as in MATLAB, converted to 0-based slices below.
        col = inside(_round_half_away(u[0] * span_w) + radius, w)
        row = inside(_round_half_away(u[1] * span_h) + radius, h)
        patch = out[row - 1 : row - 1 + size, col - 1 : col - 1 + size].copy()
        dcol = inside(_round_half_away((u[2] - 0.5) * radius + col), w)
        drow = inside(_round_half_away((u[3] - 0.5) * radius + row), h)
        out[drow - 1 : drow - 1 + size, dcol - 1 : dcol - 1 + size] = patch
    return out


# --- 21: pixelate ------------------------------------------------------------------------------


def pixelate(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """``impixelate``: nearest-neighbour down by 0.95 - strength^0.6, then back to the input size.

    Nearest-neighbour aliasing makes this non-monotone in the level on some images: level 1
    (scale 0.887) can drop more detail than level 2 (scale 0.784).
    """
    h, w = x.shape[:2]
    # Nearest-neighbour down then up only selects pixels: compose the two index maps, one gather.
    rows_down, cols_down = nearest_scale_indices(h, w, 0.95 - strength**0.6)
    rows = rows_down[nearest_index(rows_down.size, h)]
    cols = cols_down[nearest_index(cols_down.size, w)]
    return take_grid(x, rows, cols)


def pixelate_codes(
    codes: np.ndarray, values: np.ndarray, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pixelate` on 8-bit codes: nearest-neighbour resizing only copies values."""
    return pixelate(codes, strength, rng), values


# --- 22: quantization --------------------------------------------------------------------------


def otsu_thresholds(hist: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Multi-level Otsu: bin indices t_1 < ... < t_N maximising the between-class variance.

    Class k holds bins t_{k-1}+1 .. t_k. Maximising the between-class variance equals maximising
    sum_k S1_k^2 / S0_k (S0 = mass, S1 = first moment of the class), which is additive over
    contiguous classes, so dynamic programming over (class count, last bin) finds the exact optimum
    in O(N * bins^2). Empty classes contribute 0; every class keeps at least one bin.
    """
    p = np.asarray(hist, dtype=np.float64).ravel()
    n_bins = p.size
    n_classes = n_thresholds + 1
    if not 1 <= n_thresholds < n_bins:
        raise InvalidInputError(f"need 1 <= thresholds < bins, got {n_thresholds} and {n_bins}")
    c0 = np.concatenate(([0.0], np.cumsum(p)))
    c1 = np.concatenate(([0.0], np.cumsum(p * np.arange(n_bins))))
    # score[a, b]: class of bins a..b (a <= b); -inf where a > b.
    s0 = c0[None, 1:] - c0[:-1, None]
    s1 = c1[None, 1:] - c1[:-1, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(s0 > 0, s1 * s1 / s0, 0.0)
    score[np.tril_indices(n_bins, -1)] = -np.inf
    best = score[0].copy()  # best[b]: one class covering bins 0..b
    back = np.zeros((n_classes, n_bins), dtype=np.intp)
    for k in range(1, n_classes):
        # New class starts at a (1..b) after the best (k-class) split of bins 0..a-1.
        cand = best[:-1, None] + score[1:, :]
        back[k, 1:] = np.argmax(cand[:, 1:], axis=0) + 1
        best = np.full(n_bins, -np.inf)
        best[1:] = cand[back[k, 1:] - 1, np.arange(1, n_bins)]
    thresholds = np.empty(n_thresholds, dtype=np.intp)
    end = n_bins - 1
    for k in range(n_classes - 1, 0, -1):
        start = back[k, end]
        thresholds[k - 1] = start - 1
        end = start - 1
    return thresholds


def multithresh(values: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Stand-in for MATLAB ``multithresh`` on a float image: N thresholds in the data's units.

    Like MATLAB, the data is scaled to [0, 1] by its range, rounded to 8 bits for a 256-bin
    histogram, and bin index t maps back to min + t/255 * (max - min). MATLAB searches the same
    criterion heuristically (Nelder-Mead for N > 2); this finds its exact maximum.
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    if lo == hi:
        return np.full(n_thresholds, lo)
    q = np.floor((values - lo) / (hi - lo) * 255.0 + 0.5).astype(np.intp)
    hist = np.bincount(q.ravel(), minlength=256)
    return lo + otsu_thresholds(hist, n_thresholds) / 255.0 * (hi - lo)


def quantize(x: np.ndarray, levels: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoisequantize``: one set of Otsu thresholds for all channels, then ``imquantize``.

    The original computes per-channel thresholds too but never uses them. A value v goes to class k
    when t_{k-1} < v <= t_k; class 1 becomes 0, the last class 1, and class k (2..N) its upper
    threshold t_k, so every channel holds at most N + 1 distinct values.
    """
    n = int(levels)
    thresh = multithresh(x, n)
    cls = np.searchsorted(thresh, x, side="left")  # number of thresholds strictly below v
    values = np.concatenate(([0.0], thresh[1:], [1.0]))
    return values[cls]


# --- 23: colour block --------------------------------------------------------------------------


def color_block(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """``imcolorblock``: paint ``count`` 32 x 32 blocks of uniform random colour.

    The original draws a colour and a top-left corner in [0, size - 32] per block and paints with
    ``insertShape``, which rounds the corner half away from zero and clips the block to the image:
    a 1-based corner of 0 loses its first row or column, and blocks never reach the last row or
    column. (On an image under 32 px the corner range is negative; clipping handles that too.)
    """
    out = x.copy()
    h, w = x.shape[:2]
    size = 32
    for u in rng.random((int(count), 5)):
        col = int(_round_half_away(u[3] * (w - size)))  # 1-based corner, may be 0 or negative
        row = int(_round_half_away(u[4] * (h - size)))
        rows = slice(max(row - 1, 0), max(row - 1 + size, 0))
        cols = slice(max(col - 1, 0), max(col - 1 + size, 0))
        out[rows, cols] = u[:3]
    return out


_RANDOM_STREAM = "numpy's random stream cannot reproduce MATLAB's (or Octave's) draws"

register(
    DistortionType(
        id=19,
        name="jitter",
        group="spatial",
        helper="imjitter",
        levels=(0.05, 0.1, 0.2, 0.5, 1.0),
        stochastic=True,
        kernel=jitter,
        description="Warps every pixel by its own Gaussian random shift, five times, with bicubic sampling.",
        deviation=(
            f"{_RANDOM_STREAM}; a border sample falling outside the padded image (rare: a border shift must "
            "exceed the largest shift along the other axis) is clamped instead of becoming NaN (black)."
        ),
    )
)

register(
    DistortionType(
        id=20,
        name="non_eccentricity_patch",
        group="spatial",
        helper="imnoneccentricity",
        levels=(20, 40, 60, 80, 100),
        stochastic=True,
        kernel=non_eccentricity,
        description="Copies small 16 x 16 patches to randomly displaced nearby positions.",
        deviation=f"{_RANDOM_STREAM}, so patch positions differ; their distribution is the same.",
    )
)

register(
    DistortionType(
        id=21,
        name="pixelate",
        group="spatial",
        helper="impixelate",
        levels=(0.01, 0.05, 0.1, 0.2, 0.5),
        stochastic=False,
        kernel=pixelate,
        code_kernel=pixelate_codes,
        description="Downscales by nearest neighbour (factor 0.95 - p^0.6), then back to the input size.",
    )
)

register(
    DistortionType(
        id=22,
        name="quantization",
        group="spatial",
        helper="imnoisequantize",
        levels=(20, 16, 13, 10, 7),
        stochastic=False,
        kernel=quantize,
        description="Quantises all channels to N + 1 grey levels with N multi-level Otsu thresholds.",
        deviation=(
            "MATLAB's multithresh searches the Otsu criterion heuristically (it is absent from Octave, so "
            "no golden output exists); this port takes the exact optimum by dynamic programming, which can "
            "differ where MATLAB's search stops at a local optimum."
        ),
    )
)

register(
    DistortionType(
        id=23,
        name="color_block",
        group="spatial",
        helper="imcolorblock",
        levels=(2, 4, 6, 8, 10),
        stochastic=True,
        kernel=color_block,
        description="Paints randomly placed 32 x 32 blocks of uniform random colour.",
        deviation=f"{_RANDOM_STREAM}, so block positions and colours differ; their distribution is the same.",
    )
)
