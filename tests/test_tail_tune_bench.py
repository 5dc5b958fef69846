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
