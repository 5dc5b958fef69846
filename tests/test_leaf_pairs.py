"""Pair sampling: budget, determinism, no self or duplicate pairs, fair orientation, and the right pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from iqalens.leaf.pairs import (
    STRATEGIES,
    knn_pairs,
    pairs_from_neighbours,
    random_pairs,
    sample_pairs,
    stratified_pairs,
)

N, K = 400, 3
RNG = np.random.default_rng(123)
SCORES = RNG.random(N)
# Five well separated clusters in 8-D, so nearest neighbours are far nearer than random partners.
FEATURES = RNG.normal(size=(5, 8))[np.arange(N) % 5] * 4 + RNG.normal(size=(N, 8))


def _run(strategy: str, k: int = K, seed: int = 0, n: int = N) -> np.ndarray:
    if strategy == "random":
        return random_pairs(n, k, seed=seed)
    if strategy == "stratified":
        return stratified_pairs(SCORES[:n], k, seed=seed)
    return knn_pairs(FEATURES[:n], k, seed=seed)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_structural_guarantees(strategy: str) -> None:
    pairs = _run(strategy)
    assert pairs.ndim == 2 and pairs.shape[1] == 2 and pairs.dtype == np.int64
    assert pairs.min() >= 0 and pairs.max() < N
    assert not np.any(pairs[:, 0] == pairs[:, 1])  # no self-pairs
    unordered = {(min(a, b), max(a, b)) for a, b in pairs.tolist()}
    assert len(unordered) == len(pairs)  # no pair twice, in either orientation
    degree = np.bincount(pairs.ravel(), minlength=N)
    assert degree.min() >= K  # every image proposed K partners
    assert N * K / 2 <= len(pairs) <= N * K


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_per_seed(strategy: str) -> None:
    np.testing.assert_array_equal(_run(strategy, seed=7), _run(strategy, seed=7))
    assert not np.array_equal(_run(strategy, seed=7), _run(strategy, seed=8))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_orientation_is_a_fair_coin(strategy: str) -> None:
    pairs = _run(strategy, k=5)
    first_lower = np.mean(pairs[:, 0] < pairs[:, 1])
    # ~1000-2000 pairs: a fair coin lands within 0.5 +- 0.06 with probability > 0.999
    assert 0.44 < first_lower < 0.56
    if strategy == "stratified":  # nor is the better-scored image systematically first
        assert 0.44 < np.mean(SCORES[pairs[:, 0]] > SCORES[pairs[:, 1]]) < 0.56


def test_random_partners_are_spread_over_all_images() -> None:
    pairs = random_pairs(N, K, seed=1)
    partners_of_0 = Counter(b if a == 0 else a for a, b in pairs.tolist() if 0 in (a, b))
    assert len(partners_of_0) >= K
    spread = np.abs(np.subtract(*pairs.T))
    assert spread.mean() > N / 4  # a uniform partner is on average ~N/3 away in index


def test_stratified_pairs_are_closer_in_score_than_random_ones() -> None:
    strat = stratified_pairs(SCORES, K, seed=0)
    rand = random_pairs(N, K, seed=0)
    gap_strat = np.abs(SCORES[strat[:, 0]] - SCORES[strat[:, 1]]).mean()
    gap_rand = np.abs(SCORES[rand[:, 0]] - SCORES[rand[:, 1]]).mean()
    assert gap_strat < gap_rand / 10  # uniform scores: ~1/3 vs a few ranks apart out of 400


def test_stratified_window_bounds_the_rank_distance() -> None:
    window = 4
    pairs = stratified_pairs(SCORES, 2, seed=3, window=window)
    rank = np.empty(N, dtype=int)
    rank[np.argsort(SCORES)] = np.arange(N)
    assert np.abs(rank[pairs[:, 0]] - rank[pairs[:, 1]]).max() <= 2 * window  # edges shift inwards
    interior = (np.minimum(rank[pairs[:, 0]], rank[pairs[:, 1]]) >= window) & (
        np.maximum(rank[pairs[:, 0]], rank[pairs[:, 1]]) < N - window
    )
    assert np.abs(rank[pairs[interior, 0]] - rank[pairs[interior, 1]]).max() <= window
    with pytest.raises(ValueError, match="fewer than pairs_per_image"):
        stratified_pairs(SCORES, 5, window=2)


def test_stratified_ties_do_not_follow_input_order() -> None:
    pairs = stratified_pairs(np.zeros(200), 1, seed=0)  # all tied: pairs should be random, not i, i+1
    assert np.abs(np.subtract(*pairs.T)).mean() > 20


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_pairs_are_nearer_in_feature_space_than_random_ones(metric: str) -> None:
    knn = knn_pairs(FEATURES, K, seed=0, metric=metric)
    rand = random_pairs(N, K, seed=0)

    def dist(p: np.ndarray) -> float:
        return float(np.linalg.norm(FEATURES[p[:, 0]] - FEATURES[p[:, 1]], axis=1).mean())

    assert dist(knn) < 0.5 * dist(rand)
    same_cluster = np.mean(knn[:, 0] % 5 == knn[:, 1] % 5)
    assert same_cluster > 0.95


def test_knn_matches_brute_force_neighbours() -> None:
    x = RNG.normal(size=(60, 4))
    pairs = knn_pairs(x, 2, metric="euclidean")
    got = {(min(a, b), max(a, b)) for a, b in pairs.tolist()}
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    want = {(min(i, j), max(i, j)) for i in range(60) for j in np.argsort(d[i])[:2].tolist()}
    assert got == want


def test_knn_cosine_ignores_scale_and_handles_duplicates_and_zero_rows() -> None:
    x = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 1.0], [0.1, 2.0], [0.0, 0.0], [1.0, 0.0]])
    pairs = knn_pairs(x, 1, metric="cosine")
    got = {(min(a, b), max(a, b)) for a, b in pairs.tolist()}
    assert (0, 5) in got and (2, 3) in got  # same direction, whatever the length; no self-pair for 0 and 5
    assert not np.any(pairs[:, 0] == pairs[:, 1])


def test_budget_at_or_above_n_minus_1_gives_all_pairs_once() -> None:
    for strategy in STRATEGIES:
        pairs = _run(strategy, k=10, n=6)
        assert {(min(a, b), max(a, b)) for a, b in pairs.tolist()} == {
            (i, j) for i in range(6) for j in range(i + 1, 6)
        }
        assert len(pairs) == 15


def test_sample_pairs_maps_items_and_checks_inputs() -> None:
    items = [f"h{i:03d}" for i in range(N)]
    pairs = sample_pairs(items, "stratified", K, scores=SCORES, seed=2)
    idx = stratified_pairs(SCORES, K, seed=2)
    assert pairs == [(items[a], items[b]) for a, b in idx.tolist()]
    assert sample_pairs(items, "knn", K, features=FEATURES) == [
        (items[a], items[b]) for a, b in knn_pairs(FEATURES, K).tolist()
    ]
    with pytest.raises(ValueError, match="needs scores"):
        sample_pairs(items, "stratified", K)
    with pytest.raises(ValueError, match="feature matrix"):
        sample_pairs(items, "knn", K)
    with pytest.raises(ValueError, match="3 scores for 400"):
        sample_pairs(items, "stratified", K, scores=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="duplicates"):
        sample_pairs(["a", "b", "a"], "random", 1)
    with pytest.raises(ValueError, match="unknown pair strategy"):
        sample_pairs(items, "hardest", K)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2"):
        random_pairs(1, 1)
    with pytest.raises(ValueError, match=">= 1"):
        random_pairs(10, 0)
    with pytest.raises(ValueError, match="NaN"):
        stratified_pairs([0.1, float("nan"), 0.3], 1)
    with pytest.raises(ValueError, match="NaN"):
        knn_pairs(np.array([[0.0, np.inf], [1.0, 1.0]]), 1)


def test_pairs_from_neighbours_merges_both_directions_and_refuses_self() -> None:
    nb = np.array([[1], [0], [0]])
    pairs = pairs_from_neighbours(nb, seed=0)
    assert {(min(a, b), max(a, b)) for a, b in pairs.tolist()} == {(0, 1), (0, 2)}
    with pytest.raises(ValueError, match="own neighbour"):
        pairs_from_neighbours(np.array([[1], [1]]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        pairs_from_neighbours(np.array([[1], [2]]))
