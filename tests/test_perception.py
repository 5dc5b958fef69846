"""Perception diagnostics against a fake ComponentModel whose answers, features and words are known.

The fake model reads the class from the image itself (pixel value), so every number below can be
worked out by hand: its forced-choice answers follow a fixed table, class information is present at
``vision.1`` and ``projector`` and absent at ``vision.0`` and ``lm.0``, and its projector output
points at the word ``blur`` (plus a little towards the true class word).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.datasets.manifest import Manifest, ManifestRow, write_manifest
from iqalens.models.base import ComponentFeatures, ComponentModel
from iqalens.perception import (
    compare,
    extract_features,
    fit_probe,
    forced_choice,
    perceive,
    probe_splits,
    semantic_distance,
)
from iqalens.taxonomy import CLASSES

D_LM = 16
#: The fake model's forced-choice answer for each true class: right for blur, noise, brightness,
#: compression and jitter; contrast <-> colorfulness swapped; clean answered as blur.
ANSWER = {0: 0, 1: 1, 2: 2, 3: 3, 4: 5, 5: 4, 6: 6, 7: 0}
SPLIT_OF_REF = {0: "train", 1: "train", 2: "train", 3: "train", 4: "train", 5: "train", 6: "val"}
SPLIT_OF_REF |= {7: "test", 8: "test"}


class FakeModel:
    """A ComponentModel that decodes the class from pixel [0, 0, 0] // 10 (code 9 = excluded row)."""

    kind = "mini"

    def __init__(self, model_id: str = "fake/model", fail_at_call: int | None = None) -> None:
        self.model_id = model_id
        self.fail_at_call = fail_at_call
        self.extract_calls = 0
        self.score_calls = 0
        self.word_calls = 0

    @staticmethod
    def _decode(image: np.ndarray) -> tuple[int, np.random.Generator]:
        c = int(image[0, 0, 0]) // 10
        assert c < len(CLASSES), "an excluded row reached the model"
        return c, np.random.default_rng(int(image[0, 0, 1]) * 1000 + int(image[0, 0, 2]) * 10 + c)

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        self.extract_calls += 1
        if self.fail_at_call == self.extract_calls:
            raise KeyboardInterrupt  # what Ctrl-C between batches looks like
        v0, v1, proj, lm0 = [], [], [], []
        eye = np.eye(D_LM)
        for image in images:
            c, rng = self._decode(image)
            v0.append(rng.normal(size=6))  # no class information
            v1.append(np.eye(8)[c] + 0.1 * rng.normal(size=8))  # class, clearly
            proj.append(eye[0] + 0.3 * eye[c] + 0.02 * rng.normal(size=D_LM))  # near "blur", a bit of c
            lm0.append(rng.normal(size=D_LM))  # lost again
        return ComponentFeatures(
            [np.array(v0, np.float32), np.array(v1, np.float32)],
            np.array(proj, np.float32),
            [np.array(lm0, np.float32)],
        )

    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        self.word_calls += 1
        return np.eye(len(words), D_LM, dtype=np.float32)  # word k = unit vector k

    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        self.score_calls += 1
        scores = np.full((len(images), len(class_words)), -5.0)
        for i, image in enumerate(images):
            scores[i, ANSWER[self._decode(image)[0]]] = -0.1
        return scores


