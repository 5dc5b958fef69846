"""A Hugging Face multimodal LLM as LEAF teacher.

Families (anything ``AutoModelForImageTextToText`` loads, tested on tiny random models of): LLaVA,
LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL and InternVL3/3.5 in transformers' native format
(the ``OpenGVLab/InternVL3-8B-hf``-style checkpoints, not the remote-code ones).

How a judgment is read (the Q-Align / LEAF recipe, prompts in :mod:`iqalens.leaf.prompts`):

1. the user turn holds the image(s) and the question, rendered by the processor's own chat
   template, so each family sees its native format;
2. the assistant turn is pre-filled with the answer prefix ("The quality of the image is"); a
   space joins it to the template's generation prompt unless that already ends in whitespace
   ("ASSISTANT:" -> "ASSISTANT: The ...", "<|im_start|>assistant\\n" -> unchanged);
3. one forward pass; the next-token logits at the last real position are read for the answer
   words (five levels, or "first"/"second" for a pair), and the softmax over those words is the
   judgment. This equals the model's full-vocabulary probabilities renormalised to the words.

Answer-word tokens: a word is tokenised *in context* (``prefix + " " + word`` minus ``prefix``),
so byte-level BPE (``Ġexcellent``) and SentencePiece (``▁excellent``) vocabularies both give the
token the model would actually emit. When a word spans several tokens only its **first** token is
scored (its log-probability is then an upper bound of the word's); the words' first tokens must
differ, otherwise the judgment could not separate them and loading fails with a clear error.

Batching: several prompts go through one forward pass, padded on the right. Right padding keeps
every real token at the position it has when run alone, whatever position scheme the family uses
(1D RoPE, Qwen's 3D M-RoPE), so a batch gives the same judgments as one-by-one runs; the logit at
each row's last real token is selected with ``logits_to_keep`` so the vocabulary projection is
only computed where it is read.

Pairs are asked in both orders in the same batch and combined by ``PairJudgment.from_orders``.

Machines without torchvision: transformers (checked with 5.24) cannot even construct processors that declare a
video processor (Qwen2-VL, Qwen2.5-VL, InternVL, LLaVA-OneVision) there, because its video
processors require torchvision. :func:`load_processor` then builds the same processor class
without its video part (:func:`processor_class_without_video`); images use the PIL backend of the
image processor, which is what transformers picks without torchvision anyway.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqalens.images import load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.prompts import Prompt, pair_prompt, point_prompt, prompt_version

__all__ = [
    "HFTeacher",
    "Request",
    "answer_token_ids",
    "build_prompt_text",
    "load_processor",
    "load_vlm",
    "checkpoint_name",
    "processor_class_without_video",
]


@dataclass(frozen=True)
class Request:
    """One question to the model: a prompt and the images its ``("image", i)`` parts refer to."""

    prompt: Prompt
    images: tuple[Image.Image, ...]

    def ordered_images(self) -> list[Image.Image]:
        """The images in the order their placeholders appear in the rendered prompt."""
        return [self.images[int(value)] for kind, value in self.prompt.parts if kind == "image"]


@functools.cache
def processor_class_without_video(cls: type) -> type:
    """``cls`` (a transformers ``ProcessorMixin`` subclass) with its video sub-processor removed.

    Why: without torchvision, transformers cannot load or even type-check a video processor, so
    image-only use of Qwen2-VL or InternVL processors fails at construction. The subclass declares
    only the remaining sub-processors (image processor, tokenizer), so ``from_pretrained`` loads
    just those and ``save_pretrained`` writes a config that still names the original class.
    Processors without a video part are returned unchanged.
    """
    if not any("video" in name for name in cls.get_attributes()):
        return cls

    class _WithoutVideo(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(klass) -> list[str]:
            return [name for name in super().get_attributes() if "video" not in name]

        @classmethod
        def from_args_and_dict(klass, args: Any, processor_dict: dict[str, Any], **kwargs: Any) -> Any:
            processor_dict = {k: v for k, v in processor_dict.items() if k != "video_processor"}
            return super().from_args_and_dict(args, processor_dict, **kwargs)

    _WithoutVideo.__name__ = cls.__name__
    _WithoutVideo.__qualname__ = cls.__qualname__
    return _WithoutVideo


def _processor_class_for(name: str, **hub_kwargs: Any) -> type | None:
    """The processor class transformers maps this checkpoint's ``model_type`` to, if any."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    config = AutoConfig.from_pretrained(name, **hub_kwargs)
    class_name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    return getattr(transformers, class_name, None) if isinstance(class_name, str) else None


