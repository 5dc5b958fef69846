"""Idefics3, Gemma 3, PaliGemma and a remote-code mPLUG-Owl2-layout model: perceive, teach and align.

Tiny random models of each (``tiny_vlms_more``), loaded through the real loading path. What is
checked per family is what could silently go wrong where these families differ from the older
ones: the component map (Idefics3's ``vision_model`` / ``connector`` / ``text_model``; mPLUG-Owl2's
tower and abstractor inside the decoder module), the prompt (PaliGemma has no chat template and
closes the prompt itself; mPLUG-Owl2 has no processor and a -200 placeholder the model expands),
the positions of the visual tokens (expanded inside mPLUG-Owl2's forward), and the training forward
of ``align`` on all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.align.hf import HFAlignable
from iqalens.align.run import run_align
from iqalens.cli import main
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.leaf import prompts
from iqalens.leaf.teachers.hf import HFTeacher
from iqalens.models.hf_checkpoint import load_hf_aligned
from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION, HFVLMAdapter
from iqalens.perception.run import perceive
from iqalens.samples import sample_paths
from iqalens.taxonomy import CLASSES
from tiny_vlms_more import MORE_FAMILIES, build_more_vlm
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol

TEXTS = [
    DEFAULT_QUESTION,
    DEFAULT_ANSWER_PREFIX,
    "motion blur",
    prompts.ANSWER_PREFIX,
    prompts.POINT_QUESTION,
    prompts.PAIR_QUESTION,
    prompts.PAIR_ANSWER_PREFIX,
    prompts.pair_prompt().text(),
    *prompts.LEVEL_WORDS,
    *prompts.PAIR_CHOICES,
]
WORDS = [*CLASSES, "motion blur"]  # "motion blur": a two-token word in the tiny vocabularies
#: Visual tokens per 28 x 28 image: Idefics3 pixel shuffle 16 -> 4; Gemma 3 pooling 16 -> 4;
#: PaliGemma all 16 patches; mPLUG-Owl2 4 learned queries + the appended eos token.
VISUAL_TOKENS = {"idefics3": 4, "gemma3": 4, "paligemma": 16, "mplug_owl2": 5}


def _options(family: str) -> dict[str, bool]:
    return {"trust_remote_code": True} if family == "mplug_owl2" else {}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("more_vlms")
    return {f: build_more_vlm(f, root / f, TEXTS) for f in MORE_FAMILIES}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (70, 30), (28, 28)]]


_ADAPTERS: dict[str, HFVLMAdapter] = {}


def _adapter(family: str, folders: dict[str, Path]) -> HFVLMAdapter:
    if family not in _ADAPTERS:
        _ADAPTERS[family] = HFVLMAdapter(folders[family], **_options(family))
    adapter = _ADAPTERS[family]
    adapter.batch_size = 3
    return adapter


by_family = pytest.mark.parametrize("family", MORE_FAMILIES)


@by_family
def test_sites_have_the_model_shapes_and_batching_changes_nothing(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, folders)
    feats = adapter.extract(images)
    assert len(feats.vision_layers) == 3  # embeddings + 2 blocks
    assert len(feats.lm_layers) == len(adapter.lm_blocks) >= 1
    assert feats.projector.shape == (3, 32) and all(np.isfinite(s).all() for s in feats.sites())
    again = adapter.extract(images)
    adapter.batch_size = 1
    single = adapter.extract(images)
    for a, b, c in zip(feats.sites(), again.sites(), single.sites(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, a))
        assert np.abs(a[0] - a[1]).max() > 100 * float32_atol(TINY_TRANSFORMER_DEPTH, a)


@by_family
def test_visual_tokens_are_the_projector_output_the_language_model_reads(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, folders)
    tokens = adapter.visual_tokens(images)
    assert [len(t) for t in tokens] == [VISUAL_TOKENS[family]] * 3
    inputs = adapter.prepare(images)
    with torch.no_grad():
        if family == "mplug_owl2":  # the remote code's own image encoder
            reference = adapter.model.encode_images(inputs["images"])
        else:
            pixels = {k: v for k, v in inputs.items() if k in ("pixel_values", "pixel_attention_mask")}
            reference = adapter.model.model.get_image_features(**pixels).pooler_output
    parts = reference if isinstance(reference, (list, tuple)) else [reference]
    reference = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts]).numpy()
    tol = float32_atol(TINY_TRANSFORMER_DEPTH, reference)
    np.testing.assert_allclose(torch.cat(tokens).numpy(), reference, rtol=0, atol=tol)
    projector = adapter.extract(images).projector
    np.testing.assert_allclose(projector, torch.stack([t.mean(0) for t in tokens]).numpy(), rtol=0, atol=tol)


def _manual_log_prob(adapter: HFVLMAdapter, image: np.ndarray, word: str) -> tuple[float, float]:
    """One full forward of prompt + word (no cache); the word's summed log-probability, max |logit|.

    Per-token rows other than the ids continue the prompt's last value (PaliGemma's answer side)."""
    inputs = adapter.prepare([image])
    pieces = adapter.word_token_ids(word)
    ids = inputs["input_ids"]
    for key, value in list(inputs.items()):
        if value.shape == ids.shape and not value.is_floating_point():
            tail = torch.tensor([pieces]) if key == "input_ids" else value[:, -1:].expand(1, len(pieces))
            inputs[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
    with torch.no_grad():
        logits = adapter.model(**inputs, use_cache=False).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(logits) - len(pieces)  # the model may have expanded image placeholders before
    return float(sum(logp[start - 1 + j, t] for j, t in enumerate(pieces))), float(logits.abs().max())


@by_family
def test_class_scores_are_teacher_forced_log_probabilities(
    family: str, folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    adapter = _adapter(family, folders)
    assert len(adapter.word_token_ids("motion blur")) == 2
    scores = adapter.class_log_scores(images[:2], WORDS)
    for i in range(2):
        manual, scales = zip(*(_manual_log_prob(adapter, images[i], w) for w in WORDS), strict=True)
        # The cached continuation and the full forward round differently: 2 T per token (tests/tolerances.py).
        atol = 4 * float32_atol(TINY_TRANSFORMER_DEPTH, max(scales))
        np.testing.assert_allclose(scores[i], manual, rtol=0, atol=atol)
    answers = adapter.generate_answers(images[:1], samples=1, max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0][0], str)
    states = adapter.contextual_word_embeddings(["blur", "motion blur"])
    assert states.shape == (adapter.n_lm_sites, 2, 32)


@by_family
def test_teacher_judgments(
    family: str, folders: dict[str, Path], tmp_path: Path, images: list[np.ndarray]
) -> None:
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(image).save(paths[-1])
    teacher = HFTeacher(folders[family], batch_size=4, **_options(family))
    points = teacher.judge_images(paths)
    assert len(points) == 3 and all(abs(sum(p.probs) - 1) < 1e-9 for p in points)
    teacher.batch_size = 1
    alone = teacher.judge_images(paths)
    for a, b in zip(points, alone, strict=True):
        np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-4)
    teacher.batch_size = 4
    pairs = teacher.judge_pairs([(paths[0], paths[1]), (paths[1], paths[2])])
    assert len(pairs) == 2 and all(0 <= p.p_first_better <= 1 for p in pairs)


@by_family
def test_align_components_forward_and_checkpoint(
    family: str, folders: dict[str, Path], images: list[np.ndarray], tmp_path: Path
) -> None:
    model = HFAlignable(HFVLMAdapter(folders[family], **_options(family)))
    ids = {name: {id(p) for p in m.parameters()} for name, m in model.components().items()}
    assert not ids["vision_encoder"] & ids["projector"] and not ids["projector"] & ids["language_model"]
    assert not ids["vision_encoder"] & ids["language_model"]
    assert set().union(*ids.values()) == {id(p) for p in model.model.parameters()}
    feats, scores = model.extract(images), model.class_log_scores(images, CLASSES)
    labels = torch.tensor([0, 3, 6])
    out = model.forward_align(model.prepare(images), labels, CLASSES)
    for got, want in [(out.visual, feats.projector), (out.encoder_features, feats.vision_layers[-1])]:
        np.testing.assert_allclose(
            got.detach().numpy(), want, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, want)
        )
    atol = 2 * float32_atol(TINY_TRANSFORMER_DEPTH, 100.0)  # logits of the tiny models stay below 100
    np.testing.assert_allclose(out.class_scores.detach().numpy(), scores, rtol=0, atol=atol)
    assert out.template_loss.item() == pytest.approx(-scores[np.arange(3), labels.numpy()].mean(), abs=atol)
    # Training the projector moves only the projector and lowers the loss.
    model.model.requires_grad_(False)
    projector = model.components()["projector"]
    projector.requires_grad_(True)
    frozen = {n: p.detach().clone() for n, p in model.model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD(projector.parameters(), lr=1e-3)
    first = None
    for _ in range(3):
        loss = model.forward_align(model.prepare(images), labels, CLASSES).template_loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.forward_align(model.prepare(images), labels, CLASSES).template_loss.item() < first
    assert all(torch.equal(p, frozen[n]) for n, p in model.model.named_parameters() if n in frozen)
    # The checkpoint holds the projector; loaded back over the base it gives the trained model's scores.
    model.save_checkpoint(tmp_path / "ckpt", ["projector"], {"model_id": f"tiny-{family}+aligned"})
    reloaded = load_hf_aligned(tmp_path / "ckpt")
    np.testing.assert_array_equal(
        reloaded.class_log_scores(images[:1], CLASSES), model.class_log_scores(images[:1], CLASSES)
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("more_bench")
    spec = BenchmarkSpec(types=(1, 11, 16), levels=(4,), size=(48, 40), split_fractions=(0.5, 0.25, 0.25))
    build_benchmark(root / "bench", refs=[str(p) for p in sample_paths()[:4]], spec=spec, progress=False)
    return root / "bench"


@by_family
def test_perceive_teach_align_runs(
    family: str, folders: dict[str, Path], bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The three commands' library entry points (perceive, align) and the teach command, on each family."""
    metrics = perceive(
        _adapter(family, folders),
        bench / "manifest.csv",
        tmp_path / "perceive",
        cache_dir=tmp_path / "cache",
        checkpoint_id=f"tiny-{family}",
        probe_max_iter=20,
        samples=0,
        progress=False,
    )
    assert 0 <= metrics["forced_choice"]["accuracy"] <= 1
    assert len(metrics["probes"]["curve"]) == len(
        _adapter(family, folders).extract(np.zeros((1, 28, 28, 3), np.uint8)).sites()
    )
    remote = ["--trust-remote-code"] if family == "mplug_owl2" else []
    store = tmp_path / "store.sqlite"
    args = [
        "teach",
        "--teacher",
        f"hf:{folders[family]}",
        "--images",
        str(bench / "manifest.csv"),
        "-o",
        str(store),
    ]
    assert main([*args, "--pairs-per-image", "1", "-q", *remote]) == 0
    assert "16 judged now" in capsys.readouterr().out
    from iqalens.align.config import AlignConfig

    config = AlignConfig(train=("projector",), max_steps=2, batch_size=2, eval_every=1, progress=False)
    result = run_align(
        f"hf:{folders[family]}",
        bench,
        tmp_path / "align",
        config,
        report=False,
        cache_dir=tmp_path / "cache",
        model_options=_options(family),
    )
    assert result["steps_run"] == 2 and (tmp_path / "align" / "model" / "hf_aligned.json").is_file()


@pytest.mark.slow
def test_cli_on_a_remote_code_model(
    folders: dict[str, Path], bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line end to end on the remote-code model: the options reach the loaders, and the
    aligned checkpoint (which records trust_remote_code) is read back by perceive."""
    common = ["--bench", str(bench), "--cache", str(tmp_path / "cache"), "-q", "--trust-remote-code"]
    model = f"hf:{folders['mplug_owl2']}"
    args = ["align", "--model", model, "--train", "P", "--steps", "2", "--batch-size", "2", "--no-report"]
    assert main([*args, "-o", str(tmp_path / "a"), *common]) == 0
    assert "align P of" in capsys.readouterr().out
    checkpoint = str(tmp_path / "a")
    assert (
        main(["perceive", "--model", checkpoint, "-o", str(tmp_path / "p"), "--samples", "0", *common]) == 0
    )
    assert "forced choice: accuracy" in capsys.readouterr().out
