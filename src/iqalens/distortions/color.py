"""KADID-10k colour distortions (types 4-8): diffusion, shift, quantisation and two saturation changes.

Types 4 and 8 work on CIE L*a*b* chroma and type 7 on HSV saturation, exactly as the MATLAB helpers
do (``rgb2lab``/``lab2rgb`` and ``rgb2hsv``/``hsv2rgb`` from :mod:`._matlab`). Type 5 moves the green
channel by a random offset and blends it back only near edges. Type 6 needs MATLAB's N-colour
``rgb2ind``, which has no Octave or Python counterpart; it is replaced by cutting the colour cube
into boxes of minimum variance (Wu's greedy quantiser; MATLAB documents its minimum variance
quantization as such a box cut, without further detail) and Floyd-Steinberg dithering to that palette.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from iqalens.distortions._matlab import (
    gaussian_filter_replicate,
    hsv2rgb,
    lab2rgb,
    rgb2gray,
    rgb2hsv,
    rgb2lab,
)
from iqalens.distortions._registry import DistortionType, mapmm, register

# --------------------------------------------------------------------------------------------
# Type 4: colour diffusion (imcolordiffuse -> imcolorblur)


def color_diffusion(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Blur a*, b* with sigma 1.5*amount + 2 and scale them by ``amount``; L* is kept.

    Blurring chroma alone makes colours bleed across edges while the luminance structure stays sharp;
    the gain ``amount`` (1..12) also exaggerates the remaining chroma, so colours saturate and clip.
    """
    lab = rgb2lab(x)
    sigma = 1.5 * amount + 2
    for c in (1, 2):
        lab[..., c] = gaussian_filter_replicate(np.ascontiguousarray(lab[..., c]), sigma) * amount
    rgb = lab2rgb(lab)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


# --------------------------------------------------------------------------------------------
# Type 5: colour shift (imcolorshift)


def edge_weight(x: np.ndarray) -> np.ndarray:
    """The blend weight of ``imcolorshift``: ~1 near strong luminance edges, 0 in flat regions.

    Gradient magnitude of the grey image, Gaussian-smoothed (sigma 4), min-max mapped, floored at
    0.1, then stretched between its 1st and 99th percentiles so the shifted channel shows mostly along
    edges, where misregistration is visible as colour fringes. The percentiles are order statistics
    without interpolation (numpy's "lower"): that reproduces the golden outputs bit for bit, while
    interpolating percentiles (e.g. MATLAB ``prctile``'s) does not.
    """
    gy, gx = np.gradient(rgb2gray(x))
    e = mapmm(gaussian_filter_replicate(np.hypot(gx, gy), 4.0))
    e = np.clip(e, 0.1, 1.0)
    lo, hi = np.percentile(e, [1.0, 99.0], method="lower")
    return mapmm(np.clip(e, lo, hi))


