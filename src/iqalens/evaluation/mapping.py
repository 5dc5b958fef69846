"""Monotone maps from one score scale onto another: the one type behind PLCC-after-mapping and calibration.

:func:`iqalens.evaluation.metrics.evaluate` maps a model's predictions onto the MOS before it computes
the fitted PLCC and the RMSE; LEAF's few-label calibration (:mod:`iqalens.leaf.calibration`) maps a
student's score onto a MOS scale and stores the map with the model. Both use :class:`MonotoneMap` and
the fitting functions of this module.

Kinds and their ``params``:

- ``linear``: ``slope * x + intercept`` (``slope``, ``intercept``); :func:`fit_linear` is least squares.
- ``logistic4``: the VQEG logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`` (``b`` = b1..b4);
  :func:`fit_logistic4` fits it by bounded least squares on standardised data (several starts, a
  bounded number of function evaluations) and falls back to a line when it cannot (fewer than
  :data:`LOGISTIC_MIN_POINTS` points, the solver fails, or a straight line fits better than the best
  logistic found); the line's ``note`` says why.
- ``logistic5``: ``b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5`` (Sheikh et al. 2006; ``b`` =
  b1..b5); :func:`fit_logistic5` keeps b2 > 0 and b1, b4 of one sign (that of the data's rank
  correlation), so the map stays monotone.
- ``isotonic`` and ``quantile``: piecewise linear through knots (``xs`` increasing, ``ys``), clamped to
  the end values outside them (no extrapolation). :func:`fit_isotonic` is the least-squares monotone
  fit (pool-adjacent-violators, :func:`scipy.optimize.isotonic_regression`) on the points sorted by
  score, equal scores pooled first; ``quantile`` knots come from LEAF's label-free map.
- ``constant``: every input maps to ``value`` (what :func:`fit_linear` gives for constant inputs).

``clip`` bounds the output (e.g. to a MOS scale) by :func:`soft_clip`, which keeps the map strictly
increasing (ties would change the ranking), ``n_fit`` is the number of points fitted, ``note``
records a fallback or a recipe, and ``extra`` carries metadata of whoever stores the map (LEAF keeps
the MOS scale and the ``auto`` method's cross-validation there).

Two JSON layouts are read by :meth:`MonotoneMap.from_dict`: a calibration file's (:meth:`to_dict`:
kind, params by name, n_fit, note, clip, extra) and the ``fit`` of an evaluation's ``metrics.json``
(:meth:`to_fit_dict`: kind, params in positional order, note).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

from iqalens.errors import InvalidInputError

__all__ = [
    "KINDS",
    "LOGISTIC_MIN_POINTS",
    "MonotoneMap",
    "fit_isotonic",
    "fit_linear",
    "fit_logistic4",
    "fit_logistic5",
    "logistic4",
    "logistic5",
]

#: Every kind of map, with the names of its ``params``.
PARAMS: dict[str, tuple[str, ...]] = {
    "linear": ("slope", "intercept"),
    "logistic4": ("b",),
    "logistic5": ("b",),
    "isotonic": ("xs", "ys"),
    "quantile": ("xs", "ys"),
    "constant": ("value",),
}
KINDS: tuple[str, ...] = tuple(PARAMS)
#: Fewest points for a four-parameter logistic fit (one more than its parameters).
LOGISTIC_MIN_POINTS = 5
#: Number of positional parameters of each kind in the evaluation layout.
_POSITIONAL = {"linear": 2, "logistic4": 4, "logistic5": 5, "constant": 1}

_MAX_NFEV = 1000
_MAX_NFEV_5 = 2000


def logistic4(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`` (overflow-safe)."""
    z = (np.asarray(x, dtype=np.float64) - b3) / max(abs(b4), 1e-300)
    return b2 + (b1 - b2) * special.expit(z)