def write_bench(folder: Path, n_refs: int = 9, splits: bool = True) -> Path:
    """Per reference: one 8x8 image per class, a second clean copy and one excluded image."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref in range(n_refs):
        items = [(c, 0) for c in range(len(CLASSES))] + [(7, 1), (9, 0)]
        for c, variant in items:
            img = np.zeros((8, 8, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = c * 10, ref, variant
            name = f"r{ref}_c{c}_v{variant}.png"
            Image.fromarray(img).save(folder / name)
            rows.append(
                ManifestRow(
                    path=name,
                    reference=f"ref{ref}",
                    source="synthetic",
                    perception_class="excluded" if c == 9 else CLASSES[c],
                    split=SPLIT_OF_REF[ref] if splits else "",
                )
            )
    return write_manifest(Manifest(rows, folder, {"builder": "test"}), folder / "bench.csv")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bench(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def run(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path, FakeModel]:
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    model = FakeModel()
    metrics = perceive(model, bench, out, cache_dir=cache, batch_size=4, progress=False)
    return metrics, out, cache, model


def test_fake_model_satisfies_the_interface() -> None:
    assert isinstance(FakeModel(), ComponentModel)


def test_forced_choice_matches_hand_count(run: tuple[dict, Path, Path, FakeModel]) -> None:
    metrics = run[0]
    fc = metrics["forced_choice"]
    # Test split = refs 7 and 8: 2 x (8 classes + 1 extra clean) = 18 images; excluded rows skipped.
    assert metrics["eval_split"] == "test" and fc["n"] == 18
    assert metrics["skipped_rows"] == 9
    assert fc["accuracy"] == pytest.approx(10 / 18)  # blur, noise, brightness, compression, jitter x 2
    assert fc["balanced_accuracy"] == pytest.approx(5 / 8)
    assert fc["per_class_recall"]["contrast"] == 0.0 and fc["per_class_recall"]["blur"] == 1.0
    conf = np.array(fc["confusion"])
    expected = np.zeros((8, 8), int)
    for c in range(8):
        expected[c, ANSWER[c]] = 4 if c == 7 else 2
    np.testing.assert_array_equal(conf, expected)  # rows = true class
    assert fc["answer_counts"]["blur"] == 6


def test_probe_curve_shows_where_information_lives(run: tuple[dict, Path, Path, FakeModel]) -> None:
    pr = run[0]["probes"]
    assert pr["sites"] == ["vision.0", "vision.1", "projector", "lm.0"]
    acc = dict(zip(pr["sites"], pr["accuracy"], strict=True))
    assert acc["vision.1"] == 1.0 and acc["projector"] == 1.0
    assert acc["vision.0"] < 0.45 and acc["lm.0"] < 0.45
    assert pr["chance"] == pytest.approx(4 / 18)  # train's majority class (clean) on the test split
    assert pr["n_train"] == 54 and pr["n_test"] == 18 and pr["split_origin"] == "manifest"


def test_semantic_distance_finds_the_known_nearest_word(run: tuple[dict, Path, Path, FakeModel]) -> None:
    sem = run[0]["semantic"]["per_class"]
    assert sem["blur"]["mean_rank"] == 1.0 and sem["blur"]["mean_margin"] > 0.9
    assert sem["blur"]["mean_similarity_true"] == pytest.approx(1.0, abs=0.01)
    for name in CLASSES[1:]:
        # unit e0 + 0.3 e_c: cosine 0.29 to the true word, 0.96 to "blur" -> second place
        assert sem[name]["mean_rank"] == 2.0
        assert sem[name]["mean_similarity_true"] == pytest.approx(0.3 / np.sqrt(1.09), abs=0.03)
        assert sem[name]["mean_margin"] == pytest.approx((0.3 - 1) / np.sqrt(1.09), abs=0.03)
    assert run[0]["semantic"]["overall"]["nearest_accuracy"] == pytest.approx(2 / 18)


def test_run_folder_contents(run: tuple[dict, Path, Path, FakeModel]) -> None:
    metrics, out, _, _ = run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["forced_choice"]["accuracy"] == metrics["forced_choice"]["accuracy"]
    assert (out / "config.json").is_file()
    with open(out / "confusion.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0][1:] == list(CLASSES) and table[5][0] == "contrast" and table[5][1 + 5] == "2"
    with open(out / "probe_curve.csv") as fh:
        assert [r["site"] for r in csv.DictReader(fh)] == ["vision.0", "vision.1", "projector", "lm.0"]
    with open(out / "images.csv") as fh:
        images = list(csv.DictReader(fh))
    assert len(images) == 18 and {r["split"] for r in images} == {"test"}
    # Plots are always written (matplotlib is a dependency); the fake offers no contextual word states.
    assert metrics["plots"]["files"] == ["probe_curve.png", "confusion.png", "semantic.png"]
    assert all((out / f).stat().st_size > 1000 for f in metrics["plots"]["files"])


def test_cached_features_are_reused_without_the_model(
    run: tuple[dict, Path, Path, FakeModel], bench: Path, tmp_path: Path
) -> None:
    metrics, _, cache, first = run
    assert first.extract_calls == 21  # 81 labelled rows in batches of 4
    again = FakeModel()
    m2 = perceive(again, bench, tmp_path / "run2", cache_dir=cache, l2=1.0, batch_size=4, progress=False)
    assert (again.extract_calls, again.score_calls, again.word_calls) == (0, 0, 0)
    assert m2["forced_choice"] == metrics["forced_choice"]
    assert m2["probes"]["l2"] == 1.0
    # Another checkpoint of the same model is another extraction.
    other = FakeModel()
    extract_features(other, bench, cache, checkpoint_id="step-100", batch_size=40, progress=False)
    assert other.extract_calls == 3
    # So are other extraction settings (e.g. another prompt of a generative model); the same
    # settings again are served from the cache, and the folder's metadata names them.
    prompted = FakeModel()
    prompted.extraction_settings = {"question": "What is wrong with this photo?"}
    fs = extract_features(prompted, bench, cache, batch_size=40, progress=False)
    assert prompted.extract_calls == 3
    assert json.loads((fs.cache_dir / "meta.json").read_text())["settings"] == prompted.extraction_settings
    same = FakeModel()
    same.extraction_settings = {"question": "What is wrong with this photo?"}
    extract_features(same, bench, cache, batch_size=40, progress=False)
    assert same.extract_calls == 0


def test_changed_manifest_invalidates_the_cache(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b", n_refs=3)
    cache = tmp_path / "cache"
    first = FakeModel()
    a = extract_features(first, bench, cache, batch_size=16, progress=False)
    assert first.extract_calls == 2
    lines = bench.read_text().splitlines()
    bench.write_text("\n".join(lines[:-2]) + "\n")  # drop the last rows
    second = FakeModel()
    b = extract_features(second, bench, cache, batch_size=16, progress=False)
    assert second.extract_calls > 0 and a.manifest_hash != b.manifest_hash
    assert len(b) == len(a) - 1  # the last two rows were one clean copy and one excluded image


def test_interrupted_extraction_resumes(bench: Path, tmp_path: Path, run: tuple) -> None:
    cache = tmp_path / "cache"
    broken = FakeModel(fail_at_call=3)
    with pytest.raises(KeyboardInterrupt):
        extract_features(broken, bench, cache, batch_size=4, progress=False)
    parts = list(cache.glob("*/part_*.npz"))
    assert len(parts) == 2  # the two finished batches survived, the one in flight did not
    resumed = FakeModel()
    fs = extract_features(resumed, bench, cache, batch_size=4, progress=False)
    assert resumed.extract_calls == 21 - 2
    assert not list(cache.glob("*/part_*.npz"))  # merged into one file once complete
    reference = extract_features(FakeModel(), bench, run[2], batch_size=4, progress=False)
    for x, y in zip(fs.sites, reference.sites, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(fs.class_scores, reference.class_scores)


def test_no_splits_uses_all_rows_and_assigns_disjoint_probe_split(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "b", n_refs=6, splits=False)
    m = perceive(
        FakeModel(), bench, tmp_path / "run", cache_dir=tmp_path / "c", batch_size=64, progress=False
    )
    assert m["eval_split"] == "all" and m["forced_choice"]["n"] == 54
    assert m["probes"]["split_origin"] == "assigned"
    assert m["probes"]["n_train"] + m["probes"]["n_test"] == 54


def test_probe_splits_refuse_shared_references() -> None:
    with pytest.raises(ValueError, match="content-disjoint"):
        probe_splits(["a", "a", "b"], ["train", "test", "test"])
    with pytest.raises(ValueError, match="train and test"):
        probe_splits(["a", "b"], ["train", "val"])
    train, test, origin = probe_splits([f"r{i // 3}" for i in range(30)], [""] * 30, seed=1)
    refs = np.array([f"r{i // 3}" for i in range(30)])
    assert origin == "assigned" and not set(refs[train]) & set(refs[test])


def test_forced_choice_absent_class_and_ties() -> None:
    scores = np.array([[1.0, 1.0, 0, 0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 0, 0, 0]])
    fc = forced_choice(scores, np.array([1, 1, 2]))
    assert fc["predictions"] == [0, 1, 2]  # a tie goes to the first class
    assert fc["per_class_recall"]["blur"] is None  # no blur image: undefined, not 0
    assert fc["per_class_recall"]["noise"] == 0.5
    assert fc["balanced_accuracy"] == pytest.approx(0.75) and fc["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        forced_choice(scores[:, :7], np.array([1, 1, 2]))


def test_fit_probe_is_seeded_and_separates() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = rng.normal(size=(120, 5)) * 100 + 1000  # large offset and scale: standardisation needed
    x[:, 0] += 1000 * y  # classes 10 sigma apart on one feature
    a = fit_probe(x, y, 3, seed=3)
    b = fit_probe(x, y, 3, seed=3)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert (a.predict(x) == y).mean() > 0.95


def test_compare_reports_relative_change_per_class() -> None:
    labels = np.repeat(np.arange(8), 2)
    words = np.eye(8, 4 + 8)
    before = semantic_distance(words[labels] * 0.2 + words[0], words, labels)
    after = semantic_distance(words[labels] + words[0] * 0.2, words, labels)
    ch = compare({"semantic": before}, {"semantic": after})
    noise = ch["per_class"]["noise"]
    assert noise["mean_rank"]["before"] == 2.0 and noise["mean_rank"]["after"] == 1.0
    assert noise["mean_rank"]["relative_change"] == pytest.approx(-0.5)
    sim = noise["mean_similarity_true"]
    assert sim["relative_change"] == pytest.approx((sim["after"] - sim["before"]) / sim["before"])
    assert sim["relative_change"] > 1.0
    assert ch["per_class"]["blur"]["mean_rank"]["relative_change"] == 0.0
