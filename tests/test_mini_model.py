"""The composed mini VLM (EfficientNet-Lite0 -> projector -> MiniLM-L6), all offline from PyPI packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from align_bench import SMALL_MINI
from iqalens.images import load_rgb
from iqalens.models.base import ComponentModel
from iqalens.models.efficientnet import LITE_MEAN, LITE_STD
from iqalens.models.mini import MiniVLM, imagenet_class_names, load_default_mini
from iqalens.models.mini_prealign import augmented_views, prealign
from iqalens.models.preprocess import crop_boxes, normalise, resize_shorter
from iqalens.samples import sample_paths
from iqalens.taxonomy import CLASSES

_VISION_DIMS = [32, 16, 24, 40, 80, 112, 192, 320, 1280]  # stem, 7 stages, head


@pytest.fixture(scope="module")
def model() -> MiniVLM:
    return MiniVLM(SMALL_MINI)


def _images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=(70 + 5 * i, 90, 3), dtype=np.uint8) for i in range(n)]


def test_imagenet_names_offline_and_in_classifier_order(model: MiniVLM) -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert (names[0], names[281], names[504], names[999]) == ("tench", "tabby", "coffee mug", "toilet tissue")
    # The pretrained classifier and the shipped names agree: the bundled cat photo is a cat class.
    cat = load_rgb(next(p for p in sample_paths() if p.stem == "cat"))
    resized = resize_shorter(cat, 224)
    top, left = crop_boxes(resized.shape[0], resized.shape[1], 224)[0]
    x = normalise(resized[None, top : top + 224, left : left + 224], LITE_MEAN, LITE_STD)
    with torch.no_grad():
        _, head = model.encode(x)
        top5 = model.imagenet_logits(head).topk(5).indices[0].tolist()
    assert {names[i] for i in top5} & {"tabby", "tiger cat", "Egyptian cat", "Persian cat"}


def test_shapes_per_site(model: MiniVLM) -> None:
    assert isinstance(model, ComponentModel)
    assert model.kind == "mini"
    feats = model.extract(_images(3), batch_size=2)
    assert [v.shape for v in feats.vision_layers] == [(3, d) for d in _VISION_DIMS]
    assert feats.projector.shape == (3, 384)
    assert len(feats.lm_layers) == 7 and all(h.shape == (3, 384) for h in feats.lm_layers)
    assert feats.site_names[8:11] == ["vision.8", "projector", "lm.0"]
    assert all(s.dtype == np.float32 and np.isfinite(s).all() for s in feats.sites())
    assert not np.allclose(feats.lm_layers[-1][0], feats.lm_layers[-1][1])


def test_lm_sites_read_the_visual_tokens(model: MiniVLM) -> None:
    """lm.0 is BERT's embedding layer applied to the projected tokens (positions 1..k)."""
    images = _images(2)
    feats = model.extract(images)
    with torch.no_grad():
        _, head = model.encode(model.preprocess(images))
        tokens = model.visual_tokens(head)
        emb = model.lm.embeddings(inputs_embeds=torch.cat([torch.zeros_like(tokens[:, :1]), tokens], 1))
    np.testing.assert_allclose(feats.projector, tokens.mean(1).numpy(), atol=1e-6)
    np.testing.assert_allclose(feats.lm_layers[0], emb[:, 1:].mean(1).numpy(), atol=1e-5)