def logistic5(x: ArrayLike, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """Five-parameter logistic ``b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5`` (overflow-safe)."""
    xs = np.asarray(x, dtype=np.float64)
    return b1 * (special.expit(b2 * (xs - b3)) - 0.5) + b4 * xs + b5


#: Share of a clip range, at each end, in which :func:`soft_clip` compresses values towards the bound.
SOFT_CLIP_MARGIN = 0.05


def soft_clip(x: ArrayLike, low: float, high: float, margin: float = SOFT_CLIP_MARGIN) -> np.ndarray:
    """``x`` bounded to ``[low, high]`` without ties: unchanged inside the range shrunk by ``margin``
    of its width at each end; beyond that, compressed exponentially towards the bound (continuous
    with slope 1 where it starts, never reaching the bound).

    Why not ``np.clip``: a calibrated student scoring unfamiliar photos below the labels' range had
    73 of 152 test images clipped to exactly 1.0, and the ties cut its SRCC from 0.30 to 0.17; a
    bound should keep scores on the scale, not erase their order. (Values more than about 36
    margins beyond a bound still round onto it in float64.)"""
    xs = np.asarray(x, dtype=np.float64)
    if not high > low:
        return np.clip(xs, low, high)
    m = margin * (high - low)
    lo_knee, hi_knee = low + m, high - m
    with np.errstate(over="ignore", under="ignore"):
        below = low + m * np.exp(np.minimum(xs - lo_knee, 0.0) / m)
        above = high - m * np.exp(np.minimum(hi_knee - xs, 0.0) / m)
    return np.where(xs < lo_knee, below, np.where(xs > hi_knee, above, xs))


@dataclass(frozen=True)
class MonotoneMap:
    """A fitted monotone map (see the module docstring for kinds and params); call it on an array."""

    kind: str
    params: dict[str, Any]
    n_fit: int = 0
    note: str | None = None
    clip: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in PARAMS:
            raise InvalidInputError(f"unknown monotone map kind {self.kind!r}; known: {', '.join(KINDS)}")

    def __call__(self, x: ArrayLike) -> np.ndarray:
        xs = np.asarray(x, dtype=np.float64)
        p = self.params
        if self.kind == "linear":
            out = p["slope"] * xs + p["intercept"]
        elif self.kind == "logistic4":
            out = logistic4(xs, *p["b"])
        elif self.kind == "logistic5":
            out = logistic5(xs, *p["b"])
        elif self.kind == "constant":
            out = np.full(xs.shape, float(p["value"]))
        else:  # isotonic, quantile: piecewise linear, clamped outside the knots by np.interp
            out = np.interp(xs, p["xs"], p["ys"])
        if self.clip is not None:
            out = soft_clip(out, *self.clip)
        return np.asarray(out, dtype=np.float64)

    predict = __call__

    def positional(self) -> list[float]:
        """The parameters in the evaluation layout's order (linear: slope, intercept; logistic: b;
        constant: value); knot maps have none."""
        p = self.params
        if self.kind == "linear":
            return [float(p["slope"]), float(p["intercept"])]
        if self.kind == "constant":
            return [float(p["value"])]
        if self.kind in ("logistic4", "logistic5"):
            return [float(b) for b in p["b"]]
        raise InvalidInputError(f"a {self.kind} map has knots, not positional parameters")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (a calibration file's layout); :meth:`from_dict` rebuilds an equal map."""
        return {
            "kind": self.kind,
            "params": {
                k: (list(map(float, v)) if isinstance(v, list | tuple | np.ndarray) else float(v))
                for k, v in self.params.items()
            },
            "n_fit": self.n_fit,
            "note": self.note,
            "clip": None if self.clip is None else [float(c) for c in self.clip],
            "extra": self.extra,
        }

    def to_fit_dict(self) -> dict[str, Any]:
        """The ``fit`` of an evaluation's ``metrics.json``: kind, positional params, note."""
        params: Any = self.positional() if self.kind in _POSITIONAL else self.to_dict()["params"]
        return {"kind": self.kind, "params": params, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonotoneMap:
        """Inverse of :meth:`to_dict` and :meth:`to_fit_dict`; a clear error when a key is missing,
        the kind unknown or the parameters do not fit the kind."""
        try:
            kind, raw = str(data["kind"]), data["params"]
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(
                f"not a monotone map description (need 'kind' and 'params'): {data!r}"
            ) from exc
        if kind not in PARAMS:
            raise InvalidInputError(f"unknown monotone map kind {kind!r}; known: {', '.join(KINDS)}")
        if isinstance(raw, list | tuple):  # the evaluation layout
            if len(raw) != _POSITIONAL.get(kind, -1):
                raise InvalidInputError(f"{kind} map description has {len(raw)} positional parameters")
            values = [float(v) for v in raw]
            params: dict[str, Any] = (
                {"b": values} if kind.startswith("logistic") else dict(zip(PARAMS[kind], values, strict=True))
            )
        else:
            try:
                params = dict(raw)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"{kind} map parameters must be a mapping, got {raw!r}") from exc
        missing = [k for k in PARAMS[kind] if k not in params]
        if missing:
            raise InvalidInputError(f"{kind} map description lacks {', '.join(missing)}")
        clip = data.get("clip")
        return cls(
            kind=kind,
            params=params,
            n_fit=int(data.get("n_fit") or 0),
            note=data.get("note"),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            extra=dict(data.get("extra") or {}),
        )


# ---------------------------------------------------------------------------------------------------
# fitting


def paired_scores(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 1-D arrays of one length, finite and not empty, or a clear error
    (every fit of a map, here and in LEAF's calibration, starts with this check)."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise InvalidInputError(f"scores must be 1-D of equal length, got shapes {xs.shape} and {ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise InvalidInputError("scores must be finite (found NaN or inf)")
    if xs.size == 0:
        raise InvalidInputError("need at least one point to fit a map")
    return xs, ys


def _is_constant(a: np.ndarray) -> bool:
    return bool(a.size == 0 or np.ptp(a) == 0.0)


def _rising(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether y tends to rise with x (Spearman >= 0, or undefined)."""
    if _is_constant(y) or _is_constant(x):
        return True
    return bool(stats.spearmanr(x, y).statistic >= 0)


def fit_linear(x: ArrayLike, y: ArrayLike, note: str | None = None) -> MonotoneMap:
    """Least-squares line; the mean of ``y`` (kind ``constant``) when ``x`` is constant."""
    xs, ys = paired_scores(x, y)
    if _is_constant(xs):
        return MonotoneMap(
            "constant", {"value": float(np.mean(ys))}, xs.size, "predictions are constant: mapped to mean MOS"
        )
    dx = xs - xs.mean()
    slope = float(dx @ (ys - ys.mean()) / (dx @ dx))
    return MonotoneMap(
        "linear", {"slope": slope, "intercept": float(ys.mean() - slope * xs.mean())}, xs.size, note
    )


def _sse(fitted: MonotoneMap, x: np.ndarray, y: np.ndarray) -> float:
    r = fitted(x) - y
    return float(r @ r)


def fit_logistic4(
    pred: ArrayLike,
    mos: ArrayLike,
    p0: Sequence[float] | None = None,
    max_nfev: int = _MAX_NFEV,
) -> MonotoneMap:
    """Fit the VQEG logistic from ``pred`` to ``mos``, falling back to a line (see module docstring).

    ``p0`` (b1..b4 in data units) replaces the default starts with one warm start, which is what the
    bootstrap uses to refit quickly. Work happens on z-scored data so that the bounds and starts are
    scale-free: asymptotes within 10 ranges of the data, midpoint within 5 standard deviations of the
    mean, width between 1e-3 and 1e3 standard deviations.
    """
    x, y = paired_scores(pred, mos)
    if _is_constant(x):
        return fit_linear(x, y)
    linear = fit_linear(x, y)
    if x.size < LOGISTIC_MIN_POINTS:
        return fit_linear(
            x, y, f"fewer than {LOGISTIC_MIN_POINTS} points: linear mapping instead of logistic"
        )
    if _is_constant(y):
        return linear  # a flat line is the exact answer; the logistic would be degenerate
    mx, sx = float(x.mean()), float(x.std())
    my, sy = float(y.mean()), float(y.std())
    u, v = (x - mx) / sx, (y - my) / sy
    vlo, vhi = float(v.min()), float(v.max())
    span = vhi - vlo
    lower = np.array([vlo - 10 * span, vlo - 10 * span, -5.0, 1e-3])
    upper = np.array([vhi + 10 * span, vhi + 10 * span, 5.0, 1e3])

    def residual(a: np.ndarray) -> np.ndarray:
        return a[1] + (a[0] - a[1]) * special.expit((u - a[2]) / a[3]) - v

    def jacobian(a: np.ndarray) -> np.ndarray:
        t = (u - a[2]) / a[3]
        s = special.expit(t)
        slope = (a[0] - a[1]) * s * (1.0 - s) / a[3]  # d f / d u
        return np.column_stack([s, 1.0 - s, -slope, -slope * t])

    if p0 is not None:
        b1, b2, b3, b4 = (float(p) for p in p0)
        starts = [np.array([(b1 - my) / sy, (b2 - my) / sy, (b3 - mx) / sx, abs(b4) / sx])]
    else:
        du, dv = u - u.mean(), v - v.mean()
        rising = float(du @ dv) >= 0  # the sign of the Pearson correlation
        hi, lo = (vhi, vlo) if rising else (vlo, vhi)
        mid = float(np.median(u))
        starts = [np.array([hi, lo, mid, w]) for w in (0.5, 1.0, 2.0)]
        starts.append(np.array([hi + span, lo - span, mid, 3.0]))  # near-linear data
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        start = np.clip(start, lower + 1e-9, upper - 1e-9)
        try:
            res = optimize.least_squares(
                residual, start, jac=jacobian, bounds=(lower, upper), max_nfev=max_nfev
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(res.x)) or not np.isfinite(res.cost):
            continue
        if best is None or res.cost < best[0]:
            best = (float(res.cost), res.x)
    if best is None:
        return fit_linear(x, y, "logistic fit failed: linear mapping instead")
    a1, a2, a3, a4 = best[1]
    b = [float(my + sy * a1), float(my + sy * a2), float(mx + sx * a3), float(sx * a4)]
    fitted = MonotoneMap("logistic4", {"b": b}, x.size)
    if _sse(fitted, x, y) > _sse(linear, x, y) * (1 + 1e-9) + 1e-12:
        return fit_linear(x, y, "a line fits better than the best logistic found: linear mapping instead")
    return fitted


def fit_logistic5(x: ArrayLike, y: ArrayLike) -> MonotoneMap:
    """The five-parameter logistic by bounded least squares on z-scored data, several starts; a line
    (with a note) when the MOS are constant or every start fails. ``x`` must not be constant."""
    xs, ys = paired_scores(x, y)
    if _is_constant(ys):
        return fit_linear(xs, ys, "logistic5 requested: MOS are constant")
    mx, sx, my, sy = float(xs.mean()), float(xs.std()), float(ys.mean()), float(ys.std())
    u, v = (xs - mx) / sx, (ys - my) / sy
    d = 1.0 if _rising(u, v) else -1.0
    span = float(np.ptp(v))
    big = 20.0 * span
    # a1 (logistic height) and a4 (linear slope) share the sign d: the map is monotone by construction
    lo_a1, hi_a1 = (0.0, big) if d > 0 else (-big, 0.0)
    lo_a4, hi_a4 = (0.0, 10.0) if d > 0 else (-10.0, 0.0)
    lower = np.array([lo_a1, 1e-3, -5.0, lo_a4, -big])
    upper = np.array([hi_a1, 1e3, 5.0, hi_a4, big])

    def residual(a: np.ndarray) -> np.ndarray:
        return a[0] * (special.expit(a[1] * (u - a[2])) - 0.5) + a[3] * u + a[4] - v

    mid = float(np.median(u))
    starts = [np.array([d * span, k, mid, 0.0, 0.0]) for k in (0.5, 1.0, 2.0, 4.0)]
    starts.append(np.array([d * span / 2, 1.0, mid, d * 0.5, 0.0]))
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        start = np.clip(start, lower + 1e-9, upper - 1e-9)
        try:
            res = optimize.least_squares(residual, start, bounds=(lower, upper), max_nfev=_MAX_NFEV_5)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if np.all(np.isfinite(res.x)) and np.isfinite(res.cost) and (best is None or res.cost < best[0]):
            best = (float(res.cost), res.x)
    if best is None:
        return fit_linear(xs, ys, "logistic5 requested: the fit failed")
    a1, a2, a3, a4, a5 = (float(a) for a in best[1])
    b = [sy * a1, a2 / sx, mx + sx * a3, sy * a4 / sx, my + sy * (a5 - a4 * mx / sx)]
    return MonotoneMap("logistic5", {"b": b}, xs.size)


def fit_isotonic(x: ArrayLike, y: ArrayLike) -> MonotoneMap:
    """The least-squares monotone fit (increasing or decreasing by the sign of the rank correlation):
    equal scores are pooled into one knot weighted by their count, then pool-adjacent-violators."""
    xs, ys = paired_scores(x, y)
    knots, inverse, counts = np.unique(xs, return_inverse=True, return_counts=True)
    pooled = np.bincount(inverse, weights=ys) / counts  # equal scores share one mean
    fitted = optimize.isotonic_regression(pooled, weights=counts, increasing=_rising(xs, ys)).x
    return MonotoneMap(
        "isotonic", {"xs": knots.tolist(), "ys": np.asarray(fitted, dtype=np.float64).tolist()}, xs.size
    )
