"""Assemble the report page: summary table, perception section, LEAF section, distortions, what was skipped.

The summary table comes first because it is what a reader compares across runs; each row links to the
block that explains the numbers and names their provenance. Sections appear only when there is
something to show in them, in the order of the two halves of iqalens (perception, then LEAF).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iqalens.files import atomic_write_text
from iqalens.report import leaf_section as leaf
from iqalens.report import perception_section as perception
from iqalens.report import plots
from iqalens.report.collect import (
    AlignRun,
    BudgetRun,
    CalibrationRun,
    Collection,
    DistillRun,
    DistortionDemoRun,
    EvaluationRun,
    JudgmentsRun,
    PerceptionRun,
    Run,
    ScoreRun,
    collect,
)
from iqalens.report.html import Cell, esc, figure, figures, page, provenance, slug, table
from iqalens.version import __version__

DEFAULT_TITLE = "iqalens report"

#: Per run kind: section id, what the summary calls it, headline numbers, the block.
KINDS: tuple[tuple[type[Run], str, str, Callable[[Any], list[str]], Callable[[Any, str], str]], ...] = (
    (
        PerceptionRun,
        "perception",
        "perception diagnostics",
        perception.perception_headline,
        perception.perception_article,
    ),
    (
        AlignRun,
        "perception",
        "fine-tuning (before → after)",
        perception.align_headline,
        perception.align_article,
    ),
    (JudgmentsRun, "leaf", "teacher judgments", leaf.judgments_headline, leaf.judgments_article),
    (DistillRun, "leaf", "student distillation", leaf.distill_headline, leaf.distill_article),
    (CalibrationRun, "leaf", "calibration", leaf.calibration_headline, leaf.calibration_article),
    (BudgetRun, "leaf", "label budget", leaf.budget_headline, leaf.budget_article),
    (EvaluationRun, "leaf", "evaluation", leaf.evaluation_headline, leaf.evaluation_article),
    (ScoreRun, "leaf", "scores", leaf.score_headline, leaf.score_article),
    (
        DistortionDemoRun,
        "distortions",
        "distortion demo",
        lambda r: _demo_headline(r),
        lambda r, a: _demo_article(r, a),
    ),
)

SECTION_TITLES = {
    "perception": (
        "Perception diagnostics",
        "Does the model see low-level distortions? Forced choice asks it to name the distortion among the "
        "perception classes; linear probes measure how much distortion information each site (vision "
        "encoder layers, projector, language-model layers) still holds; semantic similarity measures "
        "whether the visual tokens sit near the word of their distortion. Fine-tuning runs show the same "
        "numbers before and after, with the relative change.",
    ),
    "leaf": (
        "LEAF: label-efficient quality scoring",
        "A teacher judges unlabelled images and pairs, each judgment with a reliability; a small student "
        "learns both signals; a few MOS labels calibrate it. The label-budget protocol measures how many "
        "labels the teacher saves; evaluation compares predictions with MOS.",
    ),
    "distortions": (
        "Distortions",
        "How strongly each KADID-10k distortion type changes the images at each level (PSNR against the "
        "reference photo; lower = stronger change).",
    ),
}


def _demo_headline(run: DistortionDemoRun) -> list[str]:
    levels = sorted({lv for per in run.mean_psnr.values() for lv in per})
    return [f"{len(run.mean_psnr)} distortion types at levels {', '.join(map(str, levels))}"]


def _demo_article(run: DistortionDemoRun, anchor: str) -> str:
    try:
        from iqalens.distortions._registry import all_types

        names = {t.id: t.name for t in all_types()}
    except ImportError:  # pragma: no cover - part of the package
        names = {}
    fig = figure(
        plots.psnr_by_type(run.mean_psnr, names, "mean PSNR per distortion type and level"),
        "Mean PSNR of every distorted variant against its reference photo, per type and level.",
        wide=True,
    )
    return (
        f'<article id="{anchor}"><h3>Distortion demo: {esc(run.name)}</h3>{figures([fig])}'
        f"{provenance(run.provenance, str(run.path))}</article>"
    )


def _proxy_callout(runs: Sequence[Run]) -> str:
    proxies = sorted({r.provenance.mos.note for r in runs if r.provenance.mos and r.provenance.mos.proxy})
    unknown = [r.name for r in runs if r.provenance.mos and r.provenance.mos.proxy is None]
    parts = []
    if proxies:
        parts.append(
            '<p><strong>Proxy labels.</strong> Numbers tagged <span class="tag">proxy MOS</span> are '
            "measured against proxy labels, not human ratings of these images: "
            + "; ".join(esc(n) for n in proxies)
            + ".</p>"
        )
    if unknown:
        parts.append(
            "<p><strong>Unknown label source.</strong> For "
            + esc(", ".join(unknown))
            + " the run does not record whether its MOS labels are human ratings or a proxy.</p>"
        )
    return f'<div class="callout">{"".join(parts)}</div>' if parts else ""


def build_report(found: Collection, title: str = DEFAULT_TITLE, sources: Sequence[str] = ()) -> str:
    """The complete HTML page for everything in ``found``."""
    taken: set[str] = {"summary", "perception", "leaf", "distortions", "skipped"}
    summary_rows: list[list[str | Cell]] = []
    blocks: dict[str, list[str]] = {"perception": [], "leaf": [], "distortions": []}
    skipped = list(found.skipped)
    for kind, section, label, headline, article in KINDS:
        for run in found.of(kind):
            anchor = slug(run.name, taken)
            try:
                block, numbers = article(run, anchor), headline(run)
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                # A run whose files parse but lack what a figure needs: say so, report the others.
                skipped.append((str(run.path), f"{label} run that could not be drawn: {exc!r}"))
                continue
            blocks[section].append(block)
            summary_rows.append(
                [
                    Cell(f'<a href="#{anchor}">{esc(run.name)}</a>', raw=True),
                    label,
                    Cell("<br>".join(esc(h) for h in numbers), "text", raw=True),
                    Cell(run.provenance.model, "text"),
                ]
            )
    nav = ['<li><a href="#summary">Summary</a></li>']
    body = [f"<h1>{esc(title)}</h1>"]
    origin = ", ".join(sources) if sources else "the named runs"
    body.append(
        f'<p class="lead">{len(summary_rows)} result(s) from {esc(origin)}. Every number below names the '
        "model, data and protocol that produced it (grey boxes).</p>"
    )
    sections = []
    for key in ("perception", "leaf", "distortions"):
        if not blocks[key]:
            continue
        heading, intro = SECTION_TITLES[key]
        nav.append(f'<li><a href="#{key}">{esc(heading)}</a></li>')
        extra = perception.class_mapping_details() if key == "perception" else ""
        content = "".join(blocks[key])
        sections.append(
            f'<section id="{key}"><h2>{esc(heading)}</h2><p>{esc(intro)}</p>{extra}{content}</section>'
        )
    if skipped:
        nav.append('<li><a href="#skipped">Not reported</a></li>')
    body.append(f"<nav><ul>{''.join(nav)}</ul></nav>")
    body.append(_proxy_callout(found.runs))
    body.append(
        '<section id="summary"><h2>Summary</h2>'
        + table(["run", "kind", "headline numbers", "model"], summary_rows, stacked=True)
        + "</section>"
    )
    body += sections
    if skipped:
        items = "".join(f"<li><code>{esc(p)}</code>: {esc(why)}</li>" for p, why in skipped)
        body.append(f'<section id="skipped"><h2>Not reported</h2><ul>{items}</ul></section>')
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    footer = (
        f"Generated by iqalens {esc(__version__)} (<code>iqalens report</code>) on {esc(stamp)}. "
        "Self-contained: no network access needed."
    )
    return page(title, "\n".join(b for b in body if b), footer)


def write_report(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    title: str = DEFAULT_TITLE,
    overwrite: bool = False,
) -> Path:
    """Collect the runs under ``paths`` and write the report to ``out`` (atomically); returns ``out``.

    Raises ``FileExistsError`` when ``out`` exists and ``overwrite`` is false, ``ValueError`` when
    nothing reportable is found.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; name the .html file to write")
    found = collect(paths)
    text = build_report(found, title, [str(p) for p in paths])
    return atomic_write_text(target, text)
