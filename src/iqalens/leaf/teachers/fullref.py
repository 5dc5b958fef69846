"""The reference-aware offline teacher: full-reference measures mapped to five-level quality judgments.

Where every image's pristine reference is known (synthetic benchmarks, and the FR databases' own
references), full-reference (FR) measures agree with human ratings far better than no-reference ones:
the weak-supervision idea behind KADIS-700k and DeepFL-IQA. This teacher is that idea behind the
common teacher interface. It is a *reference-aware stand-in*: it exists only where references exist,
and it does not replace a vision-language teacher on authentic photos (which have no reference).

For each image it reads the reference (:class:`~iqalens.datasets.references.ReferenceIndex`: the
manifest's clean row of the same reference, or a references folder), computes the FR measures of
:mod:`iqalens.evaluation.fullref`, and maps them onto a judgment (:class:`FRMapping`):

1. **Per-measure score.** A fitted monotone logistic maps each measure onto the 1..5 scale, in the
   measure's own direction (the logistic decreases, so higher-is-better measures such as VSI and VIF
   are negated first, see :func:`oriented`).
2. **Combined score.** mu = sum_i w_i q_i with w_i >= 0, sum w_i = 1 (least squares on the fitting set).
3. **Level distribution.** N(mu, s^2) discretised onto the five levels (``level_distribution``).
4. **Reliability from agreement.** s^2 = s0^2 + sum_i w_i (q_i - mu)^2: s0 is the residual standard
   deviation on the fitting data, and the weighted spread of the measures' scores widens the
   distribution where they disagree, so the judgment's reliability 1 - H(p)/ln 5 falls.

The constants in :data:`FITTED_MAPPING` are fitted by ``python benchmarks/fr_teacher.py fit`` on the
benchmark of the 8 *bundled* sample photos against the KADID-10k proxy MOS, never on the photos it is
evaluated on (``docs/fr_teacher.md``). Choosing a subset of measures (``fr:ms_ssim,gmsd``) keeps
their fitted logistics and renormalises their weights.

Pairs: ``pairs="derived"`` (default) derives each pair from the two point judgments (Thurstone, as
the classical teacher does); ``pairs="direct"`` compares the two images' per-measure scores,
p = sum_i w_i sigmoid((q_i(a) - q_i(b)) / T), asked in both orders. The measures are deterministic, so
the two orders agree exactly (consistency 1); reliability is then |2p - 1|.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, special

from iqalens.datasets.references import MissingReferenceError, ReferenceIndex
from iqalens.errors import InvalidInputError
from iqalens.evaluation.fullref import FR_METRICS, direction
from iqalens.images import ImageLoadError, load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.teachers.level_maps import LogisticMap, fit_bounded_logistic, level_distribution

__all__ = ["FITTED_MAPPING", "FRMapping", "FRTeacher", "fit_fr_mapping", "pair_metrics"]

#: Temperature (in levels) of the direct pair preference: one level apart gives p = sigmoid(4) = 0.98.
PAIR_TEMPERATURE = 0.25
PAIR_MODES = ("derived", "direct")
#: Fitted weights at or below this are zero: the default teacher does not compute those measures.
WEIGHT_FLOOR = 1e-3


@dataclass(frozen=True)
class FRMapping:
    """FR measure vector -> score on 1..5 -> distribution over the five levels (see module doc)."""

    metrics: tuple[str, ...]
    maps: tuple[LogisticMap, ...]  # decreasing logistics of the oriented values (see ``oriented``)
    weights: tuple[float, ...]
    sigma0: float
    version: str

    def __post_init__(self) -> None:
        if not (len(self.metrics) == len(self.maps) == len(self.weights)) or not self.metrics:
            raise InvalidInputError("an FR mapping needs one logistic and one weight per measure")

    def subset(self, names: Sequence[str]) -> FRMapping:
        """The mapping restricted to ``names`` (their logistics, weights renormalised)."""
        unknown = [n for n in names if n not in self.metrics]
        if unknown:
            raise InvalidInputError(
                f"the FR mapping {self.version} has no fitted map for {', '.join(unknown)}; "
                f"choose among {', '.join(self.metrics)}"
            )
        idx = [self.metrics.index(n) for n in names]
        w = np.array([self.weights[i] for i in idx])
        w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
        return FRMapping(
            tuple(names),
            tuple(self.maps[i] for i in idx),
            tuple(float(x) for x in w),
            self.sigma0,
            self.version,
        )

    def metric_scores(self, values: Sequence[float]) -> np.ndarray:
        """Each measure's score on 1..5 (NaN where the measure is NaN)."""
        v = oriented(self.metrics, np.asarray(values, dtype=np.float64))
        return np.array(
            [float(m(x)) if math.isfinite(x) else math.nan for m, x in zip(self.maps, v, strict=True)]
        )

    def scores(self, values: Sequence[float]) -> tuple[float, float]:
        """(mu, spread): the weighted mean score and the weighted std of the measures' scores."""
        q = self.metric_scores(values)
        ok = np.isfinite(q)
        w = np.asarray(self.weights)[ok]
        if not ok.any() or w.sum() <= 0:
            return math.nan, math.nan
        w = w / w.sum()
        mu = float(np.dot(w, q[ok]))
        return mu, float(np.sqrt(np.dot(w, (q[ok] - mu) ** 2)))

    def probs(self, values: Sequence[float]) -> np.ndarray:
        """Probabilities over ``LEVELS`` (excellent .. bad); uniform when no measure is usable."""
        mu, spread = self.scores(values)
        if math.isnan(mu):
            return np.full(5, 0.2)
        return level_distribution(mu, math.sqrt(self.sigma0**2 + spread**2))


