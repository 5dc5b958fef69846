"""DualEncoderAdapter on tiny random CLIP and SigLIP models built offline (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from iqalens.models.base import ComponentModel
from iqalens.models.dual_encoder import DualEncoderAdapter
from iqalens.taxonomy import CLASSES
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol

_SIZE, _PATCH, _LAYERS = 28, 7, 2
_PROMPT = "a photo with {}"


def _tokenizer(family: str) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the prompt and class words, with the family's special tokens."""
    if family == "clip":
        specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<pad>"}
    else:
        specials = {"eos_token": "</s>", "pad_token": "<pad>"}
    # "colorfulness" is left out of the vocabulary on purpose: it then spans two pieces (colorful + ness).
    words = ["a", "photo", "with", "colorful", "ness", *[c for c in CLASSES if c != "colorfulness"]]
    vocab = {t: i for i, t in enumerate(["[UNK]", *specials.values(), *words])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix=""))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    eos = specials["eos_token"]
    if family == "clip":
        bos = specials["bos_token"]
        template = f"{bos} $A {eos}"
        pairs = [(bos, vocab[bos]), (eos, vocab[eos])]
    else:
        template, pairs = f"$A {eos}", [(eos, vocab[eos])]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=pairs)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", **specials)


def _build(family: str, directory: Path) -> Path:
    import transformers as tf

    tok = _tokenizer(family)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": 4,
        "image_size": _SIZE,
        "patch_size": _PATCH,
    }
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    torch.manual_seed(0)
    if family == "clip":
        text["bos_token_id"] = tok.bos_token_id
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
        ip = tf.CLIPImageProcessorPil(
            size={"shortest_edge": _SIZE}, crop_size={"height": _SIZE, "width": _SIZE}
        )
        processor = tf.CLIPProcessor(image_processor=ip, tokenizer=tok)
    else:
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision))
        with torch.no_grad():  # a non-zero bias, so a test would notice it being kept in the score
            model.logit_bias.fill_(-3.0)
        ip = tf.SiglipImageProcessorPil(size={"height": _SIZE, "width": _SIZE})
        processor = tf.SiglipProcessor(image_processor=ip, tokenizer=tok)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module", params=["clip", "siglip"])
def adapter(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DualEncoderAdapter:
    path = _build(request.param, tmp_path_factory.mktemp(request.param))
    return DualEncoderAdapter(path, prompt=_PROMPT, batch_size=2)


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, size=(40 + 4 * i, 36, 3), dtype=np.uint8) for i in range(n)]


def test_shapes_and_interface(adapter: DualEncoderAdapter) -> None:
    assert isinstance(adapter, ComponentModel)
    assert adapter.kind == "dual_encoder"
    feats = adapter.extract(_images(3))  # batch_size 2: crosses a batch boundary
    assert len(feats.vision_layers) == _LAYERS + 1  # embeddings + each layer
    assert all(v.shape == (3, 32) and v.dtype == np.float32 for v in feats.vision_layers)
    d = 24 if adapter.family == "clip" else 32
    assert feats.projector.shape == (3, d)
    assert feats.lm_layers == []
    assert feats.site_names == ["vision.0", "vision.1", "vision.2", "projector"]
    # distinct images give distinct features
    assert not np.allclose(feats.projector[0], feats.projector[1])


def test_class_scores_equal_model_logits(adapter: DualEncoderAdapter) -> None:
    images = _images(3)
    words = list(CLASSES)
    scores = adapter.class_log_scores(images, words)
    assert scores.shape == (3, len(words))
    assert np.all(np.abs(scores) <= 1.0 + 1e-5)
    model, proc = adapter.model, adapter.processor
    from PIL import Image

    pil = [Image.fromarray(im) for im in images]
    texts = [_PROMPT.format(w) for w in words]
    kw = {"padding": "max_length", "max_length": 16} if adapter.family == "siglip" else {"padding": True}
    inputs = proc(text=texts, images=pil, return_tensors="pt", **kw)
    with torch.no_grad():
        out = model(**inputs)
        expected = out.logits_per_image
        if adapter.family == "siglip":
            expected = expected - model.logit_bias
        expected = expected / model.logit_scale.exp()
    # The adapter's batches of 2 and its own text pass vs one pass over everything: the float32 bound of
    # the tiny towers (tests/tolerances.py), 5.8e-5 on cosines; scores of two images or two classes
    # differ by >= 0.02.
    np.testing.assert_allclose(
        scores, expected.numpy(), rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, 1.0)
    )


def test_projector_is_what_the_model_compares(adapter: DualEncoderAdapter) -> None:
    images = _images(2)
    feats = adapter.extract(images)
    from PIL import Image

    inputs = adapter.processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
    with torch.no_grad():
        ref = adapter.model.get_image_features(pixel_values=inputs["pixel_values"])
    ref = getattr(ref, "pooler_output", ref)  # transformers returns a tensor or a model output
    # Another code path to the same numbers: the float32 bound (tests/tolerances.py).
    np.testing.assert_allclose(
        feats.projector, ref.numpy(), rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, ref)
    )


def test_word_embeddings_average_subword_pieces(adapter: DualEncoderAdapter) -> None:
    emb = adapter.word_embeddings(["blur", "colorfulness"])
    table = adapter.model.text_model.embeddings.token_embedding.weight.detach()
    tok = adapter.tokenizer
    np.testing.assert_allclose(emb[0], table[tok.convert_tokens_to_ids("blur")].numpy(), atol=1e-6)
    pieces = tok("colorfulness", add_special_tokens=False)["input_ids"]
    assert len(pieces) == 2
    np.testing.assert_allclose(emb[1], table[pieces].mean(0).numpy(), atol=1e-6)


def test_deterministic(adapter: DualEncoderAdapter) -> None:
    images = _images(2)
    a, b = adapter.extract(images), adapter.extract(images)
    for x, y in zip(a.sites(), b.sites(), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(
        adapter.class_log_scores(images, ["blur", "noise"]),
        adapter.class_log_scores(images, ["blur", "noise"]),
    )


def test_rejects_non_dual_encoder(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a dual encoder"):
        DualEncoderAdapter(tmp_path)
