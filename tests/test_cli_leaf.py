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
