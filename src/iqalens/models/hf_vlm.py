"""Hugging Face multimodal LLMs as component models (vision encoder -> projector -> language model).

Families (transformers-native classes, tested on tiny random models): LLaVA-1.5, LLaVA-NeXT,
LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL and InternVL3/3.5 (``-hf`` checkpoints). Anything
``AutoModelForImageTextToText`` loads whose inner model has a vision tower (``vision_tower`` or
``visual``) and a ``language_model`` works the same way.

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

Pooling is done inside the hooks, so a batch never holds all layers' full hidden states.

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

from iqalens.models.base import ComponentFeatures, ModelKind
from iqalens.models.hf_loading import build_prompt_text, checkpoint_name, load_vlm
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


def _largest_block_list(module: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of identical blocks with the most entries: a tower's / decoder's layer stack.

    Why generic: CLIP/SigLIP name it ``encoder.layers``, InternViT ``encoder.layer``, Qwen's ViT
    ``blocks``, every decoder ``layers``; the stack is always the longest homogeneous list.
    """
    best: torch.nn.ModuleList | None = None
    for sub in module.modules():
        homogeneous = isinstance(sub, torch.nn.ModuleList) and len({type(m) for m in sub}) == 1
        if homogeneous and (best is None or len(sub) > len(best)):
            best = sub
    if best is None:
        raise ValueError(f"no layer stack found in {type(module).__name__}")
    return best


