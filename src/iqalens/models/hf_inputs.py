"""Model inputs of prompts with images: chat templates, template strings, and processor-less models.

Shared by the perception adapter (:mod:`iqalens.models.hf_vlm`) and the LEAF teacher
(:mod:`iqalens.leaf.teachers.hf`), so both turn a :class:`~iqalens.models.prompts.Prompt` into
tensors the same way:

- a family with a chat template (LLaVA, Qwen, InternVL, Idefics3, Gemma 3, ...) renders the user
  turn with it (:func:`iqalens.models.hf_loading.build_prompt_text`);
- a family without one (PaliGemma, mPLUG-Owl2) uses a **template string** with ``{prompt}`` where
  the user turn goes (``"USER: {prompt} ASSISTANT:"``), images rendered as the family's image text
  (:class:`PromptFormat`); a user's template replaces the family's in either case;
- a model that ships **no processor** at all (mPLUG-Owl2 and other LLaVA-1.5-original-style code:
  a tokenizer and an image processor only) gets a :class:`TemplateProcessor`: the text is split
  at the image text, each image becomes one placeholder id (``-200`` for mPLUG-Owl2) that the
  model's own forward expands into its visual tokens, and pixels go under the model's image
  argument (``images``).

:func:`encode_prompts` also handles a processor that closes the prompt itself (PaliGemma appends a
newline after the prefix): the pre-filled answer prefix is then appended to its output as answer
tokens (``token_type_ids`` 1, the causal part of PaliGemma's prefix-LM), instead of inside the text
where it would end up before that newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.models.prompts import Prompt

__all__ = [
    "PromptFormat",
    "TemplateProcessor",
    "build_prompt_text",
    "check_template",
    "encode_prompts",
    "render_template",
]

#: The placeholder a template string must contain once.
PROMPT_FIELD = "{prompt}"


def check_template(template: str) -> str:
    """``template`` if it holds ``{prompt}`` exactly once (and no other field), else ConfigError."""
    if template.count(PROMPT_FIELD) != 1:
        raise ConfigError(f"a prompt template needs {PROMPT_FIELD} exactly once, got {template!r}")
    rest = template.replace(PROMPT_FIELD, "")
    if "{" in rest or "}" in rest:
        raise ConfigError(f"a prompt template may hold no field but {PROMPT_FIELD}, got {template!r}")
    return template


@dataclass(frozen=True)
class PromptFormat:
    """How prompts become text for one model (see module doc).

    ``template``: None renders with the processor's chat template. ``image_text``: an image part in a
    template-rendered prompt. ``answer_after_prompt``: append the answer prefix as tokens after the
    processor's output. ``image_input``: the forward argument that takes the pixels.
    """

    template: str | None = None
    image_text: str = "<image>"
    answer_after_prompt: bool = False
    image_input: str = "pixel_values"


def render_template(fmt: PromptFormat, prompt: Prompt) -> str:
    """The user turn of ``prompt`` in ``fmt.template`` (images as ``fmt.image_text``), no answer prefix."""
    assert fmt.template is not None
    turn = "".join(fmt.image_text if kind == "image" else str(value) for kind, value in prompt.parts)
    return fmt.template.replace(PROMPT_FIELD, turn)


class TemplateProcessor:
    """The processor of a model that ships none: its tokenizer and image processor, one placeholder id
    per image (expanded by the model), pixels under ``image_input``.

    Offers what :func:`encode_prompts` calls: ``tokenizer``, and ``__call__(text=, images=, ...)``
    returning ``input_ids``, ``attention_mask`` and the pixels. Each text must hold ``image_text``
    once per image; the first text segment gets the tokenizer's special tokens (BOS), the others none.
    """

    def __init__(
        self, tokenizer: Any, image_processor: Any, image_text: str, image_token_id: int, image_input: str
    ) -> None:
        if not image_text:
            raise ConfigError("a processor-less model needs the text that marks an image in its prompts")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_text = image_text
        self.image_token_id = int(image_token_id)
        self.image_input = image_input

    def encode_text(self, text: str) -> list[int]:
        """Token ids of one prompt, each image text replaced by the placeholder id."""
        ids: list[int] = []
        for i, segment in enumerate(text.split(self.image_text)):
            if i:
                ids.append(self.image_token_id)
            if segment or i == 0:
                ids += self.tokenizer(segment, add_special_tokens=i == 0)["input_ids"]
        return ids

    def __call__(
        self, *, text: Sequence[str], images: Sequence[Any] | None = None, **_: Any
    ) -> dict[str, torch.Tensor]:
        rows = [self.encode_text(t) for t in text]
        width = max(len(r) for r in rows)
        pad = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        out: dict[str, torch.Tensor] = {
            "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        }
        flat = [im for group in images or [] for im in (group if isinstance(group, list) else [group])]
        n_slots = sum(r.count(self.image_token_id) for r in rows)
        if n_slots != len(flat):
            raise InvalidInputError(f"{n_slots} image places in the prompts for {len(flat)} images")
        if flat:
            pixels = self.image_processor(images=flat, return_tensors="pt")["pixel_values"]
            out[self.image_input] = pixels
        return out


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


def _render(processor: Any, fmt: PromptFormat, prompt: Prompt) -> tuple[str, str]:
    """(text for the processor, answer prefix left to append as tokens; "" when it is in the text)."""
    if fmt.template is None and not fmt.answer_after_prompt:
        return build_prompt_text(processor, prompt), ""
    if fmt.template is not None:
        text = render_template(fmt, prompt)
    else:
        text = build_prompt_text(processor, Prompt(prompt.parts, None, prompt.choices, prompt.n_images))
    prefix = prompt.answer_prefix or ""
    if fmt.answer_after_prompt:
        return text, prefix
    if prefix:
        text += ("" if not text or text[-1].isspace() else " ") + prefix
    return text, ""


def encode_prompts(
    processor: Any,
    fmt: PromptFormat,
    prompts: Sequence[Prompt],
    images: Sequence[Sequence[Image.Image]],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Right-padded model inputs of ``prompts`` (``images[i]``: prompt i's images in prompt order).

    Floating tensors are cast to ``dtype`` and everything is moved to ``device``; the ``labels``
    some processors add (PaliGemma) are dropped.
    """
    rendered = [_render(processor, fmt, p) for p in prompts]
    texts = [t for t, _ in rendered]
    kwargs: dict[str, Any] = {"padding": True, "padding_side": "right", "return_tensors": "pt"}
    batch = processor(text=texts, images=[list(group) for group in images], **kwargs)
    inputs: dict[str, torch.Tensor] = {
        k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"
    }
    if fmt.image_input != "pixel_values" and "pixel_values" in inputs:
        inputs[fmt.image_input] = inputs.pop("pixel_values")
    suffixes = [s for _, s in rendered]
    if any(suffixes):
        tokenizer = processor.tokenizer
        tails = [tokenizer(s, add_special_tokens=False)["input_ids"] if s else [] for s in suffixes]
        pad = tokenizer.pad_token_id
        inputs = _append_answer_tokens(inputs, tails, int(pad if pad is not None else 0))
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}


def _append_answer_tokens(
    inputs: dict[str, torch.Tensor], tails: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Each row's ``tails`` tokens placed right after its real tokens, as answer-side tokens.

    ``attention_mask`` is 1 there, every other per-token row (``token_type_ids``) 1 as well: the
    answer part of a prefix-LM, attended causally. Padding stays after them.
    """
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    lengths = [int(v) for v in attn.sum(1).tolist()]
    width = max(n + len(t) for n, t in zip(lengths, tails, strict=True))
    out = dict(inputs)
    for key, value in inputs.items():
        if value.shape != ids.shape or value.is_floating_point():
            continue
        grown = value.new_full((len(ids), width), pad_id if key == "input_ids" else 0)
        for i, (n, tail) in enumerate(zip(lengths, tails, strict=True)):
            grown[i, :n] = value[i, :n]
            if key == "input_ids":
                grown[i, n : n + len(tail)] = torch.tensor(tail, dtype=value.dtype)
            else:
                grown[i, n : n + len(tail)] = 1
        out[key] = grown
    return out
