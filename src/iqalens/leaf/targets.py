"""A teacher's judgments as training targets: which teacher of a store, and its judgments as arrays.

:func:`choose_teacher` picks the one (teacher id, prompt version) of a judgments store,
:func:`teacher_arrays` reads its point and pair judgments of images given by content hash, and
:class:`TeacherTargets` restricts them to a pool of images (indices into a feature matrix) for the
distillation loss of a head (:mod:`iqalens.leaf.head`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.leaf.store import JudgmentStore


class TeacherChoiceError(InvalidInputError):
    """A store holds no teacher, or several, matching the given id and prompt version (the message
    lists what it holds; a command adds its own way to choose)."""


def choose_teacher(
    store: str | os.PathLike[str], teacher_id: str | None = None, prompt_version: str | None = None
) -> tuple[str, str]:
    """The one (teacher id, prompt version) of ``store`` matching the given filters (None = any).

    A store may hold several teachers; guessing would silently mix them up, so anything but exactly
    one match is an error that lists what the store holds.
    """
    with JudgmentStore(store, create=False) as st:
        groups = [(g["teacher_id"], g["prompt_version"]) for g in st.status()["teachers"]]
    chosen = [g for g in groups if teacher_id in (None, g[0]) and prompt_version in (None, g[1])]
    if len(chosen) != 1:
        listed = "; ".join(f"{t} / {v}" for t, v in groups) or "none"
        raise TeacherChoiceError(f"choose one teacher id and prompt version; {store} holds: {listed}")
    return chosen[0]


def teacher_arrays(
    store: str | os.PathLike[str], teacher_id: str, prompt_version: str, hashes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A teacher's judgments of N images given by content hash, as arrays over those images.

    Returns ``(probs N x 5, expected N, reliability N, pairs M x 2, pair_p M, pair_reliability M)``;
    rows of images without a point judgment are NaN, and only pairs with both images among ``hashes``
    are kept. Byte-identical images (e.g. a distortion that left the reference unchanged) share one
    content hash, hence one judgment: every row with that hash gets it; a pair uses each hash's first row.
    """
    where: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        where.setdefault(h, []).append(i)
    n = len(hashes)
    probs = np.full((n, 5), np.nan)
    expected, rel = np.full(n, np.nan), np.full(n, np.nan)
    with JudgmentStore(store, create=False) as st:
        points = st.points(teacher_id, prompt_version)
        pair_records = st.pairs(teacher_id, prompt_version)
    for rec in points:
        for i in where.get(rec.hash, []):
            j = rec.judgment
            probs[i], expected[i], rel[i] = j.probs, j.expected, j.reliability
    pairs, pp, pr = [], [], []
    for rec in pair_records:
        a, b = where.get(rec.hash_a), where.get(rec.hash_b)
        if a and b:
            pairs.append((a[0], b[0]))
            pp.append(rec.judgment.p_first_better)
            pr.append(rec.judgment.reliability)
    return probs, expected, rel, np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(pp), np.array(pr)


class JudgedImages(Protocol):
    """What :meth:`TeacherTargets.of` reads: a teacher's judgments of N images, as the arrays of
    :func:`teacher_arrays` (e.g. the label-budget experiment's ``BudgetData``)."""

    teacher_probs: np.ndarray
    teacher_expected: np.ndarray
    teacher_reliability: np.ndarray
    pairs: np.ndarray
    pair_p: np.ndarray
    pair_reliability: np.ndarray


@dataclass
class TeacherTargets:
    """Teacher targets restricted to the train pool (indices into the feature matrix)."""

    points: np.ndarray
    probs: np.ndarray
    expected: np.ndarray
    reliability: np.ndarray
    pairs: np.ndarray
    pair_p: np.ndarray
    pair_rel: np.ndarray

    @classmethod
    def of(cls, data: JudgedImages, pool: np.ndarray) -> TeacherTargets:
        """Targets of ``data``'s judged images in ``pool`` (see :meth:`restricted`)."""
        return cls.restricted(
            pool,
            data.teacher_probs,
            data.teacher_expected,
            data.teacher_reliability,
            data.pairs,
            data.pair_p,
            data.pair_reliability,
        )

    @classmethod
    def restricted(
        cls,
        pool: np.ndarray,
        probs: np.ndarray,
        expected: np.ndarray,
        reliability: np.ndarray,
        pairs: np.ndarray,
        pair_p: np.ndarray,
        pair_rel: np.ndarray,
    ) -> TeacherTargets:
        """Targets of the judged images in ``pool`` and the pairs with both images in it
        (arrays as returned by :func:`teacher_arrays`)."""
        inside = np.zeros(len(expected), dtype=bool)
        inside[pool] = True
        pts = pool[np.all(np.isfinite(probs[pool]), axis=1)]
        keep = inside[pairs[:, 0]] & inside[pairs[:, 1]] if pairs.size else np.zeros(0, bool)
        return cls(pts, probs, expected, reliability, pairs[keep], pair_p[keep], pair_rel[keep])
