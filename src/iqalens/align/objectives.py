"""The loss terms of ``iqalens align``, as plain functions of tensors (hand-checkable, model-free).

- **Template** (:func:`similarity_cross_entropy`): the answer the model gives. For the mini model
  the forced-choice answer is the class word whose sentence embedding is most similar to the image's,
  so the template loss is the cross-entropy of ``cos(image, word_c) / T`` over the class words.
  (Generative models compute their own next-token loss of "... {class}" in ``forward_align``.)
- **Alignment** (:func:`info_nce`): InfoNCE over the classes between the *pooled projected visual
  tokens* and the class words' *input embeddings*: exactly the two quantities the semantic-distance
  diagnostic compares, so this term moves the visual tokens towards the word of their distortion.
- **Drift constraints**, which keep the vision encoder useful for everything else it was trained for:
  :func:`feature_drift` (feature distillation to the frozen original encoder on the same images),
  :func:`logit_drift` (the same, read through the encoder's own classifier: KL of its class
  distribution) and :func:`weight_drift` (L2-SP: squared distance to the original weights).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from iqalens.errors import InvalidInputError


def similarity_cross_entropy(
    similarities: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean cross-entropy of ``softmax(similarities / T)`` [B, C] against class indices [B]."""
    return nn.functional.cross_entropy(similarities / temperature, labels)


def info_nce(
    visual: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE of visual features [B, D] against C class embeddings [C, D] (cosine / T, true class positive).

    ``-mean_i log( exp(cos(v_i, w_{y_i}) / T) / sum_c exp(cos(v_i, w_c) / T) )``; gradients reach the
    class embeddings too (when the language model's embedding table trains).
    """
    v = nn.functional.normalize(visual.float(), dim=-1)
    w = nn.functional.normalize(class_embeddings.float(), dim=-1)
    return nn.functional.cross_entropy(v @ w.T / temperature, labels)


def feature_drift(features: torch.Tensor, reference: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Relative squared distance ``sum_i ||f_i - r_i||^2 / sum_i ||r_i||^2`` of features [B, D] to the
    original encoder's on the same images: 0 when unchanged, 1 when the features collapse to zero.
    Scale-free, so one weight means the same for encoders of any width."""
    f, r = features.float(), reference.float()
    return (f - r).pow(2).sum() / r.pow(2).sum().clamp(min=eps)


def logit_drift(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(softmax(reference) || softmax(logits))`` over a batch of classifier logits [B, K]:
    0 when the class distribution is unchanged. Why next to :func:`feature_drift`: what a user keeps
    is the encoder's *predictions*, and a feature change the classifier ignores costs nothing here
    (the mini model lost 17% of its ImageNet top-1 answers at feature cosine 0.987)."""
    ref = nn.functional.log_softmax(reference.float(), dim=-1)
    cur = nn.functional.log_softmax(logits.float(), dim=-1)
    return (ref.exp() * (ref - cur)).sum(dim=-1).mean()


def weight_drift(current: Iterable[torch.Tensor], original: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2-SP: ``sum_k ||theta_k - theta0_k||^2`` over paired tensors (0 when unchanged)."""
    total: torch.Tensor | None = None
    for cur, orig in zip(current, original, strict=True):
        term = (cur.float() - orig.to(cur.device).float()).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise InvalidInputError("weight_drift needs at least one tensor")
    return total


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose highest score is the true class."""
    if len(labels) == 0:
        return float("nan")
    return float((scores.argmax(dim=-1) == labels).float().mean().item())
