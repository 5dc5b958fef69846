"""The runtime of ``iqalens score``: ONNX Runtime by default when installed, torch otherwise, the same
scores within the float32 bound, a cached graph, and the choice named in the output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iqalens.cli import main
from iqalens.errors import ConfigError, InvalidInputError
from iqalens.leaf import runtimes
from iqalens.leaf.calibration import Calibrator, save_calibrator
from iqalens.leaf.runtimes import cache_dir, cached_onnx_path, load_runtime_scorer
from iqalens.leaf.scoring import StudentScorer, load_scorer, score_inputs, score_paths
from iqalens.leaf.student import StudentConfig, build_student, save_student
from iqalens.samples import sample_paths
from tolerances import LITE0_DEPTH, TINY_CNN_DEPTH, float32_atol

pytest.importorskip("onnxruntime")
from iqalens.leaf.onnx_export import OnnxScorer  # noqa: E402


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache root for the test (the graph is exported once in it)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(runtimes.CACHE_ENV, str(root))
    runtimes._onnx_scorer.cache_clear()
    yield root / "onnx"
    runtimes._onnx_scorer.cache_clear()


def _logistic_slope(calibrator: Calibrator) -> float:
    """The largest slope of a logistic4 calibration: |b1 - b2| / (4 |b4|)."""
    b = calibrator.params["b"]
    return abs(b[0] - b[1]) / (4 * abs(b[3]))


def test_auto_scores_the_default_student_on_onnx_runtime_within_the_float32_bound(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = load_runtime_scorer(None)  # auto
    assert isinstance(scorer, OnnxScorer)
    described = scorer.describe()
    assert described["runtime"] == "onnxruntime" and described["provider"] == "CPUExecutionProvider"
    assert described["runtime_choice"].startswith("onnxruntime (auto: installed")
    assert described["name"] == "iqalens-default-student"
    graph = Path(described["onnx"])
    assert graph.parent == cache and graph.name.startswith("default-student-") and graph.is_file()
    torch_scorer = load_scorer(None)
    assert described["scale"] == torch_scorer.describe()["scale"]  # what the scores mean travels along
    photos = sample_paths()
    want = score_paths(torch_scorer, photos, batch_size=4)
    got = score_paths(scorer, photos, batch_size=4)
    raw = [r.raw for r in want]
    # the documented tolerance (tests/tolerances.py): EfficientNet-Lite0's float32 bound on the raw
    # output, times the calibration's slope on the 1-5 scale; measured about 1e-6
    raw_tol = float32_atol(LITE0_DEPTH, raw)
    np.testing.assert_allclose([r.raw for r in got], raw, rtol=0, atol=raw_tol)
    tol = raw_tol * _logistic_slope(torch_scorer.calibrator)
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], rtol=0, atol=tol)
    assert np.ptp([r.score for r in want]) > 100 * tol  # the comparison is not of constants

    # the second time the cached graph is used: no export
    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("iqalens.leaf.onnx_export.export_onnx", no_export)
    runtimes._onnx_scorer.cache_clear()
    assert load_runtime_scorer(None).describe()["onnx"] == str(graph)


def test_without_onnxruntime_the_torch_path_is_used(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    scorer = load_runtime_scorer(None)
    assert isinstance(scorer, StudentScorer)
    described = scorer.describe()
    assert described["runtime"] == "torch"
    assert described["runtime_choice"].startswith("torch (auto: onnxruntime is not installed")
    assert load_scorer(None).describe().get("runtime_choice") is None  # the shared default is not touched
    with pytest.raises(ConfigError, match="cannot score on ONNX Runtime: onnxruntime is not installed"):
        load_runtime_scorer(None, "onnxruntime")
    # the command names the runtime: in the JSON output and on stderr
    out = tmp_path / "scores.json"
    assert main(["score", str(sample_paths()[0]), "--format", "json", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["runtime"] == "torch"
    err = capsys.readouterr().err
    assert "runtime torch" in err and "runtime chosen: torch (auto: onnxruntime is not installed" in err
    assert not list(cache.glob("*.onnx"))  # nothing exported


def test_runtime_torch_and_unknown_runtimes(cache: Path, tmp_path: Path) -> None:
    scorer = load_runtime_scorer(None, "torch")
    assert isinstance(scorer, StudentScorer) and scorer.describe()["runtime_choice"] == "torch (asked for)"
    with pytest.raises(InvalidInputError, match="runtime must be one of auto, onnxruntime, torch"):
        load_runtime_scorer(None, "tensorrt")
    onnx_file = tmp_path / "m.onnx"
    from iqalens.leaf.onnx_export import export_onnx

    export_onnx(_tiny_run(tmp_path / "run"), onnx_file)
    assert isinstance(load_runtime_scorer(onnx_file), OnnxScorer)  # an .onnx file runs as it is
    with pytest.raises(InvalidInputError, match="runs on its own runtime"):
        load_runtime_scorer(onnx_file, "torch")


def _tiny_run(folder: Path, calibrated: bool = True) -> Path:
    torch.manual_seed(0)
    student = build_student(
        StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pretrained=False)
    )
    save_student(student, folder)
    if calibrated:
        save_calibrator(Calibrator("linear", {"slope": 2.0, "intercept": 3.0}), folder / "calibration.json")
    return folder


def test_a_run_folder_is_scored_on_onnx_runtime_and_its_graph_keyed_by_its_files(
    cache: Path, tmp_path: Path
) -> None:
    run = _tiny_run(tmp_path / "run", calibrated=False)
    uncalibrated = cached_onnx_path(run)
    save_calibrator(Calibrator("linear", {"slope": 2.0, "intercept": 3.0}), run / "calibration.json")
    calibrated = cached_onnx_path(run)
    assert uncalibrated != calibrated and calibrated.name.startswith("run-run-")  # another student
    assert cached_onnx_path(run) == calibrated  # the same files: the same graph
    images = sample_paths()[:3]
    done = score_inputs([str(p) for p in images], run, "json", progress=False)
    assert done.model["runtime"] == "onnxruntime" and done.model["name"] == str(run)
    assert calibrated.is_file()
    ref = score_paths(load_scorer(run), images)
    tol = 2.0 * float32_atol(TINY_CNN_DEPTH, [r.raw for r in ref])  # raw bound x calibration slope 2
    np.testing.assert_allclose([r.score for r in done.results], [r.score for r in ref], rtol=0, atol=tol)
    # an incomplete run folder is the usual error, not a cache problem
    (run / "student.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="student.safetensors is missing"):
        load_runtime_scorer(run)


def test_a_failed_export_falls_back_to_torch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr("iqalens.leaf.onnx_export.export_onnx", broken)
    scorer = load_runtime_scorer(None)
    assert isinstance(scorer, StudentScorer)
    assert (
        "the ONNX export failed (RuntimeError: unsupported operator)" in scorer.describe()["runtime_choice"]
    )
    with pytest.raises(ConfigError, match="unsupported operator"):
        load_runtime_scorer(None, "onnxruntime")


def test_cache_folder_falls_back_when_the_user_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # nothing can be created below a file, not even by root
    monkeypatch.setenv(runtimes.CACHE_ENV, str(blocker / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "xdg"))
    monkeypatch.setenv("HOME", str(blocker / "home"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert cache_dir() == tmp_path / "tmp" / f"iqalens-cache-{os.getuid()}" / "onnx"
    monkeypatch.setattr("tempfile.tempdir", str(blocker / "tmp"))
    with pytest.raises(ConfigError, match="no writable cache folder"):
        cache_dir()
    # scoring still works: on torch, saying why
    scorer = load_runtime_scorer(None)
    assert "no writable cache folder" in scorer.describe()["runtime_choice"]


def test_run_graphs_beyond_the_limit_are_evicted_oldest_first(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir(parents=True)
    monkeypatch.setattr(runtimes, "KEEP_RUN_GRAPHS", 2)
    for i, name in enumerate(["run-a-1.onnx", "run-b-2.onnx", "run-c-3.onnx", "default-student-x.onnx"]):
        (cache / name).write_bytes(b"")
        os.utime(cache / name, (1000 + i, 1000 + i))
    runtimes._touch_and_evict(cache / "run-a-1.onnx")  # just used: the newest
    assert sorted(p.name for p in cache.iterdir()) == [
        "default-student-x.onnx",
        "run-a-1.onnx",
        "run-c-3.onnx",
    ]
