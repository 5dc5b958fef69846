"""The ``iqalens`` command: outputs, naming, exit codes and never a partial set left behind."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens import __version__
from iqalens.cli import main
from iqalens.distortions import distort
from iqalens.distortions import variants as variants_module
from iqalens.images import load_rgb


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    base = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3)
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(arr).save(path)
    return path


def test_help_lists_subcommands_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "distort" in out and "demo" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_console_script_runs_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iqalens.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"iqalens {__version__}"


def test_distort_single_matches_library(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "blur.png"
    assert main(["distort", str(photo), "--type", "gaussian_blur", "--level", "4", "-o", str(out)]) == 0
    np.testing.assert_array_equal(load_rgb(out), distort(load_rgb(photo), 1, 4, seed=0))


def test_distort_type_by_id_and_seed(photo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["distort", str(photo), "-t", "11", "-l", "5", "-o", str(a), "--seed", "1"]) == 0
    assert main(["distort", str(photo), "-t", "white_noise", "-l", "5", "-o", str(b), "--seed", "2"]) == 0
    assert not np.array_equal(load_rgb(a), load_rgb(b))


def test_distort_all_writes_125_named_variants_and_index(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert main(["distort", str(photo), "--all", "-o", str(out), "-q"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 125
    assert pngs[0] == "photo_01_1.png" and pngs[-1] == "photo_25_5.png"
    with open(out / "photo_distortions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 125
    assert {(int(r["type_id"]), int(r["level"])) for r in rows} == {
        (t, lv) for t in range(1, 26) for lv in range(1, 6)
    }
    row = next(r for r in rows if r["file"] == "photo_10_3.png")
    assert row["type_name"] == "jpeg" and float(row["parameter"]) == 24
    for name in ("photo_01_5.png", "photo_19_2.png"):
        img = load_rgb(out / name)
        assert img.shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "nope", "--level", "1"], "unknown distortion type"),
        (["--type", "26", "--level", "1"], "unknown distortion type"),
        (["--type", "1"], "--level"),
        (["--all", "--type", "1"], "either"),
    ],
)
def test_bad_arguments_exit_2(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["distort", str(photo), *args, "-o", str(tmp_path / "x.png")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bad_level_is_rejected_by_parser(photo: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["distort", str(photo), "--type", "1", "--level", "6", "-o", str(tmp_path / "x.png")])
    assert info.value.code == 2


def test_unreadable_input_exit_2_names_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["distort", str(bad), "--all", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_existing_output_needs_overwrite(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.png"
    out.write_bytes(b"keep me")
    assert main(["distort", str(photo), "-t", "1", "-l", "1", "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["distort", str(photo), "-t", "1", "-l", "1", "-o", str(out), "--overwrite"]) == 0
    assert load_rgb(out).shape == (48, 64, 3)


def test_existing_set_needs_overwrite(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    out.mkdir()
    (out / "photo_07_3.png").write_bytes(b"old")
    assert main(["distort", str(photo), "--all", "-o", str(out), "-q"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["photo_07_3.png"]  # nothing written


def test_failure_midway_removes_partial_set(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = variants_module.distort

    def flaky(image: np.ndarray, dist_type: int | str, level: int, seed: int | None = 0) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real(image, dist_type, level, seed=seed)

    monkeypatch.setattr(variants_module, "distort", flaky)
    out = tmp_path / "all"
    assert main(["distort", str(photo), "--all", "-o", str(out), "-q"]) == 130
    assert list(out.iterdir()) == []


def test_list_shows_all_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distort", "--list"]) == 0
    out = capsys.readouterr().out
    assert "gaussian_blur" in out and "contrast_change" in out
    assert len([ln for ln in out.splitlines() if ln.strip()[:2].strip().isdigit()]) == 25


@pytest.mark.slow
def test_demo_runs_every_stage_into_one_folder_with_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["demo", "-o", str(run), "--max-photos", "3", "--levels", "1", "5", "--workers", "1"]
    assert main([*args, "--align-steps", "2", "--distill-steps", "2", "--budget", "6", "-q"]) == 0
    out = capsys.readouterr().out
    report = run / "report.html"
    assert f"Report: {report}" in out and "forced-choice accuracy" in out and "SRCC" in out
    # a test split of one or two photos is too small for a bootstrap interval: said, not printed
    assert "(95% CI unavailable: only " in out and "95% CI 0" not in out
    html = report.read_text()
    assert "Perception diagnostics" in html and "LEAF" in html and "proxy" in html.lower()
    assert "bootstrap interval unavailable: only " in html
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["headline"]["leaf"]["ci_unavailable"].startswith("only ")
    stages = set(metrics["stage_seconds"]) - {"total"}
    assert stages == {
        "bench",
        "align",
        "teach",
        "distill",
        "calibrate",
        "evaluate",
        "baseline",
        "score",
        "report",
    }
    headline = metrics["headline"]
    assert headline["leaf"]["labels_used"] == 6
    assert headline["leaf"]["teacher"].startswith("fr:")  # the reference-aware teacher
    assert -1.0 <= headline["leaf"]["labels_only_srcc"] <= 1.0 and "labels alone: SRCC" in out
    # the labels-only comparison over 5 label draws, the first being the calibration's own
    draws = headline["leaf"]["labels_only_srcc_draws"]
    assert len(draws) == 5 and draws[0] == headline["leaf"]["labels_only_srcc"]
    assert "over 5 draws of 6 labels" in out
    student = json.loads((run / "leaf" / "student" / "metrics.json").read_text())
    assert student["ridge"]["solver"] == "ridge" and student["steps"] == 0  # the closed-form head
    assert 0.0 <= headline["perception"]["after"]["forced_choice_accuracy"] <= 1.0
    scores = headline["scored_photos"]
    assert len(scores) == 8 and all(1 <= s <= 5 for s in scores.values())
    # Every stage is an ordinary run folder that its own command can read back.
    for sub in ("perception", "leaf/student", "leaf/calibrated", "leaf/evaluation"):
        assert (run / sub / "config.json").is_file(), sub
    # A second demo into the same folder needs --overwrite.
    assert main([*args, "-q"]) == 2


def test_demo_rejects_a_negative_tail_budget_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["demo", "-o", str(run), "--tail-steps", "-1", "-q"]) == 2
    assert "distill_tail_steps must be >= 0" in capsys.readouterr().err
    assert not run.exists()  # refused before the benchmark is built
    # the tail trains from the closed-form head: with the AdamW head it is refused, not silently dropped
    assert main(["demo", "-o", str(run), "--tail-steps", "5", "--solver", "adamw", "-q"]) == 2
    assert "needs distill_solver ridge" in capsys.readouterr().err
    assert not run.exists()


def _agiqa_layout(root: Path, names: list[str]) -> None:
    (root / "images").mkdir(parents=True)
    lines = ["name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"]
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "images" / name)
        lines.append(f"{name},a cat,,,,{1.0 + i},0.5,3.0,0.4")
    (root / "data.csv").write_text("\n".join(lines) + "\n")


def test_bench_import_writes_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iqalens.datasets.manifest import read_manifest

    root = tmp_path / "AGIQA-3K"
    _agiqa_layout(root, ["a.jpg", "b.jpg", "c.jpg"])
    out = tmp_path / "m" / "agiqa.csv"
    assert main(["bench", "import", "agiqa3k", str(root), "-o", str(out)]) == 0
    manifest, _ = read_manifest(out)
    assert sorted(r.mos for r in manifest.rows) == [1.0, 2.0, 3.0]
    assert all(manifest.resolve(r).is_file() for r in manifest.rows)
    assert main(["bench", "import", "agiqa3k", str(root), "-o", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_bench_import_missing_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "AGIQA-3K"
    _agiqa_layout(root, ["a.jpg", "b.jpg", "c.jpg"])
    (root / "images" / "b.jpg").unlink()
    out = tmp_path / "agiqa.csv"
    assert main(["bench", "import", "agiqa3k", str(root), "-o", str(out)]) == 2
    assert "b.jpg" in capsys.readouterr().err and not out.exists()
    assert main(["bench", "import", "agiqa3k", str(root), "-o", str(out), "--skip-missing"]) == 0
    assert "skipped 1" in capsys.readouterr().out


def test_bench_import_unified_needs_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "import", "unified", str(tmp_path), "-o", str(tmp_path / "u.csv")]) == 2
    assert "NAME=ROOT" in capsys.readouterr().err
    assert main(["bench", "import", "nosuchdb", str(tmp_path), "-o", str(tmp_path / "u.csv")]) == 2
    assert "unknown database" in capsys.readouterr().err


def test_building_the_parser_imports_no_heavy_library() -> None:
    """``iqalens --help`` must stay instant: the parser may not import torch, scipy or matplotlib (the
    command modules spell out their choices; the next test keeps those copies equal to the library's)."""
    import subprocess
    import sys

    code = (
        "import sys, iqalens.cli as c; c.build_parser(); "
        "print(','.join(m for m in ('torch', 'scipy', 'matplotlib', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_the_parsers_torch_free_choices_equal_the_librarys() -> None:
    # LEAF's methods, arms and poolings have one torch-free copy (iqalens.leaf.names); these remain.
    from iqalens.align.base import COMPONENTS
    from iqalens.align.config import TAP_POOLS
    from iqalens.commands.report import DEFAULT_TITLE
    from iqalens.models.mini_taps import TAP_POOLS as MODEL_TAP_POOLS
    from iqalens.report import DEFAULT_TITLE as REPORT_TITLE

    assert DEFAULT_TITLE == REPORT_TITLE
    assert TAP_POOLS == MODEL_TAP_POOLS
    assert COMPONENTS == ("vision_encoder", "projector", "language_model")


def test_demo_summary_survives_an_undefined_interval() -> None:
    # every bootstrap SRCC NaN (e.g. constant predictions) is stored as [None, None]
    from iqalens.demo import _ci

    assert _ci([None, None], "groups (12)") == ""
    assert _ci([0.1, 0.3], "groups (12)") == " (95% CI 0.10 .. 0.30, bootstrap resampling groups (12))"


def test_demo_summary_says_why_there_is_no_interval(tmp_path: Path) -> None:
    # the demo's test split has 2 photos: too few to resample, so no numbers are printed as a CI
    from iqalens.demo import DemoResult, format_summary

    reason = "only 2 reference images, a bootstrap over whole reference images needs at least 5"
    headline = {
        "benchmark_images": 600,
        "perception": {"model": "mini", "trained": ["projector"], "before": {}, "after": {}, "drift": {}},
        "leaf": {
            "teacher": "fr:gmsd+vsi+vif",
            "labels_used": 45,
            "test_images": 150,
            "srcc": 0.371,
            "srcc_ci95": None,
            "resampling": "groups (2)",
            "ci_unavailable": reason,
            "plcc": 0.4,
            "teacher_srcc": 0.49,
            "labels_only_srcc": 0.25,
            "mos": "proxy MOS",
        },
        "scored_photos": {"a.png": 3.0},
    }
    text = format_summary(DemoResult(tmp_path, tmp_path / "report.html", {"total": 1.0}, headline))
    assert f"SRCC 0.371 (95% CI unavailable: {reason}), PLCC 0.400" in text
    assert "CI 0." not in text
    assert "the same student trained on the 45 labels alone: SRCC 0.250" in text


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """IqalensError -> one line, exit 2 (with --debug, the traceback too); anything else -> exit 1."""
    from iqalens import cli
    from iqalens.commands import data as data_commands
    from iqalens.errors import InvalidInputError

    missing = str(tmp_path / "missing.png")
    assert cli.main(["distort", missing, "--type", "1", "--level", "1", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Traceback" not in err and "missing.png" in err

    def user_error(args: object) -> int:
        raise InvalidInputError("the input is bad")

    def bug(args: object) -> int:
        raise ZeroDivisionError("oops")

    argv = ["distort", "--list"]
    monkeypatch.setattr(data_commands, "_cmd_distort", user_error)
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == "iqalens distort: error: the input is bad\n"
    assert cli.main(["--debug", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("iqalens distort: error: the input is bad\n")
    monkeypatch.setattr(data_commands, "_cmd_distort", bug)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: oops" in err and "internal error" in err
