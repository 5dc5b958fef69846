"""Hugging Face multimodal LLMs as :class:`~iqalens.align.base.AlignableModel`: what ``align`` trains.

:class:`HFAlignable` wraps an :class:`~iqalens.models.hf_vlm.HFVLMAdapter` (the perception
adapter, so the diagnostics before and after training read the model exactly as ``perceive``
does) and adds the trainable view:

- **components** (disjoint, so freezing one never touches another): ``vision_encoder`` = the
  vision tower without the family's merger (Qwen2/2.5-VL keep their patch merger inside the
  tower; here it belongs to the projector); ``projector`` = ``multi_modal_projector`` (LLaVA,
  NeXT, OneVision, InternVL) or the Qwen ``merger``, plus LLaVA-NeXT/OneVision's learned
  ``image_newline`` token; ``language_model`` = the decoder with its embedding table and the
  LM head.
- **prepare** packs the processor's forced-choice batch so that the first dimension of every
  tensor indexes the images (Qwen's flat patch rows and InternVL's tiles are split per image and
  zero-padded, ``pixel_rows`` keeps the real counts): the trainer keeps one entry per image and
  re-batches them; :meth:`HFAlignable.collate` stacks entries of different widths (images of
  different sizes) by right-padding, which the forward pass masks or cuts off again.
- **forward_align** runs the forced-choice prompt with the true class word appended (teacher
  forcing) in one differentiable pass of the real model: ``visual`` is read by a pre-hook on the
  language model (the ``inputs_embeds`` at the image-token positions, i.e. the projector output
  after the family's packing, exactly the ``projector`` site of ``extract``, pooled); the
  ``template_loss`` is the next-token cross-entropy of the true word's pieces after the answer
  prefix (per image mean over its pieces, then mean over images); ``encoder_features`` is the
  ``vision.K`` site (last vision block, pooled as in ``extract``). The LM head is applied only at
  the positions that are scored, so no [batch, length, vocabulary] logits tensor is built.
- **class_scores**: when every class word is one token (after the prefix), the log-softmax of the
  same pass at the answer position (exact, free). Otherwise the full-sequence log-probabilities of
  :meth:`HFVLMAdapter.sequence_log_probs`, computed without gradients in an extra pass per image:
  correct for multi-token words ("colorfulness" in most BPE vocabularies) at the cost of roughly
  one more prompt pass per image.
- **encoder_features** (optional capability): the ``vision.K`` site from the vision side alone
  (``get_image_features``), for the drift measures; **encode_frozen** is not offered, so every
  step runs the vision tower even when it is frozen.

**Checkpoint** (:meth:`HFAlignable.save_checkpoint`): ``hf_aligned.safetensors`` holds the
parameters of the trained components under their names in the full model (LoRA adapters, if peft
wrapped any layer, merged into the weights they adapt, so loading needs no peft), and
``hf_aligned.json`` names the base checkpoint, the adapter's prompt and dtype, the components
stored and the caller's ``info``. Reading it back is model-level code:
:func:`iqalens.models.hf_checkpoint.load_hf_aligned` rebuilds the adapter from the base checkpoint
and overlays the saved weights.

**LoRA**: :meth:`HFAlignable.lora_targets` lists the ``nn.Linear`` layers of a component by their
names relative to the component module (the LM head excluded), for peft's ``target_modules`` when
peft is applied to that module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqalens.align.base import COMPONENTS, AlignForward
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_save_safetensors
from iqalens.models.base import ComponentFeatures, ModelKind
from iqalens.models.hf_checkpoint import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    is_hf_aligned,
    load_hf_aligned,
)
from iqalens.models.hf_components import carve_components
from iqalens.models.hf_vlm import HFVLMAdapter
from iqalens.models.hf_vlm_sites import first_tensor
from iqalens.runs import write_json

__all__ = ["ComponentGroup", "HFAlignable", "as_alignable"]

_LORA_PARAM = re.compile(r"\.lora_[A-Za-z_]+\.")


class ComponentGroup(nn.Module):
    """A component made of parts of the model that are not one module of their own.

    The parts stay owned by the model (registering a module or parameter in a second parent
    shares it), so ``requires_grad_``, ``train()`` and peft wrapping act on the real model.
    """

    def __init__(self, modules: dict[str, nn.Module], parameters: dict[str, nn.Parameter] | None = None):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        for name, param in (parameters or {}).items():
            self.register_parameter(name, param)


def _is_lora_layer(module: nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") and hasattr(module, "lora_A")


class HFAlignable:
    """An :class:`HFVLMAdapter` made trainable: the :class:`~iqalens.align.base.AlignableModel` protocol.

    Also a :class:`~iqalens.models.base.ComponentModel` (its diagnostics methods are the adapter's),
    so the trainer can hand it to ``perceive`` before and after training.
    """

    kind: ModelKind = "generative"

    def __init__(self, adapter: HFVLMAdapter) -> None:
        self.adapter = adapter
        self.model = adapter.model
        self._pixels = adapter.prompt_format.image_input  # the forward argument of the pixels
        self._components = self._build_components()

    @classmethod
    def load(cls, path_or_id: str | Path, **adapter_kwargs: Any) -> HFAlignable:
        """Wrap a base checkpoint (``hf:`` spec without the prefix) or an aligned checkpoint folder."""
        if is_hf_aligned(path_or_id):
            return cls(load_hf_aligned(path_or_id, **adapter_kwargs))
        return cls(HFVLMAdapter(path_or_id, **adapter_kwargs))

    @property
    def model_id(self) -> str:
        return self.adapter.model_id

    def to(self, device: str | torch.device) -> HFAlignable:
        """Move the model (and where :meth:`prepare` puts inputs) to ``device``; a model placed by a
        device map (``hf_device_map``, possibly over several GPUs) stays where accelerate put it."""
        if getattr(self.model, "hf_device_map", None):
            return self
        self.model.to(device)
        self.adapter.device = torch.device(device)
        return self

    # -- ComponentModel, by delegation ----------------------------------------------------------

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        return self.adapter.extract(images)

    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        return self.adapter.word_embeddings(words)

    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        return self.adapter.class_log_scores(images, class_words)

    def contextual_word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        return self.adapter.contextual_word_embeddings(words)

    @property
    def contextual_template(self) -> str:
        return self.adapter.contextual_template

    @property
    def prompt(self) -> Any:
        return self.adapter.prompt

    def generate_answers(self, images: Sequence[np.ndarray], **kwargs: Any) -> list[tuple[str, list[str]]]:
        return self.adapter.generate_answers(images, **kwargs)

    # -- components -----------------------------------------------------------------------------

    def _build_components(self) -> dict[str, nn.Module]:
        """The three components from the adapter's component map (:func:`carve_components`): a path
        that is one module is that module; anything else (a tower without its merger, a decoder
        with the LM head) becomes a :class:`ComponentGroup` of the parts."""
        carved = carve_components(self.model, self.adapter.component_map)
        out: dict[str, nn.Module] = {}
        for key, name in zip(("vision", "projector", "lm"), COMPONENTS, strict=True):
            modules, params = carved[key]
            if len(modules) == 1 and not params:
                out[name] = next(iter(modules.values()))
            else:
                out[name] = ComponentGroup(modules, params)
        return out

    def components(self) -> dict[str, nn.Module]:
        """``vision_encoder``, ``projector``, ``language_model`` (disjoint; see module doc)."""
        return dict(self._components)

    def lora_targets(self, component: str) -> list[str]:
        """Names (relative to ``components()[component]``) of its ``nn.Linear`` layers, LM head excluded
        (layers peft already wrapped are listed under their own names, so the list is stable)."""
        if component not in self._components:
            raise InvalidInputError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
        head = self.model.get_output_embeddings()
        return [
            name
            for name, module in self._components[component].named_modules()
            if module is not head
            and ((isinstance(module, nn.Linear) and not _is_lora_sub(name)) or _is_lora_layer(module))
        ]

    # -- prepared inputs: one entry per image ---------------------------------------------------

    @torch.no_grad()
    def prepare(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """The forced-choice prompt of each image, packed so that the first dimension indexes images.

        The processor's batch is right-padded along the tokens already; flat pixel layouts (Qwen's
        patch rows, InternVL's tiles) are split per image and zero-padded to the batch's largest,
        with ``pixel_rows`` recording each image's real count. Entries of one image can thus be
        kept and re-batched (:meth:`collate` pads entries of different widths).
        """
        if len(images) == 0:
            raise InvalidInputError("prepare needs at least one image")
        raw = self.adapter.prepare(images)
        n = len(images)
        packed: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            if key == self._pixels and value.dim() != 5:
                rows = self.adapter._tiles_per_image(raw, n)
                width = max(rows)
                segments = torch.split(value, rows)
                packed[key] = torch.stack([_pad_to(seg, (width, *seg.shape[1:]), 0) for seg in segments])
                packed["pixel_rows"] = torch.tensor(rows, dtype=torch.long, device=value.device)
            elif value.shape[0] == n:
                packed[key] = value
            else:
                raise InvalidInputError(
                    f"cannot split the processor output {key!r} {tuple(value.shape)} per image"
                )
        return packed

    def collate(self, entries: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack per-image entries (``prepare(...)[k][i]``) into a batch, right-padding to the widest.

        Token rows pad with the tokenizer's pad id (``input_ids``) or 0 (attention mask, token
        types), pixel rows with zeros; the padding is masked or cut off by :meth:`forward_align`.
        """
        pad_id = self.adapter.tokenizer.pad_token_id
        out: dict[str, torch.Tensor] = {}
        for key in entries[0]:
            values = [e[key] for e in entries]
            shape = tuple(max(v.shape[d] for v in values) for d in range(values[0].dim()))
            fill = int(pad_id or 0) if key == "input_ids" else 0
            out[key] = torch.stack([_pad_to(v, shape, fill) for v in values])
        return out

    def _unpack(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Packed inputs -> the processor's batch layout on the model's device (extra padding cut)."""
        device, dtype = self.adapter.device, self.model.dtype
        batch = {k: v.to(device) for k, v in inputs.items() if k != "pixel_rows"}
        width = int(batch["attention_mask"].sum(1).max())
        tokens = batch["input_ids"].shape[1]
        for key, value in batch.items():
            if value.dim() >= 2 and value.shape[1] == tokens and key != self._pixels:
                batch[key] = value[:, :width]
        if "pixel_rows" in inputs:
            rows = [int(r) for r in inputs["pixel_rows"].tolist()]
            batch[self._pixels] = torch.cat([pv[:r] for pv, r in zip(batch[self._pixels], rows, strict=True)])
        return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}

    # -- training forward -----------------------------------------------------------------------

    def _teacher_forced(
        self, inputs: dict[str, torch.Tensor], targets: list[list[int]]
    ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Inputs with each row's target pieces appended after its prompt; the prompt lengths."""
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        lengths = [int(v) for v in attn.sum(1).tolist()]
        width = max(n + len(t) for n, t in zip(lengths, targets, strict=True))
        pad = self.adapter.tokenizer.pad_token_id
        new_ids = torch.full(
            (len(ids), width), int(pad if pad is not None else 0), dtype=ids.dtype, device=ids.device
        )
        new_attn = torch.zeros((len(ids), width), dtype=attn.dtype, device=attn.device)
        out = dict(inputs)
        per_token = {  # token-type rows such as Qwen's mm_token_type_ids
            k: v
            for k, v in inputs.items()
            if k not in ("input_ids", "attention_mask") and not v.is_floating_point() and v.shape == ids.shape
        }
        extended = {
            k: torch.zeros((len(ids), width), dtype=v.dtype, device=v.device) for k, v in per_token.items()
        }
        for i, (n, t) in enumerate(zip(lengths, targets, strict=True)):
            new_ids[i, :n] = ids[i, :n]
            new_ids[i, n : n + len(t)] = torch.tensor(t, dtype=ids.dtype, device=ids.device)
            new_attn[i, : n + len(t)] = 1
            for k, v in per_token.items():
                extended[k][i, :n] = v[i, :n]
                # Appended word tokens continue the prompt's last token type: text (0) after a chat
                # prompt, the answer side (1) after PaliGemma's pre-filled answer prefix.
                extended[k][i, n : n + len(t)] = v[i, n - 1]
        out |= {"input_ids": new_ids, "attention_mask": new_attn, **extended}
        return out, lengths

    def forward_align(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, class_words: Sequence[str]
    ) -> AlignForward:
        """One differentiable teacher-forced pass of packed inputs (see module doc)."""
        adapter = self.adapter
        batch = self._unpack(inputs)
        n = len(batch["input_ids"])
        pieces = [adapter.word_token_ids(w) for w in class_words]
        label_list = [int(v) for v in torch.as_tensor(labels).tolist()]
        if len(label_list) != n or min(label_list) < 0 or max(label_list) >= len(pieces):
            raise InvalidInputError(f"need {n} labels in [0, {len(pieces)}), got {label_list}")
        full, lengths = self._teacher_forced(batch, [pieces[y] for y in label_list])
        captured: dict[str, Any] = {}

        def lm_in(_m: nn.Module, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured["embeds"] = kwargs["inputs_embeds"]

        def lm_out(_m: nn.Module, _args: Any, output: Any) -> None:
            last = getattr(output, "last_hidden_state", None)
            captured["hidden"] = last if last is not None else first_tensor(output)

        kwargs: dict[str, Any] = {"use_cache": False}
        if adapter._keep_logits:
            kwargs["logits_to_keep"] = 1  # the LM head is applied below, only where it is scored
        with self._last_vision_block(batch, captured):
            handles = [
                adapter.language_model.register_forward_pre_hook(lm_in, with_kwargs=True),
                adapter.language_model.register_forward_hook(lm_out),
            ]
            try:
                self.model(**full, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
        embeds, hidden = captured["embeds"], captured["hidden"]
        # Models that expand each image placeholder inside forward (mPLUG-Owl2) run a longer sequence.
        offset = hidden.shape[1] - full["input_ids"].shape[1]
        image_mask = adapter.visual_mask(full["input_ids"], embeds.shape[1]).to(embeds.device)
        visual = torch.stack([embeds[i][image_mask[i]].float().mean(0) for i in range(n)])

        rows, cols, targets = [], [], []
        for i, (length, y) in enumerate(zip(lengths, label_list, strict=True)):
            for j, token in enumerate(pieces[y]):
                rows.append(i)
                cols.append(offset + length - 1 + j)  # position length-1+j predicts piece j
                targets.append(token)
        dev = hidden.device
        logp = torch.log_softmax(self._head(hidden[rows, cols]).float(), dim=-1)
        nll = -logp[torch.arange(len(targets), device=dev), torch.tensor(targets, device=dev)]
        owner = torch.tensor(rows, device=dev)
        per_image = torch.zeros(n, device=dev).index_add(0, owner, nll) / torch.bincount(owner, minlength=n)
        template_loss = per_image.mean()

        if all(len(p) == 1 for p in pieces):
            # The first piece of every row is scored at its answer position: read all classes there.
            first_rows = [rows.index(i) for i in range(n)]
            class_scores = logp[first_rows][:, [p[0] for p in pieces]]
        else:
            class_scores = self._sequence_scores(batch, pieces).to(dev)
        return AlignForward(
            visual=visual,
            template_loss=template_loss,
            class_scores=class_scores,
            encoder_features=captured["vision"],
        )

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's logits of final hidden states: its LM head (and Gemma-style soft-capping)."""
        head = self.model.get_output_embeddings() or self.model.lm_head
        logits = head(hidden)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @contextmanager
    def _last_vision_block(self, batch: dict[str, torch.Tensor], sink: dict[str, Any]) -> Iterator[None]:
        """Within the block, the last vision block's output is pooled per image into ``sink["vision"]``."""
        pool = self.adapter.vision_pooler(batch, len(batch["input_ids"]))

        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            sink["vision"] = pool(output if isinstance(output, torch.Tensor) else output[0])

        handle = self.adapter.vision_blocks[-1].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def _sequence_scores(self, batch: dict[str, torch.Tensor], pieces: list[list[int]]) -> torch.Tensor:
        """[B, C] full-sequence log-probs of multi-token words, one image at a time (no gradients)."""
        lengths = [int(v) for v in batch["attention_mask"].sum(1).tolist()]
        rows = []
        for i, length in enumerate(lengths):
            one = self._single(batch, i, length)
            rows.append(torch.from_numpy(self.adapter.sequence_log_probs(one, pieces)))
        return torch.stack(rows).float()

    def _single(self, batch: dict[str, torch.Tensor], i: int, length: int) -> dict[str, torch.Tensor]:
        """Image i of an unpacked batch as a batch of one, its padding removed."""
        tokens = batch["input_ids"].shape[1]
        one: dict[str, torch.Tensor] = {}
        for key, value in batch.items():
            if key == self._pixels and value.dim() != 5:
                rows = self.adapter._tiles_per_image(batch, len(batch["input_ids"]))
                start = sum(rows[:i])
                one[key] = value[start : start + rows[i]]
            elif value.dim() >= 2 and value.shape[1] == tokens and key != self._pixels:
                one[key] = value[i : i + 1, :length]
            else:
                one[key] = value[i : i + 1]
        return one

    @torch.no_grad()
    def encoder_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, D_v] pooled last vision block (the ``vision.K`` site), running the vision side only."""
        batch = self._unpack(inputs)
        sink: dict[str, Any] = {}
        names = (self._pixels, "image_grid_thw", "image_sizes", "pixel_attention_mask")
        image_inputs = {k: v for k, v in batch.items() if k in names}
        getter = getattr(getattr(self.model, "model", None), "get_image_features", None)
        with self._last_vision_block(batch, sink):
            if getter is not None:
                getter(**image_inputs)
            else:  # a mapped model without the transformers helper: its vision tower on the pixels
                self.adapter.vision_tower(batch[self._pixels])
        return sink["vision"]

    def encoder_class_logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """None: the vision towers of these models have no classifier of their own."""
        return None

    def class_word_embeddings(self, class_words: Sequence[str]) -> torch.Tensor:
        """[C, D_lm] input-embedding rows of each word's in-context pieces, averaged (differentiable)."""
        table = self.model.get_input_embeddings().weight
        return torch.stack(
            [
                table[torch.tensor(self.adapter.word_token_ids(w), device=table.device)].float().mean(0)
                for w in class_words
            ]
        )

    # -- checkpoint -----------------------------------------------------------------------------

    def _stored_components(self, trained: Sequence[str]) -> list[str]:
        """The trained components plus any that carries LoRA layers (they changed too)."""
        bad = sorted(set(trained) - set(COMPONENTS))
        if bad:
            raise InvalidInputError(f"unknown component(s) {bad}; choose from {', '.join(COMPONENTS)}")
        with_lora = [c for c, m in self._components.items() if any(_is_lora_layer(s) for s in m.modules())]
        return [c for c in COMPONENTS if c in trained or c in with_lora]

    def trained_state(self, components: Sequence[str]) -> dict[str, torch.Tensor]:
        """The components' parameters under their names in the plain model, LoRA deltas merged in."""
        wanted = {id(p) for c in components for p in self._components[c].parameters()}
        lora = {name: m for name, m in self.model.named_modules() if _is_lora_layer(m)}
        state: dict[str, torch.Tensor] = {}
        for name, param in self.model.named_parameters():
            if id(param) not in wanted or _LORA_PARAM.search(name + "."):
                continue
            tensor = param.detach()
            owner, _, leaf = name.rpartition(".")
            if (
                owner.endswith(".base_layer")
                and owner.removesuffix(".base_layer") in lora
                and leaf == "weight"
            ):
                layer = lora[owner.removesuffix(".base_layer")]
                if getattr(layer, "use_dora", {}) and any(layer.use_dora.values()):
                    raise InvalidInputError("DoRA layers cannot be merged into a plain checkpoint")
                if not getattr(layer, "disable_adapters", False):
                    merged = set(getattr(layer, "merged_adapters", []))
                    for a in layer.active_adapters:
                        if a in layer.lora_A and a not in merged:
                            tensor = tensor + layer.get_delta_weight(a).detach().to(tensor.dtype)
            state[name.replace(".base_layer.", ".")] = tensor.contiguous().clone()
        return state

    def save_checkpoint(
        self, folder: str | os.PathLike[str], trained: Sequence[str], info: dict[str, Any]
    ) -> Path:
        """Write ``hf_aligned.safetensors`` + ``hf_aligned.json`` (see module doc); returns the folder."""
        stored = self._stored_components(trained)
        if not stored:
            raise InvalidInputError("nothing to save: no component was trained")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = self.trained_state(stored)
        atomic_save_safetensors(state, out / WEIGHTS_FILE, {"format_version": str(FORMAT_VERSION)})
        source = Path(self.adapter.source)
        base = str(source.resolve()) if source.is_dir() else self.adapter.source
        write_json(
            out / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "kind": "hf_aligned",
                "model_id": str(info.get("model_id") or f"{self.model_id}+aligned"),
                "base_model": base,
                "base_model_id": self.model_id,
                "adapter": self.adapter.load_options,
                "components": stored,
                "n_tensors": len(state),
                "info": info,
            },
        )
        return out


def _pad_to(value: torch.Tensor, shape: tuple[int, ...], fill: int | float) -> torch.Tensor:
    """``value`` right-padded with ``fill`` to ``shape`` (same number of dimensions)."""
    if tuple(value.shape) == tuple(shape):
        return value
    out = value.new_full(shape, fill)
    out[tuple(slice(0, d) for d in value.shape)] = value
    return out


def _is_lora_sub(name: str) -> bool:
    """Linear layers peft itself added (``lora_A.default``) or wraps (``base_layer``) are no targets."""
    return bool(_LORA_PARAM.search("." + name + ".")) or name.endswith("base_layer")


def as_alignable(model: Any) -> HFAlignable:
    """The :class:`HFAlignable` view of an HF model loaded by :func:`iqalens.models.loading.load_model`."""
    if isinstance(model, HFAlignable):
        return model
    if isinstance(model, HFVLMAdapter):
        return HFAlignable(model)
    raise InvalidInputError(f"{getattr(model, 'model_id', model)}: not a Hugging Face multimodal LLM adapter")
