"""ONNX export: onnxruntime scores match torch up to float32 rounding, metadata carries preprocessing and
calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iqalens.images import load_rgb
from iqalens.leaf.calibration import Calibrator
from iqalens.leaf.scoring import RAW_SCALE, StudentScorer, load_scorer, score_paths
from iqalens.leaf.student import StudentConfig, build_student, save_student
from iqalens.samples import sample_paths
from tolerances import LITE0_DEPTH, TINY_CNN_DEPTH, float32_atol

pytest.importorskip("onnxruntime")
from iqalens.leaf.onnx_export import OnnxScorer, export_onnx  # noqa: E402


def _atol(depth: int, raw: object, calibrator: Calibrator | None = None) -> float:
    """ONNX Runtime's kernels sum in other orders than torch's: the float32 bound of the network on its
    raw output (tests/tolerances.py), times the calibration's largest slope for calibrated scores
    (linear: |slope|; logistic4: |b1 - b2| / (4 |b4|))."""
    tol = float32_atol(depth, raw)
    if calibrator is not None and calibrator.kind == "linear":
        tol *= abs(calibrator.params["slope"])
    elif calibrator is not None:
        assert calibrator.kind == "logistic4", calibrator.kind
        b = calibrator.params["b"]
        tol *= abs(b[0] - b[1]) / (4 * abs(b[3]))
    return tol


def test_tiny_multicrop_parity_and_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    student = build_student(
        StudentConfig(backbone="tiny", image_size=16, resize_shorter=24, test_grid=2, pretrained=False)
    )
    cal = Calibrator("logistic4", {"b": [5.0, 1.0, 0.0, 0.3]})
    scorer = StudentScorer(student, cal)
    run = tmp_path / "run"
    save_student(student, run)
    path = export_onnx(scorer, tmp_path / "m.onnx")
    onnx_scorer = OnnxScorer(path, threads=1)
    assert onnx_scorer.config.test_grid == 2 and onnx_scorer.calibrator == cal
    raw_only = OnnxScorer(export_onnx(StudentScorer(student), tmp_path / "raw.onnx"), threads=1)
    assert raw_only.calibrator is None and raw_only.describe()["scale"] == RAW_SCALE  # uncalibrated
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(30, 40), (24, 24), (50, 31)]]
    prepared = [onnx_scorer.prepare(im) for im in images]
    raw = scorer.score_prepared(prepared, 4)[1]
    for batch in (1, 3, 7):  # dynamic batch: crops are batched across images
        got = onnx_scorer.score_arrays(images, batch_size=batch)
        want = scorer.score_arrays(images, batch_size=batch)
        np.testing.assert_allclose(got, want, rtol=0, atol=_atol(TINY_CNN_DEPTH, raw, cal))
    # raw scores too (before the calibration)
    tol = _atol(TINY_CNN_DEPTH, raw)
    np.testing.assert_allclose(onnx_scorer.score_prepared(prepared, 4)[1], raw, rtol=0, atol=tol)
    assert np.ptp(raw) > 10 * tol  # the comparison is not of constants


def test_multiscale_tiny_student_onnx_parity(tmp_path: Path) -> None:
    """Mean and std pooling of the intermediate stages export and run the same under ONNX Runtime."""
    torch.manual_seed(1)
    cfg = StudentConfig(
        backbone="tiny", image_size=32, resize_shorter=40, test_grid=2, pretrained=False, pooling="multiscale"
    )
    scorer = StudentScorer(build_student(cfg), Calibrator("logistic4", {"b": [5.0, 1.0, 0.0, 0.3]}))
    onnx_scorer = OnnxScorer(export_onnx(scorer, tmp_path / "multi.onnx"), threads=1)
    assert onnx_scorer.config.pooling == "multiscale"
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (45, 40), (64, 80)]]
    prepared = [onnx_scorer.prepare(im) for im in images]
    for batch in (1, 5):
        want_cal, want_raw = scorer.score_prepared(prepared, batch)
        got_cal, got_raw = onnx_scorer.score_prepared(prepared, batch)
        np.testing.assert_allclose(got_raw, want_raw, rtol=0, atol=_atol(TINY_CNN_DEPTH, want_raw))
        np.testing.assert_allclose(
            got_cal, want_cal, rtol=0, atol=_atol(TINY_CNN_DEPTH, want_raw, scorer.calibrator)
        )
    # far above the tolerance: the comparison is not of constants
    assert np.ptp(want_raw) > 10 * _atol(TINY_CNN_DEPTH, want_raw)


def test_default_model_onnx_parity_on_photos(tmp_path: Path) -> None:
    torch_scorer = load_scorer(None)
    path = export_onnx(None, tmp_path / "default.onnx")
    assert path.stat().st_size > 1_000_000  # the backbone weights are in the graph
    onnx_scorer = load_scorer(path)  # --model FILE.onnx
    assert isinstance(onnx_scorer, OnnxScorer) and onnx_scorer.describe()["runtime"] == "onnxruntime"
    # the file keeps what its scores mean (the default's proxy-MOS scale), for score files to say
    assert onnx_scorer.describe()["scale"] == torch_scorer.describe()["scale"]
    photos = sample_paths()[:4]
    want_results = score_paths(torch_scorer, photos, batch_size=4)
    got_results = score_paths(onnx_scorer, photos, batch_size=3)
    want, got = [r.score for r in want_results], [r.score for r in got_results]
    raw = [r.raw for r in want_results]
    # EfficientNet-Lite0's bound (tests/tolerances.py): 1.3e-4 on the raw output, times the default
    # calibration's slope (<= 10) on the 1-5 scale; measured <= 1e-6.
    np.testing.assert_allclose([r.raw for r in got_results], raw, rtol=0, atol=_atol(LITE0_DEPTH, raw))
    tol = _atol(LITE0_DEPTH, raw, torch_scorer.calibrator)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    assert all(1.0 <= s <= 5.0 for s in got)
    # arrays in memory give the same as files (in batches of another size: the same bound)
    np.testing.assert_allclose(onnx_scorer.score_arrays([load_rgb(p) for p in photos]), got, rtol=0, atol=tol)


def test_not_an_iqalens_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load ONNX model"):
        OnnxScorer(bad)
