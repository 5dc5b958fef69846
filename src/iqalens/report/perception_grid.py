"""Report kind ``align_grid``: a grid of align runs drawn as the perception paper's summary.

A grid folder (``benchmarks/align_grid.py``, ``benchmarks/p1_reproduction.py``) holds one align run
per cell and seed and, in its ``metrics.json``, an :class:`~iqalens.align.grid_result.AlignGridResult`
with one row per cell and seed. Its block answers the paper's question in one table and one figure:
forced-choice accuracy per cell (mean ± std over seeds, before → after, chance named, with the drift
measures where the cell has them), and the linear-probe accuracy per site before (the untrained model)
and after each trained cell.

The grid is a *drawn* kind, not a container: :func:`iqalens.report.collect.collect` stops at a folder
with a kind, so the cells' align runs inside it are read here (through the ``align`` kind's loader)
and not drawn again as blocks of their own; a reader who wants one cell's full before/after block
names that cell's folder. A row whose run is missing, unfinished or unreadable is still listed, marked
with the reason, so that an interrupted grid is reported with what it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iqalens.report.plots as plots
from iqalens.align.grid_result import AlignGridResult, summarise_cells
from iqalens.align.result import AlignResult
from iqalens.errors import IqalensError
from iqalens.report.html import Cell, esc, figure, figures, num, numeric, pct, provenance, signed, table
from iqalens.report.kinds import ReportKind
from iqalens.report.legacy import typed_or_legacy
from iqalens.report.perception_kinds import PERCEPTION, load_align
from iqalens.report.perception_section import probe_at
from iqalens.report.reading import make_provenance, run_config
from iqalens.report.records import AlignRun, PerceptionRun, Run

__all__ = ["ALIGN_GRID", "AlignGridRun", "grid_article", "grid_headline", "load_grid"]

#: What reading one cell's run may raise: the row is marked with the reason, the grid still drawn.
_CELL_ERRORS = (OSError, ValueError, KeyError, TypeError, IqalensError)
#: The ``train`` of a cell without training (the untrained model).
UNTRAINED = "-"


@dataclass
class AlignGridRun(Run):
    """A grid folder: its typed result, the per-cell summary, and each row's align run and status.

    ``runs`` and ``status`` are keyed by the row's index in ``result.cells``; a row has a run when
    its folder held a readable align run, and a status (``"ok"`` or the reason it has none).
    """

    result: AlignGridResult = field(default_factory=AlignGridResult)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[int, AlignRun] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)


def _load_cell(folder: Path, row: dict[str, Any], name: str) -> tuple[AlignRun | None, str]:
    """The row's align run and its status; None with the reason when it has none."""
    rel = row.get("run")
    if not rel:
        if row.get("train") in (UNTRAINED, None, ""):
            return None, "ok"  # the untrained model: no run of its own, its numbers are the runs' before
        return None, "run missing (no run folder recorded)"
    path = folder / str(rel)
    if not path.is_dir():
        return None, f"run missing ({rel})"
    try:
        result = typed_or_legacy(path, "align", AlignResult)
        run = load_align(path, f"{name}/{rel}", result)
    except _CELL_ERRORS as exc:
        return None, f"run unreadable ({rel}): {exc}"
    if result is None or not result.complete or run.after is None:
        return run, f"run unfinished ({rel})"
    return run, "ok"


def load_grid(folder: Path, name: str, result: AlignGridResult) -> AlignGridRun:
    """A grid folder: its result, the per-cell summary and every row's align run (where readable)."""
    runs: dict[int, AlignRun] = {}
    status: dict[int, str] = {}
    for k, row in enumerate(result.cells):
        run, status[k] = _load_cell(folder, row, name)
        if run is not None:
            runs[k] = run
    n_cells = len({str(r.get("cell")) for r in result.cells})
    data = (result.benchmark or "?") + (
        f" (sha256 {result.benchmark_hash[:12]}…)" if result.benchmark_hash else ""
    )
    protocol = (
        f"{n_cells} cells, {len(result.cells)} runs (cell × seed). "
        f"{result.protocol.rstrip('.') or 'protocol not recorded'}. "
        f"Chance: {pct(result.chance)} (1 / number of classes). Labels: the benchmark's perception "
        "classes (no MOS involved)."
    )
    prov = make_provenance(run_config(folder), "align grid", result.model_id or "?", data, protocol)
    return AlignGridRun(
        folder,
        name,
        prov,
        result=result,
        summaries=summarise_cells(result.cells),
        runs=runs,
        status=status,
    )