def load_processor(name: str, processor_kwargs: dict[str, Any] | None = None, **hub_kwargs: Any) -> Any:
    """``AutoProcessor.from_pretrained``, or the video-less processor where torchvision is missing.

    ``processor_kwargs`` override the saved processor settings (e.g. Qwen2-VL's ``size`` pixel budget,
    which bounds the number of image tokens); ``hub_kwargs`` are the loading options
    (``local_files_only``, ``trust_remote_code``, ...).
    """
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    extra = processor_kwargs or {}
    if not is_torchvision_available():
        cls = _processor_class_for(name, **hub_kwargs)
        if cls is not None:
            return processor_class_without_video(cls).from_pretrained(name, **hub_kwargs, **extra)
    return AutoProcessor.from_pretrained(name, **hub_kwargs, **extra)


def build_prompt_text(processor: Any, prompt: Prompt) -> str:
    """The full model input text: chat template with the user turn, then the answer prefix."""
    content: list[dict[str, str]] = [
        {"type": "image"} if kind == "image" else {"type": "text", "text": str(value)}
        for kind, value in prompt.parts
    ]
    text: str = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    if prompt.answer_prefix:
        text += ("" if not text or text[-1].isspace() else " ") + prompt.answer_prefix
    return text


def answer_token_ids(tokenizer: Any, words: Sequence[str], context: str | None) -> list[int]:
    """The token id the model would emit first for each word, right after ``context``.

    With a context (the answer prefix) the word is tokenised as ``context + " " + word`` and the
    first token after the context's own tokens is taken; without one (no pre-fill) the word is
    tokenised alone. Multi-token words are represented by their first token (see module doc).
    Raises ``ValueError`` when two words map to the same token.
    """
    ids: list[int] = []
    base = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    for word in words:
        if context:
            full = tokenizer(f"{context} {word}", add_special_tokens=False)["input_ids"]
            if full[: len(base)] == base and len(full) > len(base):
                ids.append(int(full[len(base)]))
                continue
            # The word merged with the end of the context; fall back to the word with its space.
            alone = tokenizer(f" {word}", add_special_tokens=False)["input_ids"]
        else:
            alone = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not alone:
            raise ValueError(f"the tokenizer produces no token for answer word {word!r}")
        ids.append(int(alone[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer words {list(words)} share first tokens {ids}; they cannot be told apart")
    return ids


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or auto)")
    return resolved


def checkpoint_name(model: str | Path) -> tuple[str, str]:
    """(name to load, short id): a local folder (``~`` expanded) is named by its folder name, a hub
    id by itself. Two local checkpoints in folders of the same name share the short id; callers
    let users pass an explicit id for that case."""
    local = Path(str(model)).expanduser()
    return (str(local), local.name) if local.is_dir() else (str(model), str(model))


def load_vlm(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any, torch.device]:
    """(model in eval mode, processor, input device) of an image-text-to-text checkpoint.

    Shared by the teacher and the perception adapter so both load checkpoints the same way. With
    a ``device_map`` in ``model_kwargs`` the model is sharded by accelerate and inputs go where its
    embeddings are; otherwise it is moved to ``device``. A missing pad token is set to EOS: batches
    are right-padded and masked, so the pad id is never read.
    """
    from transformers import AutoModelForImageTextToText

    hub = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    processor = load_processor(name, processor_kwargs, **hub)
    model = AutoModelForImageTextToText.from_pretrained(
        name, dtype=_resolve_dtype(dtype), **hub, **(model_kwargs or {})
    )
    if model_kwargs and "device_map" in model_kwargs:
        target = model.get_input_embeddings().weight.device
    else:
        target = torch.device(device)
        model.to(target)
    model.eval()
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return model, processor, target


class HFTeacher:
    """A transformers image-text-to-text model judging quality by its answer-word logits.

    ``model`` is a local checkpoint folder or a hub id (loaded with ``AutoProcessor`` and
    ``AutoModelForImageTextToText``; pass ``local_files_only=True`` to forbid downloads).
    ``batch_size`` prompts share one forward pass (a pair counts as two prompts: both orders).
    ``device`` / ``dtype`` place the model (``"cpu"`` / float32 by default; ``dtype="auto"`` keeps
    the checkpoint's); ``model_kwargs`` go to ``from_pretrained`` (e.g. ``device_map="auto"`` to
    shard a large model, ``attn_implementation``), ``processor_kwargs`` override processor
    settings (e.g. ``{"size": {"shortest_edge": 56 * 56, "longest_edge": 1024 * 28 * 28}}`` for
    Qwen2-VL, whose ``size`` is a pixel budget).
    ``teacher_id`` defaults to ``hf:<hub id>`` or ``hf:<folder name>`` for a local checkpoint, so
    the same checkpoint copied to another machine keeps its judgments; pass it explicitly to tell
    apart two local checkpoints with the same folder name.
    """

    supports_pairs: bool = True

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        batch_size: int = 8,
        prefill: bool = True,
        teacher_id: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        name, short = checkpoint_name(model)
        self.teacher_id = teacher_id or f"hf:{short}"
        self.prompt_version = prompt_version(prefill)
        self.batch_size = batch_size
        self.point = point_prompt(prefill)
        self.pair = pair_prompt(prefill)
        self.model, self.processor, self.device = load_vlm(
            name, device, dtype, local_files_only, trust_remote_code, model_kwargs, processor_kwargs
        )
        self._keep_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        tokenizer = self.processor.tokenizer
        self.level_ids = answer_token_ids(tokenizer, self.point.choices, self.point.answer_prefix)
        self.choice_ids = answer_token_ids(tokenizer, self.pair.choices, self.pair.answer_prefix)

    # -- public API (Teacher protocol) -------------------------------------------------------

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One point judgment per image; ``batch_size`` images per forward pass."""
        out: list[PointJudgment] = []
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start : start + self.batch_size]
            requests = [Request(self.point, (_load(p),)) for p in chunk]
            logits = self.answer_logits(requests, self.level_ids)
            out.extend(PointJudgment.from_logits(row) for row in logits)
        return out

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """One judgment per ordered pair (a, b); both orders are asked in the same forward pass."""
        out: list[PairJudgment] = []
        per_batch = max(1, self.batch_size // 2)
        for start in range(0, len(pairs), per_batch):
            requests: list[Request] = []
            for a_path, b_path in pairs[start : start + per_batch]:
                a, b = _load(a_path), _load(b_path)
                requests += [Request(self.pair, (a, b)), Request(self.pair, (b, a))]
            p_first = _first_probability(self.answer_logits(requests, self.choice_ids))
            out.extend(
                PairJudgment.from_orders(p_first[i], p_first[i + 1]) for i in range(0, len(requests), 2)
            )
        return out

    # -- the one forward pass -----------------------------------------------------------------

    def prepare(self, requests: Sequence[Request]) -> dict[str, torch.Tensor]:
        """Processor output (right-padded, on the model's device) for a batch of requests."""
        texts = [build_prompt_text(self.processor, r.prompt) for r in requests]
        images = [im for r in requests for im in r.ordered_images()]
        batch = self.processor(
            text=texts, images=images, padding=True, padding_side="right", return_tensors="pt"
        )
        inputs: dict[str, torch.Tensor] = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.model.dtype)
            inputs[key] = value
        return inputs

    @torch.inference_mode()
    def answer_logits(self, requests: Sequence[Request], token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logits of ``token_ids`` after each request's prompt, shape (len(requests), len(ids))."""
        if not requests:
            return np.zeros((0, len(token_ids)))
        inputs = self.prepare(requests)
        mask = inputs["attention_mask"]
        length = mask.shape[1]
        # Index of each row's last real token (works for right, left or no padding).
        last = (length - 1 - torch.argmax(mask.flip(1).to(torch.int64), dim=1)).to(torch.int64)
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._keep_logits:
            keep = torch.unique(last)  # sorted
            kwargs["logits_to_keep"] = keep
            column = torch.searchsorted(keep, last)
        else:
            column = last
        logits = self.model(**inputs, **kwargs).logits
        rows = logits[torch.arange(len(requests), device=logits.device), column.to(logits.device)]
        ids = torch.tensor(list(token_ids), device=rows.device)
        return rows[:, ids].float().cpu().numpy().astype(np.float64)


def _load(path: Path) -> Image.Image:
    return Image.fromarray(load_rgb(path))


def _first_probability(logits: np.ndarray) -> list[float]:
    """P(first) from (first, second) logits, by a two-way softmax."""
    return [float(v) for v in 0.5 * (1.0 + np.tanh((logits[:, 0] - logits[:, 1]) / 2.0))]
