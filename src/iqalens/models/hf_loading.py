"""Loading Hugging Face image-text-to-text models and rendering prompts for them.

Shared by every HF-based model in iqalens: the LEAF teacher (:mod:`iqalens.leaf.teachers.hf`), the
perception adapter (:mod:`iqalens.models.hf_vlm`) and the dual encoders
(:mod:`iqalens.models.dual_encoder`), so all of them load checkpoints and render prompts the same way.

- :func:`open_vlm`: a checkpoint's model in eval mode, its processor (or a template processor for a
  model that ships none), the input device, its prompt format and component map, with the loading
  options of real-size models (remote code only when allowed, device maps, dtype, 8/4-bit, image
  budget); :func:`load_vlm` is its (model, processor, device) short form;
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
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.models.hf_components import ComponentMap, ModelLayout, layout_for, with_map
from iqalens.models.hf_inputs import PromptFormat, TemplateProcessor, build_prompt_text, check_template
from iqalens.models.hf_options import apply_max_pixels, model_loading_kwargs

__all__ = [
    "LoadedVLM",
    "answer_token_ids",
    "build_prompt_text",
    "checkpoint_name",
    "load_processor",
    "load_vlm",
    "open_vlm",
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


@dataclass
class LoadedVLM:
    """What :func:`open_vlm` returns: the model, its input side, and how prompts are built for it."""

    model: Any
    processor: Any  # the family's processor, or a TemplateProcessor for a model that ships none
    device: torch.device  # where inputs go (the input embeddings' device under a device_map)
    model_type: str
    prompt_format: PromptFormat
    component_map: ComponentMap | None  # the user's map, else the table's (None: resolved later)


def open_vlm(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    components: str | ComponentMap | None = None,
    prompt_template: str | None = None,
    max_pixels: int | None = None,
    device_map: str | None = None,
    quantization: str | None = None,
) -> LoadedVLM:
    """Load an image-text-to-text checkpoint (or a remote-code one) with its processor, in eval mode.

    Shared by the teacher and the perception adapter so both load checkpoints the same way.
    ``trust_remote_code`` lets transformers run the model code a checkpoint ships (never on by
    default: it executes code from the checkpoint's folder or repository); the model class is then
    the first of the ``auto_map``'s image-text-to-text, causal-LM or plain classes. A model without
    a processor gets a :class:`~iqalens.models.hf_inputs.TemplateProcessor` (its tokenizer, image
    processor and a template string). ``components`` (a component map, see
    :mod:`iqalens.models.hf_components`) and ``prompt_template`` override the family's table row;
    ``max_pixels``, ``device_map`` and ``quantization`` are the options of
    :mod:`iqalens.models.hf_options`. With a device map the model is placed by accelerate and inputs
    go where its embeddings are; otherwise it is moved to ``device``. A missing pad token is set to
    EOS: batches are right-padded and masked, so the pad id is never read.
    """
    hub = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    config = _load_config(name, hub)
    model_type = str(getattr(config, "model_type", ""))
    given = ComponentMap.parse(components) if isinstance(components, str) else components
    layout = with_map(layout_for(model_type), given)
    fmt = _prompt_format(layout, prompt_template)
    processor = load_processor(name, processor_kwargs, **hub)
    if not hasattr(processor, "image_processor"):
        processor = _template_processor(name, processor, config, layout, fmt, processor_kwargs, hub)
    elif fmt.template is None and not _has_chat_template(processor):
        raise ConfigError(
            f"{name} has no chat template; give a prompt template with {{prompt}} where the user turn goes"
        )
    apply_max_pixels(processor, model_type, max_pixels)
    text_dtype = str(dtype).removeprefix("torch.")
    kwargs = model_loading_kwargs(device_map, quantization, text_dtype) | dict(model_kwargs or {})
    model: Any = _model_class(config, trust_remote_code).from_pretrained(
        name, dtype=_resolve_dtype(dtype), **hub, **kwargs
    )
    if "device_map" in kwargs:
        target = model.get_input_embeddings().weight.device
    else:
        target = torch.device(device)
        model.to(target)
    model.eval()
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedVLM(model, processor, target, model_type, fmt, layout.components if layout else None)


def load_vlm(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any, torch.device]:
    """(model in eval mode, processor, input device): :func:`open_vlm` without the extras."""
    loaded = open_vlm(
        name,
        device=device,
        dtype=dtype,
        local_files_only=local_files_only,
        trust_remote_code=trust_remote_code,
        model_kwargs=model_kwargs,
        processor_kwargs=processor_kwargs,
    )
    return loaded.model, loaded.processor, loaded.device


def _load_config(name: str, hub: dict[str, Any]) -> Any:
    """The checkpoint's config; a clear error when it needs remote code that was not allowed."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    local = Path(name) / "config.json"
    if not hub["trust_remote_code"] and local.is_file():
        saved = json.loads(local.read_text())
        if saved.get("auto_map") and saved.get("model_type") not in CONFIG_MAPPING:
            raise ConfigError(_remote_code_message(name, sorted(saved["auto_map"].values())))
    try:
        return AutoConfig.from_pretrained(name, **hub)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not hub["trust_remote_code"]:
            raise ConfigError(_remote_code_message(name, [])) from None
        raise


def _remote_code_message(name: str, files: list[str]) -> str:
    shipped = f" ({', '.join(files)})" if files else ""
    return (
        f"{name} ships its own model code{shipped}; loading it runs that code, so it must be allowed "
        "explicitly (trust_remote_code) after reading it"
    )


def _model_class(config: Any, trust_remote_code: bool) -> Any:
    import transformers

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map:
        for cls in (
            "AutoModelForImageTextToText",
            "AutoModelForVision2Seq",
            "AutoModelForCausalLM",
            "AutoModel",
        ):
            if cls in auto_map and hasattr(transformers, cls):
                return getattr(transformers, cls)
    return transformers.AutoModelForImageTextToText


def _prompt_format(layout: ModelLayout | None, template: str | None) -> PromptFormat:
    cmap = layout.components if layout else None
    image_input = cmap.image_input if cmap else "pixel_values"
    if template is not None:
        check_template(template)
    chosen = template if template is not None else (layout.template if layout else None)
    image_text = (layout.image_text if layout else "") or "<image>"
    after = bool(layout and layout.answer_after_prompt)
    return PromptFormat(chosen, image_text, after, image_input)


def _has_chat_template(processor: Any) -> bool:
    tokenizer = getattr(processor, "tokenizer", None)
    return bool(getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None))


def _template_processor(
    name: str,
    loaded: Any,
    config: Any,
    layout: ModelLayout | None,
    fmt: PromptFormat,
    processor_kwargs: dict[str, Any] | None,
    hub: dict[str, Any],
) -> TemplateProcessor:
    """The processor of a model that ships only a tokenizer and an image processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if fmt.template is None:
        raise ConfigError(
            f"{name} has no processor and no known prompt format; give a prompt template with {{prompt}} "
            "where the user turn goes"
        )
    token = layout.components.image_token_id if layout else None
    if token is None:
        token = getattr(config, "image_token_id", None)
        token = getattr(config, "image_token_index", None) if token is None else token
    if token is None:
        raise ConfigError(
            f"{name}: the config names no image token id; give image_token_id in the component map"
        )
    tokenizer = (
        loaded if hasattr(loaded, "convert_tokens_to_ids") else AutoTokenizer.from_pretrained(name, **hub)
    )
    image_processor = AutoImageProcessor.from_pretrained(name, **hub, **(processor_kwargs or {}))
    return TemplateProcessor(tokenizer, image_processor, fmt.image_text, int(token), fmt.image_input)
