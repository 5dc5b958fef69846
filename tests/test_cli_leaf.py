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
