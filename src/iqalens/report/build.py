"""Assemble the report page: summary table, one section per group of kinds, what was skipped.

The summary table comes first because it is what a reader compares across runs; each row links to the
block that explains the numbers and names their provenance. Sections appear only when there is
something to show in them, in the order of :data:`~iqalens.report.kinds.REPORT_KINDS` (the two halves
of iqalens: perception, then LEAF; a registered kind may bring a section of its own).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from iqalens.errors import InvalidInputError
from iqalens.files import atomic_write_text
from iqalens.report.collect import collect
from iqalens.report.html import Cell, esc, page, slug, table
from iqalens.report.kinds import REPORT_KINDS, ReportKind, Section
from iqalens.report.records import Collection, Run
from iqalens.version import __version__

DEFAULT_TITLE = "iqalens report"
#: Anchors of the page's own parts, which no section may take.
_RESERVED = frozenset({"summary", "skipped"})


def _proxy_callout(runs: Sequence[Run]) -> str:
    # A calibration names its scale "proxy MOS: <the proxy's note>": the same proxy, said once.
    proxies = sorted(
        {
            r.provenance.mos.note.removeprefix("proxy MOS: ")
            for r in runs
            if r.provenance.mos and r.provenance.mos.proxy
        }
    )
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
    """The complete HTML page for everything in ``found``.

    Blocks follow the order of :data:`~iqalens.report.kinds.REPORT_KINDS` (each kind's runs in
    discovery order) and sit in the section their kind names; sections appear in the order of their
    first kind, and only when they have a block.
    """
    kinds: list[tuple[str, ReportKind]] = [(e.name, e.load()) for e in REPORT_KINDS]
    sections: dict[str, Section] = {}
    for _, spec in kinds:
        if spec.section is not None and spec.section.key not in sections:
            if spec.section.key in _RESERVED:
                raise InvalidInputError(f"report section {spec.section.key!r}: that anchor is the page's own")
            sections[spec.section.key] = spec.section
    taken: set[str] = set(_RESERVED) | set(sections)
    summary_rows: list[list[str | Cell]] = []
    blocks: dict[str, list[str]] = {key: [] for key in sections}
    skipped = list(found.skipped)
    for name, spec in kinds:
        if spec.container or spec.section is None or spec.headline is None or spec.article is None:
            continue
        for run in found.of(name):
            anchor = slug(run.name, taken)
            try:
                block, numbers = spec.article(run, anchor), spec.headline(run)
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
                # A run whose files parse but lack what a figure needs: say so, report the others.
                skipped.append((str(run.path), f"{spec.label} run that could not be drawn: {exc!r}"))
                continue
            blocks[spec.section.key].append(block)
            summary_rows.append(
                [
                    Cell(f'<a href="#{anchor}">{esc(run.name)}</a>', raw=True),
                    spec.label,
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
    parts = []
    for key, section in sections.items():
        if not blocks[key]:
            continue
        nav.append(f'<li><a href="#{key}">{esc(section.heading)}</a></li>')
        extra = section.extra() if section.extra is not None else ""
        content = "".join(blocks[key])
        parts.append(
            f'<section id="{key}"><h2>{esc(section.heading)}</h2><p>{esc(section.intro)}</p>{extra}{content}'
            "</section>"
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
    body += parts
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
