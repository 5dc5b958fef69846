"""Loading Hugging Face image-text-to-text models and rendering prompts for them.

Shared by every HF-based model in iqalens: the LEAF teacher (:mod:`iqalens.leaf.teachers.hf`), the
perception adapter (:mod:`iqalens.models.hf_vlm`) and the dual encoders
(:mod:`iqalens.models.dual_encoder`), so all of them load checkpoints and render prompts the same way.

- :func:`load_vlm`: (model in eval mode, processor, input device) of a checkpoint;
  :func:`checkpoint_name` turns a local folder or hub id into (name to load, short id).
- :func:`build_prompt_text`: a :class:`~iqalens.models.prompts.Prompt` rendered by the processor's
  own chat template, so each family sees its native format, with the assistant turn pre-filled by
  the answer prefix (a space joins it to the generation prompt unless that already ends in
  whitespace: "ASSISTANT:" -> "ASSISTANT: The ...", "<|im_start|>assistant\\n" -> unchanged).
- :func:`answer_token_ids`: the token the model would emit first for each answer word, tokenised
  *in context* (``prefix + " " + word`` minus ``prefix``), so byte-level BPE (``Ġexcellent``) and
  SentencePiece (``▁excellent``) vocabularies both give the token the model would actually emit.
  When a word spans several tokens only its **first** token is used; the words' first tokens must
  differ, otherwise a judgment could not separate them and loading fails with a clear error.

Machines without torchvision: transformers (checked with 5.24) cannot even construct processors that
declare a video processor (Qwen2-VL, Qwen2.5-VL, InternVL, LLaVA-OneVision) there, because its video
processors require torchvision. :func:`load_processor` then builds the same processor class without
its video part (:func:`processor_class_without_video`); images use the PIL backend of the image
processor, which is what transformers picks without torchvision anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from iqalens.errors import InvalidInputError
from iqalens.models.prompts import Prompt

__all__ = [
    "answer_token_ids",
    "build_prompt_text",
    "checkpoint_name",
    "load_processor",
    "load_vlm",
    "processor_class_without_video",
]


@functools.cache
def processor_class_without_video(cls: Any) -> type[Any]:
    """``cls`` (a transformers ``ProcessorMixin`` subclass) with its video sub-processor removed.

    Why: without torchvision, transformers cannot load or even type-check a video processor, so
    image-only use of Qwen2-VL or InternVL processors fails at construction. The subclass declares
    only the remaining sub-processors (image processor, tokenizer), so ``from_pretrained`` loads
    just those and ``save_pretrained`` writes a config that still names the original class.
    Processors without a video part are returned unchanged.
    """
    if not any("video" in name for name in cls.get_attributes()):
        return cls

    class _WithoutVideo(cls):
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
            raise InvalidInputError(f"the tokenizer produces no token for answer word {word!r}")
        ids.append(int(alone[0]))
    if len(set(ids)) != len(ids):
        raise InvalidInputError(
            f"answer words {list(words)} share first tokens {ids}; they cannot be told apart"
        )
    return ids


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise InvalidInputError(f"unknown dtype {dtype!r} (use float32, bfloat16, float16 or auto)")
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
    model: Any = AutoModelForImageTextToText.from_pretrained(
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
