"""``iqalens report``: finding runs, reading them, the figures and the page, on real run folders.

The run folders come from the library's own writers (``report_fixtures``): a perceive run and an align
run (before/after perceive runs) of fake component models, a judgments store, a tiny distillation,
calibration and evaluation, the label-budget protocol and score files, nested the way a demo folder
nests them. Expected numbers are computed here from the files the writers produced, not
taken from the report code.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from iqalens.cli import main
from iqalens.leaf.store import JudgmentStore
from iqalens.report import build_report, collect, plots, write_report
from iqalens.report.collect import (
    AlignRun,
    BudgetRun,
    CalibrationRun,
    DistillRun,
    EvaluationRun,
    JudgmentsRun,
    PerceptionRun,
    ScoreRun,
    manifest_mos_source,
)
from report_fixtures import PROXY_NOTE, shared_runs

EMBEDDED_SVG = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_runs(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def page(runs: Path) -> str:
    return build_report(collect([runs]), "fixture report", [str(runs)])


def _kinds(found) -> dict[type, list]:
    out: dict[type, list] = {}
    for run in found.runs:
        out.setdefault(type(run), []).append(run)
    return out


def test_a_demo_folder_is_searched_for_every_kind_of_run(runs: Path) -> None:
    found = collect([runs])
    kinds = _kinds(found)
    assert set(kinds) == {
        PerceptionRun,
        AlignRun,
        JudgmentsRun,
        DistillRun,
        CalibrationRun,
        EvaluationRun,
        BudgetRun,
        ScoreRun,
    }
    assert found.skipped == []
    assert len(kinds[ScoreRun]) == 2  # the CSV and the JSON file
    # the align run's before/after folders belong to it and are not reported twice
    assert [r.name for r in kinds[PerceptionRun]] == [f"{runs.name}/perception/perceive"]
    align = kinds[AlignRun][0]
    assert align.before is not None and align.after is not None
    assert align.train_log and align.train_log[0]["step"] == 1.0


def test_loaded_numbers_match_the_files(runs: Path) -> None:
    kinds = _kinds(collect([runs]))
    store_path = runs / "leaf" / "teach" / "judgments.sqlite"
    with JudgmentStore(store_path, create=False) as store:
        status = store.status()
    (teacher,) = kinds[JudgmentsRun][0].teachers
    assert teacher.point_reliability.size == status["points"]
    assert teacher.pair_reliability.size == status["pairs_asked"] + status["pairs_derived"]
    assert np.all((teacher.point_reliability >= 0) & (teacher.point_reliability <= 1))

    evaluation = kinds[EvaluationRun][0]
    with open(runs / "leaf" / "evaluate" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert evaluation.predictions.tolist() == [float(r["prediction"]) for r in rows]
    assert evaluation.mos.tolist() == [float(r["mos"]) for r in rows]

    budget = kinds[BudgetRun][0]
    results = json.loads((runs / "leaf" / "budget" / "results.json").read_text())
    assert len(budget.summary) == len(results["config"]["budgets"]) * len(results["config"]["arms"])

    scores = {r.path.suffix: r for r in kinds[ScoreRun]}
    assert scores[".csv"].n_failed == scores[".json"].n_failed == 1
    assert scores[".csv"].scores.tolist() == scores[".json"].scores.tolist()


def test_proxy_labels_are_named_as_proxies(runs: Path, tmp_path: Path) -> None:
    kinds = _kinds(collect([runs]))
    for kind in (CalibrationRun, BudgetRun):
        mos = kinds[kind][0].provenance.mos
        assert mos is not None and mos.proxy is True and mos.note == PROXY_NOTE
    evaluation = kinds[EvaluationRun][0].provenance.mos
    assert evaluation is not None and evaluation.proxy is True
    assert kinds[PerceptionRun][0].provenance.mos is None  # no MOS involved
    # a score CSV names its scale in its own columns (here the proxy-MOS scale of the model)
    csv_scores = next(r for r in kinds[ScoreRun] if r.path.suffix == ".csv")
    assert csv_scores.provenance.mos is not None and csv_scores.provenance.mos.proxy is True
    assert csv_scores.provenance.mos.note == "KADID-10k proxy MOS"
    # one written before the scale columns existed is still a score file, its scale unknown
    old_csv = tmp_path / "old_scores.csv"
    with open(csv_scores.path, newline="") as fh:
        old_rows = [row[:4] for row in csv.reader(fh)]
    with open(old_csv, "w", newline="") as fh:
        csv.writer(fh).writerows(old_rows)
    (old,) = collect([old_csv]).runs
    assert isinstance(old, ScoreRun) and old.scores.tolist() == csv_scores.scores.tolist()
    assert old.provenance.mos is not None and old.provenance.mos.proxy is None
    # an uncalibrated model's raw scores are neither MOS nor proxy MOS
    from iqalens.leaf.scoring import ScoreResult, write_results

    raw_csv = tmp_path / "raw_scores.csv"
    with open(raw_csv, "w", newline="") as fh:
        write_results([ScoreResult("a.png", 0.4, 0.4)], fh, "csv", {"name": "s", "calibration": None})
    (raw,) = collect([raw_csv]).runs
    assert raw.provenance.mos is not None and raw.provenance.mos.proxy is None
    assert raw.provenance.mos.note.startswith("raw student score")

    # a manifest of human MOS, and one whose provenance file is gone
    human = tmp_path / "human.csv"
    human.write_text("path\n")
    human.with_suffix(".json").write_text(json.dumps({"builder": "iqalens bench import"}))
    assert manifest_mos_source(human).proxy is False
    assert manifest_mos_source(tmp_path / "lost.csv").proxy is None


def test_page_has_every_section_and_names_the_proxy(page: str, runs: Path) -> None:
    for anchor in ("summary", "perception", "leaf"):
        assert f'id="{anchor}"' in page
    assert html.escape(PROXY_NOTE) in page
    assert 'class="tag">proxy MOS' in page
    summary = page[page.index('id="summary"') : page.index('id="perception"')]
    assert summary.count("<tr>") == 1 + 9  # header + one row per result
    assert "fixture report" in page[: page.index("</title>")]
    # provenance of every run block: command, seed, versions
    for block in re.findall(r"<article.*?</article>", page, flags=re.S):
        assert (
            'aria-label="provenance"' in block and "<dt>Seed</dt>" in block and "<dt>Versions</dt>" in block
        )


def test_page_is_self_contained(page: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    assert 'name="viewport"' in page


def test_figures_are_embedded_valid_svg(page: str) -> None:
    figures = EMBEDDED_SVG.findall(page)
    # perceive 4 (confusion, probes, semantic, contextual), align 3 + 2 from its log, store 2,
    # distill 2, calibration 1, budget 3 (one per metric), evaluation 1, scores 1 per file
    assert len(figures) == 4 + 5 + 2 + 2 + 1 + 3 + 1 + 2
    for data in figures:
        root = ET.fromstring(base64.b64decode(data))
        assert root.tag.endswith("svg")
        width, height = (float(root.get(k, "0").removesuffix("pt")) for k in ("width", "height"))
        assert width > 0 and height > 0


def test_before_after_relative_changes_are_reported(page: str, runs: Path) -> None:
    before = json.loads((runs / "perception" / "align" / "before" / "metrics.json").read_text())
    after = json.loads((runs / "perception" / "align" / "after" / "metrics.json").read_text())
    b, a = before["forced_choice"]["accuracy"], after["forced_choice"]["accuracy"]
    assert a > b  # the fixture's "fine-tuned" model sees more
    assert f"{100 * (a - b) / b:+.1f}%" in page
    for name in before["semantic"]["classes"]:
        sb = before["semantic"]["per_class"][name]["mean_similarity_true"]
        sa = after["semantic"]["per_class"][name]["mean_similarity_true"]
        assert f"{100 * (sa - sb) / abs(sb):+.1f}%" in page


def test_budget_table_is_mean_and_std_over_seeds(page: str, runs: Path) -> None:
    with open(runs / "leaf" / "budget" / "rows.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] != "undefined"]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["budget"], r["arm"]), []).append(float(r["srcc"]))
    assert groups
    for values in groups.values():
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        assert f"{np.mean(values):.3f} ± {std:.3f}" in page
    assert "undefined" in page  # labels-only at budget 0


def test_text_from_runs_is_escaped(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "evil"
    shutil.copytree(runs / "perception" / "perceive", run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["model_id"] = "<script>alert(1)</script>"
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = build_report(collect([run]))
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def _evaluation_text(page: str) -> str:
    start = page.index("<h3>Evaluation:")
    return page[start : page.index("</article>", start)]


def test_an_unavailable_interval_is_said_not_printed(page: str, runs: Path, tmp_path: Path) -> None:
    # the fixture's test split has 4 references: too few for a bootstrap over references
    metrics = json.loads((runs / "leaf" / "evaluate" / "metrics.json").read_text())
    assert metrics["ci"] == {} and metrics["ci_unavailable"].startswith("only 4 reference images")
    reason = html.escape(metrics["ci_unavailable"])
    block = _evaluation_text(page)
    assert f"95% bootstrap interval unavailable: {reason}" in block and "bootstrap interval</th>" not in block
    assert f"95% bootstrap intervals unavailable: {reason}" in block  # the provenance's protocol
    summary = page[page.index('id="summary"') : page.index('id="perception"')]
    assert f"(CI unavailable: {reason})" in summary

    # the same run with a real interval (enough references) shows it
    real = tmp_path / "real"
    shutil.copytree(runs / "leaf" / "evaluate", real)
    intervals = {k: [0.1, 0.2] for k in metrics["metrics"]}
    changed = {**metrics, "ci": intervals, "ci_unavailable": None, "resampling": "groups (12)"}
    (real / "metrics.json").write_text(json.dumps(changed))
    block = _evaluation_text(build_report(collect([real])))
    assert "[0.100, 0.200]" in block and "intervals resample groups (12)" in block
    assert "interval unavailable" not in block and "intervals unavailable" not in block

    # a file written before the rule (no ci_unavailable key, and no kind: typed results came later)
    # with 2-group "intervals": not shown (the legacy reader applies the rule)
    for key in ("ci_unavailable", "kind", "version"):
        del changed[key]
    changed["resampling"] = "groups (2)"
    (real / "metrics.json").write_text(json.dumps(changed))
    block = _evaluation_text(build_report(collect([real])))
    assert "[0.100, 0.200]" not in block
    assert "unavailable: only 2 groups, a bootstrap over whole groups needs at least 5" in block


def test_interrupted_runs_are_listed_not_fatal(runs: Path, tmp_path: Path) -> None:
    shutil.copytree(runs / "perception" / "perceive", tmp_path / "done")
    (tmp_path / "half").mkdir()
    config = json.loads((runs / "perception" / "perceive" / "config.json").read_text())
    (tmp_path / "half" / "config.json").write_text(json.dumps(config))  # no metrics.json yet
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "config.json").write_text('{"command": "perc')  # cut off mid-write
    found = collect([tmp_path])
    assert [r.name for r in found.runs] == [f"{tmp_path.name}/done"]
    assert sorted(Path(p).name for p, _ in found.skipped) == ["half", "torn"]
    text = build_report(found)
    assert 'id="skipped"' in text and "half" in text


def test_files_named_directly_are_reported(runs: Path) -> None:
    store = runs / "leaf" / "teach" / "judgments.sqlite"
    scores = runs / "leaf" / "score" / "scores.csv"
    found = collect([store, scores])
    assert [type(r) for r in found.runs] == [JudgmentsRun, ScoreRun]


def test_nothing_reportable_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="nothing reportable"):
        collect([tmp_path])
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing reportable" in err
    assert not (tmp_path / "r.html").exists()
    assert main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_writes_the_report_and_refuses_to_overwrite(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = shutil.copytree(runs / "perception" / "perceive", tmp_path / "perceive")
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(run), "-o", str(out), "--title", "My <title>"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<title>My &lt;title&gt;</title>" in text
    assert main(["report", str(run), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["report", str(run), "-o", str(out), "--overwrite"]) == 0
    assert write_report([run], tmp_path / "again.html").is_file()


def test_figures_are_deterministic() -> None:
    a = plots.budget_curve(["0%", "10%"], [0, 5], [("arm", [0.5, 0.7], [0.1, math.nan])], "SRCC", "t")
    b = plots.budget_curve(["0%", "10%"], [0, 5], [("arm", [0.5, 0.7], [0.1, math.nan])], "SRCC", "t")
    c = plots.budget_curve(["0%", "10%"], [0, 5], [("arm", [0.5, 0.8], [0.1, math.nan])], "SRCC", "t")
    assert a == b and a != c
    assert "<dc:date>" not in a  # no timestamp in the file


def test_a_run_that_cannot_be_drawn_is_listed_and_the_rest_reported(runs: Path, tmp_path: Path) -> None:
    shutil.copytree(runs / "perception" / "perceive", tmp_path / "odd")
    shutil.copytree(runs / "leaf" / "calibrate", tmp_path / "calibrate")
    metrics = json.loads((tmp_path / "odd" / "metrics.json").read_text())
    metrics["forced_choice"]["confusion"] = [[1, 2]]  # not 8 x 8
    (tmp_path / "odd" / "metrics.json").write_text(json.dumps(metrics))
    text = build_report(collect([tmp_path]))
    skipped = text[text.index('id="skipped"') :]
    assert "odd" in skipped and "could not be drawn" in skipped
    assert 'id="leaf"' in text and len(EMBEDDED_SVG.findall(text)) == 1  # the calibration map


def test_many_points_are_drawn_as_one_bitmap() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(5000)
    big = plots.scatter_vs_mos(x, x + rng.normal(0, 0.1, x.size), None, "MOS", "t")
    small = plots.scatter_vs_mos(x[:50], x[:50], None, "MOS", "t")
    assert "<image" in big and len(big) < 400_000
    assert "<image" not in small


# -- typed results, report kinds, legacy folders ----------------------------------------------------


def test_run_folders_say_what_they_are(runs: Path) -> None:
    from iqalens.results import peek_result

    typed = {
        "perception/perceive": "perceive",
        "perception/align/before": "perceive",
        "leaf/distill": "distill",
        "leaf/calibrate": "calibrate",
        "leaf/evaluate": "evaluate",
        "leaf/budget": "budget",
    }
    for folder, kind in typed.items():
        stored = peek_result(runs / folder)
        assert stored is not None and (stored.kind, stored.version) == (kind, 1), folder
    # the fixture's align run and demo folder are hand-written in the layout before typed results
    assert peek_result(runs / "perception" / "align") is None and peek_result(runs) is None
    # the typed result adds two keys in front; every key the file had stays
    metrics = json.loads((runs / "leaf" / "calibrate" / "metrics.json").read_text())
    assert list(metrics)[:2] == ["kind", "version"]
    assert list(metrics)[2:] == ["labels_available", "labels_used", "used_paths", "calibration"]


def test_every_command_result_has_a_report_kind() -> None:
    from iqalens.align.result import AlignResult
    from iqalens.demo import DemoSummary
    from iqalens.leaf.results import BudgetResult, CalibrationResult, DistillResult, EvaluationResult
    from iqalens.perception.result import PerceptionResult
    from iqalens.report import REPORT_KINDS

    results = (
        PerceptionResult,
        AlignResult,
        DistillResult,
        CalibrationResult,
        EvaluationResult,
        BudgetResult,
    )
    for cls in results:
        assert REPORT_KINDS.get(cls.KIND).result_type is cls
    assert REPORT_KINDS.get(DemoSummary.KIND).container
    assert len({cls.KIND for cls in results}) == len(results)


def _strip_kind(folder: Path) -> None:
    """Make ``folder``'s metrics.json look like one written before typed results existed."""
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["kind"], metrics["version"]
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("folder", ["perception/perceive", "leaf/evaluate", "leaf/distill", "leaf/budget"])
def test_a_legacy_folder_loads_like_its_typed_twin(runs: Path, tmp_path: Path, folder: str) -> None:
    old = shutil.copytree(runs / folder, tmp_path / "old")
    _strip_kind(old)
    (typed,) = collect([runs / folder]).runs
    (legacy,) = collect([old]).runs
    assert type(legacy) is type(typed) and legacy.kind == typed.kind
    assert legacy.provenance == typed.provenance
    assert getattr(legacy, "metrics", None) == getattr(typed, "metrics", None)
    # with neither a kind nor a config.json, the files alone still say what it is
    (old / "config.json").unlink()
    (guessed,) = collect([old]).runs
    assert type(guessed) is type(typed)


