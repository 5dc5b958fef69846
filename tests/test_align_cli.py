"""The ``iqalens align`` command: errors a user can fix, and one end-to-end run with its report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from align_bench import SMALL_MINI, build_align_bench
from iqalens.align.config import AlignConfig
from iqalens.align.run import run_align
from iqalens.cli import main
from iqalens.models.mini import MiniVLM


def test_unknown_component_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["align", "--bench", str(tmp_path), "--train", "vision_encoder,decoder", "-o", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown component 'decoder'" in err and len(err.splitlines()) == 1


def test_missing_benchmark_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["align", "--bench", str(tmp_path / "nope"), "--train", "P", "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no benchmark here" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_lora_outside_train_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["align", "--bench", str(tmp_path), "--train", "P", "--lora", "L", "-o", str(tmp_path / "r")])
        == 2
    )
    assert "LoRA components must also be trained" in capsys.readouterr().err


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny benchmark and a small mini checkpoint (64 px crops)."""
    root = tmp_path_factory.mktemp("align_cli")
    build_align_bench(root / "bench")
    ckpt = root / "mini"
    MiniVLM(SMALL_MINI, model_id="mini-t").save(ckpt)
    return root / "bench", ckpt


@pytest.mark.slow
def test_cli_run_without_report(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench, ckpt = setup
    run = tmp_path / "run"
    args = ["align", "--model", f"mini:{ckpt}", "--bench", str(bench), "--train", "P", "-o", str(run), "-q"]
    args += ["--steps", "2", "--batch-size", "4", "--max-val-images", "4", "--no-report"]
    assert main(args) == 0
    assert "align P of mini:" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["command"] == "align"
    assert (run / "train_log.csv").is_file() and (run / "model" / "mini.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and metrics["before"] is None and metrics["steps_run"] == 2
    assert not (run / "before").exists()
    assert main(args) == 2  # finished: refuses without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--steps", "1"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps_run"] == 1


@pytest.mark.slow
def test_run_with_before_after_report(setup: tuple[Path, Path], tmp_path: Path) -> None:
    bench, ckpt = setup
    run = tmp_path / "run"
    cfg = AlignConfig(train=("projector",), max_steps=2, batch_size=4, max_val_images=4, progress=False)
    metrics = run_align(
        f"mini:{ckpt}", bench, run, cfg, cache_dir=tmp_path / "cache", perceive_options={"probe_max_iter": 20}
    )
    for key in ("model_id", "base_model", "train", "lora", "objectives", "steps_run", "best_val_accuracy"):
        assert key in metrics, key
    assert metrics["base_model"] == f"mini:{ckpt}" and metrics["train"] == ["projector"]
    assert set(metrics["before"]) == {"forced_choice_accuracy", "balanced_accuracy", "mean_similarity_true"}
    # the projector alone cannot move the encoder: its ImageNet predictions and features are kept
    assert metrics["drift"]["imagenet_top1_agreement"] == 1.0
    # (float32 rounding d of the unchanged encoder's features moves the float64 cosine by <= d**2 / 2,
    # ~1e-8 for EfficientNet-Lite0's bound in tests/tolerances.py)
    assert metrics["drift"]["feature_cosine"] == pytest.approx(1.0, abs=1e-6)
    before = json.loads((run / "before" / "metrics.json").read_text())
    after = json.loads((run / "after" / "metrics.json").read_text())
    assert after["model_id"] == "mini-t+align[P]" and after["checkpoint_id"] != before["checkpoint_id"]
    assert metrics["after"]["forced_choice_accuracy"] == after["forced_choice"]["accuracy"]
    comparison = json.loads((run / "comparison.json").read_text())
    assert comparison["forced_choice"]["accuracy"]["before"] == before["forced_choice"]["accuracy"]
    assert comparison["forced_choice"]["accuracy"]["after"] == after["forced_choice"]["accuracy"]
    with open(run / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["section"] for r in rows} == {"forced_choice", "probe", "semantic", "drift"}
    assert {r["item"] for r in rows if r["section"] == "semantic"} >= {"blur", "clean", "all"}
    probe = {r["item"]: r for r in rows if r["section"] == "probe" and r["metric"] == "test_accuracy"}
    # the frozen encoder's sites see the same features before and after: same probe accuracy
    assert probe["vision.0"]["before"] == probe["vision.0"]["after"]
