"""scripts/gpu_check.py: it skips clearly without CUDA, and its CPU dry run passes every step.

The CUDA run itself needs a GPU (docs/recipes/gpu_check.md records when it last ran); what is
checked here is that the script is runnable: the skip message and status, and the same steps on the
CPU with one family (the full default run on a CPU is recorded in docs/recipes/gpu_check.md).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_without_cuda_nothing_runs_and_the_message_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _script().main(["--work", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert "SKIPPED, CUDA is not available" in out and "--device cpu" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_cpu_dry_run_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--device", "cpu", "--families", "mplug_owl2", "--distill-steps", "2"]
    assert _script().main([*args, "--work", str(tmp_path / "work"), "-o", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = [s["step"] for s in summary["steps"]]
    assert summary["passed"] and all(s["status"] == "ok" for s in summary["steps"])
    for expected in (
        "perceive mplug_owl2",
        "teach mplug_owl2",
        "align mplug_owl2",
        "distill",
        "score",
        "CPU vs",
    ):
        assert any(expected in step for step in steps), expected
    assert "| perceive mplug_owl2 | ok |" in (tmp_path / "gpu_check.md").read_text()
