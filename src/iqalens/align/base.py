"""What ``iqalens align`` needs from a model: trainable components and differentiable outputs.

The perception diagnostics only read a model (:class:`iqalens.models.base.ComponentModel`); the
alignment fine-tuning must also *train* parts of it, so a model family that supports ``align``
implements :class:`AlignableModel` as well. The trainer, the objectives and the checkpointing are
written once against this protocol; a family adds an implementation (the mini model in
:mod:`iqalens.align.mini`, Hugging Face multimodal LLMs in :mod:`iqalens.align.hf`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

#: The three components a user can choose to train (``--train``), in model order.
COMPONENTS: tuple[str, ...] = ("vision_encoder", "projector", "language_model")
Component = Literal["vision_encoder", "projector", "language_model"]


@dataclass
class AlignForward:
    """Differentiable outputs of one training batch of B images.

    ``visual``: [B, D_lm] mean of the projected visual tokens (the quantity the semantic-distance
    diagnostic measures, in the language model's input space). ``template_loss``: scalar answer-
    template loss (generative models: next-token cross-entropy of "... {true class}"; the mini model:
    cross-entropy of its forced-choice similarities). ``class_scores``: [B, C] forced-choice scores
    (for validation accuracy; may be detached). ``encoder_features``: [B, D_v] pooled output of the
    vision encoder's last layer (the feature-distillation constraint compares it with the frozen
    original's).
    """

    visual: torch.Tensor
    template_loss: torch.Tensor
    class_scores: torch.Tensor
    encoder_features: torch.Tensor


@runtime_checkable
class AlignableModel(Protocol):
    """A model whose components can be fine-tuned by :func:`iqalens.align.train.align`."""

    model_id: str

    def components(self) -> dict[str, nn.Module]:
        """The modules of ``vision_encoder``, ``projector`` and ``language_model`` (by those names)."""
        ...

    def prepare(self, images: Sequence[np.ndarray]) -> Any:
        """Preprocess RGB uint8 images into model inputs (no gradients; done once per batch)."""
        ...

    def forward_align(self, inputs: Any, labels: torch.Tensor, class_words: Sequence[str]) -> AlignForward:
        """One differentiable forward pass of a prepared batch with its class-index labels."""
        ...

    def class_word_embeddings(self, class_words: Sequence[str]) -> torch.Tensor:
        """[C, D_lm] input-space embeddings of the class words (sub-word pieces averaged);
        differentiable when the language model's embedding table trains."""
        ...

    def save_checkpoint(
        self, folder: str | os.PathLike[str], trained: Sequence[str], info: dict[str, Any]
    ) -> Path:
        """Write a checkpoint of the trained components that ``iqalens.models.loading.load_model``
        accepts; ``info`` (base model, alignment config, ...) goes into its config file."""
        ...
