"""CLIP and SigLIP as component models: vision tower, visual projection, text tower.

A dual encoder has no language model that reads the image, so its three components map as follows
(see :mod:`iqalens.models.base`):

- ``vision_layers``: the vision transformer's hidden states (embeddings first, then every layer),
  each averaged over the *patch* tokens. CLIP's class token is left out of the mean, because it is a
  summary slot rather than a patch; SigLIP has no class token.
- ``projector``: the image embedding exactly as the model compares it with text - CLIP's
  ``visual_projection`` of the pooled class token, SigLIP's attention-pooling head output - before
  L2 normalisation, so its norm stays visible to probes.
- ``lm_layers``: empty; the text tower never sees the image.

``word_embeddings`` reads the text tower's input token-embedding table (a word split into several
pieces gets the mean of its pieces), which is the dual-encoder analogue of an LLM's input space.
``class_log_scores`` is zero-shot classification: the cosine similarity between the image embedding
and the text embedding of ``prompt.format(word)`` for each class word. That is the model's own
``logits_per_image`` without its learned temperature (and, for SigLIP, without its bias), so ranking
by it is exactly the model's zero-shot ranking.

Loading goes through :func:`iqalens.models.hf_loading.load_processor`, so the same local folders or
hub ids (never downloaded here unless the user's cache or network allows) work as for the teachers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqalens.errors import InvalidInputError
from iqalens.models.base import ComponentFeatures, ModelKind

__all__ = ["DEFAULT_PROMPT", "DualEncoderAdapter"]

#: Text each class word is wrapped in before encoding (zero-shot prompt).
DEFAULT_PROMPT = "a photo with {}"

_FAMILIES = ("clip", "siglip")


class DualEncoderAdapter:
    """A CLIP or SigLIP checkpoint (local folder or hub id) behind the :class:`ComponentModel` interface.

    ``prompt`` is the zero-shot template (``{}`` is replaced by the class word); ``batch_size`` bounds
    how many images go through the vision tower at once; ``hub_kwargs`` are passed to
    ``from_pretrained`` (e.g. ``local_files_only=True``).
    """

    kind: ModelKind = "dual_encoder"

    def __init__(
        self,
        path_or_id: str | Path,
        *,
        prompt: str = DEFAULT_PROMPT,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **hub_kwargs: Any,
    ) -> None:
        from transformers import AutoConfig, AutoModel

        from iqalens.models.hf_loading import load_processor

        name = str(path_or_id)
        config = AutoConfig.from_pretrained(name, **hub_kwargs)
        if config.model_type not in _FAMILIES:
            raise InvalidInputError(
                f"{name}: model_type {config.model_type!r} is not a dual encoder; supported: {_FAMILIES}"
            )
        if "{}" not in prompt:
            raise InvalidInputError(f"prompt must contain '{{}}' where the class word goes, got {prompt!r}")
        self.model_id = name
        self.family: str = config.model_type
        self.prompt = prompt
        #: Keys the feature cache besides the weights: the zero-shot template the class scores use.
        self.extraction_settings = {"prompt": prompt}
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(name, dtype=dtype, **hub_kwargs).to(self.device).eval()
        self.processor = load_processor(name, **hub_kwargs)
        self.tokenizer = self.processor.tokenizer

    # -- internals ------------------------------------------------------------------------------

    def _pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB") for im in images]
        batch = self.processor.image_processor(images=pil, return_tensors="pt")
        return batch["pixel_values"].to(self.device, dtype=self.model.dtype)

    def _vision(self, images: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden states of every vision layer and the (unnormalised) image embedding."""
        out = self.model.vision_model(pixel_values=self._pixel_values(images), output_hidden_states=True)
        pooled = out.pooler_output
        embeds = self.model.visual_projection(pooled) if self.family == "clip" else pooled
        return list(out.hidden_states), embeds

    def _patch_mean(self, hidden: torch.Tensor) -> torch.Tensor:
        # CLIP prepends a class token; averaging it with the patches would mix a summary slot in.
        return hidden[:, 1:].mean(dim=1) if self.family == "clip" else hidden.mean(dim=1)

    def _text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings as the model compares them with images."""
        if self.family == "siglip":
            # SigLIP was trained on max-length padded text; its pooled token is the last position.
            length = int(self.model.config.text_config.max_position_embeddings)
            enc = self.tokenizer(
                list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            )
            # Real SigLIP tokenizers return no attention mask (the model attends to the padding, as
            # in training); pass one only where the tokenizer makes one, as the processor would.
            mask = enc.get("attention_mask")
            out = self.model.text_model(
                input_ids=enc["input_ids"].to(self.device),
                attention_mask=None if mask is None else mask.to(self.device),
            )
            return out.pooler_output
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        out = self.model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return self.model.text_projection(out.pooler_output)

    def _batches(self, images: Sequence[np.ndarray]) -> list[Sequence[np.ndarray]]:
        return [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)]

    # -- the ComponentModel interface -----------------------------------------------------------

    @torch.no_grad()
    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        """Per-site pooled features: vision layers (patch mean) and the image embedding."""
        if len(images) == 0:
            raise InvalidInputError("extract needs at least one image")
        layers: list[list[np.ndarray]] = []
        proj: list[np.ndarray] = []
        for chunk in self._batches(images):
            hidden, embeds = self._vision(chunk)
            if not layers:
                layers = [[] for _ in hidden]
            for acc, h in zip(layers, hidden, strict=True):
                acc.append(self._patch_mean(h).float().cpu().numpy())
            proj.append(embeds.float().cpu().numpy())
        return ComponentFeatures(
            vision_layers=[np.concatenate(acc).astype(np.float32) for acc in layers],
            projector=np.concatenate(proj).astype(np.float32),
        )

    @torch.no_grad()
    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """Mean input-embedding of each word's sub-word pieces in the text tower's vocabulary."""
        table = self.model.text_model.embeddings.token_embedding.weight
        rows = []
        for word in words:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids:
                raise InvalidInputError(f"word {word!r} tokenizes to nothing")
            rows.append(table[torch.tensor(ids, device=table.device)].mean(dim=0))
        return torch.stack(rows).float().cpu().numpy()

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings of whole texts (for custom prompts)."""
        return torch.nn.functional.normalize(self._text_embeds(texts), dim=-1).float().cpu().numpy()

    @torch.no_grad()
    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        """[N, C] cosine similarity of each image embedding to ``prompt.format(word)``'s embedding."""
        if not class_words:
            raise InvalidInputError("class_log_scores needs at least one class word")
        text = torch.from_numpy(self.text_embeddings([self.prompt.format(w) for w in class_words]))
        scores = []
        for chunk in self._batches(images):
            _, embeds = self._vision(chunk)
            img = torch.nn.functional.normalize(embeds.float().cpu(), dim=-1)
            scores.append((img @ text.T).numpy())
        return np.concatenate(scores).astype(np.float32)
