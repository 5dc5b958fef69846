"""Which image pairs to ask the teacher about, within a budget of pairs per image.

Asking about all n(n-1)/2 pairs is out of reach beyond a few hundred images, so a labeling run asks
about a sparse set. Three strategies, all with the same guarantees:

- ``random``: every image picks its partners uniformly at random. Pairs then span the whole score
  range, which teaches the student the global order (easy pairs, mostly).
- ``stratified``: images are sorted by a teacher score (e.g. the expected score of their point
  judgments) and every image picks its partners at random among its ``window`` neighbours on each
  side in that order. Such pairs are close in score, i.e. *hard*: exactly the fine distinctions that
  the point judgments' coarse five levels cannot make, so they add the most information per pair.
- ``knn``: every image pairs with its ``k`` nearest neighbours in a feature space (cosine or
  Euclidean), e.g. content embeddings: pairs of similar-looking images isolate quality from content.

Guarantees (tested): deterministic for a given ``seed``; no self-pairs; no unordered pair twice;
every image *proposes* ``pairs_per_image`` partners, so it takes part in at least that many pairs,
and after removing pairs proposed from both sides there are between n*k/2 and n*k pairs; each pair
is oriented at random (a fair coin per pair), so "first" carries no signal that a student or a
position-biased teacher could latch onto. If ``pairs_per_image`` >= n - 1, every pair is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

import numpy as np

from iqalens.errors import InvalidInputError

Strategy = Literal["random", "stratified", "knn"]
Metric = Literal["cosine", "euclidean"]
STRATEGIES: tuple[str, ...] = ("random", "stratified", "knn")

T = TypeVar("T")

# Rows of the distance matrix computed at once by knn_pairs: bounds memory to block * n floats.
_KNN_BLOCK = 1024


def _check_budget(n: int, pairs_per_image: int) -> int:
    if n < 2:
        raise InvalidInputError(f"need at least 2 images to form pairs, got {n}")
    if isinstance(pairs_per_image, bool) or not isinstance(pairs_per_image, (int, np.integer)):
        raise TypeError(f"pairs_per_image must be an integer, got {pairs_per_image!r}")
    if pairs_per_image < 1:
        raise InvalidInputError(f"pairs_per_image must be >= 1, got {pairs_per_image}")
    return int(min(pairs_per_image, n - 1))


def _distinct_draws(rng: np.random.Generator, rows: int, m: int, k: int) -> np.ndarray:
    """``rows`` x ``k`` integers in [0, m), distinct within each row (requires k <= m).

    Each row is a uniform random k-subset (in sorted order): the procedure treats all m values
    alike, so every subset is equally likely.
    """
    if 2 * k > m:
        # Dense case: a random permutation per row, cut to k; costs rows x m < 2 x the output.
        return np.sort(np.argsort(rng.random((rows, m)), axis=1)[:, :k], axis=1)
    # Sparse case: draw with replacement, then redraw only the repeated entries until none is left.
    # With k <= m/2 each redraw succeeds with probability >= 1/2, so a few passes suffice.
    out = np.sort(rng.integers(0, m, size=(rows, k)), axis=1)
    while k > 1:
        dup = np.zeros(out.shape, dtype=bool)
        dup[:, 1:] = out[:, 1:] == out[:, :-1]
        n_dup = int(dup.sum())
        if n_dup == 0:
            break
        out[dup] = rng.integers(0, m, size=n_dup)
        out.sort(axis=1)
    return out


def _finish(proposals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unordered de-duplication, canonical order, then a fair coin for each pair's orientation."""
    lo = np.minimum(proposals[:, 0], proposals[:, 1])
    hi = np.maximum(proposals[:, 0], proposals[:, 1])
    if np.any(lo == hi):  # a bug in a strategy, never the caller's fault
        raise AssertionError("self-pair proposed")
    pairs = np.unique(np.stack([lo, hi], axis=1), axis=0)
    flip = rng.random(len(pairs)) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    return pairs.astype(np.int64)


def _all_pairs(n: int, rng: np.random.Generator) -> np.ndarray:
    i, j = np.triu_indices(n, k=1)
    return _finish(np.stack([i, j], axis=1), rng)


def random_pairs(n: int, pairs_per_image: int, *, seed: int = 0) -> np.ndarray:
    """Index pairs (m x 2) where every image proposes ``pairs_per_image`` uniformly random partners."""
    k = _check_budget(n, pairs_per_image)
    rng = np.random.default_rng(seed)
    if k >= n - 1:
        return _all_pairs(n, rng)
    own = np.arange(n)[:, None]
    partner = _distinct_draws(rng, n, n - 1, k)  # among the n - 1 others ...
    partner = partner + (partner >= own)  # ... skipping the image itself
    return _finish(np.stack([np.repeat(np.arange(n), k), partner.ravel()], axis=1), rng)


