"""Tiny, randomly initialised vision-language models of each HF family, built fully offline.

The HF teacher must run on real LLaVA / Qwen2-VL / Qwen2.5-VL / InternVL checkpoints, but tests may
not download anything, tokenizer and processor included. So each family is rebuilt here from its
transformers config classes with a few-dozen-unit hidden size, one layer and a tiny vision tower,
plus a word-level ``tokenizers`` tokenizer whose vocabulary holds the prompt words, the level and
choice words, the chat-template markers and the family's image tokens, the family's (PIL-backend)
image processor with small image sizes, and a chat template in the family's style. Everything is
saved with ``save_pretrained`` so the teacher loads it through the same path as a real checkpoint.

The models are random, so their judgments are meaningless; the tests check plumbing (the right
logits are read, orders, batching), which random weights exercise as well as trained ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from iqalens.models.hf_loading import processor_class_without_video

#: ``internvl`` has a Qwen2 language model (InternVL3), ``internvl_qwen3`` a Qwen3 one (InternVL3.5).
FAMILIES: tuple[str, ...] = (
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "internvl",
    "internvl_qwen3",
)

_UNK, _PAD = "[UNK]", "<pad>"

# Chat templates in each family's style (simplified: no default system prompt). They render the
# content parts in order, so a pair prompt's "First image:" / image / "Second image:" / image order
# is kept.
_CHATML_PARTS = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_TEMPLATE = _CHATML_PARTS.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
_INTERNVL_TEMPLATE = _CHATML_PARTS.replace("IMAGE", "<IMG_CONTEXT>\n")
_ONEVISION_TEMPLATE = _CHATML_PARTS.replace("IMAGE", "<image>\n")
_LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }} {% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] != 'user' %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

_CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>"]
_SPECIALS = {
    "llava": ["<s>", "</s>", "<image>"],
    "llava_next": ["<s>", "</s>", "<image>"],
    "qwen2_vl": [*_CHATML_SPECIALS, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "internvl": [*_CHATML_SPECIALS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
}
_SPECIALS["qwen2_5_vl"] = _SPECIALS["qwen2_vl"]
_SPECIALS["internvl_qwen3"] = _SPECIALS["internvl"]
_SPECIALS["llava_onevision"] = [*_CHATML_SPECIALS, "<image>", "<video>"]
_ROLE_WORDS = ("user", "assistant", "system", "USER", "ASSISTANT", ":")


def _words(texts: Iterable[str]) -> list[str]:
    """Split texts the way the Whitespace pre-tokenizer does (\\w+ | runs of punctuation)."""
    seen: dict[str, None] = {}
    for text in texts:
        for w in re.findall(r"\w+|[^\w\s]+", text):
            seen.setdefault(w, None)
    return list(seen)


def make_tokenizer(family: str, texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: every word of ``texts`` is one token, plus the family's specials."""
    specials = _SPECIALS[family]
    words = [w for w in _words([*texts, *_ROLE_WORDS]) if w not in specials]
    vocab = {tok: i for i, tok in enumerate([_UNK, _PAD, *specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=_UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs: dict[str, object] = {"unk_token": _UNK, "pad_token": _PAD}
    if family == "llava_onevision":
        kwargs |= {
            "eos_token": "<|im_end|>",
            "extra_special_tokens": {"image_token": "<image>", "video_token": "<video>"},
        }
    elif family.startswith("llava"):
        kwargs |= {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "extra_special_tokens": {"image_token": "<image>"},
        }
    elif family.startswith("qwen"):
        kwargs |= {"eos_token": "<|im_end|>", "additional_special_tokens": specials}
    else:
        kwargs |= {
            "eos_token": "<|im_end|>",
            "extra_special_tokens": {
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
        }
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


# Random weights with the usual 0.02 init make the answer logits nearly independent of the image,
# which would hide a swapped pair order; a larger init makes the image matter.
_INIT = 0.5
_SIZE, _PATCH = 28, 7  # 4 x 4 patches per image tile


def _text_config(model_type: str, tok: PreTrainedTokenizerFast, **extra: object) -> dict[str, object]:
    """A one-layer, 32-wide decoder of ``model_type`` over the tiny vocabulary."""
    return {
        "model_type": model_type,
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 512,
        "initializer_range": _INIT,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        **extra,
    }


def _vit_config(model_type: str) -> dict[str, object]:
    """A two-layer, 32-wide CLIP/SigLIP vision tower on 28 x 28 tiles of 7 x 7 patches."""
    return {
        "model_type": model_type,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": _SIZE,
        "patch_size": _PATCH,
        "initializer_range": _INIT,
    }


_NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_PINPOINTS = [[_SIZE, _SIZE], [_SIZE, 2 * _SIZE], [2 * _SIZE, _SIZE]]


def _build_llava(tok: PreTrainedTokenizerFast, family: str) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    common = {
        "text_config": _text_config("llama", tok),
        "image_token_index": tok.convert_tokens_to_ids("<image>"),
        "vision_feature_layer": -1,
    }
    sizes = {"size": {"shortest_edge": _SIZE}, "crop_size": {"height": _SIZE, "width": _SIZE}, **_NORM}
    proc_kwargs = {
        "patch_size": _PATCH,
        "vision_feature_select_strategy": "default",
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "chat_template": _LLAVA_TEMPLATE,
    }
    vision = _vit_config("clip_vision_model")
    if family == "llava":
        model = tf.LlavaForConditionalGeneration(
            tf.LlavaConfig(
                **common, vision_config=vision, vision_feature_select_strategy="default", image_seq_length=16
            )
        )
        ip = tf.CLIPImageProcessorPil(**sizes)
        return model, tf.LlavaProcessor(image_processor=ip, tokenizer=tok, **proc_kwargs)
    if family == "llava_next":
        model = tf.LlavaNextForConditionalGeneration(
            tf.LlavaNextConfig(
                **common,
                vision_config=vision,
                vision_feature_select_strategy="default",
                image_grid_pinpoints=_PINPOINTS,
            )
        )
        ip = tf.LlavaNextImageProcessorPil(**sizes, image_grid_pinpoints=_PINPOINTS)
        return model, tf.LlavaNextProcessor(image_processor=ip, tokenizer=tok, **proc_kwargs)
    # LLaVA-OneVision: SigLIP tower (no CLS token, all patches kept), Qwen2 language model, ChatML.
    common["text_config"] = _text_config("qwen2", tok)
    model = tf.LlavaOnevisionForConditionalGeneration(
        tf.LlavaOnevisionConfig(
            **common,
            vision_config=_vit_config("siglip_vision_model"),
            vision_feature_select_strategy="full",
            video_token_index=tok.convert_tokens_to_ids("<video>"),
            image_grid_pinpoints=_PINPOINTS,
        )
    )
    ip = tf.LlavaOnevisionImageProcessorPil(
        size={"height": _SIZE, "width": _SIZE}, image_grid_pinpoints=_PINPOINTS, **_NORM
    )
    proc_cls = processor_class_without_video(tf.LlavaOnevisionProcessor)
    return model, proc_cls(
        image_processor=ip,
        tokenizer=tok,
        num_image_tokens=(_SIZE // _PATCH) ** 2,
        vision_feature_select_strategy="full",
        image_token="<image>",
        video_token="<video>",
        chat_template=_ONEVISION_TEMPLATE,
    )


def _build_qwen(tok: PreTrainedTokenizerFast, family: str) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    ids = {
        name: tok.convert_tokens_to_ids(t)
        for name, t in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    # head_dim 8 -> 4 rotary frequencies split over M-RoPE's (temporal, height, width) sections.
    text = _text_config(
        family,
        tok,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
    )
    text.pop("model_type")
    text.pop("head_dim")
    vision: dict[str, object] = {
        "depth": 1,
        "hidden_size": 32,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": _INIT,
    }
    if family == "qwen2_5_vl":
        vision |= {
            "intermediate_size": 64,
            "out_hidden_size": 32,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        }
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model = tf.Qwen2_5_VLForConditionalGeneration(config)
        proc_base: type = tf.Qwen2_5_VLProcessor
    else:
        vision |= {"embed_dim": 32, "mlp_ratio": 2}
        model = tf.Qwen2VLForConditionalGeneration(
            tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        )
        proc_base = tf.Qwen2VLProcessor
    # 28-pixel units (patch 14 x merge 2): between 2 x 2 and 4 x 4 units -> 4..16 image tokens.
    ip = tf.Qwen2VLImageProcessorPil(
        min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    proc_cls = processor_class_without_video(proc_base)
    return model, proc_cls(image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)


def _build_internvl(tok: PreTrainedTokenizerFast, family: str) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    seq = (_SIZE // _PATCH) ** 2 // 4  # 16 patches, pixel-shuffled by 0.5 -> 4 tokens per tile
    config = tf.InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "image_size": [_SIZE, _SIZE],
            "patch_size": [_PATCH, _PATCH],
            "initializer_range": _INIT,
        },
        text_config=_text_config("qwen3" if family == "internvl_qwen3" else "qwen2", tok),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=seq,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
    )
    model = tf.InternVLForConditionalGeneration(config)
    ip = tf.GotOcr2ImageProcessorPil(
        size={"height": _SIZE, "width": _SIZE}, crop_to_patches=True, min_patches=1, max_patches=2, **_NORM
    )
    proc_cls = processor_class_without_video(tf.InternVLProcessor)
    return model, proc_cls(
        image_processor=ip, tokenizer=tok, image_seq_length=seq, chat_template=_INTERNVL_TEMPLATE
    )


def build_tiny_vlm(family: str, directory: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """Build a tiny random model + processor of ``family`` and save both to ``directory``.

    ``texts`` are the prompt texts whose words get their own tokens (level and choice words
    included), so the level words are single tokens like in real vocabularies.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    tok = make_tokenizer(family, texts)
    torch.manual_seed(seed)
    if family.startswith("llava"):
        model, processor = _build_llava(tok, family)
    elif family.startswith("qwen"):
        model, processor = _build_qwen(tok, family)
    else:
        model, processor = _build_internvl(tok, family)
    directory.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory
