"""The mini model (:class:`~iqalens.models.mini.MiniVLM`) behind the :class:`AlignableModel` protocol.

A thin wrapper: the three components are the MiniVLM's ``encoder`` (EfficientNet-Lite0),
``projector`` (MLP) and ``lm`` (MiniLM-L6). Its answer template is the forced choice the diagnostics
score: the class word whose MiniLM sentence embedding is nearest the image sentence embedding, so the
template loss is the cross-entropy of those cosine similarities over a temperature.

Prepared inputs are the resized centre crops as uint8 (``pixels``), a quarter of the float tensor's
size, normalised exactly as :meth:`MiniVLM.preprocess` does. With the encoder frozen they are
replaced by the encoder's outputs (``cells``: the head map pooled to the projector's grid, with the
maps of the projector's taps appended when it has any, and the pooled head ``encoder_features``), so
training steps start at the projector.

The whole model stays in eval mode while training: BatchNorm keeps its pretrained statistics and no
dropout is drawn, so a step is a deterministic function of the weights and the batch (exact resume,
and several processes compute the same gradient as one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqalens.align.base import COMPONENTS, AlignForward
from iqalens.align.objectives import similarity_cross_entropy
from iqalens.errors import InvalidInputError
from iqalens.models.efficientnet import LITE_MEAN, LITE_STD
from iqalens.models.mini import MiniVLM
from iqalens.models.preprocess import crop_boxes, normalise
from iqalens.models.preprocess import resize_shorter as _resize_shorter


class MiniAlignable:
    """:class:`~iqalens.align.base.AlignableModel` for a :class:`MiniVLM` (trained in place)."""

    def __init__(self, model: MiniVLM, temperature: float = 0.05) -> None:
        self.model = model
        self.temperature = temperature
        self._text_memo: tuple[tuple[str, ...], torch.Tensor] | None = None

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def device(self) -> torch.device:
        return next(self.model.projector.parameters()).device

    def to(self, device: torch.device) -> MiniAlignable:
        self.model.to(device)
        self._text_memo = None
        return self

    @property
    def projector_taps(self) -> tuple[int, ...]:
        """Earlier vision sites the projector reads besides the head (:meth:`MiniVLM.add_projector_taps`)."""
        return tuple(self.model.config.projector_taps)

    @property
    def projector_tap_pool(self) -> str:
        """How the projector summarises each tapped map ("cells" or "stats")."""
        return self.model.config.projector_tap_pool

    def projector_first_layer(self) -> tuple[nn.Linear, int]:
        """The projector's first layer and how many of its input columns read the head (the first
        ones; the taps' follow)."""
        first = self.model.projector[0]
        assert isinstance(first, nn.Linear)
        return first, self.model.site_channels(self.model.vision_sites - 1)

    def projector_head_columns(self) -> tuple[torch.Tensor, int]:
        """The projector's first weight and its head column count: what ``projector_head_frozen``
        keeps as it is."""
        first, head = self.projector_first_layer()
        return first.weight, head

    @torch.no_grad()
    def projector_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, k, D_in]: what the projector reads per cell, head then taps
        (``projector_tap_standardise`` measures the taps on it)."""
        inputs = {k: v.to(self.device) if k != "pixels" else v for k, v in inputs.items()}
        return self._encode(inputs)[0]

    def components(self) -> dict[str, nn.Module]:
        return {name: self.model.component(name) for name in COMPONENTS}

    # -- inputs -----------------------------------------------------------------------------------

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Resized centre crops [N, S, S, 3] uint8, as :meth:`MiniVLM.preprocess` crops them."""
        s, shorter = self.model.config.image_size, self.model.config.resize_shorter
        crops = []
        for im in images:
            r = _resize_shorter(np.asarray(im), shorter)
            top, left = crop_boxes(r.shape[0], r.shape[1], s)[0]
            crops.append(np.ascontiguousarray(r[top : top + s, left : left + s]))
        return {"pixels": torch.from_numpy(np.stack(crops))}

    def _pixels(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = normalise(inputs["pixels"].cpu().numpy(), LITE_MEAN, LITE_STD)
        return x.to(self.device)

    @torch.no_grad()
    def encode_trunk(self, inputs: dict[str, torch.Tensor], sites: int) -> dict[str, torch.Tensor]:
        """The cached input of a run that trains the encoder after its first ``sites`` sites."""
        trunk = self.model.encode_trunk(self._pixels(inputs), sites)
        n = len(trunk)
        return {"trunk": trunk.float().cpu(), "trunk_sites": torch.full((n,), sites, dtype=torch.long)}

    def encoder_prefix(self, sites: int) -> list[nn.Module]:
        """The encoder modules a run with ``encoder_frozen_sites=sites`` keeps frozen."""
        return self.model.encoder_prefix(sites)

    def _encode(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid cells [B, k, D_v], pooled head [B, D_v]) from pixels, from a cached encoder trunk
        (the rest of the encoder runs), or from cached encoder outputs."""
        if "trunk" in inputs:
            sites = int(inputs["trunk_sites"].reshape(-1)[0])
            trunk = inputs["trunk"].to(self.device)
            _, head, cells = self.model.encode_cells(trunk, sites)
            return cells, head.mean(dim=(2, 3))
        if "cells" in inputs:
            if any(p.requires_grad for p in self.model.encoder.parameters()):
                raise RuntimeError("cached encoder outputs were passed while the vision encoder trains")
            return inputs["cells"], inputs["encoder_features"]
        _, head, cells = self.model.encode_cells(self._pixels(inputs))
        return cells, head.mean(dim=(2, 3))

    @torch.no_grad()
    def encode_frozen(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cells, pooled = self._encode({"pixels": inputs["pixels"]})
        return {"cells": cells.float().cpu(), "encoder_features": pooled.float().cpu()}

    @torch.no_grad()
    def encoder_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._encode(inputs)[1]

    @torch.no_grad()
    def encoder_class_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """EfficientNet-Lite0's ImageNet-1k logits (its classifier reads the pooled head)."""
        return self.encoder_classifier(self._encode(inputs)[1])

    def encoder_classifier(self, pooled: torch.Tensor) -> torch.Tensor:
        """The ImageNet classifier on pooled head features [B, D] (gradients flow to the features;
        the classifier itself is never trained): what the "logits" drift constraint reads."""
        fc = self.model.encoder._fc  # detached: a trainable classifier could flatten itself to cheat
        return nn.functional.linear(pooled, fc.weight.detach(), fc.bias.detach())

    # -- training ---------------------------------------------------------------------------------

    def _text_embeddings(self, class_words: Sequence[str]) -> torch.Tensor:
        """Class-word sentence embeddings; recomputed (with gradients) only while MiniLM trains."""
        words = tuple(class_words)
        if any(p.requires_grad for p in self.model.lm.parameters()):
            self._text_memo = None
            return self.model.text_sentence_embedding(words)
        if self._text_memo is None or self._text_memo[0] != words:
            with torch.no_grad():
                self._text_memo = (words, self.model.text_sentence_embedding(words))
        return self._text_memo[1]

    def forward_align(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, class_words: Sequence[str]
    ) -> AlignForward:
        inputs = {k: v.to(self.device) if k != "pixels" else v for k, v in inputs.items()}
        cells, pooled = self._encode(inputs)
        tokens = self.model.projector(cells)
        hidden = self.model.language_model(tokens)
        image = self.model.image_sentence_embedding(hidden[-1])
        scores = image @ self._text_embeddings(class_words).T.to(image.dtype)
        return AlignForward(
            visual=tokens.mean(dim=1),
            template_loss=similarity_cross_entropy(scores.float(), labels.to(self.device), self.temperature),
            class_scores=scores.detach().float(),
            encoder_features=pooled,
        )

    def class_word_embeddings(self, class_words: Sequence[str]) -> torch.Tensor:
        """Mean WordPiece input embeddings per word (as :meth:`MiniVLM.word_embeddings`), differentiable."""
        table = self.model.lm.get_input_embeddings().weight
        rows = []
        for word in class_words:
            ids = self.model.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids:
                raise InvalidInputError(f"word {word!r} tokenizes to nothing")
            rows.append(table[torch.tensor(ids, device=table.device)].mean(dim=0))
        return torch.stack(rows)

    def lora_targets(self, component: str) -> list[str]:
        """Linear layers (MiniLM: its transformer layers, not the unused pooler) and EfficientNet's
        1x1 convolutions (expand, project, head; its ImageNet classifier is not on the VLM's path).

        EfficientNet's convolutions carry their own "same" padding; a 1x1 stride-1 one needs none, so
        it is swapped for a plain ``nn.Conv2d`` sharing its weights (identical output) that peft can wrap.
        """
        module = self.model.component(component)
        if component == "language_model":
            return [
                n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.startswith("encoder.")
            ]
        if component == "projector":
            return [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
        names = []
        for name, conv in list(module.named_modules()):
            if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.kernel_size != (1, 1):
                continue
            if conv.stride != (1, 1) or conv.dilation != (1, 1):
                continue
            if type(conv) is not nn.Conv2d:
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
                plain.weight = conv.weight
                if conv.bias is not None:
                    plain.bias = conv.bias
                parent, _, child = name.rpartition(".")
                setattr(module.get_submodule(parent) if parent else module, child, plain)
            names.append(name)
        return names

    # -- checkpoint -------------------------------------------------------------------------------

    def save_checkpoint(
        self, folder: str | os.PathLike[str], trained: Sequence[str], info: dict[str, Any]
    ) -> Path:
        """A plain mini checkpoint: projector plus every trained component; ``info`` -> ``mini.json``."""
        stored = ["projector", *[c for c in COMPONENTS if c in trained and c != "projector"]]
        if info.get("model_id"):
            self.model.model_id = str(info["model_id"])
        self.model.align_info = dict(info)
        return self.model.save(folder, components=stored, align_info=info)


def save_mini_at_resolution(
    folder: str | os.PathLike[str], resize_shorter: int, image_size: int | None = None
) -> Path:
    """The pre-aligned mini model, saved to read images resized to ``resize_shorter`` (spec: the folder).

    Why: the default model resizes the shorter side to 224 before its 224-px centre crop, which on a
    512x384 benchmark image shrinks noise and compression artefacts by 0.58x; at 384 (the
    benchmark's native height) the crop keeps them at full strength. ``image_size`` (default: the
    model's 224) widens the centre crop: at 384 the encoder sees the whole height of a 512x384 image
    instead of a quarter of its area, at about 3x the encoder's cost (docs/p1_reproduction.md,
    session 16: probes and validation accuracy rise, test forced choice does not). Only the
    preprocessing changes (every weight is the default model's; the convolutional encoder and the grid
    pooling take any crop size), so this is the same model read at another scale. An existing
    checkpoint in ``folder`` is reused if it reads images the same way (else an InvalidInputError).
    """
    from dataclasses import replace

    from iqalens.models.mini import MiniConfig, load_default_mini

    out = Path(folder)
    default_crop = MiniConfig().image_size  # the pre-aligned model's crop
    crop = default_crop if image_size is None else image_size
    if (out / "mini.json").is_file():
        saved = json.loads((out / "mini.json").read_text()).get("config", {})
        found = (saved.get("resize_shorter"), saved.get("image_size"))
        if found != (resize_shorter, crop):
            raise InvalidInputError(
                f"{out} holds the mini model read at shorter side {found[0]}, crop {found[1]}; "
                f"asked for {resize_shorter}, {crop}: use another folder"
            )
        return out
    model = load_default_mini()
    # MiniConfig refuses a crop larger than the resized image
    model.config = replace(model.config, resize_shorter=resize_shorter, image_size=crop)
    crop_id = "" if crop == default_crop else f"c{crop}"
    model.model_id = f"{model.model_id}@{resize_shorter}{crop_id}"
    return model.save(out)
