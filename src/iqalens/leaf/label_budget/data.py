"""The label-budget experiment's data: cached features, MOS, content groups, splits, teacher judgments."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from iqalens.datasets.manifest import MosScale, read_manifest
from iqalens.errors import InvalidInputError
from iqalens.files import content_hash
from iqalens.leaf.features import cache_features
from iqalens.leaf.student import StudentConfig
from iqalens.leaf.targets import teacher_arrays


@dataclass
class BudgetData:
    """Everything the protocol needs, as arrays over N images (cached features, not pixels).

    ``teacher_*`` rows of images without a judgment are NaN (they are not distilled on);
    ``pairs`` holds index pairs (a, b) with the teacher's P(a better) in ``pair_p``.
    """

    features: np.ndarray  # N x D
    mos: np.ndarray  # N (NaN allowed outside the train/test splits)
    groups: np.ndarray  # N content groups (str)
    split: np.ndarray  # N: "train", "test" or anything else (ignored)
    mos_range: tuple[float, float]
    teacher_probs: np.ndarray  # N x 5
    teacher_expected: np.ndarray  # N
    teacher_reliability: np.ndarray  # N
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    pair_p: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_reliability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        n = self.features.shape[0]
        self.mos = np.asarray(self.mos, dtype=np.float64)
        self.groups = np.asarray(self.groups, dtype=str)
        self.split = np.asarray(self.split, dtype=str)
        self.teacher_probs = np.asarray(self.teacher_probs, dtype=np.float64).reshape(n, 5)
        self.teacher_expected = np.asarray(self.teacher_expected, dtype=np.float64)
        self.teacher_reliability = np.asarray(self.teacher_reliability, dtype=np.float64)
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.pair_p = np.asarray(self.pair_p, dtype=np.float64)
        self.pair_reliability = np.asarray(self.pair_reliability, dtype=np.float64)
        if self.features.ndim != 2:
            raise InvalidInputError(f"features must be N x D, got shape {self.features.shape}")
        for name in ("mos", "groups", "split", "teacher_expected", "teacher_reliability"):
            if getattr(self, name).shape != (n,):
                raise InvalidInputError(
                    f"{name} must have {n} entries, got shape {getattr(self, name).shape}"
                )
        m = self.pairs.shape[0]
        if self.pair_p.shape != (m,) or self.pair_reliability.shape != (m,):
            raise InvalidInputError("pair_p and pair_reliability must have one entry per pair")
        if m and (self.pairs.min() < 0 or self.pairs.max() >= n):
            raise InvalidInputError("pair indices out of range")
        low, high = (float(v) for v in self.mos_range)
        if not low < high:
            raise InvalidInputError(f"mos_range must have low < high, got {self.mos_range}")
        self.mos_range = (low, high)
        if not self.names:
            self.names = [str(i) for i in range(n)]
        train, test = self.indices("train"), self.indices("test")
        if train.size == 0 or test.size < 3:
            raise InvalidInputError(
                f"need train images and at least 3 test images, got {train.size} and {test.size}"
            )
        shared = sorted(set(self.groups[train]) & set(self.groups[test]))
        if shared:
            raise InvalidInputError(
                f"train and test splits share {len(shared)} content group(s) (e.g. {shared[0]!r}); "
                "the protocol needs a content-disjoint test split"
            )
        for name in ("train", "test"):
            idx = self.indices(name)
            if not np.all(np.isfinite(self.mos[idx])):
                raise InvalidInputError(f"every {name} image needs a finite MOS")

    def indices(self, split: str) -> np.ndarray:
        """Indices of one split, in data order."""
        return np.flatnonzero(self.split == split)


def split_by_group(groups: Sequence[str], test_fraction: float = 0.25, seed: int = 0) -> np.ndarray:
    """``"train"``/``"test"`` per item, whole content groups at a time (seeded shuffle of the groups).

    At least one group goes to each side when there are two or more groups.
    """
    g = np.asarray(groups, dtype=str)
    uniq = np.unique(g)
    if uniq.size < 2:
        raise InvalidInputError("a content-disjoint split needs at least two content groups")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(uniq.size)
    n_test = min(uniq.size - 1, max(1, round(test_fraction * uniq.size)))
    test_groups = set(uniq[order[:n_test]])
    return np.array(["test" if x in test_groups else "train" for x in g])


def load_budget_data(
    manifest: str | os.PathLike[str],
    store: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    feature_dir: str | os.PathLike[str],
    student_config: StudentConfig | None = None,
    progress: bool = True,
) -> BudgetData:
    """Join a manifest (MOS, split, reference), a teacher's judgments (by content hash) and cached
    backbone features into :class:`BudgetData`. Rows outside train/test or without MOS are dropped."""
    m, _ = read_manifest(manifest)
    rows = [r for r in m.rows if r.split in ("train", "test") and math.isfinite(r.mos)]
    if not rows:
        raise InvalidInputError(f"{manifest}: no train/test rows with MOS")
    scales = {r.mos_scale for r in rows}
    if len(scales) != 1 or None in scales:
        raise InvalidInputError(
            f"{manifest}: the protocol needs one MOS scale, found {sorted(map(str, scales))}"
        )
    scale: MosScale = scales.pop()  # type: ignore[assignment]
    paths = [m.resolve(r) for r in rows]
    hashes = [content_hash(p) for p in paths]
    feats = cache_features(paths, feature_dir, student_config, hashes=hashes, progress=progress)
    probs, expected, rel, pairs, pp, pr = teacher_arrays(store, teacher_id, prompt_version, hashes)
    return BudgetData(
        features=feats,
        mos=np.array([r.mos for r in rows]),
        groups=np.array([r.reference or r.path for r in rows]),
        split=np.array([r.split for r in rows]),
        mos_range=(scale.low, scale.high),
        teacher_probs=probs,
        teacher_expected=expected,
        teacher_reliability=rel,
        pairs=pairs,
        pair_p=pp,
        pair_reliability=pr,
        names=[r.path for r in rows],
    )
