"""Hugging Face multimodal LLMs as component models (vision encoder -> projector -> language model).

Families (tested on tiny random models): LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL,
Qwen2.5-VL, InternVL3/3.5 (``-hf`` checkpoints), Idefics3, Gemma 3, PaliGemma, and the remote-code
mPLUG-Owl2 layout. Where the three components sit is a component map
(:mod:`iqalens.models.hf_components`): the table's for a known ``model_type``, the standard
transformers layout otherwise, or one the user gives, so any model whose components can be named
works without code of its own. Models that expand one image placeholder inside their forward
(mPLUG-Owl2) are read at the expanded positions (:func:`~iqalens.models.hf_vlm_sites.visual_token_mask`).

**Where each site is read** (all from ONE forward pass of the forced-choice prompt per batch, by
forward hooks, so no family-specific re-implementation of the model can drift from the real one):

- ``vision.0`` .. ``vision.K``: the input of the tower's first block (patch + position embeddings)
  and the output of each of its K blocks, mean over the patch tokens of all tiles of one image
  (a CLS token, where the tower has one, is left out: it is not a patch and the projectors of
  LLaVA / InternVL drop it too). Every block is recorded even where the model feeds an earlier
  layer to the projector (LLaVA-1.5 uses the second-to-last).
- ``projector``: the ``inputs_embeds`` the language model receives, at the image-token positions
  of the prompt. That *is* the projector output after the family's own packing (LLaVA-NeXT's
  unpadding and newline tokens, InternVL's pixel shuffle, Qwen's patch merger), i.e. exactly the
  visual tokens the language model consumes; mean over them.
- ``lm.0`` .. ``lm.{M-1}``: the output of each of the M decoder layers at the same positions
  (mean): the residual stream, before the final norm (transformers' ``hidden_states[-1]`` has the
  final norm applied, so it differs from ``lm.{M-1}``). The embedding "layer" is not repeated
  here: at the visual positions it equals ``projector``.

Pooling is done inside the hooks, so a batch never holds all layers' full hidden states. The hooks,
the layer stacks and the tile/patch bookkeeping live in :mod:`iqalens.models.hf_vlm_sites`; the
KV-cached decoding behind forced choice and free generation in :mod:`iqalens.models.hf_vlm_decoding`.

**Forced choice** (:meth:`HFVLMAdapter.class_log_scores`): the user turn holds the image and the
question, the assistant turn is pre-filled with the answer prefix ("The distortion is"), and the
score of a class word is the log-probability of its *full* token sequence under teacher forcing.
The prompt is run once per image with the KV cache kept; the cache is repeated for the C class
words and their continuations run as one batch of C rows, so the vision encoder and the prompt
are computed once per image, not C times. Single-token words need no second pass at all.

Word tokens are taken *in context*: ``prefix + " " + word`` minus the tokens of ``prefix``, so
byte-level BPE (``Ġblur``) and SentencePiece (``▁blur``) vocabularies both give the pieces the
model would emit after the template; :meth:`HFVLMAdapter.word_embeddings` averages the input
embedding rows of the same pieces.

**Free generation** (:meth:`HFVLMAdapter.generate_answers`, for ``perceive --generate``): the same
prompt, continued by the model itself: greedy, plus optional temperature samples that share the
prompt's KV cache and draw from a per-image seeded CPU generator (reproducible across batches,
resumes and devices). **Contextual word states** (:meth:`HFVLMAdapter.contextual_word_embeddings`):
each decoder layer's output at the class word's pieces in "answer prefix + word", read by the
same block hooks as the ``lm.l`` sites, for the contextual semantic distance.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqalens.errors import InvalidInputError
from iqalens.models.base import ComponentFeatures, ModelKind
from iqalens.models.hf_components import component_map_for, image_token_id, resolve_components
from iqalens.models.hf_inputs import encode_prompts
from iqalens.models.hf_loading import checkpoint_name, open_vlm
from iqalens.models.hf_vlm_decoding import decode_rows, sequence_log_probs, stop_token_ids
from iqalens.models.hf_vlm_sites import (
    first_tensor,
    patches_per_tile,
    pooled_sites_of_one_pass,
    tiles_per_image,
    to_numpy,
    token_pooler,
    vision_pooler,
    visual_token_mask,
)
from iqalens.models.prompts import Prompt
from iqalens.taxonomy import CLASSES

__all__ = [
    "DEFAULT_ANSWER_PREFIX",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_QUESTION",
    "HFVLMAdapter",
    "forced_choice_prompt",
]

#: The forced-choice question (also the neutral prompt under which features are extracted).
DEFAULT_QUESTION = "Which distortion does this image have? Answer with one of: " + ", ".join(CLASSES) + "."
#: Assistant pre-fill after which the class word is scored.
DEFAULT_ANSWER_PREFIX = "The distortion is"
#: Tokens generated for a free answer: enough for " motion blur." and a little chatter.
DEFAULT_MAX_NEW_TOKENS = 12


def forced_choice_prompt(
    question: str = DEFAULT_QUESTION,
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
    choices: Sequence[str] = CLASSES,
) -> Prompt:
    """The one-image forced-choice prompt (image first, then the question, pre-filled answer)."""
    return Prompt(
        parts=(("image", 0), ("text", question)),
        answer_prefix=answer_prefix,
        choices=tuple(choices),
        n_images=1,
    )


class HFVLMAdapter:
    """A transformers image-text-to-text model exposed through the :class:`ComponentModel` interface.

    ``path_or_id``: a local checkpoint folder or a hub id (``local_files_only=True`` forbids
    downloads). ``batch_size`` images share one forward pass in :meth:`extract` (right padding, so
    each row's tokens keep the positions they have alone: batch equals one-by-one). ``question`` /
    ``answer_prefix`` define the forced-choice prompt; ``model_kwargs`` / ``processor_kwargs`` go to
    ``from_pretrained`` (e.g. Qwen2-VL's pixel budget ``{"size": {...}}`` bounds its token count).
    """

    kind: ModelKind = "generative"

    def __init__(
        self,
        path_or_id: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 8,
        question: str = DEFAULT_QUESTION,
        answer_prefix: str = DEFAULT_ANSWER_PREFIX,
        model_id: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        components: str | None = None,
        prompt_template: str | None = None,
        max_pixels: int | None = None,
        device_map: str | None = None,
        quantization: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        name, short = checkpoint_name(path_or_id)
        self.model_id = model_id or f"hf:{short}"
        #: What was loaded and how: an aligned checkpoint (:mod:`iqalens.align.hf`) names its base
        #: model by these, so that loading it rebuilds the same adapter before overlaying weights.
        self.source = name
        self.load_options: dict[str, Any] = {
            "dtype": str(dtype).removeprefix("torch."),
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
            "question": question,
            "answer_prefix": answer_prefix,
            "processor_kwargs": processor_kwargs or {},
            "components": components,
            "prompt_template": prompt_template,
            "max_pixels": max_pixels,
        }
        self.batch_size = batch_size
        self.prompt = forced_choice_prompt(question, answer_prefix)
        #: What besides the weights changes the features (keys the feature cache): the prompt the
        #: visual tokens are read under, the precision, the processor's image budget, model options.
        self.extraction_settings: dict[str, Any] = {
            "question": question,
            "answer_prefix": answer_prefix,
            "dtype": self.load_options["dtype"],
            "processor_kwargs": processor_kwargs or {},
            # e.g. a quantization config changes the features too (as text: configs are objects)
            "model_kwargs": {k: str(v) for k, v in (model_kwargs or {}).items()},
        }
        # Only options that were set join the key, so the caches of earlier runs stay valid.
        extra = {"components": components, "prompt_template": prompt_template, "max_pixels": max_pixels}
        extra |= {"quantization": quantization}
        self.extraction_settings |= {k: v for k, v in extra.items() if v is not None}
        loaded = open_vlm(
            name,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            model_kwargs=model_kwargs,
            processor_kwargs=processor_kwargs,
            components=components,
            prompt_template=prompt_template,
            max_pixels=max_pixels,
            device_map=device_map,
            quantization=quantization,
        )
        self.model, self.processor, self.device = loaded.model, loaded.processor, loaded.device
        self.prompt_format = loaded.prompt_format
        self.tokenizer = self.processor.tokenizer
        self.component_map = component_map_for(self.model, loaded.component_map)
        resolved = resolve_components(self.model, self.component_map)
        self.vision_tower: torch.nn.Module = resolved.vision_tower
        self.language_model: torch.nn.Module = resolved.language_model
        self.vision_blocks = resolved.vision_blocks
        self.lm_blocks = resolved.lm_blocks
        self.image_token_id = image_token_id(self.model, self.component_map)
        params = inspect.signature(self.model.forward).parameters
        self._keep_logits = "logits_to_keep" in params
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- inputs ---------------------------------------------------------------------------------

    @property
    def n_vision_sites(self) -> int:
        """Embeddings + one per vision block."""
        return len(self.vision_blocks) + 1

    @property
    def n_lm_sites(self) -> int:
        """One per decoder layer."""
        return len(self.lm_blocks)

    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Processor output for one forced-choice prompt per image (right-padded, on the device)."""
        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB") for im in images]
        return encode_prompts(
            self.processor,
            self.prompt_format,
            [self.prompt] * len(pil),
            [[im] for im in pil],
            device=self.device,
            dtype=self.model.dtype,
        )

    def visual_mask(self, input_ids: torch.Tensor, seq_len: int) -> torch.Tensor:
        """[B, seq_len] True at the visual tokens of the language model's sequence (see
        :func:`~iqalens.models.hf_vlm_sites.visual_token_mask`: models that expand one placeholder
        per image inside their forward have a longer sequence than ``input_ids``)."""
        return visual_token_mask(input_ids, self.image_token_id, seq_len)

    def _tiles_per_image(self, inputs: dict[str, torch.Tensor], n_images: int) -> list[int]:
        """How many rows of the vision tower's input belong to each image (see :func:`tiles_per_image`)."""
        return tiles_per_image(
            self.model.config, inputs, n_images, self.image_token_id, self.prompt_format.image_input
        )

    # -- ComponentModel ---------------------------------------------------------------------------

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        """Per-site pooled features (see module doc), ``batch_size`` images per forward pass."""
        vision: list[list[torch.Tensor]] = [[] for _ in range(self.n_vision_sites)]
        projector: list[torch.Tensor] = []
        lm: list[list[torch.Tensor]] = [[] for _ in range(self.n_lm_sites)]
        for start in range(0, len(images), self.batch_size):
            v, p, h = self._extract_batch(images[start : start + self.batch_size])
            for site, batch in zip(vision, v, strict=True):
                site.append(batch)
            projector.append(p)
            for site, batch in zip(lm, h, strict=True):
                site.append(batch)
        if not projector:
            raise InvalidInputError("extract() needs at least one image")
        return ComponentFeatures(
            vision_layers=[to_numpy(s) for s in vision],
            projector=to_numpy(projector),
            lm_layers=[to_numpy(s) for s in lm],
        )

    def vision_pooler(
        self, inputs: dict[str, torch.Tensor], n_images: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-image pooling [n_images, D] of a vision block's output for a prepared batch.

        Shared by :meth:`extract` and the alignment forward pass (:mod:`iqalens.align.hf`), so the
        feature-distillation constraint reads exactly the ``vision.K`` site. Differentiable.
        """
        tiles = self._tiles_per_image(inputs, n_images)
        return vision_pooler(tiles, patches_per_tile(self.model.config, self.vision_tower))

    @torch.inference_mode()
    def _extract_batch(
        self, images: Sequence[np.ndarray]
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """One forward pass; per site the [n, D] pooled features of the batch (vision, projector, LM)."""
        inputs = self.prepare(images)
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1  # the logits are not needed; skip most of the LM head
        return pooled_sites_of_one_pass(
            lambda: self.model(**inputs, **kwargs),
            vision_blocks=self.vision_blocks,
            language_model=self.language_model,
            lm_blocks=self.lm_blocks,
            pool_vision=self.vision_pooler(inputs, len(images)),
            pool_lm=token_pooler(inputs["input_ids"], self.image_token_id),
            n=len(images),
        )

    @torch.inference_mode()
    def visual_tokens(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per image, the [n_tokens, D_lm] visual tokens exactly as the language model receives them.

        Read by the same hook as the ``projector`` site (the language model's ``inputs_embeds`` at
        the image-token positions), unpooled: the semantic-distance and alignment code needs the
        tokens themselves, and tests feed them back to check that they are what the LM consumes.
        """
        captured: list[torch.Tensor] = []
        inputs = self.prepare(images)

        def lm_in(_m: torch.nn.Module, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.append(kwargs["inputs_embeds"].detach())

        handle = self.language_model.register_forward_pre_hook(lm_in, with_kwargs=True)
        try:
            kwargs: dict[str, Any] = {"use_cache": False}
            if self._keep_logits:
                kwargs["logits_to_keep"] = 1
            self.model(**inputs, **kwargs)
        finally:
            handle.remove()
        embeds = captured[0]
        mask = self.visual_mask(inputs["input_ids"], embeds.shape[1]).to(embeds.device)
        return [embeds[i][mask[i]].float().cpu() for i in range(len(images))]

    def word_token_ids(self, word: str) -> list[int]:
        """The tokens of ``word`` as the model emits it after the answer prefix (see module doc)."""
        prefix = self.prompt.answer_prefix or ""
        base = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        full = self.tokenizer(f"{prefix} {word}", add_special_tokens=False)["input_ids"]
        if full[: len(base)] == base and len(full) > len(base):
            ids = full[len(base) :]
        else:  # the word merged with the end of the prefix: fall back to the word with its space
            ids = self.tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
        if not ids:
            raise InvalidInputError(f"the tokenizer produces no token for {word!r}")
        return [int(i) for i in ids]

    @torch.inference_mode()
    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """[len(words), D_lm] input-embedding rows of each word's in-context pieces, averaged."""
        table = self.model.get_input_embeddings().weight
        rows = [
            table[torch.tensor(self.word_token_ids(w), device=table.device)].float().mean(0) for w in words
        ]
        return torch.stack(rows).cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        """[N, C] log-probability of each class word's full token sequence after the answer prefix."""
        if not class_words:
            raise InvalidInputError("class_log_scores needs at least one class word")
        seqs = [self.word_token_ids(w) for w in class_words]
        out = np.zeros((len(images), len(seqs)), dtype=np.float64)
        for i, image in enumerate(images):
            out[i] = self.sequence_log_probs(self.prepare([image]), seqs)
        return out

    @torch.inference_mode()
    def sequence_log_probs(
        self, inputs: dict[str, torch.Tensor], seqs: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """[C] log-probability of each token sequence after ONE image's prepared prompt (no padding).

        The prompt runs once with its KV cache kept; multi-token sequences continue from copies of
        the cache in one batch (see module doc).
        """
        return sequence_log_probs(
            self.model,
            inputs,
            seqs,
            pad_token_id=int(self.tokenizer.pad_token_id),
            device=self.device,
            cache_kw=self._cache_kw,
            keep_logits=self._keep_logits,
        )

    # -- free generation (optional capability used by ``perceive --generate``) ---------------------

    @torch.inference_mode()
    def generate_answers(
        self,
        images: Sequence[np.ndarray],
        *,
        samples: int = 0,
        temperature: float = 0.7,
        seeds: Sequence[int] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> list[tuple[str, list[str]]]:
        """Per image: the greedy continuation of the forced-choice prompt and ``samples`` sampled ones.

        The prompt is the one :meth:`class_log_scores` uses, ending with the answer prefix; the
        model then writes its own answer instead of having each class word scored. The prompt is
        run once per image; its KV cache is repeated for 1 + ``samples`` rows that decode together
        (row 0 greedy, the others by pure temperature sampling: softmax(logits / temperature), no
        top-k / top-p). Sampling draws from a CPU generator seeded with ``seeds[i]``, so an image's
        samples do not depend on the batch it came in, on resuming, or on the device. Decoding stops
        at an end-of-sequence token or after ``max_new_tokens``; texts are decoded without special
        tokens and stripped.
        """
        if samples < 0 or max_new_tokens < 1:
            raise InvalidInputError(
                f"need samples >= 0 and max_new_tokens >= 1, got {samples}, {max_new_tokens}"
            )
        if samples and not temperature > 0:
            raise InvalidInputError(f"sampling needs a temperature > 0, got {temperature}")
        seed_list = list(seeds) if seeds is not None else list(range(len(images)))
        if len(seed_list) != len(images):
            raise InvalidInputError(f"{len(seed_list)} seeds for {len(images)} images")
        stop = stop_token_ids(self.model, self.tokenizer)
        out: list[tuple[str, list[str]]] = []
        for image, seed in zip(images, seed_list, strict=True):
            tokens = decode_rows(
                self.model,
                self.prepare([image]),
                rows=1 + samples,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                gen=torch.Generator().manual_seed(int(seed)),
                stop=stop,
                device=self.device,
                cache_kw=self._cache_kw,
                keep_logits=self._keep_logits,
            )
            texts = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
            out.append((texts[0], texts[1:]))
        return out

    # -- contextual word states (optional capability used by the contextual semantic distance) ---

    @property
    def contextual_template(self) -> str:
        """The text a class word is read in by :meth:`contextual_word_embeddings`."""
        return f"{self.prompt.answer_prefix or ''} {{}}".lstrip()

    def _leading_special_ids(self, text: str) -> list[int]:
        """The special tokens the tokenizer puts before ``text`` (LLaMA's BOS; none for Qwen)."""
        plain = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if plain and full[-len(plain) :] == plain:
            return [int(i) for i in full[: len(full) - len(plain)]]
        return []

    @torch.inference_mode()
    def contextual_word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """[M, len(words), D_lm]: each decoder layer's output at the word's pieces in "prefix word".

        The text is the answer prefix followed by the word, tokenised as the model would emit it
        after the prefix (:meth:`word_token_ids`), preceded by the tokenizer's leading special
        tokens and nothing else (no image, no chat turn: the state of the *word* in the answer
        template, not of one image's answer). Layer l is read by a hook on decoder block l, like
        the ``lm.l`` sites, and averaged over the word's pieces.
        """
        if not words:
            raise InvalidInputError("contextual_word_embeddings needs at least one word")
        prefix = self.prompt.answer_prefix or ""
        base = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        lead = self._leading_special_ids(prefix or "x")
        per_layer: list[list[torch.Tensor]] = [[] for _ in range(self.n_lm_sites)]
        for word in words:
            pieces = self.word_token_ids(word)
            ids = torch.tensor([[*lead, *base, *pieces]], device=self.device, dtype=torch.long)
            n = len(pieces)

            def hook_for(sink: list[torch.Tensor], n: int = n) -> Any:
                def hook(_m: torch.nn.Module, _args: Any, output: Any) -> None:
                    sink.append(first_tensor(output)[0, -n:].float().mean(0))

                return hook

            handles = [
                blk.register_forward_hook(hook_for(per_layer[i])) for i, blk in enumerate(self.lm_blocks)
            ]
            try:
                self.language_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            finally:
                for handle in handles:
                    handle.remove()
        if any(len(rows) != len(words) for rows in per_layer):
            raise RuntimeError("a decoder-layer hook fired an unexpected number of times")
        return np.stack([to_numpy(rows) for rows in per_layer])