def _pm(mean: Any, std: Any, show: Any = pct) -> str:
    """``mean ± std`` (std shown only with the mean)."""
    if mean is None:
        return show(None)
    return f"{show(mean)} ± {show(std)}"


def _best(run: AlignGridRun) -> dict[str, Any] | None:
    trained = [s for s in run.summaries if s["train"] != UNTRAINED and s["fc_after_mean"] is not None]
    return max(trained, key=lambda s: s["fc_after_mean"]) if trained else None


def grid_headline(run: AlignGridRun) -> list[str]:
    """The summary row: cells and runs, the best cell's forced choice, what is missing."""
    res = run.result
    missing = sum(s != "ok" for s in run.status.values())
    out = [
        f"{len(run.summaries)} cells, {len(res.cells)} runs"
        + (f" ({missing} missing or unfinished)" if missing else "")
        + ("" if res.complete else "; grid not complete")
    ]
    best = _best(run)
    if best is not None:
        out.append(
            f"best cell {best['cell']}: forced choice {pct(best['fc_before_mean'])} → "
            f"{_pm(best['fc_after_mean'], best['fc_after_std'])} ({best['n_after']} seed(s)); "
            f"chance {pct(res.chance)}"
        )
    return out


def _cell_note(run: AlignGridRun, summary: dict[str, Any]) -> str:
    rows = [k for k, r in enumerate(run.result.cells) if str(r.get("cell")) == summary["cell"]]
    notes = [
        f"seed {run.result.cells[k].get('seed', '?')}: {run.status.get(k, '?')}"
        for k in rows
        if run.status.get(k, "ok") != "ok"
    ]
    if summary["train"] == UNTRAINED and not notes:
        notes.append("no training: the base model, as every run's before")
    return "; ".join(notes)


def _cell_rows(run: AlignGridRun) -> list[list[str | Cell]]:
    rows: list[list[str | Cell]] = []
    for s in run.summaries:
        note = _cell_note(run, s)
        marked = any(v != "ok" for k, v in run.status.items() if run.result.cells[k].get("cell") == s["cell"])
        delta = (
            s["fc_after_mean"] - s["fc_before_mean"]
            if s["fc_after_mean"] is not None and s["fc_before_mean"] is not None
            else math.nan
        )
        constraint = s["constraint"]
        rows.append(
            [
                Cell(f"<strong>{esc(s['cell'])}</strong>" + (" ⚠" if marked else ""), raw=True),
                str(s["train"] or "?"),
                num(constraint, 1) if isinstance(constraint, int | float) and constraint else "off",
                numeric(
                    f"{s['n_after']} of {s['n_seeds']}" if s["n_after"] != s["n_seeds"] else str(s["n_seeds"])
                ),
                numeric(pct(s["fc_before_mean"])),
                numeric(_pm(s["fc_after_mean"], s["fc_after_std"])),
                numeric(signed(100 * delta, 1) + " pt" if math.isfinite(delta) else "–"),
                numeric(_pm(s["bal_after_mean"], s["bal_after_std"])),
                numeric(_pm(s["imagenet_agreement_mean"], s["imagenet_agreement_std"])),
                numeric(_pm(s["feature_cosine_mean"], s["feature_cosine_std"], num)),
                note,
            ]
        )
    return rows


def _mean_curve(runs: list[PerceptionRun], sites: list[str]) -> list[float]:
    """Mean probe accuracy per site over ``runs`` (sites a run lacks are left out of its mean)."""
    values = []
    for site in sites:
        xs = [v for v in (probe_at(r).get(site, math.nan) for r in runs) if math.isfinite(v)]
        values.append(sum(xs) / len(xs) if xs else math.nan)
    return values


