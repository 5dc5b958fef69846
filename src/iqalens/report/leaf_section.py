"""The LEAF part of the report: teacher judgments, distillation, calibration, budgets, evaluation, scores.

Follows the order of the pipeline: how sure the teacher was (reliability histograms of its point and
pair judgments), how the student learned from it (validation curve), how a few labels map it onto the
MOS scale (calibration map), how many labels the teacher saves (label-budget curves, mean ± std over
seeds as error bands), and how well the result agrees with MOS (predicted vs MOS scatter with
bootstrap intervals). Wherever MOS enters, the labels are named: a proxy is always called a proxy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import iqalens.report.plots as plots
from iqalens.report.html import Cell, esc, figure, figures, num, numeric, provenance, proxy_tag, table
from iqalens.report.records import (
    BudgetRun,
    CalibrationRun,
    DistillRun,
    EvaluationRun,
    JudgmentsRun,
    MosSource,
    ScoreRun,
)

#: Metrics of the label-budget protocol: summary key prefix, axis label, lower is better.
BUDGET_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("srcc", "SRCC", False),
    ("plcc", "PLCC", False),
    ("rmse", "RMSE", True),
)


def mos_label(mos: MosSource | None) -> str:
    """Axis and column label of MOS values: says "proxy MOS" whenever the labels are a proxy."""
    if mos is not None and mos.proxy:
        return "proxy MOS"
    return "MOS"


def _mean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else math.nan


def _mos_tag(run: Any) -> str:
    mos = run.provenance.mos
    return proxy_tag(mos.proxy) if mos is not None else ""


def _article(anchor: str, title: str, body: str, run: Any) -> str:
    return (
        f'<article id="{anchor}"><h3>{title}</h3>{body}{provenance(run.provenance, str(run.path))}</article>'
    )


# -- teacher judgments ------------------------------------------------------------------------------


def judgments_headline(run: JudgmentsRun) -> list[str]:
    out = []
    for t in run.teachers:
        out.append(
            f"{t.teacher_id}: {t.point_reliability.size} points "
            f"(mean reliability {num(_mean(t.point_reliability))}), "
            f"{t.pair_reliability.size} pairs (mean reliability {num(_mean(t.pair_reliability))})"
        )
    return out or ["empty store"]


def judgments_article(run: JudgmentsRun, anchor: str) -> str:
    rows = [
        [
            t.teacher_id,
            t.prompt_version,
            numeric(str(t.point_reliability.size)),
            numeric(num(_mean(t.point_reliability))),
            numeric(str(t.pairs_asked)),
            numeric(str(t.pairs_derived)),
            numeric(num(_mean(t.pair_reliability))),
        ]
        for t in run.teachers
    ]
    labels = [f"{t.teacher_id} / {t.prompt_version}" for t in run.teachers]
    figs = [
        figure(
            plots.reliability_histogram(
                list(zip(labels, [t.point_reliability for t in run.teachers], strict=True)),
                "teacher reliability: point judgments",
            ),
            "Reliability of the teacher's point judgments: 1 − normalised entropy of its five-level "
            "distribution (1 = certain, 0 = uniform).",
        ),
        figure(
            plots.reliability_histogram(
                list(zip(labels, [t.pair_reliability for t in run.teachers], strict=True)),
                "teacher reliability: pair judgments",
            ),
            "Reliability of the teacher's pair judgments: order consistency × decisiveness. "
            "Low-reliability judgments weigh less in distillation.",
        ),
    ]
    body = figures(figs) + table(
        [
            "teacher",
            "prompt",
            Cell("points", "num"),
            Cell("mean point reliability", "num"),
            Cell("pairs asked", "num"),
            Cell("pairs derived", "num"),
            Cell("mean pair reliability", "num"),
        ],
        rows,
    )
    return _article(anchor, f"Teacher judgments: {esc(run.name)}", body, run)


# -- distillation -----------------------------------------------------------------------------------


def _ridge_lines(ridge: dict[str, Any]) -> list[str]:
    """What a closed-form (ridge) distillation chose: no steps or losses to show."""
    cv = (ridge.get("cv_srcc_vs_teacher_per_l2") or {}).get(f"{ridge.get('l2', 0):g}")
    how = {
        "grouped_cv_vs_teacher": f"chosen by {ridge.get('cv_groups', '?')}-photo grouped CV, "
        f"held-out SRCC vs teacher {num(cv)}",
        "given": "given",
    }.get(str(ridge.get("l2_chosen_by")), str(ridge.get("l2_chosen_by", "?")))
    lines = [
        f"closed-form ridge head on {ridge.get('fitted_points', '?')} teacher points",
        f"penalty {num(ridge.get('l2'), 4)} ({how})",
        f"fit SRCC vs teacher {num(ridge.get('fit_srcc_vs_teacher'))}",
    ]
    tail = ridge.get("tail")
    if isinstance(tail, dict) and tail.get("curve"):
        curve = {c.get("step"): c.get("held_out_srcc_vs_teacher") for c in tail["curve"]}
        chosen = tail.get("chosen_step")
        lines.append(
            f"last stage trained {tail.get('config', {}).get('steps', '?')} steps, kept step {chosen}: "
            f"held-out SRCC vs teacher from {num(curve.get(0))} to {num(curve.get(chosen))} "
            f"({tail.get('held_out_groups', '?')} photos held out)"
        )
    return lines


def distill_headline(run: DistillRun) -> list[str]:
    m = run.metrics
    if isinstance(m.get("ridge"), dict):
        return _ridge_lines(m["ridge"])
    val = m.get("val") or {}
    out = [
        f"{m.get('steps', '?')} steps (best {m.get('best_step', '?')})",
        f"best val loss {num(m.get('best_val_loss'))}",
    ]
    if "srcc_vs_teacher" in val:
        out.append(f"val SRCC vs teacher {num(val['srcc_vs_teacher'])}")
    if "pair_agreement" in val:
        out.append(f"pair agreement {num(val['pair_agreement'])}")
    return out


def distill_article(run: DistillRun, anchor: str) -> str:
    m = run.metrics
    history = [h for h in m.get("history", []) if isinstance(h, dict)]
    figs = []
    if history:
        steps = [h.get("step", math.nan) for h in history]
        loss_lines = [
            (label, steps, [h.get(key, math.nan) for h in history])
            for key, label in (("train_loss", "train (batch)"), ("loss_total", "validation"))
            if any(key in h for h in history)
        ]
        agree_lines = [
            (label, steps, [h.get(key, math.nan) for h in history])
            for key, label in (("srcc_vs_teacher", "SRCC vs teacher"), ("pair_agreement", "pair agreement"))
            if any(key in h for h in history)
        ]
        if loss_lines:
            figs.append(
                figure(
                    plots.lines(loss_lines, "step", "joint loss", "distillation: loss"),
                    "Joint distillation loss on the training batch and on the content-disjoint validation "
                    "split.",
                )
            )
        if agree_lines:
            figs.append(
                figure(
                    plots.lines(agree_lines, "step", "agreement", "distillation: agreement with the teacher"),
                    "The student's agreement with the teacher on validation images: rank correlation of "
                    "scores, and the share of decisive pairs ordered as the teacher ordered them.",
                )
            )
    if isinstance(m.get("ridge"), dict):
        lines = _ridge_lines(m["ridge"])
        body = "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"
        return _article(anchor, f"Student distillation: {esc(run.name)}", body, run)
    val = m.get("val") or {}
    rows = [
        [
            "steps",
            numeric(str(m.get("steps", "?"))),
            "stopped early" if m.get("stopped_early") else "step limit",
        ],
        ["best step", numeric(str(m.get("best_step", "?"))), "weights kept"],
        ["best validation loss", numeric(num(m.get("best_val_loss"))), "joint loss"],
    ]
    rows += [
        [f"validation {k.replace('_', ' ')}", numeric(num(v)), "final weights"]
        for k, v in val.items()
        if k.startswith(("srcc", "pair"))
    ]
    rows.append(["training time (s)", numeric(num(m.get("seconds"), 1)), ""])
    body = figures(figs) + table(["measure", Cell("value", "num"), "note"], rows)
    return _article(anchor, f"Student distillation: {esc(run.name)}", body, run)


# -- calibration ------------------------------------------------------------------------------------


def calibration_headline(run: CalibrationRun) -> list[str]:
    m = run.metrics
    cal = m.get("calibration", {})
    used, available = m.get("labels_used", "?"), m.get("labels_available", "?")
    return [f"{cal.get('kind', '?')} map on {used} of {available} labels"]


def calibration_article(run: CalibrationRun, anchor: str) -> str:
    from iqalens.leaf.calibration import Calibrator

    m = run.metrics
    cal = m.get("calibration", {})
    figs = []
    try:
        calibrator = Calibrator.from_dict(cal)
        xs_param = calibrator.params.get("xs")
        lo, hi = (float(min(xs_param)), float(max(xs_param))) if xs_param else (0.0, 1.0)
        x = np.linspace(lo, hi, 200)
        figs.append(
            figure(
                plots.lines(
                    [("", x, calibrator(x))],
                    "raw student score",
                    mos_label(run.provenance.mos),
                    f"{calibrator.kind} calibration map",
                ),
                "Calibration map from the raw student score onto the MOS scale.",
            )
        )
    except (ValueError, TypeError, KeyError) as exc:
        figs.append(f'<p class="muted">No calibration map drawn: {esc(exc)}</p>')
    rows = [
        [
            "labels used",
            numeric(str(m.get("labels_used", "?"))),
            f"of {m.get('labels_available', '?')} available",
        ],
        ["mapping", Cell(str(cal.get("kind", "?"))), cal.get("note") or ""],
        ["points fitted", numeric(str(cal.get("n_fit", "?"))), ""],
    ]
    body = figures(figs) + table(["measure", "value", "note"], rows)
    return _article(anchor, f"Calibration: {esc(run.name)}{_mos_tag(run)}", body, run)


# -- label budget -----------------------------------------------------------------------------------


def _arm_titles() -> dict[str, str]:
    from iqalens.leaf.names import ARM_TITLES

    return dict(ARM_TITLES)


def _budget_grid(
    run: BudgetRun,
) -> tuple[list[str], list[int], list[str], dict[tuple[str, str], dict[str, Any]]]:
    budgets = list(dict.fromkeys(str(r["budget"]) for r in run.summary))
    arms = list(dict.fromkeys(str(r["arm"]) for r in run.summary))
    cells = {(str(r["budget"]), str(r["arm"])): r for r in run.summary}
    n_labels = []
    for b in budgets:
        n = next((r.get("n_labels") for r in run.summary if str(r["budget"]) == b), math.nan)
        n_labels.append(int(n) if isinstance(n, float) and math.isfinite(n) else -1)
    return budgets, n_labels, arms, cells


def _mean_std(cell: dict[str, Any] | None, key: str) -> tuple[float, float]:
    if not cell or cell.get("status") == "undefined":
        return math.nan, math.nan
    return float(cell.get(f"{key}_mean", math.nan)), float(cell.get(f"{key}_std", math.nan))


def _pm(cell: dict[str, Any] | None, key: str) -> str:
    if cell is None:
        return "–"
    if cell.get("status") == "undefined":
        return "undefined"
    mean, std = _mean_std(cell, key)
    return f"{num(mean)} ± {num(std)}"


def budget_headline(run: BudgetRun) -> list[str]:
    budgets, n_labels, arms, cells = _budget_grid(run)
    titles = _arm_titles()
    # The smallest budget at which every arm is defined: where the comparison is most telling.
    chosen = next(
        (
            b
            for b in budgets
            if all(cells.get((b, a), {}).get("status") not in (None, "undefined") for a in arms)
        ),
        budgets[-1] if budgets else None,
    )
    if chosen is None:
        return ["empty summary"]
    n = n_labels[budgets.index(chosen)]
    return [
        f"SRCC at {chosen} ({n} labels): "
        + "; ".join(f"{titles.get(a, a)} {_pm(cells.get((chosen, a)), 'srcc')}" for a in arms)
    ]


def budget_article(run: BudgetRun, anchor: str) -> str:
    budgets, n_labels, arms, cells = _budget_grid(run)
    titles = _arm_titles()
    label = mos_label(run.provenance.mos)
    seeds = run.config.get("seeds") or []
    figs = []
    for key, name, lower in BUDGET_METRICS:
        arms_series = [
            (
                titles.get(a, a),
                [_mean_std(cells.get((b, a)), key)[0] for b in budgets],
                [_mean_std(cells.get((b, a)), key)[1] for b in budgets],
            )
            for a in arms
        ]
        ylabel = f"{name} vs {label}" + (" (lower is better)" if lower else "")
        figs.append(
            figure(
                plots.budget_curve(budgets, n_labels, arms_series, ylabel, f"label budget: {name}"),
                f"Test-split {name} against {label} per label budget: mean over {len(seeds) or '?'} seeds, "
                "band = ± one standard deviation; a missing point means the arm is undefined there "
                "(labels-only needs at least 2 labels).",
            )
        )
    headers: list[str | Cell] = ["budget", Cell("labels", "num")]
    for _, name, _ in BUDGET_METRICS:
        headers += [Cell(f"{name} {titles.get(a, a)}", "num") for a in arms]
    rows = []
    for b, n in zip(budgets, n_labels, strict=True):
        row: list[str | Cell] = [b, numeric(str(n) if n >= 0 else "?")]
        for key, _, _ in BUDGET_METRICS:
            row += [numeric(_pm(cells.get((b, a)), key)) for a in arms]
        rows.append(row)
    body = figures(figs) + table(
        headers, rows, f"mean ± sample std over seeds; metrics against {label}, test split"
    )
    return _article(anchor, f"Label budget: {esc(run.name)}{_mos_tag(run)}", body, run)


# -- evaluation -------------------------------------------------------------------------------------


def _ci_unavailable(metrics: dict[str, Any]) -> str | None:
    from iqalens.evaluation.metrics import ci_unavailable

    return ci_unavailable(metrics)


def _interval(metrics: dict[str, Any], key: str) -> str:
    if _ci_unavailable(metrics):
        return ""
    ci = (metrics.get("ci") or {}).get(key)
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f"[{num(ci[0])}, {num(ci[1])}]"


def evaluation_headline(run: EvaluationRun) -> list[str]:
    m = run.metrics.get("metrics", {})
    label = mos_label(run.provenance.mos)
    unavailable = _ci_unavailable(run.metrics)
    band = f"(CI unavailable: {unavailable})" if unavailable else _interval(run.metrics, "srcc")
    srcc = f"SRCC {num(m.get('srcc'))} {band}".strip()
    return [
        f"{srcc} vs {label}",
        f"PLCC {num(m.get('plcc'))}",
        f"RMSE {num(m.get('rmse'))}",
        f"{run.metrics.get('images', '?')} images",
    ]


def _fit_function(fit: dict[str, Any] | None) -> Any:
    if not fit:
        return None
    from iqalens.evaluation.mapping import MonotoneMap

    try:
        return MonotoneMap.from_dict(fit)
    except (KeyError, TypeError, ValueError):
        return None


def evaluation_article(run: EvaluationRun, anchor: str) -> str:
    metrics = run.metrics
    values = metrics.get("metrics", {})
    label = mos_label(run.provenance.mos)
    level = metrics.get("ci_level", 0.95)
    fit = _fit_function(metrics.get("fit"))
    fig = figure(
        plots.scatter_vs_mos(
            run.predictions,
            run.mos,
            fit,
            label,
            f"SRCC {num(values.get('srcc'))}, PLCC {num(values.get('plcc'))} ({run.predictions.size} images)",
        ),
        f"Predicted score against {label} for every evaluated image"
        + (f", with the monotone map ({fit.kind}) behind 'PLCC after logistic'." if fit else "."),
    )
    names = {
        "srcc": "SRCC",
        "krcc": "KRCC",
        "plcc": "PLCC",
        "plcc_fitted": "PLCC after logistic",
        "rmse": "RMSE",
    }
    unavailable = _ci_unavailable(metrics)
    if unavailable:
        body = figures([fig]) + table(
            ["metric", Cell("value", "num")],
            [[names.get(k, k), numeric(num(v))] for k, v in values.items()],
            f"against {label}; {level:.0%} bootstrap interval unavailable: {unavailable}",
        )
    else:
        rows = [
            [names.get(k, k), numeric(num(v)), numeric(_interval(metrics, k) or "–")]
            for k, v in values.items()
        ]
        body = figures([fig]) + table(
            ["metric", Cell("value", "num"), Cell(f"{level:.0%} bootstrap interval", "num")],
            rows,
            f"against {label}; intervals resample {metrics.get('resampling', '?')}",
        )
    per_source = metrics.get("per_source") or {}
    if len(per_source) > 1:
        body += "<h4>Per source</h4>" + table(
            ["source", Cell("images", "num"), Cell("SRCC", "num"), Cell("PLCC", "num")],
            [
                [
                    str(s),
                    numeric(str(d.get("n", "?"))),
                    numeric(num((d.get("metrics") or d).get("srcc"))),
                    numeric(num((d.get("metrics") or d).get("plcc"))),
                ]
                for s, d in per_source.items()
                if isinstance(d, dict)
            ],
        )
    per_distortion = metrics.get("per_distortion") or {}
    if per_distortion:
        body += "<h4>Per distortion type (worst first)</h4>" + table(
            [
                "type",
                Cell("images", "num"),
                Cell("SRCC within the type", "num"),
                Cell("mean error", "num"),
                Cell("RMSE", "num"),
            ],
            [
                [
                    str(name),
                    numeric(str(d.get("n", "?"))),
                    numeric(num(d.get("srcc"))),
                    numeric(num(d.get("mean_error"))),
                    numeric(num(d.get("rmse"))),
                ]
                for name, d in per_distortion.items()
                if isinstance(d, dict)
            ],
            f"errors after the fitted map, on the {label} scale; a positive mean error: the type is rated "
            "better than its MOS",
        )
    notes = metrics.get("notes") or []
    if metrics.get("unreadable"):
        notes = [*notes, f"{len(metrics['unreadable'])} unreadable image(s) left out"]
    if notes:
        body += "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
    return _article(anchor, f"Evaluation: {esc(run.name)}{_mos_tag(run)}", body, run)


# -- score ------------------------------------------------------------------------------------------


def score_headline(run: ScoreRun) -> list[str]:
    s = run.scores[np.isfinite(run.scores)]
    return [
        f"{s.size} images scored, {run.n_failed} failed",
        f"mean score {num(float(s.mean()) if s.size else math.nan)}",
    ]


def score_article(run: ScoreRun, anchor: str) -> str:
    s = run.scores[np.isfinite(run.scores)]
    scale = (
        mos_label(run.provenance.mos) + " scale"
        if run.provenance.mos and run.provenance.mos.proxy
        else "score"
    )
    fig = figure(plots.histogram(s, scale, f"{s.size} scores"), "Distribution of the predicted scores.")
    stats: Sequence[tuple[str, float]] = (
        ("mean", float(s.mean()) if s.size else math.nan),
        ("median", float(np.median(s)) if s.size else math.nan),
        ("min", float(s.min()) if s.size else math.nan),
        ("max", float(s.max()) if s.size else math.nan),
    )
    rows = [["images scored", numeric(str(s.size))], ["unreadable", numeric(str(run.n_failed))]]
    rows += [[k, numeric(num(v))] for k, v in stats]
    body = figures([fig]) + table(["measure", Cell("value", "num")], rows)
    return _article(anchor, f"Scores: {esc(run.name)}{_mos_tag(run)}", body, run)
