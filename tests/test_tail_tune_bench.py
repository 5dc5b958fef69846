"""benchmarks/tail_tune.py: the joint (teacher + labels) regression targets of its --joint-tail arm."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tail_tune.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tail_tune_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_joint_targets_put_the_teacher_on_the_labels_scale_and_keep_the_labels() -> None:
    joint = _script()._joint_targets
    expected = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, 2.5])
    rel = np.array([0.5, 0.5, 1.0, 1.0, 1.0, np.nan, 0.5])
    mos = 2.0 * expected + 1.0  # the labels' scale: slope 2, offset 1
    mos[1] += 0.5  # a label that disagrees with the teacher a little
    lab = np.array([0, 1, 3, 4])
    target, weight = joint(expected, rel, lab, mos, label_weight=5.0)
    np.testing.assert_array_equal(target[lab], mos[lab])  # labels are kept as they are
    slope = np.polyfit(expected[lab], mos[lab], 1)[0]
    assert target[6] - target[2] == pytest.approx(slope * (2.5 - 3.0))  # teacher mapped linearly
    assert np.isnan(target[5]) and weight[5] == 0.0  # an unjudged image is neither fitted nor weighted
    mean_rel = np.mean(rel[np.isfinite(rel)])
    np.testing.assert_allclose(weight[lab], 5.0 * mean_rel)
    assert weight[2] == 1.0 and weight[6] == 0.5


def test_joint_targets_never_read_a_teacher_upside_down() -> None:
    joint = _script()._joint_targets
    expected = np.array([1.0, 2.0, 3.0, 4.0])
    mos = np.array([4.0, 3.0, 2.0, 1.0])  # labels against the teacher: slope clipped to 0
    target, _ = joint(expected, np.ones(4), np.array([0, 3]), mos, label_weight=1.0)
    assert target[1] == target[2] == pytest.approx(2.5)


def _noisy_images(tmp_path: Path, n: int) -> list[str]:
    """Blocky colour images with noise growing with the index (a ranking a tail can learn)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((10, 10, 1))) + rng.normal(
            0, 4 * i, (80, 80, 3)
        )
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_teacher_then_labels_goes_on_from_the_given_stage(tmp_path) -> None:
    """The sequential arm fine-tunes the stage it is given (the teacher-trained one), not a fresh one."""
    import argparse
    import copy

    import torch

    pytest.importorskip("efficientnet_lite_pytorch")
    from iqalens.leaf.student import Student, StudentConfig
    from iqalens.leaf.tail_tune import StudentTail, cache_trunk, tune_tail

    script = _script()
    scfg = StudentConfig(pretrained=True, image_size=64, resize_shorter=64, quality_stats=True)
    student = Student(scfg).eval()
    trunk = cache_trunk(student, _noisy_images(tmp_path, 12), [f"h{i}" for i in range(12)], tmp_path / "t")
    with torch.no_grad():  # stands for the teacher's training: the stage is no longer the fresh one
        for q in StudentTail(student).parameters():
            q.add_(0.05 * torch.randn_like(q))
    mos = np.linspace(4.5, 1.5, 12)
    lab, rows = np.arange(12), np.arange(12)
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 3)
    test = np.zeros(12, bool)
    test[:6] = True
    args = argparse.Namespace(steps=2, lr=1e-3, schedule="constant", eval_every=1, l2=1.0)
    target = script._label_target(lab, mos)
    np.testing.assert_array_equal(target, mos)
    start = copy.deepcopy(student)
    went_on = script._other_tail(args, scfg, trunk, rows, target, np.ones(12), lab, mos, groups, test, 0,
                                 student=student)  # fmt: skip
    fresh = script._other_tail(args, scfg, trunk, rows, target, np.ones(12), lab, mos, groups, test, 0)
    direct = tune_tail(start, trunk, target, np.ones(12), groups, 1.0, script._tail_config(args, 0))
    assert went_on["curve"] == direct["curve"]  # the given stage is where training started
    assert went_on["curve"][0] != fresh["curve"][0]
    partial = script._label_target(np.array([1, 3]), mos)
    assert np.isnan(partial[[0, 2, 4]]).all() and partial[3] == mos[3]