def test_class_scores_and_word_embeddings(model: MiniVLM) -> None:
    scores = model.class_log_scores(_images(2), list(CLASSES))
    assert scores.shape == (2, len(CLASSES))
    assert np.all(np.abs(scores) <= 1 + 1e-5)
    emb = model.word_embeddings(["blur", "colorfulness"])
    table = model.lm.get_input_embeddings().weight.detach()
    ids = model.tokenizer("colorfulness", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # a multi-piece word, averaged
    np.testing.assert_allclose(emb[1], table[ids].mean(0).numpy(), atol=1e-6)
    assert emb.shape == (2, 384)


def test_prealign_reduces_loss_is_seeded_and_round_trips(model: MiniVLM, tmp_path: Path) -> None:
    images = [load_rgb(p) for p in sample_paths()[:2]]
    init = {k: v.clone() for k, v in model.projector.state_dict().items()}
    result = prealign(model, images, steps=12, lr=2e-3, batch_size=8, seed=5)
    assert result.n_views == 20 and len(result.step_losses) == 12
    assert result.loss_after < result.loss_before - 0.1
    trained = {k: v.clone() for k, v in model.projector.state_dict().items()}
    # same seed, same start -> the same projector
    model.projector.load_state_dict(init)
    prealign(model, images, steps=12, lr=2e-3, batch_size=8, seed=5)
    for k, v in model.projector.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)

    test_images = _images(2)
    before = model.extract(test_images)
    scores = model.class_log_scores(test_images, ["blur", "noise"])
    model.save(tmp_path / "ckpt")
    loaded = MiniVLM.load(tmp_path / "ckpt")
    assert loaded.config == SMALL_MINI and loaded.prealign_info["steps"] == 12
    after = loaded.extract(test_images)
    for x, y in zip(before.sites(), after.sites(), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(scores, loaded.class_log_scores(test_images, ["blur", "noise"]))
    model.projector.load_state_dict(init)


def test_save_with_fine_tuned_encoder(model: MiniVLM, tmp_path: Path) -> None:
    original = model.encoder._bn1.bias.detach().clone()
    try:
        with torch.no_grad():
            model.encoder._bn1.bias.add_(0.5)
        model.save(tmp_path, components=("projector", "vision_encoder"))
        loaded = MiniVLM.load(tmp_path)
        torch.testing.assert_close(loaded.encoder._bn1.bias, model.encoder._bn1.bias, rtol=0, atol=0)
    finally:
        with torch.no_grad():
            model.encoder._bn1.bias.copy_(original)
    with pytest.raises(ValueError, match="components"):
        model.save(tmp_path, components=("language_model",))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mini.json"):
        MiniVLM.load(tmp_path)


def test_augmented_views() -> None:
    views = augmented_views(_images(1), crop_fraction=0.5)
    assert len(views) == 10
    np.testing.assert_array_equal(views[1], views[0][:, ::-1])
    assert views[2].shape == (35, 35, 3)


def test_load_default_mini_caches(tmp_path: Path) -> None:
    images = [load_rgb(sample_paths()[0])]
    first = load_default_mini(tmp_path, images=images, steps=2, augment=False)
    assert (tmp_path / "mini.json").is_file()
    second = load_default_mini(tmp_path)  # from the cache: no pre-alignment settings needed
    assert second.prealign_info == first.prealign_info
    for k, v in first.projector.state_dict().items():
        torch.testing.assert_close(second.projector.state_dict()[k], v, rtol=0, atol=0)


def test_contextual_word_embeddings_read_the_word_in_its_template(model: MiniVLM) -> None:
    words = ["blur", "colorfulness"]
    states = model.contextual_word_embeddings(words)
    assert states.shape == (7, 2, 384) and states.dtype == np.float32  # one row per lm.l site
    enc = model.tokenizer("the distortion is colorfulness", return_tensors="pt")
    pieces = model.tokenizer("colorfulness", add_special_tokens=False)["input_ids"]
    start = 1 + 3  # [CLS] the distortion is
    assert enc["input_ids"][0, start : start + len(pieces)].tolist() == pieces
    with torch.no_grad():
        hidden = model.lm(**enc, output_hidden_states=True).hidden_states
    for layer in (0, 3, 6):
        expected = hidden[layer][0, start : start + len(pieces)].mean(0).numpy()
        np.testing.assert_allclose(states[layer, 1], expected, atol=1e-5)
    other = model.contextual_word_embeddings(words, template="a photo with {}")
    assert not np.allclose(other[-1], states[-1], atol=1e-3)  # the context changes the state
    with pytest.raises(ValueError, match="template"):
        model.contextual_word_embeddings(words, template="{} is the distortion")
