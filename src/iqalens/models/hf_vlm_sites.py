"""Reading a multimodal LLM's feature sites by forward hooks, pooled inside the hooks.

Why a module of its own: :class:`~iqalens.models.hf_vlm.HFVLMAdapter` is about prompts, tokens and
the :class:`~iqalens.models.base.ComponentModel` interface; *where* the ``vision.k``,
``projector`` and ``lm.l`` sites sit in a transformers model, how the rows of a batch map to
images (tiles, patch sequences, CLS tokens) and how one forward pass fills every site without
keeping all layers' hidden states is a concern of its own, shared with the alignment forward pass
(:mod:`iqalens.align.hf` reads the ``vision.K`` site through the same pooler). The sites
themselves are described in :mod:`iqalens.models.hf_vlm`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from iqalens.errors import InvalidInputError

__all__ = [
    "first_tensor",
    "mean_per_image",
    "patches_per_tile",
    "pooled_sites_of_one_pass",
    "tiles_per_image",
    "to_numpy",
    "token_pooler",
    "visual_token_mask",
    "vision_pooler",
]

Pool = Callable[[torch.Tensor], torch.Tensor]


def first_tensor(value: Any) -> torch.Tensor:
    """A block's hidden states: blocks return a tensor or a tuple starting with it."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"cannot find hidden states in a {type(value).__name__}")


def to_numpy(rows: list[torch.Tensor]) -> np.ndarray:
    """float32 array of per-item rows [D] (stacked) or per-batch blocks [B, D] (concatenated)."""
    block = torch.cat(rows) if rows[0].dim() == 2 else torch.stack(rows)
    return block.float().cpu().numpy().astype(np.float32)


