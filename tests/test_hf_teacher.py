"""The HF multimodal-LLM teacher on tiny random models of every supported family (no downloads).

Each family's model, tokenizer and processor are built offline (``tiny_vlms``), saved, and loaded
back through ``HFTeacher(path)``, so the real loading path runs. Random weights make the
judgments meaningless but exercise the plumbing: the right logits at the right position, both
pair orders, batching equal to one-by-one.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from iqalens.images import ImageLoadError  # noqa: E402
from iqalens.leaf import prompts  # noqa: E402
from iqalens.leaf.judgments import LEVELS, PointJudgment  # noqa: E402
from iqalens.leaf.teachers.base import Teacher  # noqa: E402
from iqalens.leaf.teachers.hf import HFTeacher, Request  # noqa: E402
from iqalens.models.hf_loading import (  # noqa: E402
    answer_token_ids,
    build_prompt_text,
    processor_class_without_video,
)
from tiny_vlms import FAMILIES, build_tiny_vlm, make_tokenizer  # noqa: E402
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol  # noqa: E402

PROMPT_TEXTS = [
    prompts.ANSWER_PREFIX,
    prompts.POINT_QUESTION,
    prompts.POINT_QUESTION_NO_PREFILL,
    prompts.PAIR_QUESTION,
    prompts.PAIR_ANSWER_PREFIX,
    prompts.pair_prompt().text(),
    *prompts.LEVEL_WORDS,
    *prompts.PAIR_CHOICES,
]
# What each family's (tiny) chat template puts before the pre-filled answer.
GENERATION_TAIL = {f: "<|im_start|>assistant\n" for f in FAMILIES} | {
    "llava": "ASSISTANT: ",
    "llava_next": "ASSISTANT: ",
}


@pytest.fixture(scope="session")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three images of different sizes and aspect ratios (so batches need padding)."""
    folder = tmp_path_factory.mktemp("hf_images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 52), (70, 30), (28, 28)]):
        path = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every family's tiny checkpoint, built once per session."""
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {family: build_tiny_vlm(family, root / family, PROMPT_TEXTS) for family in FAMILIES}


_TEACHERS: dict[str, HFTeacher] = {}


@pytest.fixture()
def teacher(request: pytest.FixtureRequest, model_dirs: dict[str, Path]) -> HFTeacher:
    """The (cached) teacher of the parametrised family, reset to a 4-prompt batch."""
    family = request.param
    if family not in _TEACHERS:
        _TEACHERS[family] = HFTeacher(model_dirs[family])
    _TEACHERS[family].batch_size = 4
    return _TEACHERS[family]


by_family = pytest.mark.parametrize("teacher", FAMILIES, indirect=True)


def request_family(teacher: HFTeacher) -> str:
    """The family of a fixture teacher (its checkpoint folder is named after it)."""
    return teacher.teacher_id.removeprefix("hf:")


@by_family
def test_point_judgments_are_distributions(teacher: HFTeacher, image_paths: list[Path]) -> None:
    judgments = teacher.judge_images(image_paths)
    assert len(judgments) == len(image_paths)
    for j in judgments:
        p = np.array(j.probs)
        assert p.shape == (5,) and np.all(p >= 0) and p.sum() == pytest.approx(1.0)
        assert 0.0 <= j.expected <= 1.0 and 0.0 <= j.reliability <= 1.0
    # The image matters: the tiny models do not answer every image identically.
    assert np.ptp([j.expected for j in judgments]) > 1e-3


@by_family
def test_reads_level_logits_at_the_answer_position(teacher: HFTeacher, image_paths: list[Path]) -> None:
    processor, model = teacher.processor, teacher.model
    tok = processor.tokenizer
    assert teacher.level_ids == tok.convert_tokens_to_ids(list(LEVELS))
    assert teacher.choice_ids == tok.convert_tokens_to_ids(list(prompts.PAIR_CHOICES))

    text = build_prompt_text(processor, prompts.point_prompt())
    assert text.endswith(GENERATION_TAIL[request_family(teacher)] + prompts.ANSWER_PREFIX)
    image = Image.open(image_paths[0]).convert("RGB")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert int(inputs["input_ids"][0, -1]) == tok.convert_tokens_to_ids("is")  # last word of the prefix
    with torch.inference_mode():
        full = model(**inputs).logits[0, -1]  # every position, no logits_to_keep
    expected = full[teacher.level_ids].double().numpy()

    got = teacher.answer_logits([Request(prompts.point_prompt(), (image,))], teacher.level_ids)[0]
    # The teacher's pass (its own padding, logits_to_keep: another LM-head GEMM) rounds differently:
    # the tiny model's float32 bound on the logits (tests/tolerances.py); softmax probabilities move
    # by <= tol / 2 (|d p_i| <= 2 tol p_i (1 - p_i)). Another position's logits differ by O(1).
    tol = float32_atol(TINY_TRANSFORMER_DEPTH, expected)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    judged = teacher.judge_images([image_paths[0]])[0]
    np.testing.assert_allclose(judged.probs, PointJudgment.from_logits(expected).probs, rtol=0, atol=tol / 2)


@by_family
def test_batching_equals_one_by_one(
    teacher: HFTeacher, image_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    logits: list[np.ndarray] = []
    original = teacher.answer_logits

    def spy(requests: list[Request], ids: list[int]) -> np.ndarray:
        logits.append(original(requests, ids))
        return logits[-1]

    monkeypatch.setattr(teacher, "answer_logits", spy)
    pairs = [(image_paths[0], image_paths[1]), (image_paths[2], image_paths[0])]
    batched_points = teacher.judge_images(image_paths)
    batched_pairs = teacher.judge_pairs(pairs)
    teacher.batch_size = 1
    single_points = [teacher.judge_images([p])[0] for p in image_paths]
    single_pairs = [teacher.judge_pairs([pair])[0] for pair in pairs]
    # Batched rows are padded and tiled otherwise than single ones: the logits agree up to the tiny
    # model's float32 bound (tests/tolerances.py), so probabilities within tol / 2 and pair log-odds
    # within 2 tol (see test_pairs_are_asked_in_both_orders).
    tol = float32_atol(TINY_TRANSFORMER_DEPTH, *logits)
    for b, s in zip(batched_points, single_points, strict=True):
        np.testing.assert_allclose(b.probs, s.probs, rtol=0, atol=tol / 2)
    for b, s in zip(batched_pairs, single_pairs, strict=True):
        assert _log_odds(b.p_ab) == pytest.approx(_log_odds(s.p_ab), abs=2 * tol)
        assert _log_odds(b.p_ba) == pytest.approx(_log_odds(s.p_ba), abs=2 * tol)
    # Teeth: rows mixed up in a batch would move a judgment by the gap between two images' (or two
    # orders') answers, measured >= 60 times these bounds for every family.
    gaps = [np.abs(np.subtract(x.probs, y.probs)).max() for x, y in itertools.combinations(single_points, 2)]
    assert min(gaps) > 10 * tol / 2
    odds = [_log_odds(p) for j in single_pairs for p in (j.p_ab, j.p_ba)]
    assert min(abs(x - y) for x, y in itertools.combinations(odds, 2)) > 10 * 2 * tol


@by_family
def test_pairs_are_asked_in_both_orders(
    teacher: HFTeacher, image_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = image_paths[0], image_paths[1]
    seen: list[list[Request]] = []
    answers: list[np.ndarray] = []
    original = teacher.answer_logits

    def spy(requests: list[Request], ids: list[int]) -> np.ndarray:
        seen.append(list(requests))
        answers.append(original(requests, ids))
        return answers[-1]

    monkeypatch.setattr(teacher, "answer_logits", spy)
    ab = teacher.judge_pairs([(a, b)])[0]
    (asked,) = seen  # one forward pass holds both orders
    arrays = [[np.asarray(im) for im in r.ordered_images()] for r in asked]
    im_a, im_b = np.asarray(Image.open(a).convert("RGB")), np.asarray(Image.open(b).convert("RGB"))
    assert len(arrays) == 2 and all(r.prompt == prompts.pair_prompt() for r in asked)
    assert np.array_equal(arrays[0][0], im_a) and np.array_equal(arrays[0][1], im_b)
    assert np.array_equal(arrays[1][0], im_b) and np.array_equal(arrays[1][1], im_a)

    ab_logits = answers[0][0]
    expected_p_ab = 1.0 / (1.0 + np.exp(ab_logits[1] - ab_logits[0]))
    assert ab.p_ab == pytest.approx(expected_p_ab, rel=1e-9)  # the same float64 numbers

    # Asking (b, a) swaps the two raw answers and mirrors the combined probability. Each order now
    # sits in the other batch row, which float32 GEMMs tile differently (by row, thread count and
    # instruction set: avx512 differs from avx2), so the logits agree up to the rounding bound of the
    # tiny model (tests/tolerances.py): tol = 10 sqrt(2,400) eps max(1, max |logit|) ~ 2e-4-5e-4 here;
    # measured differences are <= 4e-6. A pair probability is sigmoid(z_first - z_second): its
    # log-odds move by <= 2 tol, the probability by <= 2 tol * max sigmoid' = tol / 2.
    ba = teacher.judge_pairs([(b, a)])[0]
    tol = float32_atol(TINY_TRANSFORMER_DEPTH, *answers)
    # Teeth: a teacher that asked (a, b) for both orders would give ba.p_ab = sigmoid(d(b, a)) but
    # ab.p_ba = sigmoid(d(a, b)) (d = z_first - z_second), log-odds apart by the random model's order
    # effect |d(a, b) - d(b, a)| (0.23-4.8 for these models): far above the 2 tol rounding allows.
    assert abs(_log_odds(ab.p_ab) - _log_odds(ab.p_ba)) > 20 * 2 * tol
    np.testing.assert_allclose(answers[1], answers[0][::-1], rtol=0, atol=tol)
    assert _log_odds(ba.p_ab) == pytest.approx(_log_odds(ab.p_ba), abs=2 * tol)
    assert _log_odds(ba.p_ba) == pytest.approx(_log_odds(ab.p_ab), abs=2 * tol)
    assert ba.p_first_better == pytest.approx(1.0 - ab.p_first_better, abs=tol / 2)
    assert not ab.derived and 0.0 <= ab.reliability <= 1.0


def _log_odds(p: float) -> float:
    """log(p / (1 - p)): the (first - second) logit difference a pair probability was computed from."""
    return float(np.log(p) - np.log1p(-p))


@pytest.mark.parametrize("teacher", ["qwen2_vl", "internvl"], indirect=True)
def test_deterministic_across_calls_and_reloads(
    teacher: HFTeacher, image_paths: list[Path], model_dirs: dict[str, Path]
) -> None:
    first = teacher.judge_images(image_paths)
    assert teacher.judge_images(image_paths) == first
    reloaded = HFTeacher(model_dirs[request_family(teacher)], batch_size=4)
    assert reloaded.judge_images(image_paths) == first


def test_teacher_protocol_ids_and_no_prefill(model_dirs: dict[str, Path], image_paths: list[Path]) -> None:
    t = HFTeacher(model_dirs["qwen2_vl"], prefill=False)
    assert isinstance(t, Teacher) and t.supports_pairs
    assert t.teacher_id == "hf:qwen2_vl"
    assert t.prompt_version == prompts.prompt_version(False) != prompts.prompt_version(True)
    text = build_prompt_text(t.processor, t.point)
    assert text.endswith("<|im_start|>assistant\n") and prompts.POINT_QUESTION_NO_PREFILL in text
    (j,) = t.judge_images(image_paths[:1])
    assert sum(j.probs) == pytest.approx(1.0)
    assert HFTeacher(model_dirs["llava"], teacher_id="hf:my-llava").teacher_id == "hf:my-llava"


def test_bfloat16_option(model_dirs: dict[str, Path], image_paths: list[Path]) -> None:
    t = HFTeacher(model_dirs["internvl"], dtype="bfloat16")
    assert t.model.dtype == torch.bfloat16
    (j,) = t.judge_images(image_paths[:1])
    assert sum(j.probs) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dtype"):
        HFTeacher(model_dirs["internvl"], dtype="float13")


@pytest.mark.parametrize("teacher", ["llava"], indirect=True)
def test_unreadable_image_names_the_file(teacher: HFTeacher, tmp_path: Path, image_paths: list[Path]) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        teacher.judge_images([image_paths[0], bad])
    with pytest.raises(ImageLoadError, match="broken.png"):
        teacher.judge_pairs([(image_paths[0], bad)])


def test_processor_without_video_keeps_the_class_name(model_dirs: dict[str, Path]) -> None:
    from transformers import InternVLProcessor, LlavaProcessor

    assert processor_class_without_video(LlavaProcessor) is LlavaProcessor  # no video part: unchanged
    cls = processor_class_without_video(InternVLProcessor)
    assert cls.__name__ == "InternVLProcessor" and "video_processor" not in cls.get_attributes()
    saved = json.loads((model_dirs["internvl"] / "processor_config.json").read_text())
    assert saved["processor_class"] == "InternVLProcessor" and saved["image_seq_length"] == 4
    loaded = cls.from_pretrained(model_dirs["internvl"])
    assert loaded.image_seq_length == 4 and not hasattr(loaded, "video_processor")


def test_answer_tokens_of_a_byte_level_bpe() -> None:
    """Real vocabularies: the level word after the prefix is a space-prefixed (and maybe split) token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # A small vocabulary, so some level words are split into several tokens.
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" ".join(PROMPT_TEXTS)] * 3 + ["the good and the bad"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    prefix = prompts.ANSWER_PREFIX
    ids = answer_token_ids(tok, LEVELS, prefix)
    base = tok(prefix, add_special_tokens=False)["input_ids"]
    for word, token in zip(LEVELS, ids, strict=True):
        in_context = tok(f"{prefix} {word}", add_special_tokens=False)["input_ids"]
        assert in_context[len(base)] == token  # the first token the model would emit
        assert tok.decode([token]).startswith(" ")  # carries the word's leading space
    assert any(len(tok(f" {w}", add_special_tokens=False)["input_ids"]) > 1 for w in LEVELS)


def test_answer_words_sharing_a_token_are_rejected() -> None:
    tok = make_tokenizer("llava", ["The quality of the image is"])  # level words are all [UNK]
    with pytest.raises(ValueError, match="share first tokens"):
        answer_token_ids(tok, LEVELS, prompts.ANSWER_PREFIX)


def test_processor_kwargs_override_saved_settings(model_dirs: dict[str, Path]) -> None:
    """Qwen2-VL's pixel budget bounds the image tokens; a user override must reach the image processor."""
    budget = {"size": {"shortest_edge": 4 * 28 * 28, "longest_edge": 4 * 28 * 28}}  # 2 x 2 units of 28 px
    small = HFTeacher(model_dirs["qwen2_vl"], processor_kwargs=budget)
    default = HFTeacher(model_dirs["qwen2_vl"])  # saved budget: up to 4 x 4 units
    image = Image.fromarray(np.full((112, 112, 3), 128, dtype=np.uint8))
    request = [Request(prompts.point_prompt(), (image,))]
    assert default.prepare(request)["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert small.prepare(request)["image_grid_thw"].tolist() == [[1, 4, 4]]
