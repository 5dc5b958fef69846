"""Agreement between predicted quality scores and human MOS, as IQA papers report it.

Metrics (all on 1-D arrays of equal length, at least :data:`MIN_POINTS` finite values):

- **SRCC** Spearman rank correlation: Pearson correlation of the average ranks (ties share their mean
  rank), so it only judges the order.
- **KRCC** Kendall's tau-b (tie-corrected): (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)).
- **PLCC** Pearson linear correlation, raw (``plcc``) and after the VQEG monotone mapping of the
  predictions onto MOS (``plcc_fitted``), which removes the harmless non-linearity between a model's
  scale and the human one. After the mapping the correlation is positive even for a model whose
  scores run the other way (a mapping may decrease).
- **RMSE** after the same mapping, in MOS units (``rmse`` in :func:`evaluate`'s metrics; the function
  :func:`rmse` itself maps nothing); without a mapping RMSE would compare numbers on different scales.

The mapping is the VQEG four-parameter logistic
``f(x) = b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`` (b1 the asymptote as x grows, b2 the other one,
b3 the midpoint, b4 the width), fitted by :func:`iqalens.evaluation.mapping.fit_logistic4`: a
:class:`~iqalens.evaluation.mapping.MonotoneMap`, a least-squares line when the logistic cannot be
fitted (its ``note`` says why), the mean MOS when the predictions are constant.

Constant input: a correlation is undefined when either side is constant; the functions return NaN
(no warning) rather than raise, so that one constant group does not stop a whole report. Too few
points (fewer than :data:`MIN_POINTS`) or non-finite values raise
:class:`~iqalens.errors.InvalidInputError` (a :class:`ValueError`).

Confidence intervals (:func:`evaluate`) are percentile bootstrap intervals: images are resampled with
replacement, or whole groups (e.g. all distorted versions of one reference) when ``groups`` is given,
because images of one reference are not independent. Every replicate refits the mapping (warm-started
from the full-data fit), so the fitted metrics' intervals include the fit's own uncertainty.

A group bootstrap needs enough groups to mean anything: with two references every replicate is one of
three data sets (A+A, B+B, A+B), and the "interval" describes those, not the uncertainty of the
estimate (an earlier demo printed SRCC 0.371 with a "95% CI" of 0.31 .. 0.37, which does not even
contain its estimate). With fewer than :data:`MIN_BOOTSTRAP_GROUPS` groups no interval is computed:
:attr:`Evaluation.ci` stays empty and :attr:`Evaluation.ci_unavailable` says why, and everything that
prints intervals prints that reason instead. Image-level resampling has no such floor (``MIN_POINTS``
applies). A percentile interval that does not contain its own point estimate is kept (hiding it would
hide a real result) but gets a note: it means the bootstrap distribution is strongly skewed or biased
relative to the estimate (small or clustered samples, a bounded statistic near its bound), so the
interval should be read with care.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from iqalens.errors import InvalidInputError
from iqalens.evaluation.mapping import MonotoneMap, fit_linear, fit_logistic4

#: Fewest points for which :func:`evaluate` and the correlations are computed.
MIN_POINTS = 3
#: Fewest groups for which :func:`evaluate` computes a group-bootstrap interval (see the module docstring);
#: with fewer the interval is reported as unavailable, with the reason, instead of as numbers.
MIN_BOOTSTRAP_GROUPS = 5
#: Names of the metrics :func:`evaluate` reports, in report order.
METRIC_NAMES: tuple[str, ...] = ("srcc", "krcc", "plcc", "plcc_fitted", "rmse")


def _as_pair(pred: ArrayLike, mos: ArrayLike, min_points: int = MIN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Validate two score arrays: 1-D, same length, finite, long enough."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise InvalidInputError(f"scores must be 1-D arrays, got shapes {x.shape} and {y.shape}")
    if x.shape != y.shape:
        raise InvalidInputError(f"predictions and MOS differ in length: {x.size} vs {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise InvalidInputError("predictions and MOS must be finite (found NaN or inf)")
    if x.size < min_points:
        raise InvalidInputError(f"need at least {min_points} points, got {x.size}")
    return x, y


def _is_constant(a: np.ndarray) -> bool:
    return bool(a.size == 0 or np.ptp(a) == 0.0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation without validation; NaN when either side is constant."""
    if _is_constant(x) or _is_constant(y):
        return math.nan
    dx = x - x.mean()
    dy = y - y.mean()
    r = float(dx @ dy / math.sqrt(float(dx @ dx) * float(dy @ dy)))
    return max(-1.0, min(1.0, r))


def plcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Pearson linear correlation of the raw scores; NaN when either side is constant."""
    return _pearson(*_as_pair(pred, mos))


def srcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    x, y = _as_pair(pred, mos)
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def krcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Kendall's tau-b (ties corrected); NaN when either side is constant."""
    x, y = _as_pair(pred, mos)
    return _kendall(x, y)


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    if _is_constant(x) or _is_constant(y):
        return math.nan
    return float(stats.kendalltau(x, y, variant="b").statistic)


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((pred - target)^2))``, in the target's units.

    No mapping is applied: when the two sides are on different scales, map first (as :func:`evaluate`
    does with its fitted mapping). NaN in either side gives NaN.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise InvalidInputError(f"rmse needs two non-empty arrays of one shape, got {x.shape} and {y.shape}")
    d = x - y
    return float(np.sqrt(np.mean(d * d)))


# ---------------------------------------------------------------------------------------------------
# evaluation with confidence intervals


def _point_metrics(
    x: np.ndarray, y: np.ndarray, template: MonotoneMap | None = None
) -> tuple[dict[str, float], MonotoneMap]:
    """All metrics for validated arrays, with the mapping used for the fitted ones.

    With a ``template`` (the full-data fit, for bootstrap replicates) the same mapping family is
    refitted, warm-started from the template's parameters, so replicates are cheap and comparable.
    """
    if template is None:
        fit = fit_logistic4(x, y)
    elif template.kind == "logistic4":
        fit = fit_logistic4(x, y, p0=template.params["b"], max_nfev=200)
    else:
        fit = fit_linear(x, y)
    mapped = fit(x)
    values = {
        "srcc": _pearson(stats.rankdata(x), stats.rankdata(y)),
        "krcc": _kendall(x, y),
        "plcc": _pearson(x, y),
        "plcc_fitted": _pearson(mapped, y),
        "rmse": rmse(mapped, y),
    }
    return values, fit


