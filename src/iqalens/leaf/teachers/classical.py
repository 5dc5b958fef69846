"""The classical offline teacher: NIQE and BRISQUE mapped to five-level quality judgments.

For machines without a vision-language model. Each image gets NIQE and BRISQUE
(:mod:`iqalens.evaluation.noref`, lower = better), and a fitted mapping turns them into a judgment:

1. **Per-metric score.** A decreasing logistic maps each metric onto the 1..5 quality scale:
   q(m) = lo + (hi - lo) / (1 + exp((m - mid) / width)), width > 0, hi > lo.
2. **Combined score.** mu = w * q_niqe + (1 - w) * q_brisque.
3. **Level distribution.** A Gaussian N(mu, s^2) discretised onto the levels 5 (excellent) .. 1
   (bad): level k gets the mass in [k - 0.5, k + 0.5], the end levels take the open tails.
4. **Reliability from agreement.** s^2 = s0^2 + (delta / 2)^2 with delta = |q_niqe - q_brisque|:
   s0 is the combined score's residual standard deviation on the fitting data, and every level of
   disagreement between the two metrics widens the distribution by half a level. The judgment's
   reliability is the shared point formula 1 - H(p) / ln 5 (:mod:`iqalens.leaf.judgments`), so it
   falls as the metrics disagree; with one metric unavailable (NIQE needs 96x96 pixels; both are
   undefined on flat images) delta is taken as 2 levels, and with neither the judgment is uniform
   (reliability 0).

The constants in :data:`FITTED_MAPPING` were fitted by :func:`fit_mapping`, run by
``benchmarks/classical_teacher.py fit``: least squares of each logistic, then of w, against the
KADID-10k *proxy* MOS (:mod:`iqalens.datasets.proxy_mos`) of a benchmark built from the 8 bundled
sample photos (all 25 KADID types x 5 levels + the clean image, 512x384: 1008 images). The
evaluation in ``docs/classical_teacher.md`` uses other photos (content-disjoint).

It is a weak teacher, and says so: on the fitting set the SRCC against the proxy MOS is 0.44
(-NIQE 0.42, -BRISQUE 0.39); since the metrics explain little of the proxy MOS, least squares
keeps the logistics near the mean (they span about 2.0 .. 3.45), expected scores stay within
about 0.25 .. 0.6 and reliabilities within about 0.1 .. 0.25. Neither metric responds to colour,
brightness or contrast changes (see the per-type table in the docs).

The teacher judges single images only (``supports_pairs`` is False); :meth:`judge_pairs` returns
pairs derived from the two point judgments (Thurstone, marked ``derived``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqalens.evaluation.noref import brisque, brisque_model, niqe, niqe_model
from iqalens.images import ImageLoadError, load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.teachers.level_maps import LogisticMap, fit_logistic, level_distribution

#: Disagreement (in levels) assumed when only one metric could be computed.
MISSING_METRIC_DELTA = 2.0


@dataclass(frozen=True)
class ClassicalMapping:
    """(NIQE, BRISQUE) -> score on 1..5 -> distribution over the five levels (see module doc)."""

    niqe: LogisticMap
    brisque: LogisticMap
    weight_niqe: float
    sigma0: float
    version: str

    def scores(self, niqe_value: float, brisque_value: float) -> tuple[float, float, float]:
        """(mu, q_niqe, q_brisque); a NaN metric gives a NaN q, and mu falls back to the other q."""
        qn = float(self.niqe(niqe_value)) if math.isfinite(niqe_value) else math.nan
        qb = float(self.brisque(brisque_value)) if math.isfinite(brisque_value) else math.nan
        if math.isnan(qn):
            return qb, qn, qb
        if math.isnan(qb):
            return qn, qn, qb
        return self.weight_niqe * qn + (1.0 - self.weight_niqe) * qb, qn, qb

    def probs(self, niqe_value: float, brisque_value: float) -> np.ndarray:
        """Probabilities over ``LEVELS`` (excellent .. bad); uniform when neither metric is usable."""
        mu, qn, qb = self.scores(niqe_value, brisque_value)
        if math.isnan(mu):
            return np.full(5, 0.2)
        delta = abs(qn - qb) if math.isfinite(qn) and math.isfinite(qb) else MISSING_METRIC_DELTA
        return level_distribution(mu, math.sqrt(self.sigma0**2 + (delta / 2.0) ** 2))


# Fitted by `python benchmarks/classical_teacher.py fit` (fit_mapping on the 1008-image benchmark
# of the bundled sample photos against the KADID proxy MOS; see the module docstring). Refit and
# bump the version together: the version keys stored judgments.
FITTED_MAPPING = ClassicalMapping(
    niqe=LogisticMap(lo=2.00416, hi=3.44612, mid=8.96054, width=1.27408),
    brisque=LogisticMap(lo=1.928, hi=3.35654, mid=55.7446, width=7.42827),
    weight_niqe=0.455879,
    sigma0=0.888544,
    version="niqe-brisque-map-v1",
)


def fit_mapping(
    niqe_values: Sequence[float], brisque_values: Sequence[float], mos: Sequence[float], version: str
) -> ClassicalMapping:
    """Fit both logistics, the weight w (least squares, clipped to [0, 1]) and s0 (residual std)."""
    n = np.asarray(niqe_values, dtype=np.float64)
    b = np.asarray(brisque_values, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    ok = np.isfinite(n) & np.isfinite(b) & np.isfinite(y)
    n, b, y = n[ok], b[ok], y[ok]
    fn, fb = fit_logistic(n, y), fit_logistic(b, y)
    qn, qb = fn(n), fb(b)
    d = qn - qb
    w = float(np.clip(np.dot(d, y - qb) / max(float(np.dot(d, d)), 1e-12), 0.0, 1.0))
    resid = y - (w * qn + (1 - w) * qb)
    return ClassicalMapping(fn, fb, w, float(np.sqrt(np.mean(resid**2))), version)


def image_metrics(image: np.ndarray) -> tuple[float, float]:
    """(NIQE, BRISQUE) of an RGB uint8 image; NaN for a metric that is undefined on it."""
    try:
        n = niqe(image)
    except ValueError:  # smaller than one 96x96 patch
        n = math.nan
    try:
        b = brisque(image)
    except ValueError:  # smaller than 8x8
        b = math.nan
    return n, b


def path_metrics(path: str | os.PathLike[str]) -> tuple[float, float]:
    """(NIQE, BRISQUE) of an image file; unreadable files raise ``ImageLoadError``."""
    return image_metrics(load_rgb(path))


def _worker_metrics(path: str) -> tuple[float, float] | tuple[str, str]:
    # ImageLoadError does not survive pickling (its __init__ takes two arguments), so a worker
    # returns (path, reason) and the parent raises it.
    try:
        return path_metrics(path)
    except ImageLoadError as exc:
        return exc.path, exc.reason


class ClassicalTeacher:
    """NIQE + BRISQUE teacher; see the module docstring for the mapping and its reliability.

    ``workers`` > 1 spreads :meth:`judge_images` over that many processes (the metrics are
    CPU-bound numpy code, one core each).
    """

    supports_pairs = False

    def __init__(self, mapping: ClassicalMapping = FITTED_MAPPING, workers: int = 1) -> None:
        # Fail now, with the install hint, rather than in the middle of a labeling run.
        niqe_model()
        brisque_model()
        self.mapping = mapping
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None  # kept across calls: teach sends small batches
        self.teacher_id = "classical:niqe+brisque"
        self.prompt_version = mapping.version

    def judge_metrics(self, niqe_value: float, brisque_value: float) -> PointJudgment:
        """The judgment for already computed metric values."""
        return PointJudgment.from_probs(self.mapping.probs(niqe_value, brisque_value))

    def judge_array(self, image: np.ndarray) -> PointJudgment:
        """The judgment of an RGB uint8 image in memory."""
        return self.judge_metrics(*image_metrics(image))

    def metrics(self, paths: Sequence[Path]) -> list[tuple[float, float]]:
        """(NIQE, BRISQUE) per path, in order, over ``workers`` processes."""
        if self.workers == 1 or len(paths) < 2:
            return [path_metrics(p) for p in paths]
        chunk = max(1, min(32, len(paths) // (4 * self.workers)))
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        results = list(self._pool.map(_worker_metrics, [str(p) for p in paths], chunksize=chunk))
        values: list[tuple[float, float]] = []
        for a, b in results:
            if isinstance(a, str):
                raise ImageLoadError(a, str(b))
            values.append((float(a), float(b)))
        return values

    def close(self) -> None:
        """Stop the worker processes (they are also stopped at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One judgment per path, in order. Unreadable images raise ``ImageLoadError``."""
        return [self.judge_metrics(n, b) for n, b in self.metrics(paths)]

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """Pairs derived from the two point judgments (``derived=True``; no order to swap)."""
        unique = list(dict.fromkeys(p for pair in pairs for p in pair))
        judged = dict(zip(unique, self.judge_images(unique), strict=True))
        return [PairJudgment.from_points(judged[a], judged[b]) for a, b in pairs]
