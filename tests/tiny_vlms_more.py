"""Tiny random Idefics3, Gemma 3 and PaliGemma models, and a tiny remote-code mPLUG-Owl2-layout model.

Same recipe as :mod:`tiny_vlms` (whose families the older tests cover): each family is rebuilt from
its transformers config classes with a 32-wide one-layer language model and a two-layer vision
tower on 28 x 28 images, a word-level tokenizer holding the prompt words and the family's special
tokens, the family's (PIL-backend) image processor, and a chat template in the family's style
(none for PaliGemma, which has none). Everything is saved with ``save_pretrained`` and loaded back
through the same path as a real checkpoint; nothing is downloaded.

The mPLUG-Owl2-layout model (``mplug_owl2``) is a *remote-code* model: its folder holds
``configuration_tiny_owl.py`` and ``modeling_tiny_owl.py`` (copied from ``tests/remote_code/``)
and a ``config.json`` whose ``auto_map`` names them, so it loads only with
``trust_remote_code=True``, like the real mPLUG-Owl2 / Q-Align / Q-Instruct checkpoints. It has
mPLUG-Owl2's module layout (``model.vision_model``, ``model.visual_abstractor``, LLaMA
``model.layers``, ``lm_head``), its forward signature (``images=``), its image placeholder
(token index -200 in ``input_ids``, expanded inside the model into the abstractor's query tokens)
and no processor: a LLaMA-style tokenizer plus a CLIP image processor, as the real checkpoints ship.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

#: The families this module builds (``mplug_owl2`` is the remote-code one).
MORE_FAMILIES: tuple[str, ...] = ("idefics3", "gemma3", "paligemma", "mplug_owl2")

_UNK, _PAD = "[UNK]", "<pad>"
_INIT = 0.5  # a large init makes the image matter to random weights (see tiny_vlms)
_SIZE, _PATCH = 28, 7
_NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
REMOTE_CODE = Path(__file__).parent / "remote_code"

_IDEFICS3_TEMPLATE = (
    "{% for m in messages %}{{ 'User' if m['role'] == 'user' else 'Assistant' }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
_GEMMA3_TEMPLATE = (
    "<bos>{% for m in messages %}<start_of_turn>{{ 'user' if m['role'] == 'user' else 'model' }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

_SPECIALS = {
    "idefics3": [
        "<|im_start|>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
    ],
    "gemma3": ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]
    + ["<image_soft_token>"],
    "paligemma": ["<bos>", "<eos>", "<image>"],
    "mplug_owl2": ["<s>", "</s>"],
}
_WORDS = ("User", "Assistant", "USER", "ASSISTANT", "user", "model", ":")


def _words(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for w in re.findall(r"\w+|[^\w\s]+", text):
            seen.setdefault(w, None)
    return list(seen)


def make_tokenizer(family: str, texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over ``texts`` plus the family's special tokens."""
    specials = _SPECIALS[family]
    words = [w for w in _words([*texts, *_WORDS]) if w not in specials]
    vocab = {tok: i for i, tok in enumerate([_UNK, _PAD, *specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=_UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs: dict[str, object] = {"unk_token": _UNK, "pad_token": _PAD}
    if family == "idefics3":
        kwargs |= {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>"}
    elif family == "gemma3":
        kwargs |= {
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "extra_special_tokens": {
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
            },
        }
    elif family == "paligemma":
        kwargs |= {
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "extra_special_tokens": {"image_token": "<image>"},
        }
    else:
        kwargs |= {"bos_token": "<s>", "eos_token": "</s>"}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def _text(model_type: str, tok: PreTrainedTokenizerFast, **extra: object) -> dict[str, object]:
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


def _vision(model_type: str) -> dict[str, object]:
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


def _build_idefics3(tok: PreTrainedTokenizerFast) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    vision = _vision("idefics3_vision")
    config = tf.Idefics3Config(
        vision_config=vision,
        text_config=_text("llama", tok),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model = tf.Idefics3ForConditionalGeneration(config)
    ip = tf.Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": _SIZE},
        max_image_size={"longest_edge": _SIZE},
        **_NORM,
    )
    seq = (_SIZE // _PATCH) ** 2 // 4  # 16 patches, pixel-shuffled by 2 -> 4 tokens
    return model, tf.Idefics3Processor(
        image_processor=ip, tokenizer=tok, image_seq_len=seq, chat_template=_IDEFICS3_TEMPLATE
    )


def _build_gemma3(tok: PreTrainedTokenizerFast) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    text = _text("gemma3_text", tok, sliding_window=64, query_pre_attn_scalar=8)
    config = tf.Gemma3Config(
        text_config=text,
        vision_config=_vision("siglip_vision_model"),
        mm_tokens_per_image=4,  # 4 x 4 patches average-pooled to 2 x 2 tokens
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    model = tf.Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises its projection matrix to zeros, which would make every visual token 0.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, _INIT)
    ip = tf.Gemma3ImageProcessorPil(size={"height": _SIZE, "width": _SIZE}, **_NORM)
    return model, tf.Gemma3Processor(
        image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=_GEMMA3_TEMPLATE
    )


def _build_paligemma(tok: PreTrainedTokenizerFast) -> tuple[torch.nn.Module, object]:
    import transformers as tf

    seq = (_SIZE // _PATCH) ** 2
    config = tf.PaliGemmaConfig(
        text_config=_text("gemma", tok),
        vision_config=_vision("siglip_vision_model") | {"projection_dim": 32},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=32,
        hidden_size=32,
    )
    model = tf.PaliGemmaForConditionalGeneration(config)
    ip = tf.SiglipImageProcessorPil(size={"height": _SIZE, "width": _SIZE}, **_NORM)
    ip.image_seq_length = seq
    processor = tf.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    return model, processor


def _build_owl(tok: PreTrainedTokenizerFast, directory: Path) -> None:
    """Write the remote-code model folder: code, config with auto_map, weights, tokenizer, CLIP processor.

    The model is built through transformers' own remote-code path (``trust_remote_code=True``),
    from a config.json whose ``auto_map`` names the copied code files.
    """
    import transformers as tf

    directory.mkdir(parents=True, exist_ok=True)
    for name in ("configuration_tiny_owl.py", "modeling_tiny_owl.py"):
        shutil.copy(REMOTE_CODE / name, directory / name)
    config = {
        "model_type": "mplug_owl2",
        "architectures": ["TinyOwlForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_tiny_owl.TinyOwlConfig",
            "AutoModelForCausalLM": "modeling_tiny_owl.TinyOwlForCausalLM",
        },
        **{k: v for k, v in _text("llama", tok, num_hidden_layers=2).items() if k != "model_type"},
        "visual_config": {
            "visual_model": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "image_size": _SIZE,
                "patch_size": _PATCH,
            },
            "visual_abstractor": {
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 64,
                "num_learnable_queries": 4,
                "encoder_hidden_size": 32,
            },
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    loaded = tf.AutoConfig.from_pretrained(directory, trust_remote_code=True)
    model = tf.AutoModelForCausalLM.from_config(loaded, trust_remote_code=True)
    model.eval().save_pretrained(directory)
    tok.save_pretrained(directory)
    tf.CLIPImageProcessorPil(
        size={"shortest_edge": _SIZE}, crop_size={"height": _SIZE, "width": _SIZE}, **_NORM
    ).save_pretrained(directory)


def build_more_vlm(family: str, directory: Path, texts: Iterable[str], seed: int = 0) -> Path:
    """Build a tiny random model of ``family`` (see :data:`MORE_FAMILIES`) and save it to ``directory``."""
    if family not in MORE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {MORE_FAMILIES}")
    tok = make_tokenizer(family, texts)
    torch.manual_seed(seed)
    if family == "mplug_owl2":
        _build_owl(tok, directory)
        return directory
    builders = {"idefics3": _build_idefics3, "gemma3": _build_gemma3, "paligemma": _build_paligemma}
    model, processor = builders[family](tok)
    directory.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory
