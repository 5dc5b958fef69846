"""The HF multimodal-LLM component adapter on tiny random models of every family (no downloads).

What could silently go wrong, and is checked here: features pooled from the wrong tokens (CLS,
padding, another image's tiles), a "projector" site that is not what the language model really
reads, class scores that are not the teacher-forced sequence log-probabilities (KV-cache reuse with
M-RoPE positions is the risky part), and batching that changes the numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from iqalens.models.base import ComponentModel  # noqa: E402
from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION, HFVLMAdapter  # noqa: E402
from iqalens.taxonomy import CLASSES  # noqa: E402
from tiny_vlms import FAMILIES, build_tiny_vlm  # noqa: E402
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol  # noqa: E402

#: "motion blur" is two tokens in the tiny word-level vocabularies: a multi-token class word.
WORDS = [*CLASSES, "motion blur"]
TEXTS = [DEFAULT_QUESTION, DEFAULT_ANSWER_PREFIX, "motion blur"]
#: The families whose visual tokens and scores are checked in depth (one per position scheme /
#: projector style: 1D RoPE + MLP, M-RoPE + patch merger, pixel shuffle + multi-tile).
CORE = ("llava", "qwen2_vl", "internvl")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Three RGB images of different sizes (Qwen token counts and InternVL tile counts differ)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (70, 30), (28, 28)]]


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_vlm_adapter")


_ADAPTERS: dict[str, HFVLMAdapter] = {}


def _adapter(family: str, root: Path) -> HFVLMAdapter:
    if family not in _ADAPTERS:
        _ADAPTERS[family] = HFVLMAdapter(build_tiny_vlm(family, root / family, TEXTS), batch_size=3)
    adapter = _ADAPTERS[family]
    adapter.batch_size = 3
    return adapter


def _n_vision_layers(adapter: HFVLMAdapter) -> int:
    vc = adapter.model.config.vision_config
    return int(getattr(vc, "num_hidden_layers", None) or vc.depth)


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_have_the_config_shapes(family: str, model_root: Path, images: list[np.ndarray]) -> None:
    adapter = _adapter(family, model_root)
    assert isinstance(adapter, ComponentModel)
    assert adapter.kind == "generative"
    feats = adapter.extract(images)
    d_lm = adapter.model.config.get_text_config().hidden_size
    vc = adapter.model.config.vision_config
    d_v = getattr(vc, "embed_dim", None) or vc.hidden_size  # Qwen2-VL's ViT width is embed_dim
    assert len(feats.vision_layers) == _n_vision_layers(adapter) + 1  # embeddings + each block
    assert len(feats.lm_layers) == adapter.model.config.get_text_config().num_hidden_layers
    assert all(v.shape == (3, d_v) and v.dtype == np.float32 for v in feats.vision_layers)
    assert feats.projector.shape == (3, d_lm)
    assert all(h.shape == (3, d_lm) for h in feats.lm_layers)
    assert all(np.isfinite(s).all() for s in feats.sites())
    assert feats.site_names[len(feats.vision_layers)] == "projector"
    # Different images give different features at every site (nothing constant or image-blind), by far
    # more than the float32 rounding that batching may cause (measured >= 5,000 times): a batch that
    # mixed up its rows would fail test_batch_equals_one_by_one_and_is_deterministic.
    assert all(
        np.abs(s[0] - s[1]).max() > 100 * float32_atol(TINY_TRANSFORMER_DEPTH, s) for s in feats.sites()
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_one_by_one_and_is_deterministic(
    family: str, model_root: Path, images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, model_root)
    batched = adapter.extract(images)
    again = adapter.extract(images)
    adapter.batch_size = 1
    single = adapter.extract(images)
    for a, b, c in zip(batched.sites(), again.sites(), single.sites(), strict=True):
        np.testing.assert_array_equal(a, b)  # the same computation: bit-identical
        # Padded to the batch's longest prompt and tiled as another GEMM row: the tiny model's float32
        # bound (tests/tolerances.py), per site (hidden states reach |h| ~ 60).
        np.testing.assert_allclose(a, c, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, a))


def test_vision_sites_match_the_towers_own_hidden_states(model_root: Path, images: list[np.ndarray]) -> None:
    """LLaVA: vision.l is the mean over the patch tokens (CLS excluded) of hidden_states[l]."""
    adapter = _adapter("llava", model_root)
    feats = adapter.extract(images)
    inputs = adapter.prepare(images)
    with torch.no_grad():
        hidden = adapter.model.model.vision_tower(
            inputs["pixel_values"], output_hidden_states=True
        ).hidden_states
    assert len(hidden) == len(feats.vision_layers)
    for layer, h in enumerate(hidden):
        # Another code path to the same numbers: the float32 bound (tests/tolerances.py). Pooling the
        # CLS token too would move the mean by (cls - mean) / 17, O(0.01-0.1).
        expected = h[:, 1:].mean(1).numpy()
        tol = float32_atol(TINY_TRANSFORMER_DEPTH, expected)
        np.testing.assert_allclose(feats.vision_layers[layer], expected, rtol=0, atol=tol)


def _image_features(adapter: HFVLMAdapter, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The projector's output computed by the model's own ``get_image_features``, flat [tokens, D]."""
    kwargs = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_grid_thw", "image_sizes")}
    out = adapter.model.model.get_image_features(**kwargs).pooler_output
    parts = out if isinstance(out, (list, tuple)) else [out]
    return torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])


@pytest.mark.parametrize("family", [*CORE, "qwen2_5_vl"])
def test_visual_tokens_are_what_the_language_model_consumes(
    family: str, model_root: Path, images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, model_root)
    model = adapter.model
    inputs = adapter.prepare(images)
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        reference = model(**inputs, use_cache=False).logits
        tokens = adapter.visual_tokens(images)
        mask = ids == adapter.image_token_id
        assert [len(t) for t in tokens] == mask.sum(1).tolist()
        # They are the projector's output (another code path: the float32 bound, tests/tolerances.py) ...
        reference_tokens = _image_features(adapter, inputs).numpy()
        tol = float32_atol(TINY_TRANSFORMER_DEPTH, reference_tokens)
        np.testing.assert_allclose(torch.cat(tokens).numpy(), reference_tokens, rtol=0, atol=tol)
        # ... and the projector site is their mean.
        np.testing.assert_allclose(
            adapter.extract(images).projector,
            torch.stack([t.mean(0) for t in tokens]).numpy(),
            rtol=0,
            atol=tol,
        )
        # Feeding them back at the image-token positions of the text embeddings gives the same logits.
        kwargs: dict[str, torch.Tensor] = {"attention_mask": attn}
        if "image_grid_thw" in inputs:  # M-RoPE positions come from the token layout, not the embeds
            kwargs["position_ids"], _ = model.model.get_rope_index(
                ids,
                image_grid_thw=inputs["image_grid_thw"],
                attention_mask=attn,
                mm_token_type_ids=inputs["mm_token_type_ids"],
            )

        def run(visual: torch.Tensor) -> torch.Tensor:
            embeds = model.get_input_embeddings()(ids).clone()
            embeds[mask] = visual
            return model(inputs_embeds=embeds, use_cache=False, **kwargs).logits

        real = attn.bool()
        fed_back = run(torch.cat(tokens))
        # Embeddings spliced in instead of computed inside: the float32 bound (tests/tolerances.py).
        tol = float32_atol(TINY_TRANSFORMER_DEPTH, reference[real])
        torch.testing.assert_close(fed_back[real], reference[real], rtol=0, atol=tol)
        # The check has teeth: other visual tokens change the logits, by far more than that.
        assert (run(torch.zeros_like(torch.cat(tokens)))[real] - reference[real]).abs().max() > 100 * tol


def _manual_log_prob(adapter: HFVLMAdapter, image: np.ndarray, word: str) -> tuple[float, float]:
    """Teacher forcing without cache: one full forward of prompt + word, token log-probs summed; and
    the largest |logit| of that forward (the scale of its float32 rounding)."""
    prompt_ids = adapter.prepare([image])["input_ids"][0]
    word_ids = adapter.word_token_ids(word)
    inputs = adapter.prepare([image])
    ids = torch.cat([prompt_ids, torch.tensor(word_ids)]).unsqueeze(0)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    if "mm_token_type_ids" in inputs:
        extra = torch.zeros(1, len(word_ids), dtype=inputs["mm_token_type_ids"].dtype)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], extra], dim=1)
    with torch.no_grad():
        logits = adapter.model(**inputs, use_cache=False).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt_ids)
    return float(sum(logp[start - 1 + j, t] for j, t in enumerate(word_ids))), float(logits.abs().max())


def _log_prob_atol(logit_scale: float, n_tokens: int) -> float:
    """Bound on the difference of two float32 computations of an n-token word's log-probability: each
    token's log p = z - logsumexp(z) moves by <= 2 T, T the tiny model's bound on the logits
    (tests/tolerances.py)."""
    return 2 * n_tokens * float32_atol(TINY_TRANSFORMER_DEPTH, logit_scale)


@pytest.mark.parametrize("family", CORE)
def test_class_log_scores_are_full_sequence_log_probs(
    family: str, model_root: Path, images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, model_root)
    assert len(adapter.word_token_ids("motion blur")) == 2
    assert all(len(adapter.word_token_ids(w)) == 1 for w in CLASSES)
    scores = adapter.class_log_scores(images[:2], WORDS)
    assert scores.shape == (2, len(WORDS))
    assert (scores < 0).all()
    # The cached continuation and the full forward round differently: <= 4 T for the two-token word
    # (measured <= 3e-6 against tol ~ 2e-3); a cache one token short moves "motion blur" by 1.9-5.2.
    scale = 1.0
    for i in range(2):
        manual, scales = zip(*(_manual_log_prob(adapter, images[i], w) for w in WORDS), strict=True)
        scale = max(scale, *scales)
        np.testing.assert_allclose(scores[i], manual, rtol=0, atol=_log_prob_atol(scale, 2))
    # Per image = batch (within the same bound), and deterministic (bit-identical).
    single = adapter.class_log_scores(images[1:2], WORDS)[0]
    np.testing.assert_allclose(single, scores[1], rtol=0, atol=_log_prob_atol(scale, 2))
    np.testing.assert_array_equal(adapter.class_log_scores(images[:2], WORDS), scores)


def test_single_token_words_need_no_cache(model_root: Path, images: list[np.ndarray]) -> None:
    adapter = _adapter("llava", model_root)
    single = adapter.class_log_scores(images[:1], list(CLASSES))
    mixed = adapter.class_log_scores(images[:1], WORDS)
    # With and without a kept cache the prompt's pass may round differently: one token, <= 2 T.
    scale = max(_manual_log_prob(adapter, images[0], w)[1] for w in CLASSES)
    np.testing.assert_allclose(single[0], mixed[0, : len(CLASSES)], rtol=0, atol=_log_prob_atol(scale, 1))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_word_embeddings_average_the_pieces(family: str, model_root: Path) -> None:
    adapter = _adapter(family, model_root)
    table = adapter.model.get_input_embeddings().weight.detach().numpy()
    emb = adapter.word_embeddings(["blur", "motion blur"])
    assert emb.shape == (2, table.shape[1]) and emb.dtype == np.float32
    tok = adapter.tokenizer
    blur, motion = tok.convert_tokens_to_ids("blur"), tok.convert_tokens_to_ids("motion")
    np.testing.assert_allclose(emb[0], table[blur], atol=1e-6)
    np.testing.assert_allclose(emb[1], (table[blur] + table[motion]) / 2, atol=1e-6)


def test_errors_are_clear(model_root: Path) -> None:
    adapter = _adapter("llava", model_root)
    with pytest.raises(ValueError, match="at least one class word"):
        adapter.class_log_scores([np.zeros((28, 28, 3), np.uint8)], [])
    with pytest.raises(ValueError, match="at least one image"):
        adapter.extract([])
    with pytest.raises(ValueError, match="batch_size"):
        HFVLMAdapter(model_root / "llava", batch_size=0)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_greedy_answers_equal_hf_generate_and_samples_are_seeded(
    family: str, model_root: Path, images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, model_root)
    answers = adapter.generate_answers(images[:2], samples=3, temperature=0.7, seeds=[5, 6], max_new_tokens=5)
    for image, (greedy, sampled) in zip(images[:2], answers, strict=True):
        inputs = adapter.prepare([image])
        with torch.no_grad():
            ids = adapter.model.generate(**inputs, max_new_tokens=5, do_sample=False)
        start = inputs["input_ids"].shape[1]
        assert greedy == adapter.tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()
        assert len(sampled) == 3
    # An image's answers depend on its seed only, not on the batch it came in.
    alone = adapter.generate_answers(images[:1], samples=3, temperature=0.7, seeds=[5], max_new_tokens=5)
    assert alone[0] == answers[0]
    other = adapter.generate_answers(images[:1], samples=3, temperature=0.7, seeds=[7], max_new_tokens=5)
    assert other[0][0] == answers[0][0] and other[0][1] != answers[0][1]  # greedy fixed, samples not
    with pytest.raises(ValueError, match="temperature"):
        adapter.generate_answers(images[:1], samples=2, temperature=0.0)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_contextual_word_states_are_the_decoder_states_after_the_prefix(
    family: str, model_root: Path
) -> None:
    adapter = _adapter(family, model_root)
    states = adapter.contextual_word_embeddings(WORDS)
    d_lm = adapter.model.config.get_text_config().hidden_size
    assert states.shape == (adapter.n_lm_sites, len(WORDS), d_lm) and states.dtype == np.float32
    assert adapter.contextual_template == f"{DEFAULT_ANSWER_PREFIX} {{}}"
    # The last layer's state of a one-token word, after the final norm, is the LM's own last hidden
    # state at the end of "prefix word" (tokenised with the tokenizer's own special tokens).
    tok = adapter.tokenizer
    for k, word in enumerate(CLASSES[:3]):
        ids = tok(f"{DEFAULT_ANSWER_PREFIX} {word}", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            last = adapter.language_model(input_ids=ids).last_hidden_state[0, -1]
            normed = adapter.language_model.norm(torch.from_numpy(states[-1, k]))
        # The same states through another code path: the float32 bound (tests/tolerances.py).
        tol = float32_atol(TINY_TRANSFORMER_DEPTH, last)
        np.testing.assert_allclose(normed.numpy(), last.numpy(), rtol=0, atol=tol)
    # Context matters: the state differs from the context-free input embedding of the word.
    assert not np.allclose(states[-1, 0], adapter.word_embeddings(["blur"])[0], atol=1e-2)
