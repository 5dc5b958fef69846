"""Free generation, answer parsing, consistency and the contextual semantic distance in ``perceive``.

A fake generative model answers in words the parser must map (its greedy answer is a synonym of
the true class, or something unparseable for one class), its sampled answers agree with the truth
in a known share of runs, and its contextual word states sit exactly on the class directions of
one LM layer: every number below follows from those rules by hand.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from iqalens.models.base import ComponentFeatures
from iqalens.perception import perceive
from iqalens.perception.answers import ANSWER_ALIASES, UNPARSED, AnswerParser, parse_answer
from iqalens.perception.consistency import answer_consistency, sample_from_scores
from iqalens.perception.contextual import ContextualWordModel
from iqalens.perception.generation import AnswerGenerator, image_seed
from iqalens.taxonomy import CLASSES
from test_perception import D_LM, FakeModel, write_bench

#: Greedy answer per true class: synonyms for the first six, a wrong class for jitter, nothing
#: parseable for clean.
GREEDY = {
    0: "Blurry, maybe a little noise.",
    1: "grainy",
    2: "It looks over-exposed",
    3: "JPEG artifacts",
    4: "low contrast",
    5: "desaturated colours",
    6: "some blur",
    7: "I cannot tell",
}
K = 5


class FakeGenerator(FakeModel):
    """FakeModel plus text generation and contextual word states (class k = unit vector k)."""

    kind = "generative"

    def __init__(self, fail_at_generate: int | None = None) -> None:
        super().__init__("fake/generator")
        self.fail_at_generate = fail_at_generate
        self.generate_calls = 0
        self.context_calls = 0
        self.seeds: dict[tuple[int, int, int], int] = {}

    contextual_template = "the distortion is {}"

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        feats = super().extract(images)
        # A second LM layer that carries the class again (lm.0 carries none).
        lm1 = []
        for image in images:
            c, rng = self._decode(image)
            lm1.append(np.eye(D_LM)[c] + 0.05 * rng.normal(size=D_LM))
        feats.lm_layers.append(np.array(lm1, np.float32))
        return feats

    def generate_answers(
        self,
        images: Sequence[np.ndarray],
        *,
        samples: int,
        temperature: float,
        seeds: Sequence[int],
        max_new_tokens: int,
    ) -> list[tuple[str, list[str]]]:
        self.generate_calls += 1
        if self.fail_at_generate == self.generate_calls:
            raise KeyboardInterrupt
        out = []
        for image, seed in zip(images, seeds, strict=True):
            c = self._decode(image)[0]
            self.seeds[(int(image[0, 0, 0]), int(image[0, 0, 1]), int(image[0, 0, 2]))] = seed
            if c == 7:  # clean: always the same unparseable answer
                sampled = ["hard to say"] * samples
            else:  # three runs name the class, one says noise (blur for noise images), one rambles
                other = "blur" if c == 1 else "noise"
                sampled = ([CLASSES[c]] * 3 + [other, "hmm"])[:samples]
            out.append((GREEDY[c], sampled))
        return out

    def contextual_word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        self.context_calls += 1
        eye = np.eye(len(words), D_LM, dtype=np.float32)
        return np.stack([eye, eye])  # both LM layers: word k = unit vector k


def _perceive(model: FakeModel, bench: Path, out: Path, **kwargs: object) -> dict:
    """perceive with few probe iterations (the probes are not under test here) and no progress bars."""
    return perceive(model, bench, out, probe_max_iter=10, progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bench(tmp_path_factory.mktemp("bench"), n_refs=9)


@pytest.fixture(scope="module")
def run(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path, FakeGenerator]:
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    model = FakeGenerator()
    m = _perceive(model, bench, out, cache_dir=cache, batch_size=4, generate=True, samples=K)
    return m, out, cache, model


def test_fake_implements_the_optional_capabilities() -> None:
    assert isinstance(FakeGenerator(), AnswerGenerator) and isinstance(FakeGenerator(), ContextualWordModel)
    assert not isinstance(FakeModel(), AnswerGenerator)


def test_free_generation_is_parsed_and_scored(run: tuple) -> None:
    gen = run[0]["free_generation"]
    # Test split: 2 refs x (8 classes + a second clean image) = 18 images; 4 of them clean.
    assert gen["n"] == 18
    assert gen["parse_rate"] == pytest.approx(14 / 18)  # clean's "I cannot tell" names no class
    assert gen["accuracy"] == pytest.approx(12 / 18)  # classes 0-5 right, jitter -> blur, clean unparsed
    assert gen["accuracy_parsed"] == pytest.approx(12 / 14)
    assert gen["per_class_recall"]["jitter"] == 0.0 and gen["per_class_recall"]["noise"] == 1.0
    assert gen["answer_labels"][-1] == UNPARSED
    conf = np.array(gen["confusion"])
    assert conf.shape == (8, 9) and conf[7, 8] == 4 and conf[6, 0] == 2
    assert gen["answer_counts"]["blur"] == 4 and gen["answer_counts"][UNPARSED] == 4
    # Forced choice answers blur for clean and colorfulness <-> contrast: agreement on 0-3 (8 images).
    assert gen["agreement_with_forced_choice"] == pytest.approx(8 / 18)


def test_consistency_of_sampled_generation(run: tuple) -> None:
    cons = run[0]["consistency"]
    assert cons["method"] == "generation" and cons["samples"] == K
    assert cons["per_class"]["blur"]["mean_consistency"] == pytest.approx(3 / 5)
    assert cons["per_class"]["clean"]["mean_consistency"] == 1.0  # always the same (unparsed) answer
    assert cons["per_class"]["clean"]["modal_accuracy"] == 0.0
    assert cons["mean_consistency"] == pytest.approx((14 * 0.6 + 4 * 1.0) / 18)
    assert cons["modal_accuracy"] == pytest.approx(14 / 18)
    assert cons["parse_rate"] == pytest.approx((14 * 4) / (18 * 5))


def test_contextual_distance_per_layer(run: tuple) -> None:
    ctx = run[0]["contextual"]
    assert ctx["sites"] == ["lm.0", "lm.1"] and ctx["layer"] == "lm.1" and ctx["best_site"] == "lm.1"
    assert ctx["template"] == "the distortion is {}"
    curve = {p["site"]: p for p in ctx["curve"]}
    assert curve["lm.1"]["nearest_accuracy"] == 1.0 and curve["lm.0"]["nearest_accuracy"] < 0.5
    assert all(ctx["per_class"][c]["mean_rank"] == 1.0 for c in CLASSES)
    assert ctx["overall"]["mean_similarity_true"] == pytest.approx(1.0, abs=0.02)


def test_run_folder_has_answers_tables_and_all_plots(run: tuple) -> None:
    metrics, out, _, _ = run
    assert set(metrics["plots"]["files"]) == {
        "probe_curve.png",
        "confusion.png",
        "semantic.png",
        "contextual_curve.png",
        "free_generation.png",
    }
    assert all((out / f).stat().st_size > 1000 for f in metrics["plots"]["files"])
    with open(out / "answers.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18
    jitter = next(r for r in rows if r["class"] == "jitter")
    assert jitter["free_answer"] == "some blur" and jitter["free_parsed"] == "blur"
    assert jitter["samples_parsed"].split() == ["jitter"] * 3 + ["noise", UNPARSED]
    with open(out / "contextual_curve.csv") as fh:
        assert [r["site"] for r in csv.DictReader(fh)] == ["lm.0", "lm.1"]
    with open(out / "per_class.csv") as fh:
        per_class = {r["class"]: r for r in csv.DictReader(fh)}
    assert (
        float(per_class["clean"]["consistency"]) == 1.0
        and per_class["jitter"]["free_generation_recall"] == "0"
    )
    on_disk = json.loads((out / "metrics.json").read_text())
    assert "parsed" not in on_disk["free_generation"] and "modal" not in on_disk["consistency"]


def test_generation_and_word_states_are_cached(run: tuple, bench: Path, tmp_path: Path) -> None:
    metrics, _, cache, first = run
    assert first.generate_calls == 5  # 18 test images in batches of 4; the other splits are not generated
    again = FakeGenerator()
    m2 = _perceive(again, bench, tmp_path / "r2", cache_dir=cache, batch_size=4, generate=True)
    assert (again.generate_calls, again.context_calls, again.extract_calls) == (0, 0, 0)
    assert m2["free_generation"]["accuracy"] == metrics["free_generation"]["accuracy"]
    # Another temperature is another generation; the seeds of an image do not depend on batching.
    other = FakeGenerator()
    _perceive(other, bench, tmp_path / "r3", cache_dir=cache, batch_size=7, generate=True, temperature=0.9)
    assert other.generate_calls == 3 and other.seeds == first.seeds
    assert len(set(first.seeds.values())) == 18


def test_interrupted_generation_resumes(bench: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    broken = FakeGenerator(fail_at_generate=3)
    with pytest.raises(KeyboardInterrupt):
        _perceive(broken, bench, tmp_path / "r", cache_dir=cache, batch_size=4, generate=True)
    resumed = FakeGenerator()
    m = _perceive(resumed, bench, tmp_path / "r", cache_dir=cache, batch_size=4, generate=True)
    assert resumed.generate_calls == 5 - 2 and m["free_generation"]["n"] == 18


def test_without_generation_consistency_samples_the_scores(run: tuple, bench: Path, tmp_path: Path) -> None:
    cache = run[2]
    m = _perceive(FakeModel(), bench, tmp_path / "r", cache_dir=cache, batch_size=4)
    assert (
        "not run" in m["free_generation"]["note"] and "contextual_word_embeddings" in m["contextual"]["note"]
    )
    cons = m["consistency"]
    # FakeModel scores: -0.1 for its answer, -5 elsewhere -> softmax(/0.7) puts 99.9% on the answer.
    assert cons["method"] == "score_sampling" and cons["mean_consistency"] > 0.95
    assert cons["modal_accuracy"] == pytest.approx(m["forced_choice"]["accuracy"])
    m_gen = _perceive(FakeModel(), bench, tmp_path / "g", cache_dir=cache, generate=True)
    assert "does not generate text" in m_gen["free_generation"]["note"]
    off = _perceive(FakeModel(), bench, tmp_path / "o", cache_dir=cache, samples=0)
    assert "not run" in off["consistency"]["note"]


def test_parser_rules() -> None:
    assert tuple(ANSWER_ALIASES) == CLASSES
    cases = {
        "Blurry, maybe noise": "blur",  # first mention wins
        "NOISE": "noise",
        "Motion-Blur": "blur",
        "color block artifacts": "jitter",  # the longest alias at one position
        "a colour shift": "colorfulness",
        "annoisyance": UNPARSED,  # whole words only
        "": UNPARSED,
        "no distortion": "clean",
        # negation: a negated mention is skipped, in its own clause only
        "not blurry but noisy": "noise",
        "No blur, some noise": "noise",
        "The image isn't blurry; it is grainy": "noise",
        "without any noise. JPEG artifacts": "compression",
        "neither blurry nor noisy": UNPARSED,  # says only what it is not
        "not only blur": "blur",
        "blur, not noise": "blur",
        "It isn\u2019t blurry; it is noisy": "noise",  # typographic apostrophe
        "There is no blur and no distortion": "clean",  # a self-negating alias is read whole
        "no blur and not distorted": "clean",
        "noise is not visible, no blur": "noise",  # a negation after the mention is not seen (documented)
    }
    for text, expected in cases.items():
        assert parse_answer(text) == expected, text
    custom = AnswerParser([*CLASSES[:7], "pristine-looking"])
    assert custom("Pristine looking!") == "clean" and custom.index("???") == len(CLASSES)
    with pytest.raises(ValueError, match="names both"):
        AnswerParser([*CLASSES[:7], "blurry"])


def test_consistency_by_hand_and_score_sampling() -> None:
    answers = np.array([[0, 0, 1, 0], [2, 3, 2, 3], [8, 8, 8, 8]])  # 8 = unparsed
    c = answer_consistency(answers, np.array([0, 3, 7]))
    assert c["consistency"] == [0.75, 0.5, 1.0] and c["modal"] == ["blur", "brightness", UNPARSED]
    assert c["modal_accuracy"] == pytest.approx(1 / 3) and c["all_agree_rate"] == pytest.approx(1 / 3)
    assert c["parse_rate"] == pytest.approx(8 / 12)
    scores = np.array([[0.0] * 8, [0.0] * 7 + [50.0]])
    draws = sample_from_scores(scores, 4000, 0.7, seed=1)
    np.testing.assert_array_equal(draws, sample_from_scores(scores, 4000, 0.7, seed=1))
    assert (draws[1] == 7).all()
    assert np.bincount(draws[0], minlength=8) / 4000 == pytest.approx(np.full(8, 1 / 8), abs=0.03)
    assert image_seed(0, 5) == image_seed(0, 5) != image_seed(1, 5)
