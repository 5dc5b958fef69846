"""A tiny model with mPLUG-Owl2's module layout and calling convention, shipped as remote code.

Written for the tests (not derived from the mPLUG-Owl2 code): what iqalens relies on is the layout
and the interface, which follow the published model:

- ``model`` is a LLaMA decoder (``embed_tokens``, ``layers``, ``norm``) that also holds
  ``vision_model`` (a ViT with a CLS token: ``embeddings``, ``encoder.layers``, ``post_layernorm``)
  and ``visual_abstractor`` (learned queries cross-attending to the patch features through
  ``encoder.layers``, then ``visual_fc`` to the decoder width and an appended ``vit_eos`` token);
  ``lm_head`` sits on the top-level model.
- ``forward(input_ids, attention_mask, ..., images=...)``: each image placeholder (token index -200)
  in ``input_ids`` is replaced inside the model by the abstractor's output tokens, so the decoder's
  sequence is longer than ``input_ids``; the decoder is called with ``inputs_embeds``.
- There is no processor: a tokenizer and a CLIP image processor, as the real checkpoints ship.

The real model's modality-adaptive decoder layers (separate norms / key-value projections for
visual tokens) are left out: they change neither the module paths nor the interface.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast

from .configuration_tiny_owl import TinyOwlConfig

IMAGE_TOKEN_INDEX = -200


class _Settings:
    """Attribute access to a settings dict (the vision tower's ``config``, read for its patch grid)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.dense = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.query(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.key_value(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.dense(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, width: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads)
        self.post_attention_layernorm = nn.LayerNorm(width)
        self.mlp = _Mlp(width, hidden)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor]:
        h = self.input_layernorm(hidden_states)
        hidden_states = hidden_states + self.self_attn(h, h)
        return (hidden_states + self.mlp(self.post_attention_layernorm(hidden_states)),)


class VisionEmbeddings(nn.Module):
    def __init__(self, width: int, image_size: int, patch: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, width))
        self.pre_layernorm = nn.LayerNorm(width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(patches), -1, -1)
        return self.pre_layernorm(torch.cat([cls, patches], dim=1) + self.position_embedding)


class VisionEncoder(nn.Module):
    def __init__(self, layers: list[VisionLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class TinyOwlVisionModel(nn.Module):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__()
        self.config = _Settings(settings)
        width, heads = settings["hidden_size"], settings["num_attention_heads"]
        self.embeddings = VisionEmbeddings(width, settings["image_size"], settings["patch_size"])
        self.encoder = VisionEncoder(
            [
                VisionLayer(width, settings["intermediate_size"], heads)
                for _ in range(settings["num_hidden_layers"])
            ]
        )
        self.post_layernorm = nn.LayerNorm(width)

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutput:
        hidden = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            hidden = layer(hidden)[0]
        return BaseModelOutput(last_hidden_state=self.post_layernorm(hidden))


class AbstractorLayer(nn.Module):
    def __init__(self, width: int, hidden: int, heads: int, encoder_width: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.encoder_proj = nn.Linear(encoder_width, width)
        self.crossattention = _Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = _Mlp(width, hidden)

    def forward(self, queries: torch.Tensor, encoded: torch.Tensor) -> tuple[torch.Tensor]:
        q = self.norm_q(queries)
        context = torch.cat([q, self.encoder_proj(encoded)], dim=1)
        queries = queries + self.crossattention(q, context)
        return (queries + self.mlp(self.norm_mlp(queries)),)


class TinyOwlVisualAbstractor(nn.Module):
    def __init__(self, settings: dict[str, Any], lm_width: int) -> None:
        super().__init__()
        width = settings["hidden_size"]
        self.query_embeds = nn.Parameter(torch.randn(1, settings["num_learnable_queries"], width))
        self.encoder = VisionEncoder([])  # replaced below: a list of abstractor layers
        self.encoder.layers = nn.ModuleList(
            AbstractorLayer(
                width,
                settings["intermediate_size"],
                settings["num_attention_heads"],
                settings["encoder_hidden_size"],
            )
            for _ in range(settings["num_hidden_layers"])
        )
        self.visual_fc = nn.Linear(width, lm_width)
        self.vit_eos = nn.Parameter(torch.randn(1, 1, lm_width))

    def forward(self, encoder_hidden_states: torch.Tensor) -> BaseModelOutput:
        queries = self.query_embeds.expand(len(encoder_hidden_states), -1, -1)
        for layer in self.encoder.layers:
            queries = layer(queries, encoder_hidden_states)[0]
        out = self.visual_fc(queries)
        eos = self.vit_eos.expand(len(out), -1, -1)
        return BaseModelOutput(last_hidden_state=torch.cat([out, eos], dim=1))


class TinyOwlModel(LlamaModel):
    config_class = TinyOwlConfig

    def __init__(self, config: TinyOwlConfig) -> None:
        super().__init__(config)
        self.vision_model = TinyOwlVisionModel(config.visual_config["visual_model"])
        self.visual_abstractor = TinyOwlVisualAbstractor(
            config.visual_config["visual_abstractor"], config.hidden_size
        )


class TinyOwlForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    config_class = TinyOwlConfig
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: TinyOwlConfig) -> None:
        super().__init__(config)
        self.model = TinyOwlModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.vision_model(images).last_hidden_state
        return self.model.visual_abstractor(encoder_hidden_states=features).last_hidden_state

    def _splice(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's embeddings with every placeholder replaced by one image's visual tokens."""
        features = self.encode_images(images)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows, masks, k = [], [], 0
        for ids, row_mask in zip(input_ids, mask, strict=True):
            pieces, piece_masks, start = [], [], 0
            for pos in torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist():
                pieces += [self.model.embed_tokens(ids[start:pos]), features[k]]
                piece_masks += [row_mask[start:pos], row_mask.new_ones(len(features[k]))]
                start, k = pos + 1, k + 1
            pieces.append(self.model.embed_tokens(ids[start:]))
            piece_masks.append(row_mask[start:])
            rows.append(torch.cat(pieces))
            masks.append(torch.cat(piece_masks))
        width = max(len(r) for r in rows)
        embeds = torch.stack([torch.cat([r, r.new_zeros(width - len(r), r.shape[1])]) for r in rows])
        new_mask = torch.stack([torch.cat([m, m.new_zeros(width - len(m))]) for m in masks])
        return embeds, new_mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        images: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if images is not None and input_ids is not None and (input_ids == IMAGE_TOKEN_INDEX).any():
            inputs_embeds, attention_mask = self._splice(input_ids, attention_mask, images)
            input_ids = None
        elif inputs_embeds is None and input_ids is not None:
            inputs_embeds = self.model.embed_tokens(input_ids)
            input_ids = None
        out = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache, use_cache=use_cache
        )
        return CausalLMOutputWithPast(logits=self.lm_head(out.last_hidden_state), cache=out.cache)