def mean_per_image(rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[len(counts), D] means of consecutive groups of ``rows`` [sum(counts), D]: one reshape when
    every image has as many rows (the common case; no Python loop over images in a hook)."""
    if len(set(counts)) == 1:
        return rows.reshape(len(counts), counts[0], rows.shape[-1]).mean(1)
    return torch.stack([seg.mean(0) for seg in torch.split(rows, counts)])


def tiles_per_image(
    config: Any,
    inputs: dict[str, torch.Tensor],
    n_images: int,
    image_token_id: int,
    image_input: str = "pixel_values",
) -> list[int]:
    """How many rows of the vision tower's input belong to each image (in order).

    Qwen: patches per image (the tower runs on one flat sequence). LLaVA-NeXT / OneVision:
    the number of any-resolution tiles, computed as the model does. Idefics3 / SmolVLM: the tiles
    that are not all-zero padding (the model drops those). InternVL: tiles = image tokens / tokens
    per tile. Otherwise one tile per image.
    """
    if "image_grid_thw" in inputs:
        return [int(v) for v in inputs["image_grid_thw"].prod(-1).tolist()]
    pixel_values = inputs[image_input]
    if pixel_values.dim() == 5 and "image_sizes" in inputs:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        size = config.vision_config.image_size
        return [
            int(image_size_to_num_patches(s, config.image_grid_pinpoints, size))
            for s in inputs["image_sizes"].tolist()
        ]
    if pixel_values.dim() == 5 and "pixel_attention_mask" in inputs:
        return [int(v) for v in (pixel_values.flatten(2) != 0).any(-1).sum(1).tolist()]
    if pixel_values.shape[0] != n_images:
        per_tile = getattr(config, "image_seq_length", None)
        if per_tile:
            counts = (inputs["input_ids"] == image_token_id).sum(1)
            return [int(c) // int(per_tile) for c in counts.tolist()]
        raise InvalidInputError(
            f"{pixel_values.shape[0]} image tiles for {n_images} images: cannot group them"
        )
    return [1] * n_images


def patches_per_tile(config: Any, vision_tower: Any = None) -> int | None:
    """Patch tokens per tile of a ViT tower (to recognise a CLS token), None if not a fixed grid.

    Read from the model config's ``vision_config``, else from the tower's own ``config`` (remote-code
    towers such as mPLUG-Owl2's keep their settings there).
    """
    vc = getattr(config, "vision_config", None) or getattr(vision_tower, "config", None)
    size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", None)
    if size is None or patch is None:
        return None
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    patches = patch if isinstance(patch, (list, tuple)) else (patch, patch)
    return (int(sizes[0]) // int(patches[0])) * (int(sizes[1]) // int(patches[1]))


def vision_pooler(tiles: list[int], n_patches: int | None) -> Pool:
    """The per-image mean [n_images, D] of a vision block's output, ``tiles`` rows per image.

    Handles a flat patch sequence (Qwen), tiles of patches, and drops a CLS token where a tile has
    ``n_patches + 1`` tokens. Differentiable.
    """

    def pool_vision(h: torch.Tensor) -> torch.Tensor:
        h = h.float()
        if h.dim() == 3 and h.shape[0] == 1 and sum(tiles) == h.shape[1] and h.shape[0] != sum(tiles):
            h = h[0]  # a flat sequence with a batch axis of 1
        if h.dim() == 2:  # Qwen: [sum of patches, D], images contiguous
            if h.shape[0] != sum(tiles):
                raise InvalidInputError(f"vision tower gave {h.shape[0]} rows for {sum(tiles)} patches")
            return mean_per_image(h, tiles)
        if h.shape[0] != sum(tiles):
            raise InvalidInputError(f"vision tower gave {h.shape[0]} tiles, expected {sum(tiles)}")
        if n_patches is not None and h.shape[1] == n_patches + 1:
            h = h[:, 1:]  # CLS token
        return mean_per_image(h.mean(1), tiles)

    return pool_vision


def visual_token_mask(input_ids: torch.Tensor, token_id: int, seq_len: int) -> torch.Tensor:
    """[B, seq_len] True at the visual tokens of a language model's sequence of length ``seq_len``.

    When the sequence is as long as ``input_ids``, the visual tokens are where ``token_id`` is (the
    processor expanded each image to its tokens). When it is longer, the model expanded each
    placeholder itself (LLaVA-1.5-original and mPLUG-Owl2 code: one id such as -200 per image,
    replaced inside ``forward`` by the image's n visual tokens): every row must then hold the same
    number k of placeholders, n = (seq_len - T) / k + 1, and placeholder j at position p covers
    positions p + j (n - 1) ... p + j (n - 1) + n - 1. Right padding is kept after the real tokens.
    """
    is_image = input_ids == token_id
    length = input_ids.shape[1]
    if seq_len == length:
        return is_image
    per_row = is_image.sum(1)
    k = int(per_row[0])
    if k == 0 or bool((per_row != k).any()) or (seq_len - length) % k:
        raise InvalidInputError(
            f"cannot place the visual tokens: {seq_len} positions for {length} input ids with "
            f"{per_row.tolist()} image placeholders per row"
        )
    n = (seq_len - length) // k + 1
    mask = torch.zeros((len(input_ids), seq_len), dtype=torch.bool, device=input_ids.device)
    for row in range(len(input_ids)):
        for j, pos in enumerate(torch.where(is_image[row])[0].tolist()):
            start = pos + j * (n - 1)
            mask[row, start : start + n] = True
    return mask


def token_pooler(input_ids: torch.Tensor, token_id: int) -> Pool:
    """The per-row mean [B, D] of hidden states [B, T, D] over the visual-token positions.

    The positions are found by :func:`visual_token_mask` for the length of the hidden states the
    pool is given (computed once), on their device (a sharded model's layers sit on several GPUs).
    """
    weights: dict[tuple[int, torch.device], torch.Tensor] = {}

    def pool_tokens(h: torch.Tensor) -> torch.Tensor:
        key = (h.shape[1], h.device)
        if key not in weights:
            w = visual_token_mask(input_ids, token_id, h.shape[1]).float().to(h.device)
            weights[key] = w / w.sum(1, keepdim=True).clamp(min=1)
        return torch.bmm(weights[key].unsqueeze(1), h.float()).squeeze(1)  # masked mean over T

    return pool_tokens


def pooled_sites_of_one_pass(
    forward: Callable[[], object],
    *,
    vision_blocks: Sequence[torch.nn.Module] | torch.nn.ModuleList,
    language_model: torch.nn.Module,
    lm_blocks: Sequence[torch.nn.Module] | torch.nn.ModuleList,
    pool_vision: Pool,
    pool_lm: Pool,
    n: int,
) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Run ``forward()`` once with hooks on every site; per site the [n, D] pooled features.

    Vision: the input of the first block, then each block's output (``pool_vision``). Projector:
    the language model's ``inputs_embeds`` (``pool_lm``). LM: each decoder block's output
    (``pool_lm``). Each hook pools the whole batch in a few tensor operations (no loop over images),
    which is what keeps the hooks' share of a small model's forward pass low
    (benchmarks/FEATURES.md). The hooks are removed whatever happens.
    """
    out_v: list[list[torch.Tensor]] = [[] for _ in range(len(vision_blocks) + 1)]
    out_p: list[torch.Tensor] = []
    out_h: list[list[torch.Tensor]] = [[] for _ in range(len(lm_blocks))]

    def hidden_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    def vision_in(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        out_v[0].append(pool_vision(hidden_arg(args, kwargs)))

    def lm_in(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise RuntimeError("the language model was called without inputs_embeds")
        out_p.append(pool_lm(embeds))

    def site_hook(sink: list[torch.Tensor], pool: Pool) -> Any:
        def hook(_m: torch.nn.Module, _args: Any, output: Any) -> None:
            sink.append(pool(first_tensor(output)))

        return hook

    handles = [
        vision_blocks[0].register_forward_pre_hook(vision_in, with_kwargs=True),
        language_model.register_forward_pre_hook(lm_in, with_kwargs=True),
    ]
    handles += [
        blk.register_forward_hook(site_hook(out_v[i + 1], pool_vision)) for i, blk in enumerate(vision_blocks)
    ]
    handles += [blk.register_forward_hook(site_hook(out_h[i], pool_lm)) for i, blk in enumerate(lm_blocks)]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    if any(len(s) != 1 or s[0].shape[0] != n for s in (out_p, *out_v, *out_h)):
        raise RuntimeError("a hook fired an unexpected number of times (nested or repeated calls?)")
    return [s[0] for s in out_v], out_p[0], [s[0] for s in out_h]
