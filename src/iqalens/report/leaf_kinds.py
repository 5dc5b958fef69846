"""Report kinds of the LEAF half: judgments stores, distill, calibrate, label budget, evaluate, scores.

Run folders are read from their typed results (:mod:`iqalens.leaf.results`) and ``config.json``;
judgments stores and score files, which are files rather than run folders, from their own formats.
:mod:`iqalens.report.leaf_section` draws the records. Registered in
:data:`iqalens.report.kinds.REPORT_KINDS` as ``store``, ``distill``, ``calibrate``, ``budget``,
``evaluate`` and ``score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import iqalens.report.leaf_section as draw
from iqalens.errors import InvalidInputError
from iqalens.leaf.results import BudgetResult, CalibrationResult, DistillResult, EvaluationResult
from iqalens.leaf.store import JudgmentStore
from iqalens.report.kinds import ReportKind, Section
from iqalens.report.reading import (
    inline,
    json_or_empty,
    make_provenance,
    manifest_mos_source,
    note_mos_source,
    read_csv,
    read_json,
    run_config,
    to_float,
)
from iqalens.report.records import (
    BudgetRun,
    CalibrationRun,
    DistillRun,
    EvaluationRun,
    JudgmentsRun,
    MosSource,
    Provenance,
    ScoreRun,
    TeacherJudgments,
)
from iqalens.results import result_data

#: The LEAF half of the page.
LEAF = Section(
    "leaf",
    "LEAF: label-efficient quality scoring",
    "A teacher judges unlabelled images and pairs, each judgment with a reliability; a small student "
    "learns both signals; a few MOS labels calibrate it. The label-budget protocol measures how many "
    "labels the teacher saves; evaluation compares predictions with MOS.",
)


def load_distill(folder: Path, name: str, result: DistillResult) -> DistillRun:
    """A ``distill`` run folder."""
    config = run_config(folder)
    cfg = config.get("config", {})
    settings = cfg.get("distill", {})
    student = settings.get("student", {}) if isinstance(settings, dict) else {}
    loss = settings.get("loss", {}) if isinstance(settings, dict) else {}
    counts = result.data or cfg.get("data") or {}
    prov = make_provenance(
        config,
        "distill",
        model=f"student backbone {student.get('backbone', '?')}; teacher {cfg.get('teacher_id', '?')} "
        f"/ prompt {cfg.get('prompt_version', '?')}",
        data=f"judgments store {cfg.get('store', '?')}: "
        + ", ".join(f"{k.replace('_', ' ')} {inline(v)}" for k, v in counts.items()),
        protocol=(
            "closed-form weighted ridge fit of the head to the teacher's point judgments on stored "
            "features of the frozen backbone, penalty chosen by grouped cross-validation over photos "
            "(agreement with the teacher). "
            if result.ridge is not None
            else f"joint distillation of point and pair judgments (loss {inline(loss)}), "
            f"{result.steps} steps, early stopping on the validation loss of a content-disjoint split. "
        )
        + "Labels: the teacher's judgments (no MOS involved).",
    )
    return DistillRun(folder, name, prov, metrics=result_data(result))


def load_calibration(folder: Path, name: str, result: CalibrationResult) -> CalibrationRun:
    """A ``calibrate`` run folder (any method, the head fine-tune included)."""
    config = run_config(folder)
    cfg = config.get("config", {})
    cal = result.calibration
    used = "?" if result.labels_used is None else result.labels_used
    available = "?" if result.labels_available is None else result.labels_available
    prov = make_provenance(
        config,
        "calibrate",
        model=f"student {cfg.get('student', '?')}",
        data=f"labels {cfg.get('labels', '?')} (split {cfg.get('split') or 'all'}), "
        f"{used} of {available} labelled images used",
        protocol=f"{cal.get('kind', '?')} map fitted on a budget of {cfg.get('budget', '?')} labels"
        + (" drawn stratified by student score" if cfg.get("stratify") else " drawn uniformly")
        + " with the run's seed",
        mos=manifest_mos_source(cfg.get("labels")),
    )
    return CalibrationRun(folder, name, prov, metrics=result_data(result))


def load_evaluation(folder: Path, name: str, result: EvaluationResult) -> EvaluationRun:
    """An ``evaluate`` run folder with its ``predictions.csv``."""
    config = run_config(folder)
    rows = read_csv(folder / "predictions.csv") if (folder / "predictions.csv").is_file() else []
    mos = np.array([to_float(r.get("mos")) for r in rows])
    pred = np.array([to_float(r.get("prediction")) for r in rows])
    cfg = config.get("config", {})
    ci = result.ci_level
    if result.ci_unavailable:
        intervals = f"{ci:.0%} bootstrap intervals unavailable: {result.ci_unavailable}"
    else:
        n_boot = "?" if result.n_boot is None else result.n_boot
        intervals = f"{ci:.0%} bootstrap intervals ({n_boot} resamples of {result.resampling or '?'})"
    prov = make_provenance(
        config,
        "evaluate",
        model=str(cfg.get("model", "?")),
        data=f"{cfg.get('manifest', '?')} (split {cfg.get('split') or 'all'}), "
        f"{'?' if result.images is None else result.images} images",
        protocol=f"SRCC, KRCC, PLCC (raw and after the 4-parameter logistic), RMSE; {intervals}",
        mos=note_mos_source(result.mos_note),
    )
    return EvaluationRun(folder, name, prov, metrics=result_data(result), mos=mos, predictions=pred)


#: Columns of a label-budget ``summary.csv`` that hold numbers.
_BUDGET_NUMBERS = frozenset(
    {"n_labels", "n_seeds", "srcc_mean", "srcc_std", "plcc_mean", "plcc_std", "rmse_mean", "rmse_std"}
)


def load_budget(folder: Path, name: str, result: BudgetResult | None) -> BudgetRun:
    """A label-budget protocol folder: its tables are ``summary.csv`` and ``results.json`` (``result``,
    the headline, is None for an old run)."""
    config = run_config(folder)
    results = json_or_empty(folder / "results.json")
    if (folder / "summary.csv").is_file():
        summary: list[dict[str, Any]] = read_csv(folder / "summary.csv")
    else:
        summary = list(results.get("summary", []))
    if not summary:
        raise InvalidInputError("a label-budget run without summary.csv (interrupted?)")
    summary = [{k: (to_float(v) if k in _BUDGET_NUMBERS else v) for k, v in row.items()} for row in summary]
    cfg = config.get("config", {})
    protocol_cfg = results.get("config") or cfg.get("protocol") or {}
    data = results.get("data") or (result.data if result is not None else {})
    seeds = protocol_cfg.get("seeds", [])
    prov = make_provenance(
        config,
        str(config.get("command") or "label-budget"),
        model=f"teacher {cfg.get('teacher_id', '?')} / prompt {cfg.get('prompt_version', '?')}; head on "
        f"frozen {(cfg.get('student_backbone') or {}).get('backbone', 'student')} features",
        data=f"{cfg.get('manifest', '?')}: train {data.get('train_images', '?')} images of "
        f"{data.get('train_groups', '?')} references, test {data.get('test_images', '?')} images of "
        f"{data.get('test_groups', '?')} references (content-disjoint)",
        protocol=f"arms {', '.join(map(str, protocol_cfg.get('arms', []))) or '?'}; budgets "
        f"{', '.join(map(str, protocol_cfg.get('budgets', []))) or '?'} of the train split; "
        f"mean ± sample std over {len(seeds) or '?'} seeds {list(seeds) if seeds else ''}; metrics on the "
        "test split, raw predictions (no further fitting)",
        mos=manifest_mos_source(cfg.get("manifest")),
    )
    return BudgetRun(folder, name, prov, summary=summary, data=data, config=protocol_cfg)


def load_store(path: Path, name: str, _result: None = None) -> JudgmentsRun:
    """A judgments store: reliabilities of every point and pair judgment, per teacher and prompt."""
    teachers = []
    with JudgmentStore(path, create=False) as store:
        status = store.status()
        for group in status["teachers"]:
            tid, pv = group["teacher_id"], group["prompt_version"]
            points = store.points(tid, pv)
            pairs = store.pairs(tid, pv)
            teachers.append(
                TeacherJudgments(
                    tid,
                    pv,
                    np.array([p.judgment.reliability for p in points], dtype=np.float64),
                    np.array([q.judgment.reliability for q in pairs], dtype=np.float64),
                    int(group["pairs_asked"]),
                    int(group["pairs_derived"]),
                )
            )
    names = "; ".join(f"{t.teacher_id} / prompt {t.prompt_version}" for t in teachers) or "none"
    prov = Provenance(
        command="teach",
        model=f"teacher(s): {names}",
        data=f"judgments store {path} ({status['points']} point judgments, {status['pairs_asked']} asked and "
        f"{status['pairs_derived']} derived pairs), keyed by image content hash",
        protocol="point reliability = 1 - H(p)/ln 5 of the five-level distribution; pair reliability = order "
        "consistency × decisiveness |2p - 1| (derived pairs: Thurstone from two point judgments, √(r_a r_b) "
        "× |2p - 1|)",
    )
    return JudgmentsRun(path, name, prov, teachers=teachers)


def _proxy(scale_text: str) -> bool | None:
    """Whether a score scale's description names proxy MOS; None for an unknown or raw (not MOS) scale."""
    if not scale_text or scale_text.startswith("raw student score"):
        return None
    return "proxy" in scale_text.lower()


