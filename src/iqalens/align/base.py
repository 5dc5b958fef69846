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

from iqalens.align.config import COMPONENTS as COMPONENTS  # re-exported

#: The three components a user can choose to train (``--train``), in model order.
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

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Preprocess RGB uint8 images into model inputs (no gradients), as a dict of tensors whose
        first dimension indexes the images.

        The trainer prepares each image once, keeps its slice of every tensor (in memory and in the
        ``--cache`` folder) and re-batches slices with the model's optional ``collate(entries)``
        (for slices of different widths, e.g. padded token rows), else by stacking them.
        ``forward_align`` moves inputs to the model's device.
        """
        ...

    def forward_align(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, class_words: Sequence[str]
    ) -> AlignForward:
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


# -- optional capabilities ------------------------------------------------------------------------
# The trainer and the report use these when a model has them (``hasattr``) and fall back otherwise.


@runtime_checkable
class EncodesFrozen(Protocol):
    """Skip the vision encoder in training steps when it is frozen."""

    def encode_frozen(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs of the (frozen) vision encoder for a prepared batch, no gradients, as tensors with
        a leading image dimension: inputs from which ``forward_align`` runs without the encoder.
        Used only while the encoder is frozen; the trainer caches them like prepared inputs. Without
        it every step runs the encoder."""
        ...


@runtime_checkable
class Collates(Protocol):
    """Prepared slices that need more than ``torch.stack`` to form a batch."""

    def collate(self, entries: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A batch from per-image entries (``prepare(images)[key][i]``), e.g. right-padding token rows."""
        ...


@runtime_checkable
class HasEncoderFeatures(Protocol):
    """The drift measures read the vision encoder alone."""

    def encoder_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D_v] pooled last-layer vision-encoder features (no gradients); the fallback is
        ``forward_align(...).encoder_features``, which also runs the rest of the model."""
        ...

    def encoder_class_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B, K] logits of the encoder's own pretraining classifier (EfficientNet's ImageNet head),
        or None when the encoder has none; its top-1 agreement before vs after training is the
        preservation measure of the mini model."""
        ...


@runtime_checkable
class ChoosesLoraTargets(Protocol):
    """A family whose layers peft cannot adapt as they are."""

    def lora_targets(self, component: str) -> list[str]:
        """Names (inside the component's module) of the layers to adapt with LoRA; may first convert
        them into plain ``nn.Linear`` / ``nn.Conv2d`` layers with the same weights. The fallback is
        :func:`iqalens.align.lora.default_lora_targets`."""
        ...


@runtime_checkable
class MovesToDevice(Protocol):
    def to(self, device: torch.device) -> Any:
        """Move every component to ``device`` (the trainer calls it when present)."""
        ...
