"""The LEAF subcommands of the thin CLI: distill on a tiny store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from iqalens.cli import main
from iqalens.leaf.quality_stats import statistic_names
from iqalens.leaf.student import load_student
from test_distill import make_store
from tolerances import TINY_CNN_DEPTH, float32_atol


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


def test_distill_cli_pooling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = make_store(tmp_path / "data")
    run = tmp_path / "run"
    args = ["distill", "--store", str(store), "--steps", "4", "-q", "--freeze-backbone"]
    assert main([*args, "-o", str(run), "--backbone", "tiny", "--pooling", "multiscale"]) == 0
    student = load_student(run)
    assert student.config.pooling == "multiscale" and student.head.in_features == 64
    assert main([*args, "-o", str(tmp_path / "hf"), "--backbone", "hf:x", "--pooling", "multiscale"]) == 2
    assert "supports pooling 'last' only" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main([*args, "-o", str(run), "--pooling", "max"])
    stats_run = tmp_path / "stats"
    assert main([*args, "-o", str(stats_run), "--backbone", "tiny", "--quality-stats"]) == 0
    with_stats = load_student(stats_run)
    assert with_stats.config.quality_stats and with_stats.head.in_features == 16 + len(statistic_names())


def test_distill_cli_ridge_solver_and_input_scale(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path / "data", n=20)
    run = tmp_path / "run"
    args = ["distill", "--store", str(store), "-o", str(run), "--backbone", "tiny", "-q"]
    assert (
        main([*args, "--solver", "ridge", "--l2", "3", "--resize-shorter", "24", "--image-size", "16"]) == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 0 and metrics["ridge"]["l2"] == 3.0
    distill = json.loads((run / "config.json").read_text())["config"]["distill"]
    # --solver ridge implies the frozen backbone and no augmentation it needs
    assert distill["freeze_backbone"] and not distill["augment"]
    assert distill["tail_head"] == "trained"  # the default; --tail-head refit is passed through below
    student = load_student(run)
    assert (student.config.resize_shorter, student.config.image_size) == (24, 16)
    assert main([*args[:-1], "-o", str(tmp_path / "bad"), "--solver", "ridge", "--l2", "0", "-q"]) == 2
    refit = tmp_path / "refit"
    ridge = ["--solver", "ridge", "--l2", "3", "--tail-head", "refit", "-q"]
    assert main([*args[:-1], "-o", str(refit), *ridge]) == 0
    assert json.loads((refit / "config.json").read_text())["config"]["distill"]["tail_head"] == "refit"


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
    # a fitted map is clipped to the manifest's MOS scale (1..5 for a built benchmark), and carries
    # what that scale is (a built benchmark's MOS are proxy MOS), so score files can say so
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["clip"] == [1.0, 5.0]
    assert calibration["extra"]["scale"]["name"].startswith("proxy MOS: ")
    scores = tmp_path / "scores.json"
    score_args = ["score", str(manifest), "--model", str(run), "--format", "json", "-o", str(scores)]
    assert main([*score_args, "-q"]) == 0
    assert json.loads(scores.read_text())["model"]["scale"]["low"] == 1.0
    assert main([*args, "-o", str(tmp_path / "auto")]) == 0  # default method: auto
    auto = json.loads((tmp_path / "auto" / "calibration.json").read_text())
    assert auto["note"].startswith("auto:") and auto["kind"] == auto["extra"]["auto"]["chosen"]
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
    # 3 reference photos are too few for a bootstrap over references: said, not printed as numbers
    assert "CI unavailable: only 3 reference images" in printed
    assert re.search(r"srcc -?[0-9.]+, plcc", printed)  # no [low, high] after the value
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ci"] == {} and metrics["ci_unavailable"].startswith("only 3 reference images")
    assert -1.0 <= metrics["metrics"]["srcc"] <= 1.0
    assert (out / "predictions.csv").read_text().count("\n") == 22
    # the benchmark names its types: a breakdown per type (KADID ids read as names), worst first
    per_type = metrics["per_distortion"]
    assert set(per_type) == {"gaussian_blur", "white_noise", "clean"}
    assert [d["n"] for d in per_type.values()] and sum(d["n"] for d in per_type.values()) == 21
    rmses = [d["rmse"] for d in per_type.values()]
    assert rmses == sorted(rmses, reverse=True) and "worst distortion types" in printed
    assert "dist_type,dist_level" in (out / "predictions.csv").read_text().splitlines()[0]
    # label-free: budget 0 maps the raw score onto the manifest's scale
    free = tmp_path / "free"
    assert (
        main(["calibrate", "--labels", str(manifest), "--budget", "0", "--split", "", "-o", str(free), "-q"])
        == 0
    )
    assert json.loads((free / "metrics.json").read_text())["labels_used"] == 0


def _tiny_student_run(folder: Path) -> Path:
    import torch

    from iqalens.leaf.student import StudentConfig, build_student, save_student

    torch.manual_seed(0)
    config = StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pretrained=False, dropout=0.0)
    return save_student(build_student(config), folder)


@pytest.mark.parametrize("last_block", [False, True])
def test_calibrate_head_finetune_writes_a_scorable_student(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], last_block: bool
) -> None:
    import torch

    from iqalens.evaluation.metrics import srcc
    from iqalens.leaf.scoring import load_scorer, score_paths
    from test_budget_cli import make_labelled

    store, manifest = make_labelled(tmp_path / "data")
    student_run = _tiny_student_run(tmp_path / "student")
    run = tmp_path / "tuned"
    args = [
        "calibrate",
        "--method",
        "head-finetune",
        "--student",
        str(student_run),
        "--labels",
        str(manifest),
    ]
    args += ["--budget", "50%", "--store", str(store), "--steps", "30", "-o", str(run), "-q"]
    assert main(args + (["--last-block"] if last_block else [])) == 0
    assert "fine-tuned" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels_used"] == 9 and metrics["labels_available"] == 18  # 50% of the train split
    assert metrics["teacher_points"] == 18  # the regulariser sees the whole pool

    before, after = load_student(student_run).state_dict(), load_student(run).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last_conv = {"backbone.net.4.weight", "backbone.net.4.bias"}
    assert {"head.weight", "head.bias"} <= changed
    assert (last_conv <= changed) == last_block
    assert changed <= {"head.weight", "head.bias"} | last_conv  # nothing below the trained part moves

    # the saved run scores what was trained: its raw scores rank the pool's unlabelled images as the
    # metrics recorded during fine-tuning, and calibrated scores stay on the manifest's 1..5 scale
    from iqalens.datasets.manifest import read_manifest

    m, _ = read_manifest(manifest)
    used = set(metrics["used_paths"])
    rest = [r for r in m.rows if r.split == "train" and r.path not in used]
    results = score_paths(load_scorer(run), [m.resolve(r) for r in rest], workers=0)
    recorded = metrics["pool_unlabelled_after"]["srcc"]
    # Scored here in other batches than during fine-tuning, the raw scores may differ by the tiny CNN's
    # float32 bound (tests/tolerances.py); no two are that close, so the ranks and the SRCC are the same.
    raws = sorted(r.raw for r in results)
    assert np.diff(raws).min() > 2 * float32_atol(TINY_CNN_DEPTH, raws)
    assert srcc([r.raw for r in results], [r.mos for r in rest]) == pytest.approx(recorded, abs=1e-9)
    assert all(1.0 <= r.score <= 5.0 for r in results)


def test_calibrate_head_finetune_needs_a_store_and_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_budget_cli import make_labelled

    store, manifest = make_labelled(tmp_path / "data", n=12)
    base = ["calibrate", "--method", "head-finetune", "--labels", str(manifest), "-o", str(tmp_path / "r")]
    assert main([*base, "--budget", "5"]) == 2
    assert "--store" in capsys.readouterr().err
    assert main([*base, "--budget", "0", "--store", str(store)]) == 2
    assert "at least one label" in capsys.readouterr().err
    assert main(["calibrate", "--labels", str(manifest), "--budget", "5", "--last-block", "-o", "x"]) == 2


def test_last_block_finetuning_needs_pooling_last() -> None:
    """The multiscale feature pools stages below the last block, which a trunk/tail split cannot keep."""
    from iqalens.leaf.calibration.finetune import split_backbone
    from iqalens.leaf.student import Student, StudentConfig

    cfg = StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pretrained=False)
    assert split_backbone(Student(cfg))  # pooling "last": supported
    cfg.pooling = "multiscale"
    with pytest.raises(ValueError, match="needs a student with pooling 'last'"):
        split_backbone(Student(cfg))
    cfg.pooling, cfg.quality_stats = "last", True
    with pytest.raises(ValueError, match="without quality_stats"):
        split_backbone(Student(cfg))
