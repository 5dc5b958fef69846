"""The LEAF subcommands of the thin CLI: distill on a tiny store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iqalens.cli import main
from iqalens.leaf.student import load_student
from test_distill import make_store


def test_distill_cli_trains_a_student_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = make_store(tmp_path / "data")
    run = tmp_path / "run"
    code = main(
        ["distill", "--store", str(store), "-o", str(run), "--backbone", "tiny", "--steps", "8", "-q"]
    )
    assert code == 0
    assert "student ->" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())
    assert load_student(run) is not None


def test_distill_cli_needs_a_known_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = make_store(tmp_path / "data")
    code = main(["distill", "--store", str(store), "--teacher-id", "nobody", "-o", str(tmp_path / "r")])
    assert code == 2
    assert "the store holds" in capsys.readouterr().err
    assert main(["distill", "--store", str(tmp_path / "missing.db"), "-o", str(tmp_path / "r")]) == 2


def test_score_cli_with_the_default_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iqalens.samples import sample_paths

    photos = [str(p) for p in sample_paths()[:2]]
    out = tmp_path / "scores.json"
    assert main(["score", *photos, "--format", "json", "-o", str(out), "-q"]) == 0
    text = out.read_text()
    assert sample_paths()[0].name in text
    (tmp_path / "bad.jpg").write_bytes(b"no")
    assert main(["score", str(tmp_path / "bad.jpg"), photos[0], "-q"]) == 1
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err and sample_paths()[0].name in captured.out


def test_export_cli_writes_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "student.onnx"
    assert main(["export", "--format", "onnx", "-o", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert main(["export", "--format", "onnx", "-o", str(out)]) == 2  # exists, no --overwrite


def test_calibrate_and_evaluate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.samples import sample_paths

    spec = BenchmarkSpec(types=(1, 11), levels=(1, 3, 5), size=(96, 72))
    manifest = build_benchmark(
        tmp_path / "bench", refs=[str(p) for p in sample_paths()[:3]], spec=spec, progress=False
    )
    run = tmp_path / "calibrated"
    args = ["calibrate", "--labels", str(manifest), "--budget", "50%", "--split", "", "-o", str(run), "-q"]
    assert main([*args, "--method", "linear"]) == 0
    assert "calibrated ->" in capsys.readouterr().out
    used = json.loads((run / "metrics.json").read_text())
    assert used["labels_used"] == 11 and used["labels_available"] == 21  # 50% of 21, rounded half up
    assert (run / "calibration.json").is_file()
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--manifest",
                str(manifest),
                "--split",
                "",
                "--bootstrap",
                "20",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "21 images" in printed and "srcc" in printed and "proxy MOS" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert -1.0 <= metrics["metrics"]["srcc"] <= 1.0
    assert (out / "predictions.csv").read_text().count("\n") == 22
    # label-free: budget 0 maps the raw score onto the manifest's scale
    free = tmp_path / "free"
    assert (
        main(["calibrate", "--labels", str(manifest), "--budget", "0", "--split", "", "-o", str(free), "-q"])
        == 0
    )
    assert json.loads((free / "metrics.json").read_text())["labels_used"] == 0