def test_an_unknown_kind_or_a_newer_version_is_listed_not_fatal(runs: Path, tmp_path: Path) -> None:
    shutil.copytree(runs / "perception" / "perceive", tmp_path / "ok")
    for name, change in (("future", {"kind": "from-the-future"}), ("newer", {"version": 99})):
        folder = shutil.copytree(runs / "perception" / "perceive", tmp_path / name)
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**metrics, **change}))
    found = collect([tmp_path])
    assert [r.name for r in found.runs] == [f"{tmp_path.name}/ok"]
    why = {Path(p).name: reason for p, reason in found.skipped}
    assert "kind 'from-the-future', which this iqalens cannot report" in why["future"]
    assert "version 99, written by a newer iqalens" in why["newer"] and "upgrade iqalens" in why["newer"]


def test_a_new_report_kind_is_one_module_and_one_register_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What docs/architecture.md promises: a result dataclass, a loader, two renderers and one
    register call, and ``iqalens report`` finds such folders and draws them in their own section."""
    from dataclasses import dataclass
    from typing import ClassVar

    from iqalens.report import REPORT_KINDS, ReportKind, Section
    from iqalens.report.html import esc, provenance
    from iqalens.report.records import Provenance, Run
    from iqalens.results import write_result
    from iqalens.runs import start_run

    # -- the "module" ------------------------------------------------------------------------------
    @dataclass(kw_only=True)
    class ThrowawayResult:
        KIND: ClassVar[str] = "throwaway"
        VERSION: ClassVar[int] = 1
        answer: float

    @dataclass
    class ThrowawayRun(Run):
        answer: float = math.nan

    def load(path: Path, name: str, result: ThrowawayResult) -> ThrowawayRun:
        config = json.loads((path / "config.json").read_text())
        prov = Provenance("throwaway", "no model", "no data", "asked once", seed=config["seed"])
        return ThrowawayRun(path, name, prov, answer=result.answer)

    def article(run: ThrowawayRun, anchor: str) -> str:
        return (
            f'<article id="{anchor}"><h3>Throwaway: {esc(run.name)}</h3><p>the answer is {run.answer}</p>'
            f"{provenance(run.provenance, str(run.path))}</article>"
        )

    section = Section("throwaway", "Throwaway section", "A kind registered by a test.")
    kind = ReportKind(
        "throwaway kind", section, load, lambda run: [f"answer {run.answer}"], article, ThrowawayResult
    )
    # -- the register call -------------------------------------------------------------------------
    REPORT_KINDS.register("throwaway", kind)
    try:
        folder = start_run(tmp_path / "runs" / "odd", "throwaway", {}, seed=3)
        write_result(folder, ThrowawayResult(answer=42.0))
        out = tmp_path / "report.html"
        assert main(["report", str(tmp_path / "runs"), "-o", str(out)]) == 0
        text = out.read_text()
    finally:
        REPORT_KINDS.unregister("throwaway")
    assert '<li><a href="#throwaway">Throwaway section</a></li>' in text
    assert '<section id="throwaway"><h2>Throwaway section</h2><p>A kind registered by a test.</p>' in text
    assert "<h3>Throwaway: runs/odd</h3><p>the answer is 42.0</p>" in text
    summary = text[text.index('id="summary"') : text.index('id="throwaway"')]
    assert "throwaway kind" in summary and "answer 42.0" in summary
    assert "throwaway" not in REPORT_KINDS
    with pytest.raises(ValueError, match="kind 'throwaway', which this iqalens cannot report"):
        collect([tmp_path / "runs"])


def test_the_proxy_callout_names_each_proxy_once() -> None:
    from types import SimpleNamespace

    from iqalens.report.build import _proxy_callout

    note = "proxy MOS = KADID-10k mean DMOS of the image's (type, level) cell"

    def run(text: str) -> SimpleNamespace:
        return SimpleNamespace(
            name="r", provenance=SimpleNamespace(mos=SimpleNamespace(note=text, proxy=True))
        )

    html = _proxy_callout([run(note), run(f"proxy MOS: {note}")])  # type: ignore[list-item]
    assert html.count("KADID-10k mean DMOS") == 1


def test_the_per_distortion_breakdown_is_a_table_worst_first(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "typed"
    shutil.copytree(runs / "leaf" / "evaluate", run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "Per distortion type" not in _evaluation_text(build_report(collect([run])))  # no types: none
    metrics["per_distortion"] = {
        "color_block": {"n": 10, "srcc": 0.4, "mean_error": 1.0, "rmse": 1.1},
        "gaussian_blur": {"n": 10, "srcc": None, "mean_error": -0.05, "rmse": 0.3},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    block = _evaluation_text(build_report(collect([run])))
    assert "Per distortion type (worst first)" in block
    assert block.index("color_block") < block.index("gaussian_blur")
    assert "1.100" in block and "–" in block.split("gaussian_blur")[1].split("</tr>")[0]  # undefined


def test_a_closed_form_distillation_shows_its_penalty_not_steps(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "ridge"
    shutil.copytree(runs / "leaf" / "distill", run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(steps=0, history=[], best_val_loss=None, best_step=None)
    metrics["ridge"] = {
        "solver": "ridge",
        "l2": 3.0,
        "l2_chosen_by": "grouped_cv_vs_teacher",
        "cv_srcc_vs_teacher_per_l2": {"1": 0.78, "3": 0.82},
        "cv_groups": 6,
        "fit_srcc_vs_teacher": 0.91,
        "fitted_points": 432,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(collect([run]))
    assert "closed-form ridge head on 432 teacher points" in page
    assert "penalty 3.0000 (chosen by 6-photo grouped CV, held-out SRCC vs teacher 0.820)" in page
    assert "0 steps" not in page and "best val loss" not in page
    assert "last stage trained" not in page
    metrics["ridge"]["tail"] = {
        "config": {"steps": 600},
        "curve": [
            {"step": 0, "held_out_srcc_vs_teacher": 0.70},
            {"step": 300, "held_out_srcc_vs_teacher": 0.75},
            {"step": 600, "held_out_srcc_vs_teacher": 0.74},
        ],
        "chosen_step": 300,
        "held_out_groups": 2,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(collect([run]))
    assert "last stage trained 600 steps, kept step 300: held-out SRCC vs teacher from 0.700 to 0.750" in page
