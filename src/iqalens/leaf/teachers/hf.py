"""A Hugging Face multimodal LLM as LEAF teacher.

Families (anything ``AutoModelForImageTextToText`` loads, tested on tiny random models of): LLaVA,
LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL and InternVL3/3.5 in transformers' native format
(the ``OpenGVLab/InternVL3-8B-hf``-style checkpoints, not the remote-code ones).

How a judgment is read (the Q-Align / LEAF recipe, prompts in :mod:`iqalens.leaf.prompts`; loading,
prompt rendering and answer-word tokens in :mod:`iqalens.models.hf_loading`):

1. the user turn holds the image(s) and the question, rendered by the processor's own chat
   template, so each family sees its native format;
2. the assistant turn is pre-filled with the answer prefix ("The quality of the image is");
3. one forward pass; the next-token logits at the last real position are read for the answer
   words (five levels, or "first"/"second" for a pair), and the softmax over those words is the
   judgment. This equals the model's full-vocabulary probabilities renormalised to the words.
   A word spanning several tokens is scored by its first token (its log-probability is then an
   upper bound of the word's; see :func:`iqalens.models.hf_loading.answer_token_ids`).

Batching: several prompts go through one forward pass, padded on the right. Right padding keeps
every real token at the position it has when run alone, whatever position scheme the family uses
(1D RoPE, Qwen's 3D M-RoPE), so a batch gives the same judgments as one-by-one runs; the logit at
each row's last real token is selected with ``logits_to_keep`` so the vocabulary projection is
only computed where it is read.

Pairs are asked in both orders in the same batch and combined by ``PairJudgment.from_orders``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqalens.errors import InvalidInputError
from iqalens.images import load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.prompts import pair_prompt, point_prompt, prompt_version
from iqalens.models.hf_inputs import encode_prompts
from iqalens.models.hf_loading import answer_token_ids, checkpoint_name, open_vlm
from iqalens.models.prompts import Prompt

__all__ = ["HFTeacher", "Request"]


@dataclass(frozen=True)
class Request:
    """One question to the model: a prompt and the images its ``("image", i)`` parts refer to."""

    prompt: Prompt
    images: tuple[Image.Image, ...]

    def ordered_images(self) -> list[Image.Image]:
        """The images in the order their placeholders appear in the rendered prompt."""
        return [self.images[int(value)] for kind, value in self.prompt.parts if kind == "image"]


class HFTeacher:
    """A transformers image-text-to-text model judging quality by its answer-word logits.

    ``model`` is a local checkpoint folder or a hub id (loaded with ``AutoProcessor`` and
    ``AutoModelForImageTextToText``; pass ``local_files_only=True`` to forbid downloads).
    ``batch_size`` prompts share one forward pass (a pair counts as two prompts: both orders).
    ``device`` / ``dtype`` place the model (``"cpu"`` / float32 by default; ``dtype="auto"`` keeps
    the checkpoint's); ``model_kwargs`` go to ``from_pretrained`` (e.g. ``device_map="auto"`` to
    shard a large model, ``attn_implementation``), ``processor_kwargs`` override processor
    settings (e.g. ``{"size": {"shortest_edge": 56 * 56, "longest_edge": 1024 * 28 * 28}}`` for
    Qwen2-VL, whose ``size`` is a pixel budget). ``components``, ``prompt_template``,
    ``trust_remote_code``, ``max_pixels``, ``device_map`` and ``quantization`` are the loading
    options of :func:`iqalens.models.hf_loading.open_vlm` (any HF VLM by component map, remote-code
    models, real-size loading).
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
        components: str | None = None,
        prompt_template: str | None = None,
        max_pixels: int | None = None,
        device_map: str | None = None,
        quantization: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        name, short = checkpoint_name(model)
        self.teacher_id = teacher_id or f"hf:{short}"
        self.prompt_version = prompt_version(prefill)
        self.batch_size = batch_size
        self.point = point_prompt(prefill)
        self.pair = pair_prompt(prefill)
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
        return encode_prompts(
            self.processor,
            self.prompt_format,
            [r.prompt for r in requests],
            [r.ordered_images() for r in requests],
            device=self.device,
            dtype=self.model.dtype,
        )

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
        logits = self.model(**inputs, **kwargs).logits
        if not self._keep_logits:
            # Models that expand each image placeholder inside forward (mPLUG-Owl2) return a longer
            # sequence; every row holds as many images, so every real token moved by as much.
            column = last + (logits.shape[1] - length)
        rows = logits[torch.arange(len(requests), device=logits.device), column.to(logits.device)]
        ids = torch.tensor(list(token_ids), device=rows.device)
        return rows[:, ids].float().cpu().numpy().astype(np.float64)


def _load(path: Path) -> Image.Image:
    return Image.fromarray(load_rgb(path))


def _first_probability(logits: np.ndarray) -> list[float]:
    """P(first) from (first, second) logits, by a two-way softmax."""
    return [float(v) for v in 0.5 * (1.0 + np.tanh((logits[:, 0] - logits[:, 1]) / 2.0))]
