"""The HF multimodal LLMs as AlignableModel, on tiny random LLaVA and Qwen2-VL models (no downloads).

What could silently go wrong and is checked here: components that overlap (freezing one would
freeze part of another) or miss parameters, a "visual" output that is not the projector site the
diagnostics measure, a template loss that is not the teacher-forced cross-entropy of the class
word, gradients leaking into frozen components, and checkpoints that do not reproduce the trained
model (LoRA included) when loaded without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from iqalens.align.base import COMPONENTS, AlignableModel
from iqalens.align.hf import HFAlignable
from iqalens.models.base import ComponentModel
from iqalens.models.hf_checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_hf_aligned, load_hf_aligned
from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION, HFVLMAdapter
from iqalens.taxonomy import CLASSES
from tiny_vlms import build_tiny_vlm
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol

FAMILIES = ("llava", "qwen2_vl")
#: One family per packing layout of prepared inputs: batch-indexed pixels, flat patch rows, flat
#: tiles, padded tiles (5-D).
PACKING = ("llava", "qwen2_vl", "internvl", "llava_next")
TEXTS = [DEFAULT_QUESTION, DEFAULT_ANSWER_PREFIX, "motion blur"]
LABELS = torch.tensor([0, 3, 6])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("align_hf")
    return {f: build_tiny_vlm(f, root / f, TEXTS) for f in dict.fromkeys((*FAMILIES, *PACKING))}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (70, 30), (28, 28)]]


def _fresh(folder: Path) -> HFAlignable:
    return HFAlignable(HFVLMAdapter(folder))


def _log_prob_atol(model: HFAlignable, images: list[np.ndarray], n_tokens: int) -> float:
    """Bound on an n-token word's log-probability computed in two ways: each token's log p = z -
    logsumexp(z) moves by <= 2 T, T the tiny model's float32 bound on its logits (tests/tolerances.py),
    whose scale is read from the prompts' logits."""
    with torch.no_grad():
        logits = [model.model(**model.adapter.prepare([im]), use_cache=False).logits for im in images]
    return 2 * n_tokens * float32_atol(TINY_TRANSFORMER_DEPTH, *logits)


def _train_only(model: HFAlignable, component: str) -> None:
    model.model.requires_grad_(False)
    model.components()[component].requires_grad_(True)


@pytest.mark.parametrize("family", FAMILIES)
def test_components_are_disjoint_and_cover_the_model(family: str, folders: dict[str, Path]) -> None:
    model = _fresh(folders[family])
    assert isinstance(model, AlignableModel) and isinstance(model, ComponentModel)
    comps = model.components()
    assert list(comps) == list(COMPONENTS)
    ids = {name: {id(p) for p in m.parameters()} for name, m in comps.items()}
    assert not ids["vision_encoder"] & ids["projector"] and not ids["projector"] & ids["language_model"]
    assert not ids["vision_encoder"] & ids["language_model"]
    assert set().union(*ids.values()) == {id(p) for p in model.model.parameters()}
    # LoRA targets are Linear layers of that component, addressable from it.
    for name, module in comps.items():
        targets = model.lora_targets(name)
        assert targets and all(isinstance(module.get_submodule(t), torch.nn.Linear) for t in targets)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_matches_the_diagnostics_and_teacher_forcing(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    model = _fresh(folders[family])
    feats = model.extract(images)
    scores = model.class_log_scores(images, CLASSES)
    out = model.forward_align(model.prepare(images), LABELS, CLASSES)
    # The training forward is another code path: the tiny model's float32 bound (tests/tolerances.py)
    # on features, 2 T per token on log-probabilities (_log_prob_atol).
    # visual = the projector site; encoder features = the last vision site (both pooled per image).
    for got, want in [(out.visual, feats.projector), (out.encoder_features, feats.vision_layers[-1])]:
        np.testing.assert_allclose(
            got.detach().numpy(), want, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, want)
        )
    one_token = _log_prob_atol(model, images, 1)
    np.testing.assert_allclose(out.class_scores.detach().numpy(), scores, rtol=0, atol=one_token)
    # Single-token words: the template loss is the mean NLL of the true word under the prompt.
    expected = -scores[np.arange(3), LABELS.numpy()].mean()
    assert out.template_loss.item() == pytest.approx(expected, abs=one_token)
    # A two-token word: its pieces' NLLs averaged per image (the word's log-prob / 2).
    words = [*CLASSES[:7], "motion blur"]
    multi = model.forward_align(model.prepare(images[:2]), torch.tensor([7, 1]), words)
    ref = model.class_log_scores(images[:2], words)
    # (the two-token word: 4 T, halved in the loss)
    assert multi.template_loss.item() == pytest.approx(-(ref[0, 7] / 2 + ref[1, 1]) / 2, abs=one_token)
    np.testing.assert_allclose(multi.class_scores.numpy(), ref, rtol=0, atol=_log_prob_atol(model, images, 2))
    emb = model.class_word_embeddings(words)
    np.testing.assert_allclose(emb.detach().numpy(), model.word_embeddings(words), atol=1e-6)


@pytest.mark.parametrize("family", PACKING)
def test_prepared_entries_rebatch_to_the_same_outputs(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    """The trainer keeps one prepared entry per image and re-batches them: same numbers as a batch."""
    model = _fresh(folders[family])
    packed = model.prepare(images)
    assert all(v.shape[0] == len(images) for v in packed.values())
    feats = model.extract(images)
    out = model.forward_align(packed, LABELS, CLASSES)
    # Other batches and code paths: the tiny model's float32 bound (tests/tolerances.py); class scores
    # are log-probabilities of one-token words, within 2 T (test above).
    tol_visual = float32_atol(TINY_TRANSFORMER_DEPTH, feats.projector)
    tol_encoder = float32_atol(TINY_TRANSFORMER_DEPTH, feats.vision_layers[-1])
    np.testing.assert_allclose(out.visual.detach().numpy(), feats.projector, rtol=0, atol=tol_visual)
    np.testing.assert_allclose(
        out.encoder_features.detach().numpy(), feats.vision_layers[-1], rtol=0, atol=tol_encoder
    )
    np.testing.assert_allclose(
        model.encoder_features(packed).numpy(), feats.vision_layers[-1], rtol=0, atol=tol_encoder
    )
    # Entries prepared alone (narrower than in the batch) and collated in another order.
    entries = [{k: v[0] for k, v in model.prepare([im]).items()} for im in images]
    order = [2, 0, 1]
    rebatched = model.forward_align(model.collate([entries[i] for i in order]), LABELS[order], CLASSES)
    np.testing.assert_allclose(
        rebatched.visual.detach().numpy(), feats.projector[order], rtol=0, atol=tol_visual
    )
    np.testing.assert_allclose(
        rebatched.class_scores.detach().numpy(),
        out.class_scores.detach().numpy()[order],
        rtol=0,
        atol=_log_prob_atol(model, images, 1),
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_only_the_trained_component(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    model = _fresh(folders[family])
    batch = model.prepare(images)
    for chosen in COMPONENTS:
        model.model.zero_grad(set_to_none=True)
        _train_only(model, chosen)
        out = model.forward_align(batch, LABELS, CLASSES)
        (out.template_loss + out.visual.square().mean() + out.encoder_features.square().mean()).backward()
        for name, module in model.components().items():
            grads = [p.grad for p in module.parameters()]
            if name == chosen:
                assert any(g is not None and g.abs().max() > 0 for g in grads), (chosen, name)
            else:
                assert all(g is None for g in grads), (chosen, name)
    _train_only(model, "language_model")
    assert model.class_word_embeddings(CLASSES).requires_grad


@pytest.mark.parametrize("family", FAMILIES)
def test_template_loss_decreases_and_checkpoint_round_trips(
    family: str, folders: dict[str, Path], images: list[np.ndarray], tmp_path: Path
) -> None:
    model = _fresh(folders[family])
    _train_only(model, "projector")
    batch = model.prepare(images)
    opt = torch.optim.SGD([p for p in model.model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(4):
        out = model.forward_align(batch, LABELS, CLASSES)
        opt.zero_grad()
        out.template_loss.backward()
        opt.step()
        losses.append(out.template_loss.item())
    assert losses[-1] < 0.8 * losses[0]
    folder = model.save_checkpoint(tmp_path / "ckpt", ["projector"], {"objectives": {"template": 1.0}})
    assert is_hf_aligned(folder) and (folder / WEIGHTS_FILE).is_file()
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["components"] == ["projector"] and config["info"]["objectives"] == {"template": 1.0}
    assert Path(config["base_model"]) == folders[family].resolve()
    loaded = load_hf_aligned(folder)
    assert loaded.model_id == config["model_id"] != model.model_id
    for a, b in zip(model.extract(images).sites(), loaded.extract(images).sites(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        model.class_log_scores(images, CLASSES), loaded.class_log_scores(images, CLASSES)
    )
    # Only the projector was stored: the base model itself is untouched on reload.
    base = HFVLMAdapter(folders[family])
    assert not np.allclose(base.extract(images).projector, loaded.extract(images).projector)


def test_lora_is_merged_into_the_checkpoint(
    folders: dict[str, Path], images: list[np.ndarray], tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    model = _fresh(folders["qwen2_vl"])
    before = model.extract(images)
    model.model.requires_grad_(False)
    component = model.components()["language_model"]
    targets = model.lora_targets("language_model")
    peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=targets), component)
    assert model.lora_targets("language_model") == targets
    batch = model.prepare(images)
    opt = torch.optim.SGD([p for p in model.model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = model.forward_align(batch, LABELS, CLASSES).template_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.extract(images)
    # training moved the states by far more than the rounding the merge is allowed below
    moved = np.abs(after.lm_layers[-1] - before.lm_layers[-1]).max()
    assert moved > 10 * float32_atol(TINY_TRANSFORMER_DEPTH, after.lm_layers[-1])
    folder = model.save_checkpoint(tmp_path / "lora", [], {})
    assert json.loads((folder / CONFIG_FILE).read_text())["components"] == ["language_model"]
    loaded = load_hf_aligned(folder)  # a plain model: no peft layers
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())
    # Merged (W + s B A rounded once, one product instead of two): the float32 bound, per site.
    for a, b in zip(after.sites(), loaded.extract(images).sites(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, a))
