"""Answer consistency under repeated sampling: does the model give the same answer every time?

A model that names the right class by the argmax of its scores but would say something else one
time in three at a normal sampling temperature does not reliably *perceive* the distortion. Each
image is answered K times; its consistency is the share of the K answers that agree with their
modal (most frequent) answer (1/K .. 1), and the modal answer's accuracy says whether the answer
the model gives most often is right.

Two ways to get the K answers:

- **generation** (generative models, ``perceive --generate``): K sampled free generations, parsed
  into classes (:mod:`iqalens.perception.answers`); an unparsed answer is an answer of its own
  (:data:`~iqalens.perception.answers.UNPARSED`), so a model that rambles is not consistent.
- **score sampling** (every model, always; the only way for the mini model and dual encoders,
  which do not generate text): K draws from softmax(class_scores / T). For a generative model with
  single-token class words this is exactly temperature sampling of the answer word restricted to
  the 8 class words. For the mini model and dual encoders the scores are cosine similarities in
  [-1, 1], so at T = 0.7 the distribution is nearly uniform and consistency is low by
  construction: it measures how peaked the similarities are at that temperature, on a scale that
  is not comparable with a generative model's. Reported, labelled with its method, never mixed.

The modal answer of a tie is the first in canonical class order (unparsed last): deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.perception.answers import UNPARSED
from iqalens.taxonomy import CLASSES

__all__ = ["answer_consistency", "sample_from_scores"]

NOTE_SCORE_SAMPLING = (
    "answers drawn from softmax(class_scores / temperature) with a seeded generator (the model does not "
    "generate text, or --generate was not given); for cosine-similarity scores (mini, dual encoders) this "
    "measures how peaked the similarities are, not comparable with sampled generation"
)
NOTE_GENERATION = "answers from K sampled free generations (pure temperature sampling), parsed into classes"


def sample_from_scores(scores: np.ndarray, samples: int, temperature: float, seed: int) -> np.ndarray:
    """[N, K] class indices drawn from softmax(scores / temperature) per row (seeded, float64)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or samples < 1 or not temperature > 0:
        raise InvalidInputError(
            f"need [N, C] scores, samples >= 1, temperature > 0; got {s.shape}, {samples}, {temperature}"
        )
    z = s / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    u = np.random.default_rng(seed).random((len(s), samples))
    draws = (u[:, :, None] >= cdf[:, None, :-1]).sum(axis=2)  # inverse CDF; last bin catches round-off
    return draws.astype(np.int64)


def answer_consistency(
    answers: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] = CLASSES,
) -> dict[str, Any]:
    """Consistency statistics of [N, K] answer indices (``len(class_names)`` = unparsed).

    Returns ``mean_consistency`` (mean over images of the modal answer's share of the K runs),
    ``all_agree_rate`` (share of images whose K answers are identical), ``modal_accuracy`` and
    ``modal_balanced_accuracy`` (of the modal answers), ``parse_rate`` (share of all answers that
    name a class), the same per class (``per_class``: n, mean_consistency, modal_accuracy), and per
    image ``modal`` and ``consistency`` lists (for the run folder's CSV).
    """
    a = np.asarray(answers, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    if a.ndim != 2 or a.shape[0] != len(y) or a.shape[1] < 1 or len(y) == 0:
        raise InvalidInputError(f"need [N, K] answers for N = {len(y)} > 0 labels, got {a.shape}")
    if a.min() < 0 or a.max() > c:
        raise InvalidInputError(f"answers must be class indices in [0, {c}] ({c} = {UNPARSED})")
    counts = np.zeros((len(a), c + 1), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(a)), a.shape[1]), a.ravel()), 1)
    modal = counts.argmax(axis=1)  # ties -> lowest index: canonical order, unparsed last
    share = counts.max(axis=1) / a.shape[1]
    correct = modal == y
    per_class: dict[str, dict[str, Any]] = {}
    recalls = []
    for k, name in enumerate(class_names):
        m = y == k
        if not m.any():
            per_class[name] = {"n": 0, "mean_consistency": None, "modal_accuracy": None}
            continue
        per_class[name] = {
            "n": int(m.sum()),
            "mean_consistency": float(share[m].mean()),
            "modal_accuracy": float(correct[m].mean()),
        }
        recalls.append(float(correct[m].mean()))
    return {
        "n": len(y),
        "samples": int(a.shape[1]),
        "mean_consistency": float(share.mean()),
        "all_agree_rate": float((share == 1.0).mean()),
        "modal_accuracy": float(correct.mean()),
        "modal_balanced_accuracy": float(np.mean(recalls)),
        "parse_rate": float((a < c).mean()),
        "per_class": per_class,
        "modal": [UNPARSED if k == c else class_names[k] for k in modal.tolist()],
        "consistency": share.tolist(),
    }
