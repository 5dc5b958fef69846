"""Semantic distance: how close are an image's visual tokens to the word for its distortion?

The projector's output is what the language model reads as "words"; if a blurred image's pooled
visual tokens sit nearer the embedding of ``noise`` than of ``blur``, the language model is handed
the wrong concept however well the vision encoder saw the blur. Per class this reports the mean
cosine similarity to the true class word, the margin over the best wrong class word (positive:
the true word is nearest) and the mean rank of the true word (1 = nearest). The numbers are saved
so that a run after fine-tuning can report the relative change per class (:func:`compare`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.taxonomy import CLASSES

#: Per-class quantities :func:`compare` reports; for ``mean_rank`` lower is better.
SEMANTIC_KEYS = ("mean_similarity_true", "mean_margin", "mean_rank", "nearest_accuracy")


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, C] cosine similarities between the rows of ``a`` [N, D] and ``b`` [C, D] (float64)."""
    x = np.asarray(a, dtype=np.float64)
    w = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise InvalidInputError(
            f"visual features {x.shape} and word embeddings {w.shape} must share their width "
            "(the projector maps into the language model's input space)"
        )
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    wn = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    return xn @ wn.T


def semantic_distance(
    visual: np.ndarray, word_embeddings: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """Per-class and overall similarity statistics, plus the [N, C] similarities themselves.

    ``similarity_matrix[c][w]`` is the mean similarity of class-c images to word w, the picture of
    which words each class's tokens sit near. Ranks count ties pessimistically (a wrong word as
    close as the true one ranks ahead of it), so a degenerate constant feature never looks good.
    """
    y = np.asarray(labels, dtype=np.int64)
    sims = cosine_matrix(visual, word_embeddings)
    c = len(class_names)
    if sims.shape != (len(y), c):
        raise InvalidInputError(
            f"need {c} class words and one label per image, got similarities {sims.shape}"
        )
    idx = np.arange(len(y))
    true = sims[idx, y]
    wrong = sims.copy()
    wrong[idx, y] = -np.inf
    best_wrong = wrong.max(axis=1)
    margin = true - best_wrong
    rank = 1 + (wrong >= true[:, None]).sum(axis=1)
    per_class: dict[str, dict[str, Any]] = {}
    matrix: list[list[float | None]] = []
    for k, name in enumerate(class_names):
        m = y == k
        if not m.any():
            per_class[name] = {"n": 0, **{key: None for key in SEMANTIC_KEYS}}
            matrix.append([None] * c)
            continue
        per_class[name] = {
            "n": int(m.sum()),
            "mean_similarity_true": float(true[m].mean()),
            "mean_margin": float(margin[m].mean()),
            "mean_rank": float(rank[m].mean()),
            "nearest_accuracy": float((rank[m] == 1).mean()),
        }
        matrix.append(sims[m].mean(axis=0).tolist())
    return {
        "n": len(y),
        "classes": list(class_names),
        "per_class": per_class,
        "overall": {
            "mean_similarity_true": float(true.mean()),
            "mean_margin": float(margin.mean()),
            "mean_rank": float(rank.mean()),
            "nearest_accuracy": float((rank == 1).mean()),
        },
        "similarity_matrix": matrix,
        "similarities": sims.tolist(),
    }


def _relative(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (after - before) / abs(before)


def compare(before_metrics: Mapping[str, Any], after_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class change of the semantic statistics (and forced-choice recall) between two runs.

    Accepts whole ``metrics.json`` dicts of :func:`iqalens.perception.run.perceive` or just their
    ``semantic`` parts. Each entry holds ``before``, ``after``, ``change`` (after - before) and
    ``relative_change`` ((after - before) / |before|, ``None`` when before is 0 or missing). The
    sign is the raw direction: for ``mean_rank`` a negative change is an improvement.
    """
    sb = before_metrics.get("semantic", before_metrics)
    sa = after_metrics.get("semantic", after_metrics)
    if list(sb.get("classes", [])) != list(sa.get("classes", [])):
        raise InvalidInputError("the two runs use different class lists; they cannot be compared per class")

    def entry(b: float | None, a: float | None) -> dict[str, float | None]:
        return {
            "before": b,
            "after": a,
            "change": None if b is None or a is None else a - b,
            "relative_change": _relative(b, a),
        }

    per_class = {
        name: {
            key: entry(sb["per_class"][name].get(key), sa["per_class"][name].get(key))
            for key in SEMANTIC_KEYS
        }
        for name in sb["classes"]
    }
    fb, fa = before_metrics.get("forced_choice"), after_metrics.get("forced_choice")
    if fb and fa:
        for name in sb["classes"]:
            per_class[name]["forced_choice_recall"] = entry(
                fb["per_class_recall"].get(name), fa["per_class_recall"].get(name)
            )
    overall = {key: entry(sb["overall"][key], sa["overall"][key]) for key in sb["overall"]}
    return {"per_class": per_class, "overall": overall}
