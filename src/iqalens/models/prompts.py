"""A question to a vision-language model: user-turn parts, an optional answer prefix, answer words.

A prompt is a sequence of :data:`Part` items for the user turn: ``("image", i)`` places the i-th
image of the request and ``("text", s)`` a text segment, in order. Each backend turns the parts
into its own message format (an HF processor's ``{"type": "image"}`` via
:func:`iqalens.models.hf_loading.build_prompt_text`, OpenAI ``image_url`` parts). The assistant
turn is pre-filled with ``answer_prefix`` when it is set, and the next-token probabilities of the
``choices`` words are read.

This module is model-level vocabulary and imports nothing heavy; the LEAF prompt *texts* live in
:mod:`iqalens.leaf.prompts`, the perception forced-choice prompt in :mod:`iqalens.models.hf_vlm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Part", "PartKind", "Prompt"]

PartKind = Literal["image", "text"]
#: ``("image", index)`` or ``("text", segment)``.
Part = tuple[PartKind, int | str]


@dataclass(frozen=True)
class Prompt:
    """One question: user-turn parts, an optional assistant prefix, and the answer words to read."""

    parts: tuple[Part, ...]
    answer_prefix: str | None  # None: no pre-fill, the first generated token is read
    choices: tuple[str, ...]  # words whose first-token probabilities form the answer
    n_images: int

    def text(self) -> str:
        """The user turn's text segments joined by newlines (for logs and tests)."""
        return "\n".join(str(v) for k, v in self.parts if k == "text")
