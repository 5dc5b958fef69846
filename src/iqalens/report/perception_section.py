"""The perception part of the report: one block per ``perceive`` run and per ``align`` run.

A perceive block answers "does the model see distortions?" three ways: can it name them (forced
choice, confusion matrix), where inside the model does the information live (probe curve over the
sites, vision encoder to language model), and do its visual tokens sit near the right words
(semantic similarity per class). An align block shows the same numbers before and after fine-tuning
side by side with their relative change, plus what the training cost in preserved behaviour (drift).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import iqalens.report.plots as plots
from iqalens.report.html import (
    Cell,
    change_cell,
    esc,
    figure,
    figures,
    num,
    numeric,
    pct,
    provenance,
    signed,
    signed_pct,
    table,
)
from iqalens.report.records import AlignRun, PerceptionRun

#: Semantic statistics per class, their labels, and whether lower is better.
SEMANTIC_ROWS: tuple[tuple[str, str, bool], ...] = (
    ("mean_similarity_true", "similarity to the true class word", False),
    ("mean_margin", "margin over the best wrong word", False),
    ("mean_rank", "rank of the true word (1 = nearest)", True),
    ("nearest_accuracy", "true word is the nearest", False),
)


def _f(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def relative_change(before: Any, after: Any) -> float:
    """(after - before) / |before|; NaN when either is missing or before is 0."""
    b, a = _f(before), _f(after)
    if not (math.isfinite(b) and math.isfinite(a)) or b == 0:
        return math.nan
    return (a - b) / abs(b)


def best_probe(run: PerceptionRun) -> tuple[str, float]:
    """The site with the highest probe test accuracy."""
    curve = run.probes.get("curve", [])
    if not curve:
        return "?", math.nan
    accuracy = [_f(p.get("test_accuracy")) for p in curve]
    k = int(np.nanargmax(accuracy)) if np.isfinite(accuracy).any() else 0
    return str(curve[k]["site"]), accuracy[k]


def probe_at(run: PerceptionRun) -> dict[str, float]:
    """Probe test accuracy per site, in the run's site order (forward: vision encoder, projector,
    language model); shared with the grid summary (:mod:`iqalens.report.perception_grid`)."""
    return {str(p["site"]): _f(p.get("test_accuracy")) for p in run.probes.get("curve", [])}


def perception_headline(run: PerceptionRun) -> list[str]:
    """The numbers of the summary table."""
    fc = run.forced_choice
    site, acc = best_probe(run)
    overall = run.semantic.get("overall", {})
    return [
        f"forced choice {pct(fc.get('accuracy'))} (balanced {pct(fc.get('balanced_accuracy'))}, "
        f"chance {pct(fc.get('chance'))})",
        f"best probe {site}: {pct(acc)}",
        f"similarity to true word {num(overall.get('mean_similarity_true'))}",
    ]


def perception_article(run: PerceptionRun, anchor: str) -> str:
    """Forced choice, probe curve and semantic distance of one model on one benchmark."""
    fc, pr, sem = run.forced_choice, run.probes, run.semantic
    classes = list(fc.get("classes", []))
    site, best = best_probe(run)
    at = probe_at(run)
    sites = list(at)
    overall = sem.get("overall", {})
    key_rows = [
        [
            "forced-choice accuracy",
            numeric(pct(fc.get("accuracy"))),
            f"{fc.get('n', '?')} images; chance {pct(fc.get('chance'))}",
        ],
        [
            "balanced accuracy",
            numeric(pct(fc.get("balanced_accuracy"))),
            "mean recall over the classes present",
        ],
        ["best probe site", numeric(pct(best)), f"{site}; majority-class chance {pct(pr.get('chance'))}"],
    ]
    for name in ("projector", sites[-1] if sites else None):
        if name and name in at and name != site:
            key_rows.append([f"probe at {name}", numeric(pct(at[name])), "test accuracy"])
    key_rows += [
        [
            "similarity to true word",
            numeric(num(overall.get("mean_similarity_true"))),
            "cosine, projector output vs word embedding",
        ],
        ["true word nearest", numeric(pct(overall.get("nearest_accuracy"))), "share of images"],
    ]
    recall = fc.get("per_class_recall", {})
    support = fc.get("support", {})
    per_class = sem.get("per_class", {})
    class_rows = [
        [
            c,
            numeric(num(support.get(c))),
            numeric(pct(recall.get(c))),
            *[numeric(num(per_class.get(c, {}).get(k))) for k, _, _ in SEMANTIC_ROWS[:3]],
            numeric(pct(per_class.get(c, {}).get("nearest_accuracy"))),
        ]
        for c in classes
    ]
    figs = [
        figure(
            plots.confusion_matrix(
                classes,
                classes,
                fc.get("confusion", []),
                f"forced choice: accuracy {pct(fc.get('accuracy'))}",
            ),
            "Forced-choice confusion matrix: rows are the true distortion class, columns the model's answer "
            "(counts; colour = share of the row).",
        ),
        figure(
            plots.probe_curves(
                [("probe test accuracy", sites, [at[s] for s in sites])],
                _f(pr.get("chance")),
                f"{run.model_id}: probe accuracy per site",
            ),
            "Linear-probe accuracy at each site through the model, vision encoder to language model "
            "(dashed: majority-class chance).",
        ),
        figure(
            plots.grouped_bars(
                classes,
                [
                    (
                        "similarity to true word",
                        [per_class.get(c, {}).get("mean_similarity_true") for c in classes],
                    ),
                    (
                        "margin over best wrong word",
                        [per_class.get(c, {}).get("mean_margin") for c in classes],
                    ),
                ],
                "cosine similarity",
                "semantic distance per class",
            ),
            "Semantic similarity per class: how close the projected visual tokens of each class's images are "
            "to the class word (positive margin: the true word is the nearest).",
        ),
    ]
    figs += _optional_figures(run)
    key_rows += _optional_rows(run)
    return (
        f'<article id="{anchor}"><h3>{esc(run.name)}</h3>'
        f'<p class="lead">Model <strong>{esc(run.model_id)}</strong> on '
        f"{esc(run.metrics.get('n_images', '?'))} benchmark images.</p>"
        + table(["measure", Cell("value", "num"), "note"], key_rows)
        + figures(figs)
        + "<h4>Per class</h4>"
        + table(
            [
                "class",
                Cell("images", "num"),
                Cell("forced-choice recall", "num"),
                Cell("similarity to true word", "num"),
                Cell("margin", "num"),
                Cell("mean rank", "num"),
                Cell("true word nearest", "num"),
            ],
            class_rows,
        )
        + provenance(run.provenance, str(run.path))
        + "</article>"
    )


def _optional_rows(run: PerceptionRun) -> list[list[str | Cell]]:
    """Key numbers of the diagnostics a run may or may not hold: contextual distance, consistency,
    free generation (each either absent, a ``note`` saying why it was not run, or numbers)."""
    rows: list[list[str | Cell]] = []
    ctx = run.metrics.get("contextual") or {}
    if "curve" in ctx:
        overall = ctx.get("overall", {})
        rows.append(
            [
                f"contextual: true word nearest at {ctx.get('layer', 'last layer')}",
                numeric(pct(overall.get("nearest_accuracy"))),
                f"best margin at {ctx.get('best_site', '?')}"
                + (f"; words read in '{ctx['template']}'" if ctx.get("template") else ""),
            ]
        )
    elif ctx.get("note"):
        rows.append(["contextual semantic distance", numeric("–"), str(ctx["note"])])
    cons = run.metrics.get("consistency") or {}
    if "mean_consistency" in cons:
        rows.append(
            [
                "answer consistency",
                numeric(pct(cons.get("mean_consistency"))),
                f"mean share of {cons.get('samples', '?')} sampled answers agreeing with the most frequent "
                f"one ({cons.get('method', '?')}; T = {cons.get('temperature', '?')})",
            ]
        )
        rows.append(
            ["modal-answer accuracy", numeric(pct(cons.get("modal_accuracy"))), "most frequent sample"]
        )
    elif cons.get("note"):
        rows.append(["answer consistency", numeric("–"), str(cons["note"])])
    gen = run.metrics.get("free_generation") or {}
    if "accuracy" in gen:
        rows.append(
            [
                "free-generation accuracy",
                numeric(pct(gen.get("accuracy"))),
                f"answers parsed into a class: {pct(gen.get('parse_rate'))}",
            ]
        )
    elif gen.get("note"):
        rows.append(["free generation", numeric("–"), str(gen["note"])])
    return rows


def _optional_figures(run: PerceptionRun) -> list[str]:
    figs = []
    ctx = run.metrics.get("contextual") or {}
    curve = ctx.get("curve") or []
    if curve:
        sites = [str(p.get("site")) for p in curve]
        figs.append(
            figure(
                plots.site_curves(
                    [
                        ("similarity to true word", sites, [p.get("mean_similarity_true") for p in curve]),
                        ("margin over best wrong word", sites, [p.get("mean_margin") for p in curve]),
                        ("true word nearest (share)", sites, [p.get("nearest_accuracy") for p in curve]),
                    ],
                    "cosine / share",
                    "contextual semantic distance per LM layer",
                    (0.0, "zero margin"),
                ),
                "Contextual semantic distance: image states at each language-model layer against the class "
                "words' states at the same layer.",
            )
        )
    gen = run.metrics.get("free_generation") or {}
    if "confusion" in gen:
        figs.append(
            figure(
                plots.confusion_matrix(
                    list(gen.get("classes", [])),
                    list(gen.get("answer_labels", [])),
                    gen["confusion"],
                    f"free generation: accuracy {pct(gen.get('accuracy'))}",
                ),
                "Free-generation answers parsed into classes (rows: true class).",
            )
        )
    return figs


# -- before vs after ---------------------------------------------------------------------------------


def _summary_of(run: PerceptionRun | None, fallback: Mapping[str, Any]) -> dict[str, float]:
    if run is None:
        return {k: _f(v) for k, v in fallback.items()}
    overall = run.semantic.get("overall", {})
    return {
        "forced_choice_accuracy": _f(run.forced_choice.get("accuracy")),
        "balanced_accuracy": _f(run.forced_choice.get("balanced_accuracy")),
        **{k: _f(overall.get(k)) for k, _, _ in SEMANTIC_ROWS},
    }


_HEADLINE_ROWS: tuple[tuple[str, str, bool, bool], ...] = (
    # key, label, shown as percentage, lower is better
    ("forced_choice_accuracy", "forced-choice accuracy", True, False),
    ("balanced_accuracy", "balanced accuracy", True, False),
    ("mean_similarity_true", "similarity to true word", False, False),
    ("mean_margin", "margin over best wrong word", False, False),
    ("mean_rank", "rank of the true word", False, True),
    ("nearest_accuracy", "true word nearest", True, False),
)


def align_headline(run: AlignRun) -> list[str]:
    """Forced-choice accuracy before and after, for the summary table."""
    b = _summary_of(run.before, run.metrics.get("before") or {})
    a = _summary_of(run.after, run.metrics.get("after") or {})
    key = "forced_choice_accuracy"
    change = signed_pct(relative_change(b.get(key), a.get(key)))
    out = [f"forced choice {pct(b.get(key))} → {pct(a.get(key))} ({change})"]
    if "mean_similarity_true" in a:
        s0, s1 = b.get("mean_similarity_true"), a.get("mean_similarity_true")
        out.append(f"similarity to true word {num(s0)} → {num(s1)}")
    drift = {k: v for k, v in _drift(run).items() if k != "n_images"}
    if drift:
        out.append("drift: " + ", ".join(f"{k.replace('_', ' ')} {num(v)}" for k, v in drift.items()))
    return out


def _before_after_rows(before: Mapping[str, float], after: Mapping[str, float]) -> list[list[str | Cell]]:
    rows: list[list[str | Cell]] = []
    for key, label, as_pct, lower in _HEADLINE_ROWS:
        if key not in before and key not in after:
            continue
        b, a = before.get(key, math.nan), after.get(key, math.nan)
        show = pct if as_pct else num
        delta = a - b
        rows.append(
            [
                label + (" (lower is better)" if lower else ""),
                numeric(show(b)),
                numeric(show(a)),
                change_cell(
                    signed(100 * delta, 1) + " pt" if as_pct and math.isfinite(delta) else signed(delta),
                    delta,
                    lower,
                ),
                change_cell(signed_pct(relative_change(b, a)), delta, lower),
            ]
        )
    return rows


def _train_log_figures(log: Sequence[Mapping[str, float]]) -> list[str]:
    """Loss terms and validation accuracy per step of ``train_log.csv`` (whatever columns it has)."""
    if not log or "step" not in log[0]:
        return []
    steps = [row.get("step", math.nan) for row in log]
    numeric_columns = [
        c
        for c in log[0]
        if c not in ("step", "lr") and any(math.isfinite(row.get(c, math.nan)) for row in log)
    ]
    out = []
    for ylabel, chosen in (
        ("loss", [c for c in numeric_columns if "acc" not in c][:6]),
        ("accuracy", [c for c in numeric_columns if "acc" in c][:3]),
    ):
        if chosen:
            series = [(c, steps, [row.get(c, math.nan) for row in log]) for c in chosen]
            out.append(
                figure(
                    plots.lines(series, "step", ylabel, f"fine-tuning: {ylabel}"),
                    f"Fine-tuning {ylabel} per step (train_log.csv).",
                )
            )
    return out


def align_article(run: AlignRun, anchor: str) -> str:
    """Before vs after fine-tuning: headline numbers, probe curves, per-class changes, drift."""
    before = _summary_of(run.before, run.metrics.get("before") or {})
    after = _summary_of(run.after, run.metrics.get("after") or {})
    parts = [
        f'<article id="{anchor}"><h3>{esc(run.name)}: before vs after fine-tuning</h3>',
        f'<p class="lead">{esc(run.provenance.model)}; trained components: '
        f"{esc(', '.join(map(str, run.metrics.get('train', []))) or '?')}.</p>",
        table(
            [
                "measure",
                Cell("before", "num"),
                Cell("after", "num"),
                Cell("change", "num"),
                Cell("relative change", "num"),
            ],
            _before_after_rows(before, after),
        ),
    ]
    figs: list[str] = []
    if run.before is not None and run.after is not None:
        b_at, a_at = probe_at(run.before), probe_at(run.after)
        sites = list(b_at)
        figs.append(
            figure(
                plots.probe_curves(
                    [("before", sites, [b_at[s] for s in sites]), ("after", list(a_at), list(a_at.values()))],
                    _f(run.before.probes.get("chance")),
                    "probe accuracy per site, before vs after",
                ),
                "Linear-probe accuracy at each site before and after fine-tuning.",
            )
        )
        parts.append(_per_class(run, figs))
        parts.append(
            "<h4>Probe accuracy per site</h4>"
            + table(
                [
                    "site",
                    Cell("before", "num"),
                    Cell("after", "num"),
                    Cell("change", "num"),
                    Cell("relative change", "num"),
                ],
                [
                    [
                        s,
                        numeric(pct(b_at[s])),
                        numeric(pct(a_at.get(s))),
                        change_cell(
                            signed(100 * (a_at.get(s, math.nan) - b_at[s]), 1) + " pt",
                            a_at.get(s, math.nan) - b_at[s],
                        ),
                        change_cell(
                            signed_pct(relative_change(b_at[s], a_at.get(s))), a_at.get(s, math.nan) - b_at[s]
                        ),
                    ]
                    for s in sites
                ],
            )
        )
    figs += _train_log_figures(run.train_log)
    parts.insert(3, figures(figs))
    parts.append(_training_and_drift(run))
    parts.append(provenance(run.provenance, str(run.path)))
    if run.before is not None:
        parts.append(
            "<details><summary>Protocol of the before/after diagnostics</summary>"
            + provenance(run.before.provenance, str(run.before.path))
            + "</details>"
        )
    parts.append("</article>")
    return "".join(parts)


def _per_class(run: AlignRun, figs: list[str]) -> str:
    """Per-class forced-choice recall and semantic statistics before/after, with relative change."""
    from iqalens.perception.semantic import compare  # imports torch via the package; only when needed

    assert run.before is not None and run.after is not None
    try:
        cmp = compare(run.before.metrics, run.after.metrics)
    except (ValueError, KeyError) as exc:
        return f'<p class="muted">Per-class comparison not possible: {esc(exc)}</p>'
    classes = list(cmp["per_class"])
    figs.append(
        figure(
            plots.grouped_bars(
                classes,
                [
                    ("before", [cmp["per_class"][c]["mean_similarity_true"]["before"] for c in classes]),
                    ("after", [cmp["per_class"][c]["mean_similarity_true"]["after"] for c in classes]),
                ],
                "cosine similarity to the true word",
                "semantic similarity per class, before vs after",
            ),
            "Similarity of each class's projected visual tokens to its class word, before and after "
            "fine-tuning.",
        )
    )
    if all("forced_choice_recall" in cmp["per_class"][c] for c in classes):
        figs.append(
            figure(
                plots.grouped_bars(
                    classes,
                    [
                        ("before", [cmp["per_class"][c]["forced_choice_recall"]["before"] for c in classes]),
                        ("after", [cmp["per_class"][c]["forced_choice_recall"]["after"] for c in classes]),
                    ],
                    "recall",
                    "forced-choice recall per class, before vs after",
                ),
                "Share of each class's images the model names correctly, before and after fine-tuning.",
            )
        )
    rows = []
    for c in classes:
        entry = cmp["per_class"][c]
        row: list[str | Cell] = [c]
        for key, lower, show in (
            ("forced_choice_recall", False, pct),
            ("mean_similarity_true", False, num),
            ("mean_margin", False, num),
            ("mean_rank", True, num),
        ):
            e = entry.get(key, {})
            delta = _f(e.get("change"))
            row += [
                numeric(show(e.get("before"))),
                numeric(show(e.get("after"))),
                change_cell(signed_pct(e.get("relative_change")), delta, lower),
            ]
        rows.append(row)
    headers: list[str | Cell] = ["class"]
    for label in ("recall", "similarity", "margin", "rank"):
        headers += [Cell(f"{label} before", "num"), Cell(f"{label} after", "num"), Cell("relative", "num")]
    return "<h4>Per class: before → after (relative change)</h4>" + table(
        headers, rows, "relative change = (after − before) / |before|; for rank, lower is better"
    )


_TRAINING_ROWS = (
    ("steps_run", "steps"),
    ("best_step", "best step (weights kept)"),
    ("val_accuracy_before", "validation accuracy before training"),
    ("best_val_accuracy", "best validation accuracy"),
    ("trainable_parameters", "trainable parameters"),
    ("train_seconds", "training time (s)"),
)
_DRIFT_LABELS = {
    "imagenet_top1_agreement": "encoder's own top-1 unchanged (share of clean images)",
    "feature_cosine": "mean cosine of encoder features, before vs after",
    "feature_cosine_min": "lowest cosine of encoder features",
    "n_images": "clean images measured",
}


def _drift(run: AlignRun) -> dict[str, float]:
    drift = run.metrics.get("drift") or run.comparison.get("drift") or {}
    if not isinstance(drift, dict):
        return {}
    return {k: v for k, v in drift.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _training_and_drift(run: AlignRun) -> str:
    m = run.metrics
    rows = [
        [label, numeric(str(m[key]) if isinstance(m[key], int) else num(m[key]))]
        for key, label in _TRAINING_ROWS
        if m.get(key) is not None
    ]
    rows += [
        [
            f"preservation: {_DRIFT_LABELS.get(k, k.replace('_', ' '))}",
            numeric(str(v) if isinstance(v, int) else num(v)),
        ]
        for k, v in _drift(run).items()
    ]
    if not rows:
        return ""
    return "<h4>Training and preservation</h4>" + table(["measure", Cell("value", "num")], rows)


def class_mapping_details() -> str:
    """The one table mapping distortion types onto the 8 perception classes (collapsed)."""
    from iqalens.taxonomy import class_table_rows

    return (
        "<details><summary>How distortion types map onto the perception classes</summary>"
        + table(["source", "distortion", "class", "note"], class_table_rows())
        + "</details>"
    )