def _first_tensor(value: Any) -> torch.Tensor:
    """A block's hidden states: blocks return a tensor or a tuple starting with it."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"cannot find hidden states in a {type(value).__name__}")


def _to_numpy(rows: list[torch.Tensor]) -> np.ndarray:
    """float32 array of per-item rows [D] (stacked) or per-batch blocks [B, D] (concatenated)."""
    block = torch.cat(rows) if rows[0].dim() == 2 else torch.stack(rows)
    return block.float().cpu().numpy().astype(np.float32)


def _mean_per_image(rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[len(counts), D] means of consecutive groups of ``rows`` [sum(counts), D]: one reshape when
    every image has as many rows (the common case; no Python loop over images in a hook)."""
    if len(set(counts)) == 1:
        return rows.reshape(len(counts), counts[0], rows.shape[-1]).mean(1)
    return torch.stack([seg.mean(0) for seg in torch.split(rows, counts)])


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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
        self.model, self.processor, self.device = load_vlm(
            name, device, dtype, local_files_only, trust_remote_code, model_kwargs, processor_kwargs
        )
        self.tokenizer = self.processor.tokenizer

        inner = self.model.model
        vision = getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)
        if vision is None or not hasattr(inner, "language_model"):
            raise ValueError(f"{type(self.model).__name__}: no vision tower / language model found")
        self.vision_tower: torch.nn.Module = vision
        self.language_model: torch.nn.Module = inner.language_model
        self.vision_blocks = _largest_block_list(vision)
        self.lm_blocks = _largest_block_list(self.language_model)
        config = self.model.config
        token_id = getattr(config, "image_token_id", None)
        if token_id is None:
            token_id = getattr(config, "image_token_index", None)
        if token_id is None:
            raise ValueError(f"{type(self.model).__name__}: the config names no image token id")
        self.image_token_id = int(token_id)
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
        text = build_prompt_text(self.processor, self.prompt)
        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB") for im in images]
        batch = self.processor(
            text=[text] * len(pil), images=pil, padding=True, padding_side="right", return_tensors="pt"
        )
        inputs: dict[str, torch.Tensor] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.model.dtype)
            inputs[key] = value
        return inputs

    def _tiles_per_image(self, inputs: dict[str, torch.Tensor], n_images: int) -> list[int]:
        """How many rows of the vision tower's input belong to each image (in order).

        Qwen: patches per image (the tower runs on one flat sequence). LLaVA-NeXT / OneVision:
        the number of any-resolution tiles, computed as the model does. InternVL: tiles = image
        tokens / tokens per tile. Otherwise one tile per image.
        """
        config = self.model.config
        if "image_grid_thw" in inputs:
            return [int(v) for v in inputs["image_grid_thw"].prod(-1).tolist()]
        pixel_values = inputs["pixel_values"]
        if pixel_values.dim() == 5 and "image_sizes" in inputs:
            from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

            size = config.vision_config.image_size
            return [
                int(image_size_to_num_patches(s, config.image_grid_pinpoints, size))
                for s in inputs["image_sizes"].tolist()
            ]
        if pixel_values.shape[0] != n_images:
            per_tile = getattr(config, "image_seq_length", None)
            if per_tile:
                counts = (inputs["input_ids"] == self.image_token_id).sum(1)
                return [int(c) // int(per_tile) for c in counts.tolist()]
            raise ValueError(f"{pixel_values.shape[0]} image tiles for {n_images} images: cannot group them")
        return [1] * n_images

    def _n_patches(self) -> int | None:
        """Patch tokens per tile of a ViT tower (to recognise a CLS token), None if not a fixed grid."""
        vc = getattr(self.model.config, "vision_config", None)
        size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", None)
        if size is None or patch is None:
            return None
        sizes = size if isinstance(size, (list, tuple)) else (size, size)
        patches = patch if isinstance(patch, (list, tuple)) else (patch, patch)
        return (int(sizes[0]) // int(patches[0])) * (int(sizes[1]) // int(patches[1]))

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
            raise ValueError("extract() needs at least one image")
        return ComponentFeatures(
            vision_layers=[_to_numpy(s) for s in vision],
            projector=_to_numpy(projector),
            lm_layers=[_to_numpy(s) for s in lm],
        )

    def vision_pooler(
        self, inputs: dict[str, torch.Tensor], n_images: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-image pooling [n_images, D] of a vision block's output for a prepared batch.

        Shared by :meth:`extract` and the alignment forward pass (:mod:`iqalens.align.hf`), so the
        feature-distillation constraint reads exactly the ``vision.K`` site. Differentiable.
        """
        tiles = self._tiles_per_image(inputs, n_images)
        n_patches = self._n_patches()

        def pool_vision(h: torch.Tensor) -> torch.Tensor:
            h = h.float()
            if h.dim() == 3 and h.shape[0] == 1 and sum(tiles) == h.shape[1] and h.shape[0] != sum(tiles):
                h = h[0]  # a flat sequence with a batch axis of 1
            if h.dim() == 2:  # Qwen: [sum of patches, D], images contiguous
                if h.shape[0] != sum(tiles):
                    raise ValueError(f"vision tower gave {h.shape[0]} rows for {sum(tiles)} patches")
                return _mean_per_image(h, tiles)
            if h.shape[0] != sum(tiles):
                raise ValueError(f"vision tower gave {h.shape[0]} tiles, expected {sum(tiles)}")
            if n_patches is not None and h.shape[1] == n_patches + 1:
                h = h[:, 1:]  # CLS token
            return _mean_per_image(h.mean(1), tiles)

        return pool_vision

    @torch.inference_mode()
    def _extract_batch(
        self, images: Sequence[np.ndarray]
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """One forward pass; per site the [n, D] pooled features of the batch (vision, projector, LM).

        Each hook pools the whole batch in a few tensor operations (no loop over images), which is
        what keeps the hooks' share of a small model's forward pass low (benchmarks/FEATURES.md).
        """
        inputs = self.prepare(images)
        n = len(images)
        pool_vision = self.vision_pooler(inputs, n)
        weights = (inputs["input_ids"] == self.image_token_id).float()  # [B, T]
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1)

        def pool_lm(h: torch.Tensor) -> torch.Tensor:
            return torch.bmm(weights.unsqueeze(1), h.float()).squeeze(1)  # masked mean over T

        out_v: list[list[torch.Tensor]] = [[] for _ in range(self.n_vision_sites)]
        out_p: list[torch.Tensor] = []
        out_h: list[list[torch.Tensor]] = [[] for _ in range(self.n_lm_sites)]

        def hidden_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
            return args[0] if args else kwargs["hidden_states"]

        def vision_in(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            out_v[0].append(pool_vision(hidden_arg(args, kwargs)))

        def lm_in(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                raise RuntimeError("the language model was called without inputs_embeds")
            out_p.append(pool_lm(embeds))

        def site_hook(sink: list[torch.Tensor], pool: Callable[[torch.Tensor], torch.Tensor]) -> Any:
            def hook(_m: torch.nn.Module, _args: Any, output: Any) -> None:
                sink.append(pool(_first_tensor(output)))

            return hook

        handles = [
            self.vision_blocks[0].register_forward_pre_hook(vision_in, with_kwargs=True),
            self.language_model.register_forward_pre_hook(lm_in, with_kwargs=True),
        ]
        handles += [
            blk.register_forward_hook(site_hook(out_v[i + 1], pool_vision))
            for i, blk in enumerate(self.vision_blocks)
        ]
        handles += [
            blk.register_forward_hook(site_hook(out_h[i], pool_lm)) for i, blk in enumerate(self.lm_blocks)
        ]
        try:
            kwargs: dict[str, Any] = {"use_cache": False}
            if self._keep_logits:
                kwargs["logits_to_keep"] = 1  # the logits are not needed; skip most of the LM head
            self.model(**inputs, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        if any(len(s) != 1 or s[0].shape[0] != n for s in (out_p, *out_v, *out_h)):
            raise RuntimeError("a hook fired an unexpected number of times (nested or repeated calls?)")
        return [s[0] for s in out_v], out_p[0], [s[0] for s in out_h]

    @torch.inference_mode()
    def visual_tokens(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per image, the [n_tokens, D_lm] visual tokens exactly as the language model receives them.

        Read by the same hook as the ``projector`` site (the language model's ``inputs_embeds`` at
        the image-token positions), unpooled: the semantic-distance and alignment code needs the
        tokens themselves, and tests feed them back to check that they are what the LM consumes.
        """
        captured: list[torch.Tensor] = []
        inputs = self.prepare(images)
        mask = inputs["input_ids"] == self.image_token_id

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
            raise ValueError(f"the tokenizer produces no token for {word!r}")
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
            raise ValueError("class_log_scores needs at least one class word")
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
        longest = max(len(s) for s in seqs)
        kwargs: dict[str, Any] = {"use_cache": longest > 1}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        result = self.model(**inputs, **kwargs)
        first = torch.log_softmax(result.logits[0, -1].float(), dim=-1)
        scores = torch.stack([first[s[0]] for s in seqs]).to(torch.float64)
        if longest > 1:
            cache = result.cache if self._cache_kw == "cache" else result.past_key_values
            cache.batch_repeat_interleave(len(seqs))
            pad = int(self.tokenizer.pad_token_id)
            # Feed tokens 0..L-2 of each word; position j predicts token j+1. Right padding is
            # harmless: pads come after every real token (causal) and their logits are not read.
            cont = torch.tensor(
                [list(s[:-1]) + [pad] * (longest - len(s)) for s in seqs],
                device=self.device,
                dtype=torch.long,
            )
            logits = self.model(input_ids=cont, use_cache=True, **{self._cache_kw: cache}).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for c, s in enumerate(seqs):
                for j in range(1, len(s)):
                    scores[c] += logp[c, j - 1, s[j]].double()
        return scores.cpu().numpy()

    # -- free generation (optional capability used by ``perceive --generate``) ---------------------

    def _stop_token_ids(self) -> set[int]:
        """EOS ids of the generation config and the tokenizer (chat models often list several)."""
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

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
            raise ValueError(f"need samples >= 0 and max_new_tokens >= 1, got {samples}, {max_new_tokens}")
        if samples and not temperature > 0:
            raise ValueError(f"sampling needs a temperature > 0, got {temperature}")
        seed_list = list(seeds) if seeds is not None else list(range(len(images)))
        if len(seed_list) != len(images):
            raise ValueError(f"{len(seed_list)} seeds for {len(images)} images")
        stop = self._stop_token_ids()
        rows = 1 + samples
        out: list[tuple[str, list[str]]] = []
        for image, seed in zip(images, seed_list, strict=True):
            gen = torch.Generator().manual_seed(int(seed))
            inputs = self.prepare([image])
            kwargs: dict[str, Any] = {"use_cache": True}
            if self._keep_logits:
                kwargs["logits_to_keep"] = 1
            result = self.model(**inputs, **kwargs)
            cache = result.cache if self._cache_kw == "cache" else result.past_key_values
            logits = result.logits[:, -1].float().expand(rows, -1)
            if rows > 1:
                cache.batch_repeat_interleave(rows)
            tokens: list[list[int]] = [[] for _ in range(rows)]
            done = [False] * rows
            for step in range(max_new_tokens):
                nxt = self._next_tokens(logits, temperature, gen)
                for r, t in enumerate(nxt):
                    if not done[r]:
                        if t in stop:
                            done[r] = True
                        else:
                            tokens[r].append(t)
                if all(done) or step == max_new_tokens - 1:
                    break
                step_ids = torch.tensor(nxt, device=self.device, dtype=torch.long).unsqueeze(1)
                logits = self.model(input_ids=step_ids, use_cache=True, **{self._cache_kw: cache}).logits
                logits = logits[:, -1].float()
            texts = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
            out.append((texts[0], texts[1:]))
        return out

    @staticmethod
    def _next_tokens(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> list[int]:
        """Row 0: argmax; rows 1..: one draw each from softmax(logits / temperature)."""
        greedy = [int(logits[0].argmax())]
        if logits.shape[0] == 1:
            return greedy
        probs = torch.softmax(logits[1:].cpu().double() / temperature, dim=-1)
        return greedy + [int(t) for t in torch.multinomial(probs, 1, generator=gen)[:, 0].tolist()]

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
            raise ValueError("contextual_word_embeddings needs at least one word")
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
                    sink.append(_first_tensor(output)[0, -n:].float().mean(0))

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
        return np.stack([_to_numpy(rows) for rows in per_layer])
