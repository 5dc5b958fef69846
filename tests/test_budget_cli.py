"""``iqalens budget``: the label-budget protocol from the CLI writes its table, per-seed rows and curve."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from iqalens.cli import main
from iqalens.datasets.manifest import Manifest, ManifestRow, MosScale, write_manifest
from iqalens.leaf.targets import TeacherChoiceError, choose_teacher
from test_distill import make_store


def make_labelled(folder: Path, n: int = 24) -> tuple[Path, Path]:
    """The toy judgments store of test_distill plus a manifest: MOS rising with image quality, content
    groups of 3 images, 2 of the 8 groups in the test split."""
    store, paths = make_store(folder, n=n)
    rows = [
        ManifestRow(
            path=str(p),
            reference=f"ref{i // 3}",
            source="toy",
            mos=1.0 + 4.0 * i / (n - 1),
            mos_scale=MosScale(1.0, 5.0),
            split="test" if i // 3 in (2, 5) else "train",
        )
        for i, p in enumerate(paths)
    ]
    return store, write_manifest(Manifest(rows, folder), folder / "manifest.csv")


@pytest.mark.slow
def test_budget_cli_writes_table_rows_and_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, manifest = make_labelled(tmp_path / "data")
    run = tmp_path / "run"
    args = ["budget", "--store", str(store), "--manifest", str(manifest), "-o", str(run), "-q"]
    assert main([*args, "--budgets", "0,50%", "100%", "--seeds", "0", "1", "--l2", "0.1"]) == 0
    assert "SRCC labels only" in capsys.readouterr().out

    with open(run / "rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(run / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2 * 3 and len(summary) == 3 * 3  # budgets x seeds x arms; budgets x arms
    for entry in summary:
        sel = [float(r["srcc"]) for r in rows if (r["budget"], r["arm"]) == (entry["budget"], entry["arm"])]
        if entry["status"] == "undefined":
            assert entry["budget"] == "0" and entry["arm"] == "labels_only"
            assert all(math.isnan(v) for v in sel)
            continue
        assert float(entry["srcc_mean"]) == pytest.approx(np.mean(sel))
        assert float(entry["srcc_std"]) == pytest.approx(np.std(sel, ddof=1))
    n_train = 18  # 6 of the 8 groups of 3 images
    assert {e["budget"]: int(e["n_labels"]) for e in summary} == {"0": 0, "50%": 9, "100%": n_train}

    assert (run / "budget_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (run / "budget_curve.svg").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "budget" and config["config"]["protocol"]["seeds"] == [0, 1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["by_budget"]["0"]["labels_only"] == {"status": "undefined"}
    assert metrics["plots"] == ["budget_curve.png", "budget_curve.svg"]

    # the cached features are reused: a second run into a new folder with --features computes nothing
    features = run / "features"
    stamps = {p.name: p.stat().st_mtime_ns for p in features.glob("*.npy")}
    again = tmp_path / "again"
    shared = ["--features", str(features), "--budgets", "100%", "--seeds", "0", "--l2", "0.5"]
    assert main([*args[:5], "-o", str(again), "-q", *shared]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in features.glob("*.npy")} == stamps
    assert not (again / "features").exists()
    assert json.loads((again / "results.json").read_text())["l2_selection"] == {}  # a fixed l2: no search


def test_budget_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, manifest = make_labelled(tmp_path / "data", n=12)
    base = ["budget", "--store", str(store), "--manifest", str(manifest), "-o", str(tmp_path / "r"), "-q"]
    assert main([*base, "--budgets", "ten"]) == 2
    assert "budget 'ten'" in capsys.readouterr().err
    assert main([*base, "--seeds", "x"]) == 2
    assert main([*base, "--teacher-id", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "holds:" in err and "--teacher-id" in err  # the command names its flags, the library does not
    with pytest.raises(TeacherChoiceError) as caught:
        choose_teacher(store, "nobody")
    assert "holds:" in str(caught.value) and "--" not in str(caught.value)
    assert main([*base, "--arms", "leaf,oracle"]) == 2
    assert main([*base, "--l2", "strong"]) == 2
    assert main([*base, "--l2", "-1"]) == 2
    assert main([*base, "--l2", "0"]) == 2  # the ridge solver (the default) needs a positive penalty
    assert not (tmp_path / "r").exists()  # nothing started for arguments that cannot work


def test_l2_auto_searches_the_default_candidates_and_a_number_fixes_l2() -> None:
    from iqalens.commands.budget import head_config
    from iqalens.leaf.label_budget import DEFAULT_L2_CANDIDATES, RIDGE_L2_CANDIDATES, BudgetConfig

    assert head_config("auto").l2_candidates == DEFAULT_L2_CANDIDATES == BudgetConfig().head.l2_candidates
    fixed = head_config("0.3")
    assert fixed.l2 == 0.3 and fixed.l2_candidates == ()
    ridge = head_config("auto", "ridge")
    assert ridge.solver == "ridge" and ridge.l2_candidates == RIDGE_L2_CANDIDATES
    assert min(RIDGE_L2_CANDIDATES) > 0
    assert head_config("2", "ridge").l2 == 2.0 and head_config("0", "adamw").l2 == 0.0


@pytest.mark.parametrize("pooling", [None, "multiscale"])
def test_budget_cli_passes_the_pooling_to_the_student_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pooling: str | None
) -> None:
    import iqalens.leaf.label_budget as label_budget

    seen = {}

    def fake_run(*args: object, student_config: object = None, **kwargs: object) -> dict:
        seen["student"] = student_config
        raise KeyboardInterrupt  # stop before any work; only the arguments matter here

    monkeypatch.setattr(label_budget, "choose_teacher", lambda *a: ("t", "v"))
    monkeypatch.setattr(label_budget, "run_label_budget", fake_run)
    args = ["budget", "--store", "s", "--manifest", "m", "-o", str(tmp_path / "r"), "-q"]
    main(args + ([] if pooling is None else ["--pooling", pooling]))
    assert seen["student"].pooling == (pooling or "multiscale")  # the default of efficientnet-lite0
    assert seen["student"].quality_stats is False
    main([*args, "--quality-stats"])
    assert seen["student"].quality_stats is True