def load_scores(path: Path, name: str, _result: None = None) -> ScoreRun:
    """The CSV or JSON file written by ``iqalens score``."""
    model: dict[str, Any] | None = None
    csv_scale: str | None = None  # the scale column of a CSV that has one
    if path.suffix.lower() == ".json":
        data = read_json(path)
        results = data.get("results", [])
        model = data.get("model") if isinstance(data.get("model"), dict) else None
    else:
        results = read_csv(path)
        if results and results[0].get("scale") is not None:
            csv_scale = results[0]["scale"]
    scores = np.array([to_float(r.get("score")) for r in results if r.get("score") not in (None, "")])
    failed = sum(1 for r in results if r.get("error"))
    scale = (model or {}).get("scale") or {}
    scale_name = scale.get("name") if isinstance(scale, dict) else None
    note = (model or {}).get("note")
    if model is None:
        model_text = "not recorded (the CSV output carries no model description; use --format json)"
        if csv_scale:
            mos = MosSource(csv_scale, _proxy(csv_scale))
        else:
            mos = MosSource("score scale unknown: not recorded in the CSV output", None)
    else:
        cal = model.get("calibration") or {}
        model_text = (
            f"{model.get('name', '?')} ({model.get('runtime', '?')}), calibration {cal.get('kind', 'none')}"
        )
        text = " ".join(str(x) for x in (scale_name, note) if x)
        mos = MosSource(text or "raw student score (teacher scale, 0-1)", _proxy(text))
    prov = Provenance(
        command="score",
        model=model_text,
        data=f"{len(results)} images listed in {path.name} ({failed} unreadable)",
        protocol="one score per image, in input order",
        mos=mos,
    )
    return ScoreRun(path, name, prov, scores=scores, n_failed=failed, model=model)


STORE = ReportKind("teacher judgments", LEAF, load_store, draw.judgments_headline, draw.judgments_article)
DISTILL = ReportKind(
    "student distillation",
    LEAF,
    load_distill,
    draw.distill_headline,
    draw.distill_article,
    result_type=DistillResult,
)
CALIBRATE = ReportKind(
    "calibration",
    LEAF,
    load_calibration,
    draw.calibration_headline,
    draw.calibration_article,
    result_type=CalibrationResult,
)
BUDGET = ReportKind(
    "label budget", LEAF, load_budget, draw.budget_headline, draw.budget_article, result_type=BudgetResult
)
EVALUATE = ReportKind(
    "evaluation",
    LEAF,
    load_evaluation,
    draw.evaluation_headline,
    draw.evaluation_article,
    result_type=EvaluationResult,
)
SCORE = ReportKind("scores", LEAF, load_scores, draw.score_headline, draw.score_article)