@dataclass
class Evaluation:
    """Result of :func:`evaluate`. ``ci`` maps a metric to its (low, high) bootstrap interval.

    ``ci_unavailable`` is None when intervals were computed, else the plain reason why there are none
    (too few groups for a group bootstrap, or no bootstrap draws asked for); ``ci`` is then empty.
    Readers of older ``to_dict()`` output, which has no such key, should use :func:`ci_unavailable`.
    """

    n: int
    metrics: dict[str, float]
    fit: MonotoneMap
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95
    n_boot: int = 0
    resampling: str = "images"
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ci_unavailable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None, since JSON has no NaN)."""
        return _json_safe(
            {
                "n": self.n,
                "metrics": self.metrics,
                "ci": {k: list(v) for k, v in self.ci.items()},
                "ci_level": self.ci_level,
                "ci_unavailable": self.ci_unavailable,
                "n_boot": self.n_boot,
                "resampling": self.resampling,
                "fit": self.fit.to_fit_dict(),
                "per_source": self.per_source,
                "notes": self.notes,
            }
        )


_NO_DRAWS = "no bootstrap draws were asked for (n_boot=0)"


def _too_few_groups(n_groups: int, group_name: str = "groups") -> str:
    counted = group_name[:-1] if n_groups == 1 and group_name.endswith("s") else group_name
    return (
        f"only {n_groups} {counted}, a bootstrap over whole {group_name} needs at least "
        f"{MIN_BOOTSTRAP_GROUPS}"
    )


def ci_unavailable(evaluation: dict[str, Any]) -> str | None:
    """Why an :meth:`Evaluation.to_dict` result (read back from JSON) has no usable intervals, or None.

    Files written before ``ci_unavailable`` existed have no such key: for those, no draws (``n_boot``
    0) and a group bootstrap over fewer than :data:`MIN_BOOTSTRAP_GROUPS` groups (``resampling``
    "groups (N)") are reported as unavailable too, the latter since its numbers do not mean what an
    interval means.
    """
    if "ci_unavailable" in evaluation:
        reason = evaluation["ci_unavailable"]
        return None if reason is None else str(reason)
    if evaluation.get("n_boot") == 0:
        return _NO_DRAWS
    resampling = str(evaluation.get("resampling") or "")
    if resampling.startswith("groups (") and resampling.endswith(")"):
        try:
            n_groups = int(resampling[len("groups (") : -1])
        except ValueError:
            return None
        if n_groups < MIN_BOOTSTRAP_GROUPS:
            return _too_few_groups(n_groups)
    return None


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _labels(values: ArrayLike | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=object)
    if arr.shape != (n,):
        raise InvalidInputError(f"{what} must have one entry per image ({n}), got shape {arr.shape}")
    return np.array([str(v) for v in arr], dtype=object)


def evaluate(
    pred: ArrayLike,
    mos: ArrayLike,
    sources: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    groups: ArrayLike | None = None,
    ci: float = 0.95,
    group_name: str = "groups",
) -> Evaluation:
    """SRCC, KRCC, PLCC (raw and fitted) and RMSE of ``pred`` against ``mos``, with bootstrap CIs.

    ``sources`` (one label per image, e.g. the dataset or distortion type) adds a per-source
    breakdown: the point metrics of each source, its own mapping refitted, without intervals; a source
    with fewer than :data:`MIN_POINTS` images gets NaN metrics and a note. ``groups`` (e.g. reference
    ids) switches the bootstrap to resampling whole groups; with fewer than
    :data:`MIN_BOOTSTRAP_GROUPS` groups there are no intervals and ``ci_unavailable`` says why, naming
    the groups as ``group_name`` (e.g. "reference images"). ``n_boot=0`` skips the intervals (and says
    so). The same ``seed`` gives the same intervals.
    """
    x, y = _as_pair(pred, mos)
    if not 0.0 < ci < 1.0:
        raise InvalidInputError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise InvalidInputError(f"n_boot must be >= 0, got {n_boot}")
    src = _labels(sources, x.size, "sources")
    grp = _labels(groups, x.size, "groups")
    values, fit = _point_metrics(x, y)
    result = Evaluation(n=int(x.size), metrics=values, fit=fit, ci_level=ci, n_boot=n_boot)
    if fit.note:
        result.notes.append(f"mapping: {fit.note}")
    for name in ("srcc", "plcc"):
        if math.isnan(values[name]):
            result.notes.append("correlations are NaN: predictions or MOS are constant")
            break

    members: list[np.ndarray] = []
    if grp is not None:
        uniq, inverse = np.unique(grp, return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
        result.resampling = f"groups ({uniq.size})"
    if not n_boot:
        result.ci_unavailable = _NO_DRAWS
    elif grp is not None and len(members) < MIN_BOOTSTRAP_GROUPS:
        result.ci_unavailable = _too_few_groups(len(members), group_name)
    else:
        rng = np.random.default_rng(seed)
        draws = np.full((n_boot, len(METRIC_NAMES)), np.nan)
        for b in range(n_boot):
            if grp is not None:
                pick = rng.integers(0, len(members), len(members))
                idx = np.concatenate([members[g] for g in pick])
            else:
                idx = rng.integers(0, x.size, x.size)
            if idx.size < MIN_POINTS:
                continue
            rep = _point_metrics(x[idx], y[idx], fit)[0]
            draws[b] = [rep[name] for name in METRIC_NAMES]
        alpha = (1.0 - ci) / 2.0
        for j, name in enumerate(METRIC_NAMES):
            col = draws[:, j][np.isfinite(draws[:, j])]
            if col.size == 0:
                result.ci[name] = (math.nan, math.nan)
                continue
            lo, hi = np.quantile(col, [alpha, 1.0 - alpha])
            result.ci[name] = (float(lo), float(hi))
        outside = [
            name
            for name, (lo, hi) in result.ci.items()
            if math.isfinite(values[name]) and not lo <= values[name] <= hi
        ]
        if outside:
            result.notes.append(
                f"the point estimate of {', '.join(outside)} lies outside its percentile interval: the "
                "bootstrap distribution is skewed or biased against the estimate (small or clustered "
                "sample); read that interval with care"
            )
        bad = int(np.sum(~np.isfinite(draws[:, 0])))
        if bad:
            result.notes.append(
                f"{bad} of {n_boot} bootstrap replicates were undefined (constant) and skipped"
            )

    if src is not None:
        for name in sorted(set(src.tolist())):
            mask = src == name
            if int(mask.sum()) < MIN_POINTS:
                entry: dict[str, Any] = {"n": int(mask.sum()), **dict.fromkeys(METRIC_NAMES, math.nan)}
                entry["note"] = f"fewer than {MIN_POINTS} images"
            else:
                sub, sub_fit = _point_metrics(x[mask], y[mask])
                entry = {"n": int(mask.sum()), **sub, "fit": sub_fit.kind}
                if sub_fit.note:
                    entry["note"] = sub_fit.note
            result.per_source[name] = entry
    return result
