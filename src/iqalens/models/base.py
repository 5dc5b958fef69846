"""The one interface the perception diagnostics use for every model family.

A vision-language model is seen as three components: the **vision encoder** (with its layers), the
**projector** (whose output is the visual tokens exactly as the language model receives them) and
the **language model** (with its layers, its input word-embedding table and its tokenizer). Dual
encoders (CLIP, SigLIP) fit the same mould: the projector is the visual projection and the
"language model" is the text tower. The diagnostics only talk to this interface, so a new family
needs an adapter, not new diagnostics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

ModelKind = Literal["generative", "dual_encoder", "mini"]


@dataclass
class ComponentFeatures:
    """Features of a batch of N images at every site of the model, pooled per image (float32 numpy).

    ``vision_layers[l]``: [N, D_v] mean over the patch tokens of vision-encoder layer l (embeddings
    first, last layer last). ``projector``: [N, D_lm] mean of the projected visual tokens.
    ``lm_layers[l]``: [N, D_lm] mean of language-model layer l's hidden states at the visual-token
    positions (empty for dual encoders, whose text tower never sees the image).
    ``site_names`` names every site in order: ``vision.0`` .. ``vision.K``, ``projector``,
    ``lm.0`` .. ``lm.M``.
    """

    vision_layers: list[np.ndarray]
    projector: np.ndarray
    lm_layers: list[np.ndarray] = field(default_factory=list)

    @property
    def site_names(self) -> list[str]:
        return (
            [f"vision.{i}" for i in range(len(self.vision_layers))]
            + ["projector"]
            + [f"lm.{i}" for i in range(len(self.lm_layers))]
        )

    def sites(self) -> list[np.ndarray]:
        """Feature matrices in the order of :attr:`site_names`."""
        return [*self.vision_layers, self.projector, *self.lm_layers]


@runtime_checkable
class ComponentModel(Protocol):
    """What an adapter offers the diagnostics."""

    model_id: str
    kind: ModelKind

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        """Per-site pooled features of RGB uint8 images (one forward pass per batch, via hooks)."""
        ...

    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """[len(words), D_lm] input-space embeddings of ``words`` (sub-word pieces averaged)."""
        ...

    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        """[N, C] forced-choice scores: for generative models the log-probability of each class word
        (full sequence for multi-token words) after the answer template; for dual encoders and the
        mini model the cosine similarity to each class text embedding."""
        ...