def shift_replicate(plane: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Move ``plane`` down by ``rows`` and right by ``cols``, repeating the border pixels into the gap."""
    h, w = plane.shape
    ri = np.clip(np.arange(h) - rows, 0, h - 1)
    ci = np.clip(np.arange(w) - cols, 0, w - 1)
    return plane[ri[:, None], ci[None, :]]


def color_shift_by(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Deterministic part of type 5: blend in the green channel shifted by (rows, cols), weighted by edges."""
    e = edge_weight(x)
    out = x.copy()
    g = x[..., 1]
    out[..., 1] = shift_replicate(g, rows, cols) * e + g * (1.0 - e)
    return out


def draw_shift(amount: float, rng: np.random.Generator) -> tuple[int, int]:
    """``round(normr(rand(1,2)) * amount)``: a random direction in the first quadrant, length ~amount."""
    u = rng.random(2)
    norm = float(np.hypot(u[0], u[1]))
    if norm == 0.0:  # probability ~0; MATLAB's normr would return NaN here
        return 0, 0
    s = np.floor(u / norm * amount + 0.5).astype(int)  # MATLAB round, values are >= 0
    return int(s[0]), int(s[1])


def color_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Type 5 kernel: shift the green channel by a random offset of length ~``amount`` near edges."""
    rows, cols = draw_shift(amount, rng)
    return color_shift_by(x, rows, cols)


# --------------------------------------------------------------------------------------------
# Type 6: colour quantisation (imcolorquantize: rgb2ind(I, n) with its default 'dither')

_BITS = 5  # histogram resolution per channel, as in Wu's quantiser (32^3 cells)
_SIDE = (1 << _BITS) + 1  # cumulative moment tables carry a leading zero plane
Box = tuple[int, ...]  # (r0, r1, g0, g1, b0, b1): the cells r0 < r <= r1, g0 < g <= g1, b0 < b <= b1


def _moments(x8: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cumulative colour-cube moments (count, sum R, G, B, sum of squares) for O(1) box statistics."""
    q = (x8 >> (8 - _BITS)).astype(np.intp) + 1
    cell = ((q[..., 0] * _SIDE + q[..., 1]) * _SIDE + q[..., 2]).ravel()
    flat = x.reshape(-1, 3)
    size = _SIDE**3
    mom = np.stack(
        [
            np.bincount(cell, minlength=size),
            np.bincount(cell, weights=flat[:, 0], minlength=size),
            np.bincount(cell, weights=flat[:, 1], minlength=size),
            np.bincount(cell, weights=flat[:, 2], minlength=size),
            np.bincount(cell, weights=np.einsum("ij,ij->i", flat, flat), minlength=size),
        ],
        axis=-1,
    ).reshape(_SIDE, _SIDE, _SIDE, 5)
    return mom.cumsum(0).cumsum(1).cumsum(2)


def _box_sum(mom: np.ndarray, box: Box) -> np.ndarray:
    """Moments of the cells in the half-open box (r0, r1] x (g0, g1] x (b0, b1] by inclusion-exclusion."""
    r0, r1, g0, g1, b0, b1 = box
    return (
        mom[r1, g1, b1]
        - mom[r1, g1, b0]
        - mom[r1, g0, b1]
        + mom[r1, g0, b0]
        - mom[r0, g1, b1]
        + mom[r0, g1, b0]
        + mom[r0, g0, b1]
        - mom[r0, g0, b0]
    )


def _box_variance(mom: np.ndarray, box: Box) -> float:
    """Total squared deviation from the box mean; 0 for single cells, which cannot be cut further."""
    r0, r1, g0, g1, b0, b1 = box
    if (r1 - r0) * (g1 - g0) * (b1 - b0) <= 1:
        return 0.0
    s = _box_sum(mom, box)
    if s[0] <= 0:
        return 0.0
    return float(s[4] - (s[1] ** 2 + s[2] ** 2 + s[3] ** 2) / s[0])


def _best_cut(mom: np.ndarray, box: Box) -> tuple[int, int] | None:
    """Axis and position whose cut of ``box`` removes the most variance (both halves non-empty)."""
    total = _box_sum(mom, box)
    best: tuple[float, int, int] | None = None
    for axis in range(3):
        lo, hi = box[2 * axis], box[2 * axis + 1]
        if hi - lo < 2:
            continue
        # Moments of the slab (lo, c] for every c in [lo, hi]: the box with its upper bound on `axis` varied.
        planes = np.moveaxis(mom, axis, 0)[lo : hi + 1]
        o = [box[2 * a : 2 * a + 2] for a in range(3) if a != axis]
        (u0, u1), (v0, v1) = o
        cum = planes[:, u1, v1] - planes[:, u1, v0] - planes[:, u0, v1] + planes[:, u0, v0]
        lower = cum[1:-1] - cum[0]
        upper = total - lower
        ok = (lower[:, 0] > 0) & (upper[:, 0] > 0)
        if not ok.any():
            continue
        wl = np.where(ok, lower[:, 0], 1.0)
        wu = np.where(ok, upper[:, 0], 1.0)
        score = (lower[:, 1:4] ** 2).sum(1) / wl + (upper[:, 1:4] ** 2).sum(1) / wu
        score = np.where(ok, score, -np.inf)
        k = int(np.argmax(score))
        if best is None or score[k] > best[0]:
            best = (float(score[k]), axis, lo + 1 + k)
    return None if best is None else (best[1], best[2])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _split(box: Box, axis: int, pos: int) -> tuple[Box, Box]:
    """The two halves of ``box`` cut at cell boundary ``pos`` along ``axis`` (0 = R, 1 = G, 2 = B)."""
    lower = box[: 2 * axis + 1] + (pos,) + box[2 * axis + 2 :]
    upper = box[: 2 * axis] + (pos,) + box[2 * axis + 1 :]
    return lower, upper


def _palette(x8: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    mom = _moments(x8, x)
    boxes: list[Box] = [(0, _SIDE - 1, 0, _SIDE - 1, 0, _SIDE - 1)]
    variances = [_box_variance(mom, boxes[0])]
    while len(boxes) < n:
        k = int(np.argmax(variances))
        if variances[k] <= 0:  # every box is a single colour cell or holds a single colour
            break
        cut = _best_cut(mom, boxes[k])
        if cut is None:
            variances[k] = 0.0
            continue
        boxes[k], upper = _split(boxes[k], *cut)
        boxes.append(upper)
        variances[k] = _box_variance(mom, boxes[k])
        variances.append(_box_variance(mom, upper))
    sums = np.array([_box_sum(mom, b) for b in boxes])
    sums = sums[sums[:, 0] > 0]
    return sums[:, 1:4] / sums[:, :1]


def variance_cut_palette(x: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` colours (k x 3, in [0, 1]): the mean colours of a minimum-variance box cut.

    Starting from the whole cube, the box with the largest variance is split at the axis-aligned
    cut that removes most of it, until there are ``n`` boxes (Wu's greedy quantiser on a 5-bit
    histogram, with moments accumulated from the exact pixel values).
    """
    return _palette(_to_uint8(x), x, int(n))


def color_quantization(x: np.ndarray, n: float, rng: np.random.Generator) -> np.ndarray:
    """Type 6 kernel: quantise to at most ``n`` colours, Floyd-Steinberg dithered (``rgb2ind(I, n)``).

    The palette comes from :func:`variance_cut_palette`; Pillow's C Floyd-Steinberg quantiser maps
    the image onto it (error diffusion is sequential and would be far too slow in numpy). Unused
    palette slots repeat the first colour, so no colour outside the palette can appear.
    """
    x8 = _to_uint8(x)
    palette = _palette(x8, x, int(n))
    pad = np.repeat(palette[:1], 256 - len(palette), axis=0)
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(_to_uint8(np.concatenate([palette, pad])).ravel().tolist())
    idx = np.asarray(Image.fromarray(x8).quantize(palette=pal_img, dither=Image.Dither.FLOYDSTEINBERG))
    return np.concatenate([palette, pad])[idx]


# --------------------------------------------------------------------------------------------
# Types 7 and 8: saturation changes


def color_saturation_hsv(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Type 7 kernel: multiply HSV saturation by ``factor`` (0.4 .. -0.4); MATLAB ``hsv2rgb`` back.

    Factors below 1 desaturate; 0 gives grey; a negative factor flips hues to their complement. The
    result is not clipped, as in the original (the generator's final min-max mapping rescales it).
    """
    hsv = rgb2hsv(x)
    hsv[..., 1] *= factor
    return hsv2rgb(hsv)


def color_saturation_lab(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Type 8 kernel: multiply L*a*b* chroma (a*, b*) by ``factor`` (1..9) and clip to the RGB gamut."""
    lab = rgb2lab(x)
    lab[..., 1:] *= factor
    rgb = lab2rgb(lab)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


#: Shared by the L*a*b* types (4, 8 and 24 in sharpness.py).
LAB_DEVIATION = (
    "L*a*b* conversions use octave-image's constants (6-digit sRGB matrices, D65 0.95047/1/1.08883), "
    "which reproduce the golden Octave outputs exactly; MATLAB's 4-digit constants would change up to "
    "~4% of samples by 1-4 LSB (estimated, PSNR > 60 dB)."
)

register(
    DistortionType(
        id=4,
        name="color_diffusion",
        group="color",
        helper="imcolordiffuse",
        levels=(1, 3, 6, 8, 12),
        stochastic=False,
        kernel=color_diffusion,
        description="Gaussian-blurs the L*a*b* chroma channels (sigma 1.5p+2) and amplifies them by p, "
        "so colours bleed across edges and oversaturate.",
        deviation=LAB_DEVIATION,
    )
)

register(
    DistortionType(
        id=5,
        name="color_shift",
        group="color",
        helper="imcolorshift",
        levels=(1, 3, 6, 8, 12),
        stochastic=True,
        kernel=color_shift,
        description="Shifts the green channel by a random first-quadrant offset of length ~p pixels "
        "and blends it in where luminance edges are strong, producing colour fringes.",
        deviation="The offset direction comes from numpy's generator, not MATLAB's rand stream, so the "
        "chosen offset differs for a given seed; for a given offset the output matches the original.",
    )
)

register(
    DistortionType(
        id=6,
        name="color_quantization",
        group="color",
        helper="imcolorquantize",
        levels=(64, 48, 32, 16, 8),
        stochastic=False,
        kernel=color_quantization,
        description="Reduces the image to at most p colours by minimum-variance quantisation with "
        "Floyd-Steinberg dithering.",
        deviation="MATLAB's rgb2ind(I, n) is unavailable (and fails under Octave); it is replaced by "
        "Wu's variance-minimising cut of a 5-bit colour histogram plus Pillow's Floyd-Steinberg "
        "dithering, so palettes and dither patterns differ from MATLAB's in detail.",
    )
)

register(
    DistortionType(
        id=7,
        name="color_saturation_1",
        group="color",
        helper="imcolorsaturate",
        levels=(0.4, 0.2, 0.1, 0, -0.4),
        stochastic=False,
        kernel=color_saturation_hsv,
        description="Multiplies the HSV saturation by p (0.4 down to -0.4): desaturation to grey and, "
        "at the last level, complementary hues.",
    )
)

register(
    DistortionType(
        id=8,
        name="color_saturation_2",
        group="color",
        helper="imsaturate",
        levels=(1, 2, 3, 6, 9),
        stochastic=False,
        kernel=color_saturation_lab,
        description="Multiplies the L*a*b* chroma channels a*, b* by p, oversaturating the colours "
        "(clipped to the RGB gamut).",
        deviation=LAB_DEVIATION,
    )
)
