"""Content-disjoint train/val/test splits: every image of one reference lands in the same split.

Splitting by image would put distorted copies of one photo on both sides and reward models for
recognising content; splitting by reference is the protocol IQA papers use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from iqalens.datasets.manifest import ManifestRow
from iqalens.errors import InvalidInputError


def assign_splits(
    rows: Sequence[ManifestRow], fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> list[ManifestRow]:
    """Return ``rows`` with ``split`` set, by reference, in proportions ``fractions`` (train, val, test).

    References are shuffled with ``seed`` and cut by cumulative count; each split with a positive
    fraction gets at least one reference when there are enough references.
    """
    check_fractions(fractions)
    refs = sorted({r.reference for r in rows})
    order = np.random.default_rng(seed).permutation(len(refs))
    shuffled = [refs[i] for i in order]
    counts = _split_counts(len(refs), fractions)
    names = ("train", "val", "test")
    which: dict[str, str] = {}
    start = 0
    for name, count in zip(names, counts, strict=True):
        for ref in shuffled[start : start + count]:
            which[ref] = name
        start += count
    return [replace(r, split=which[r.reference]) for r in rows]


def check_fractions(fractions: tuple[float, ...]) -> None:
    """Three non-negative split fractions summing to 1, or a ValueError saying so."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise InvalidInputError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    counts = [int(np.floor(f * n)) for f in fractions]
    # Give leftovers to the largest fractional remainders, then make sure no requested split is empty.
    remainders = sorted(range(3), key=lambda i: fractions[i] * n - counts[i], reverse=True)
    for i in remainders[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts
