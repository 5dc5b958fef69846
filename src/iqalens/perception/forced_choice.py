"""Forced choice: does the model name the distortion when it must pick one of the 8 classes?

The model's answer is the class with the highest score (log-probability of the class word for
generative models, similarity to the class text for dual encoders and the mini model). Accuracy
alone flatters a model that always answers the most frequent class, so balanced accuracy (mean
per-class recall over the classes present) and the confusion matrix are reported with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.taxonomy import CLASSES


def forced_choice(
    scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = CLASSES
) -> dict[str, Any]:
    """Metrics of closed-set answers: ``scores`` [N, C], ``labels`` [N] class indices.

    Returns accuracy, balanced accuracy, per-class recall (``None`` for a class with no image: its
    recall is undefined, not zero), per-class support, the distribution of answers, and the
    confusion matrix with rows = true class and columns = answered class. Ties go to the first
    class in canonical order (``argmax``), so results never depend on chance.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    if s.ndim != 2 or s.shape != (len(y), c):
        raise InvalidInputError(f"scores must be [N, {c}] with N = {len(y)} labels, got {s.shape}")
    if len(y) == 0:
        raise InvalidInputError("forced choice needs at least one image")
    if y.min() < 0 or y.max() >= c:
        raise InvalidInputError(f"labels must be class indices in [0, {c})")
    if not np.isfinite(s).all():
        raise InvalidInputError("scores contain NaN or infinite values")
    pred = s.argmax(axis=1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    recall: dict[str, float | None] = {
        name: (float(confusion[k, k] / support[k]) if support[k] else None)
        for k, name in enumerate(class_names)
    }
    present = [r for r in recall.values() if r is not None]
    return {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.mean(present)),
        "chance": 1.0 / c,  # a uniform guess, for accuracy and balanced accuracy alike
        "per_class_recall": recall,
        "support": {name: int(support[k]) for k, name in enumerate(class_names)},
        "answer_counts": {name: int(confusion[:, k].sum()) for k, name in enumerate(class_names)},
        "classes": list(class_names),
        "confusion": confusion.tolist(),
        "predictions": pred.tolist(),
    }