def _probe_figure(run: AlignGridRun) -> str:
    """Probe accuracy per site: the untrained model (first run's before), then each trained cell's
    after (mean over its seeds); empty when no run has its diagnostics."""
    loaded = [run.runs[k] for k in sorted(run.runs)]
    before = next((r.before for r in loaded if r.before is not None), None)
    afters: dict[str, list[PerceptionRun]] = {}
    for k in sorted(run.runs):
        row, after = run.result.cells[k], run.runs[k].after
        if after is not None and row.get("train") != UNTRAINED:
            afters.setdefault(str(row.get("cell")), []).append(after)
    first = before or next((a[0] for a in afters.values()), None)
    if first is None:
        return ""
    sites = list(probe_at(first))
    curves: list[tuple[str, list[str], list[float | None]]] = []
    if before is not None:
        curves.append(("before (untrained)", sites, [probe_at(before).get(s) for s in sites]))
    for cell, sides in afters.items():
        label = f"{cell} after" + (f" (mean of {len(sides)} seeds)" if len(sides) > 1 else "")
        curves.append((label, sites, list(_mean_curve(sides, sites))))
    chance = first.probes.get("chance")
    svg = plots.probe_curves(
        curves,
        float(chance) if isinstance(chance, int | float) else None,
        "probe accuracy per site, before vs after each cell",
    )
    source = f" (from {before.name})" if before is not None else ""
    return figure(
        svg,
        "Linear-probe accuracy at each site, vision encoder → projector → language model: the untrained "
        f"model{source} and each trained cell after fine-tuning, averaged over its seeds "
        "(dashed: the probes' majority-class chance).",
        wide=True,
    )


def _run_rows(run: AlignGridRun) -> list[list[str | Cell]]:
    out: list[list[str | Cell]] = []
    for k, r in enumerate(run.result.cells):
        out.append(
            [
                str(r.get("cell", "?")),
                numeric(num(r.get("seed"))),
                numeric(pct(r.get("fc_before"))),
                numeric(pct(r.get("fc_after"))),
                numeric(num(r.get("steps"))),
                numeric(num(r.get("train_seconds"), 0)),
                Cell(f"<code>{esc(r.get('run') or '–')}</code>", raw=True),
                run.status.get(k, "?"),
            ]
        )
    return out


def grid_article(run: AlignGridRun, anchor: str) -> str:
    """The paper-style summary: forced choice per cell, then probe accuracy per site before/after."""
    res = run.result
    state = "" if res.complete else " The grid is not complete (still running, or interrupted)."
    parts = [
        f'<article id="{anchor}"><h3>{esc(run.name)}: which component to fine-tune (align grid)</h3>',
        f'<p class="lead">Model <strong>{esc(res.model_id or "?")}</strong>; {len(run.summaries)} cells × '
        f"seeds; forced-choice chance {esc(pct(res.chance))}.{esc(state)}</p>",
        "<h4>Forced-choice accuracy per cell</h4>",
        table(
            [
                "cell",
                "trained",
                "constraint",
                Cell("seeds", "num"),
                Cell("forced choice before", "num"),
                Cell("forced choice after (mean ± std)", "num"),
                Cell("change", "num"),
                Cell("balanced accuracy after", "num"),
                Cell("ImageNet agreement", "num"),
                Cell("feature cosine", "num"),
                "note",
            ],
            _cell_rows(run),
            f"mean ± population std over seeds (std 0 for one seed); test split; chance {pct(res.chance)} = "
            "1 / number of classes. ⚠ marks a cell with a missing, unfinished or unreadable run; its mean "
            "is over the seeds that have the number.",
        ),
        figures([f] if (f := _probe_figure(run)) else []),
    ]
    if res.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in res.notes) + "</ul>")
    parts.append(
        "<details><summary>Every run of the grid</summary>"
        + table(
            [
                "cell",
                Cell("seed", "num"),
                Cell("forced choice before", "num"),
                Cell("after", "num"),
                Cell("steps", "num"),
                Cell("train s", "num"),
                "run folder",
                "status",
            ],
            _run_rows(run),
        )
        + "</details>"
    )
    parts.append(provenance(run.provenance, str(run.path)))
    parts.append("</article>")
    return "".join(parts)


ALIGN_GRID = ReportKind(
    "fine-tuning grid (per cell)",
    PERCEPTION,
    load_grid,
    grid_headline,
    grid_article,
    result_type=AlignGridResult,
)
