"""The perception subcommands: pre-align the mini model, then run the diagnostics on a small benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iqalens.cli import main
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.samples import sample_paths


@pytest.mark.slow
def test_prealign_then_perceive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "mini"
    assert main(["prealign", "-o", str(ckpt), "--steps", "3"]) == 0
    assert "pre-aligned mini model" in capsys.readouterr().out
    assert main(["prealign", "-o", str(ckpt), "--steps", "3"]) == 2  # exists, no --overwrite
    spec = BenchmarkSpec(
        types=(1, 11, 16, 21), levels=(2, 5), size=(128, 96), split_fractions=(0.5, 0.0, 0.5)
    )
    build_benchmark(tmp_path / "bench", refs=[str(p) for p in sample_paths()[:6]], spec=spec, progress=False)
    run = tmp_path / "run"
    args = ["perceive", "--model", f"mini:{ckpt}", "--bench", str(tmp_path / "bench"), "-o", str(run)]
    assert main([*args, "--cache", str(tmp_path / "cache"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "forced choice: accuracy" in out and "probe test accuracy per site" in out
    metrics = json.loads((run / "metrics.json").read_text())
    sites = [c["site"] for c in metrics["probes"]["curve"]]
    assert sites[0] == "vision.0" and "projector" in sites and sites[-1].startswith("lm.")
    assert 0.0 <= metrics["forced_choice"]["accuracy"] <= 1.0


def test_perceive_rejects_unknown_model_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perceive", "--model", "gpt5", "--bench", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    assert "unknown model spec" in capsys.readouterr().err