def stratified_pairs(
    scores: Sequence[float] | np.ndarray,
    pairs_per_image: int,
    *,
    seed: int = 0,
    window: int | None = None,
) -> np.ndarray:
    """Index pairs of images close in score: partners drawn among the ``window`` neighbours on each side.

    ``window`` defaults to ``2 * pairs_per_image``: wide enough that neighbouring images do not all
    pair with the same few others, narrow enough that the pairs stay hard. At the ends of the sorted
    order the window shifts inwards so every image still has ``2 * window`` candidates. Ties in score
    are ordered at random (seeded), so the input order does not decide who pairs with whom.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise InvalidInputError(f"scores must be one number per image, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("scores contain NaN or infinite values")
    n = len(s)
    k = _check_budget(n, pairs_per_image)
    w = 2 * k if window is None else int(window)
    if w < 1:
        raise InvalidInputError(f"window must be >= 1, got {window}")
    rng = np.random.default_rng(seed)
    if k >= n - 1:
        return _all_pairs(n, rng)
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(s[shuffled], kind="stable")]  # rank -> image index
    m = min(2 * w, n - 1)  # candidates per image
    if k > m:
        raise InvalidInputError(f"window {w} gives {m} candidates per image, fewer than pairs_per_image={k}")
    rank = np.arange(n)
    start = np.clip(rank - w, 0, n - 1 - m)  # window [start, start + m], self included
    offset = _distinct_draws(rng, n, m, k)
    partner_rank = start[:, None] + offset
    partner_rank = partner_rank + (partner_rank >= rank[:, None])  # skip self
    return _finish(np.stack([np.repeat(order, k), order[partner_rank.ravel()]], axis=1), rng)


def knn_pairs(
    features: np.ndarray,
    pairs_per_image: int,
    *,
    seed: int = 0,
    metric: Metric = "cosine",
) -> np.ndarray:
    """Index pairs of each image with its ``pairs_per_image`` nearest neighbours in ``features`` (n x d).

    Exact search, in blocks of rows, so memory stays at block x n distances; time grows as n^2
    (20,000 x 768 float32 features: ~9 s on 2 CPU cores), fine up to a few 10^4 images. For
    millions, use an approximate index (e.g. FAISS) and pass its neighbour lists to
    :func:`pairs_from_neighbours`. Cosine treats an all-zero row as orthogonal to everything. Ties
    between equally near neighbours go to the lower index. ``seed`` only decides the orientation.
    """
    x = np.asarray(features)
    # float32 embeddings stay float32 (half the memory; ample precision to rank neighbours).
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=False)
    if x.ndim != 2:
        raise InvalidInputError(f"features must be a 2-D array (images x dimensions), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("features contain NaN or infinite values")
    if metric not in ("cosine", "euclidean"):
        raise InvalidInputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    n = len(x)
    k = _check_budget(n, pairs_per_image)
    rng = np.random.default_rng(seed)
    if k >= n - 1:
        return _all_pairs(n, rng)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    sq = np.einsum("ij,ij->i", x, x)
    neighbours = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _KNN_BLOCK):
        block = x[start : start + _KNN_BLOCK]
        rows = np.arange(start, start + len(block))
        # Cosine: minimise -similarity; Euclidean: minimise the squared distance |a|^2 - 2ab + |b|^2.
        dist = -(block @ x.T) if metric == "cosine" else sq[rows, None] - 2.0 * (block @ x.T) + sq[None, :]
        dist[np.arange(len(block)), rows] = np.inf  # never oneself, even with duplicate features
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        # argpartition's order inside the k is arbitrary; sort by (distance, index) for determinism.
        part_d = np.take_along_axis(dist, part, axis=1)
        idx = np.lexsort((part, part_d), axis=1)
        neighbours[rows] = np.take_along_axis(part, idx, axis=1)
    return _finish(np.stack([np.repeat(np.arange(n), k), neighbours.ravel()], axis=1), rng)


def pairs_from_neighbours(neighbours: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Index pairs from a neighbour table (row i: the partners of image i), with this module's guarantees.

    For neighbour lists computed elsewhere (an approximate index over millions of images): pairs
    proposed from both sides are merged, and each pair gets a random orientation.
    """
    nb = np.asarray(neighbours)
    if nb.ndim != 2 or not np.issubdtype(nb.dtype, np.integer):
        raise InvalidInputError(
            f"neighbours must be a 2-D integer array (images x k), got {nb.dtype} {nb.shape}"
        )
    n = len(nb)
    if nb.size and (nb.min() < 0 or nb.max() >= n):
        raise InvalidInputError(f"neighbour indices must be in [0, {n})")
    own = np.repeat(np.arange(n), nb.shape[1])
    if np.any(own == nb.ravel()):
        raise InvalidInputError("an image is listed as its own neighbour")
    return _finish(np.stack([own, nb.ravel()], axis=1), np.random.default_rng(seed))


def sample_pairs(
    items: Sequence[T],
    strategy: Strategy,
    pairs_per_image: int,
    *,
    seed: int = 0,
    scores: Sequence[float] | np.ndarray | None = None,
    features: np.ndarray | None = None,
    metric: Metric = "cosine",
    window: int | None = None,
) -> list[tuple[T, T]]:
    """Pairs of ``items`` (content hashes or paths) chosen by ``strategy``; see the module docstring.

    ``stratified`` needs ``scores`` and ``knn`` needs ``features``, aligned with ``items``. Items
    must be distinct (de-duplicate by content hash first): two copies of one image are a self-pair.
    """
    n = len(items)
    if len(set(items)) != n:
        raise InvalidInputError("items contain duplicates; de-duplicate them (e.g. by content hash) first")
    if strategy == "random":
        idx = random_pairs(n, pairs_per_image, seed=seed)
    elif strategy == "stratified":
        if scores is None:
            raise InvalidInputError("strategy 'stratified' needs scores (e.g. the teacher's expected scores)")
        if len(scores) != n:
            raise InvalidInputError(f"got {len(scores)} scores for {n} items")
        idx = stratified_pairs(scores, pairs_per_image, seed=seed, window=window)
    elif strategy == "knn":
        if features is None:
            raise InvalidInputError("strategy 'knn' needs a feature matrix (one row per item)")
        if len(features) != n:
            raise InvalidInputError(f"got {len(features)} feature rows for {n} items")
        idx = knn_pairs(features, pairs_per_image, seed=seed, metric=metric)
    else:
        raise InvalidInputError(f"unknown pair strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return [(items[a], items[b]) for a, b in idx.tolist()]
