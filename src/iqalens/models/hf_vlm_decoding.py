"""Token-level decoding after one image's prompt, with the prompt's KV cache kept and repeated.

Why a module of its own: the forced-choice scores and the free answers of
:class:`~iqalens.models.hf_vlm.HFVLMAdapter` share one technique that has nothing to do with
feature sites: run the prompt once, repeat its KV cache for C rows (C class words, or 1 greedy +
S sampled answers) and continue those rows as one batch. The two things that differ between
transformers versions are passed in: the name of the cache keyword (``cache`` or
``past_key_values``) and whether ``forward`` accepts ``logits_to_keep``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["decode_rows", "next_tokens", "sequence_log_probs", "stop_token_ids"]


def _cache_of(result: Any, cache_kw: str) -> Any:
    return result.cache if cache_kw == "cache" else result.past_key_values


def sequence_log_probs(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    seqs: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    device: torch.device,
    cache_kw: str,
    keep_logits: bool,
) -> np.ndarray:
    """[C] log-probability of each token sequence after ONE image's prepared prompt (no padding).

    The prompt runs once with its KV cache kept; multi-token sequences continue from copies of
    the cache in one batch. Single-token sequences need no second pass.
    """
    longest = max(len(s) for s in seqs)
    kwargs: dict[str, Any] = {"use_cache": longest > 1}
    if keep_logits:
        kwargs["logits_to_keep"] = 1
    result = model(**inputs, **kwargs)
    first = torch.log_softmax(result.logits[0, -1].float(), dim=-1)
    scores = torch.stack([first[s[0]] for s in seqs]).to(torch.float64)
    if longest > 1:
        cache = _cache_of(result, cache_kw)
        cache.batch_repeat_interleave(len(seqs))
        # Feed tokens 0..L-2 of each word; position j predicts token j+1. Right padding is
        # harmless: pads come after every real token (causal) and their logits are not read.
        cont = torch.tensor(
            [list(s[:-1]) + [pad_token_id] * (longest - len(s)) for s in seqs],
            device=device,
            dtype=torch.long,
        )
        logits = model(input_ids=cont, use_cache=True, **{cache_kw: cache}).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for c, s in enumerate(seqs):
            for j in range(1, len(s)):
                scores[c] += logp[c, j - 1, s[j]].double()
    return scores.cpu().numpy()


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids of the generation config and the tokenizer (chat models often list several)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def next_tokens(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> list[int]:
    """Row 0: argmax; rows 1..: one draw each from softmax(logits / temperature)."""
    greedy = [int(logits[0].argmax())]
    if logits.shape[0] == 1:
        return greedy
    probs = torch.softmax(logits[1:].cpu().double() / temperature, dim=-1)
    return greedy + [int(t) for t in torch.multinomial(probs, 1, generator=gen)[:, 0].tolist()]


def decode_rows(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    rows: int,
    max_new_tokens: int,
    temperature: float,
    gen: torch.Generator,
    stop: set[int],
    device: torch.device,
    cache_kw: str,
    keep_logits: bool,
) -> list[list[int]]:
    """The new tokens of ``rows`` continuations of ONE image's prompt (row 0 greedy, others sampled).

    The prompt runs once; its KV cache is repeated for the rows, which decode together until each
    has met a token of ``stop`` (not kept) or ``max_new_tokens`` were drawn.
    """
    kwargs: dict[str, Any] = {"use_cache": True}
    if keep_logits:
        kwargs["logits_to_keep"] = 1
    result = model(**inputs, **kwargs)
    cache = _cache_of(result, cache_kw)
    logits = result.logits[:, -1].float().expand(rows, -1)
    if rows > 1:
        cache.batch_repeat_interleave(rows)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    for step in range(max_new_tokens):
        nxt = next_tokens(logits, temperature, gen)
        for r, t in enumerate(nxt):
            if not done[r]:
                if t in stop:
                    done[r] = True
                else:
                    tokens[r].append(t)
        if all(done) or step == max_new_tokens - 1:
            break
        step_ids = torch.tensor(nxt, device=device, dtype=torch.long).unsqueeze(1)
        logits = model(input_ids=step_ids, use_cache=True, **{cache_kw: cache}).logits
        logits = logits[:, -1].float()
    return tokens