def oriented(metrics: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Values turned lower = better (higher-is-better measures negated), the logistics' direction."""
    signs = np.array([-1.0 if direction(m) == "higher" else 1.0 for m in metrics])
    return values * signs


def fit_fr_mapping(
    values: np.ndarray, mos: Sequence[float], metrics: Sequence[str], version: str
) -> FRMapping:
    """Fit each measure's logistic, then the weights (least squares on the simplex) and s0.

    ``values`` is n x k (one column per measure in ``metrics``); rows with a NaN are left out.
    """
    v = np.asarray(values, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != len(metrics) or v.shape[0] != len(y):
        raise InvalidInputError(f"values must be n x {len(metrics)} with n = len(mos), got {v.shape}")
    ok = np.isfinite(v).all(axis=1) & np.isfinite(y)
    v, y = oriented(metrics, v[ok]), y[ok]
    maps = tuple(fit_bounded_logistic(v[:, i], y) for i in range(v.shape[1]))
    q = np.column_stack([m(v[:, i]) for i, m in enumerate(maps)])
    k = q.shape[1]

    def mean_squared_error(w: np.ndarray) -> float:
        return float(np.mean((q @ w - y) ** 2))

    res = optimize.minimize(
        mean_squared_error,
        np.full(k, 1.0 / k),
        method="SLSQP",
        bounds=optimize.Bounds(0.0, 1.0),
        constraints=optimize.LinearConstraint(np.ones((1, k)), 1.0, 1.0),
    )
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum()
    resid = y - q @ w
    return FRMapping(
        tuple(metrics), maps, tuple(float(x) for x in w), float(np.sqrt(np.mean(resid**2))), version
    )


def pair_metrics(
    image: str | os.PathLike[str], reference: str | os.PathLike[str], metrics: Sequence[str]
) -> list[float]:
    """The measures of one image against its reference, read from disk.

    Raises ``ImageLoadError`` for an unreadable file and :class:`MissingReferenceError` when the
    reference has another size (a measure of mismatched images would be a wrong judgment).
    """
    img = load_rgb(image)
    ref = load_rgb(reference)
    if img.shape != ref.shape:
        raise MissingReferenceError(
            image,
            f"its reference {reference} is {ref.shape[1]}x{ref.shape[0]}, the image "
            f"{img.shape[1]}x{img.shape[0]}; a full-reference judgment needs images of one size",
        )
    return [_measure(name, ref, img) for name in metrics]


def _measure(name: str, reference: np.ndarray, distorted: np.ndarray) -> float:
    """One measure, NaN where it is undefined on these images (VIF needs 65 pixels per side): the
    mapping then judges from the other measures, as the classical teacher does without NIQE."""
    try:
        return float(FR_METRICS.get(name)(reference, distorted))
    except InvalidInputError:
        return math.nan


def _worker(job: tuple[str, str, tuple[str, ...]]) -> list[float] | tuple[str, str]:
    # Exceptions cross the process boundary as (path, reason) to keep the error type in the parent.
    try:
        return pair_metrics(job[0], job[1], job[2])
    except MissingReferenceError as exc:
        return ("missing", f"{exc.path}\0{exc.reason}")
    except ImageLoadError as exc:
        return ("unreadable", f"{exc.path}\0{exc.reason}")


#: The measures the mapping is fitted on (the default teacher computes those the fit gave weight).
DEFAULT_METRICS: tuple[str, ...] = ("ms_ssim", "gmsd", "vsi", "vif", "ciede2000")

# Fitted by `python benchmarks/fr_teacher.py fit` (fit_fr_mapping on the 1008-image benchmark of the
# bundled sample photos against the KADID proxy MOS). Refit and bump the version together: the
# version keys stored judgments.
FITTED_MAPPING: FRMapping | None = FRMapping(
    metrics=("ms_ssim", "gmsd", "vsi", "vif", "ciede2000"),
    maps=(
        LogisticMap(lo=1.89139, hi=5.5, mid=-0.983217, width=0.0284678),  # ms_ssim
        LogisticMap(lo=1.58678, hi=5.5, mid=0.0377113, width=0.0474673),  # gmsd
        LogisticMap(lo=1.88447, hi=5.5, mid=-0.992589, width=0.0101495),  # vsi
        LogisticMap(lo=0.504096, hi=4.1636, mid=-0.367876, width=0.272514),  # vif
        LogisticMap(lo=1.86533, hi=5.5, mid=0.33059, width=6.70295),  # ciede2000
    ),
    weights=(0, 0.218068, 0.617372, 0.164559, 4.60523e-17),
    sigma0=0.466605,
    version="fr-map-v1",
)


class FRTeacher:
    """Full-reference teacher; see the module docstring for the mapping, reliability and pairs.

    ``metrics`` is the spec's argument (``"ms_ssim,gmsd"``; empty = all of the fitted mapping).
    ``manifests`` name each image's reference (and ``references``, a folder of reference images,
    overrides the manifests' clean rows). ``workers`` > 1 spreads the measures over processes.
    """

    def __init__(
        self,
        metrics: str = "",
        manifests: Sequence[str | os.PathLike[str]] = (),
        references: str | os.PathLike[str] | None = None,
        workers: int = 1,
        pair_mode: str = "derived",
        mapping: FRMapping | None = None,
    ) -> None:
        mapping = mapping or FITTED_MAPPING
        if mapping is None:  # pragma: no cover - the shipped module carries a fitted mapping
            raise InvalidInputError("no fitted FR mapping is available")
        # By default the measures the fit gave weight; a zero-weight measure would cost time and
        # change nothing.
        used = [m for m, w in zip(mapping.metrics, mapping.weights, strict=True) if w > WEIGHT_FLOOR]
        names = [m.strip().lower() for m in metrics.split(",") if m.strip()] if metrics else used
        for name in names:
            FR_METRICS.entry(name)  # an unknown name raises, listing the measures that exist
        if pair_mode not in PAIR_MODES:
            raise InvalidInputError(f"pair mode must be one of {', '.join(PAIR_MODES)}, got {pair_mode!r}")
        self.mapping = mapping.subset(names)
        self.references = ReferenceIndex.from_manifests(list(manifests), references)
        self.workers = max(1, int(workers))
        self.pair_mode = pair_mode
        self.supports_pairs = pair_mode == "direct"
        self.teacher_id = "fr:" + "+".join(self.mapping.metrics)
        self.prompt_version = mapping.version + ("-direct-pairs" if self.supports_pairs else "")
        self._pool: ProcessPoolExecutor | None = None
        self._values: dict[Path, list[float]] = {}

    def metric_values(self, paths: Sequence[Path]) -> list[list[float]]:
        """The measure vector of each path against its reference, in order (cached per path)."""
        keys = [Path(p).resolve() for p in paths]
        todo = list(dict.fromkeys(k for k in keys if k not in self._values))
        jobs = [(str(k), str(self.references.reference_of(k)), self.mapping.metrics) for k in todo]
        if self.workers == 1 or len(jobs) < 2:
            results: list[list[float] | tuple[str, str]] = [_worker(j) for j in jobs]
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.workers)
            chunk = max(1, min(16, len(jobs) // (4 * self.workers)))
            results = list(self._pool.map(_worker, jobs, chunksize=chunk))
        for key, result in zip(todo, results, strict=True):
            if isinstance(result, tuple):
                kind, (path, _, reason) = result[0], result[1].partition("\0")
                raise (MissingReferenceError if kind == "missing" else ImageLoadError)(path, reason)
            self._values[key] = result
        return [self._values[k] for k in keys]

    def judge_values(self, values: Sequence[float]) -> PointJudgment:
        """The judgment for an already computed measure vector (in ``self.mapping.metrics`` order)."""
        return PointJudgment.from_probs(self.mapping.probs(values).tolist())

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One judgment per path, in order; an unreadable file or missing reference raises ImageLoadError."""
        return [self.judge_values(v) for v in self.metric_values(paths)]

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """Pairs from the measures: derived from the point judgments, or compared directly (module doc)."""
        unique = list(dict.fromkeys(p for pair in pairs for p in pair))
        values = dict(zip(unique, self.metric_values(unique), strict=True))
        if not self.supports_pairs:
            points = {p: self.judge_values(v) for p, v in values.items()}
            return [PairJudgment.from_points(points[a], points[b]) for a, b in pairs]
        scores = {p: self.mapping.metric_scores(v) for p, v in values.items()}
        return [
            PairJudgment.from_orders(self._prefer(scores[a], scores[b]), self._prefer(scores[b], scores[a]))
            for a, b in pairs
        ]

    def _prefer(self, qa: np.ndarray, qb: np.ndarray) -> float:
        """P(first better): the measures' weighted vote, each a sigmoid of its score difference."""
        ok = np.isfinite(qa) & np.isfinite(qb)
        w = np.asarray(self.mapping.weights)[ok]
        if not ok.any() or w.sum() <= 0:
            return 0.5
        votes = special.expit((qa[ok] - qb[ok]) / PAIR_TEMPERATURE)
        return float(np.dot(w / w.sum(), votes))

    def close(self) -> None:
        """Stop the worker processes (they are also stopped at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
