"""The label-budget curve: a metric (default SRCC) against the label budget, one line per arm.

Each arm is drawn as its mean over seeds with a band of ± one sample standard deviation, because with
three seeds the spread is often as large as the differences between arms and a bare line would hide
that. Budgets sit at evenly spaced positions labelled with the budget and its number of labels: the
usual budgets (0, 1, 5, 10, 30, 100%) span two orders of magnitude *and* include 0, which neither a
linear nor a log axis shows legibly. Undefined points (labels-only below 2 labels) are gaps.

The drawing is :func:`iqalens.plots.budget_figure`, shared with ``iqalens report``; this module turns
a protocol summary into its series and writes the files. The SVG is deterministic (fixed hash salt,
no date), so the same summary gives byte-identical SVG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError, UnknownNameError

#: File stem of the curve inside a run folder (``.png`` and ``.svg`` are written).
CURVE_STEM = "budget_curve"
_SVG_SALT = "iqalens-budget"  # fixed element ids: the same summary gives byte-identical SVG
_METRIC_NAMES = {"srcc": "SRCC", "plcc": "PLCC", "rmse": "RMSE"}


def _series(summary: Sequence[dict[str, Any]], arm: str, budgets: list[str], metric: str) -> np.ndarray:
    by_budget = {str(e["budget"]): e for e in summary if e["arm"] == arm}
    out = np.full((2, len(budgets)), math.nan)
    for j, b in enumerate(budgets):
        entry = by_budget.get(b)
        if entry is None or entry.get("status") == "undefined":
            continue
        out[0, j] = float(entry[f"{metric}_mean"])
        out[1, j] = float(entry[f"{metric}_std"])
    return out


def budget_figure(summary: Sequence[dict[str, Any]], metric: str = "srcc", title: str | None = None) -> Any:
    """A matplotlib Figure of ``metric`` (mean ± std over seeds) against the budget, per arm (drawn by
    :func:`iqalens.plots.budget_figure`, the same curve the report shows)."""
    from iqalens.leaf.names import ARM_TITLES
    from iqalens.plots import budget_figure as draw

    if metric not in _METRIC_NAMES:
        raise UnknownNameError(f"metric must be one of {', '.join(_METRIC_NAMES)}, got {metric!r}")
    if not summary:
        raise InvalidInputError("nothing to plot: the summary is empty")
    budgets = list(dict.fromkeys(str(e["budget"]) for e in summary))
    counts = {str(e["budget"]): int(e["n_labels"]) for e in summary}
    arms = []
    for arm in dict.fromkeys(e["arm"] for e in summary):
        mean, std = _series(summary, arm, budgets, metric)
        arms.append((ARM_TITLES.get(arm, arm), list(mean), list(std)))
    name = _METRIC_NAMES[metric]
    return draw(
        budgets,
        [counts[b] for b in budgets],
        arms,
        f"{name} on the test split",
        title or f"{name} vs label budget (mean ± std over seeds)",
        xlabel="label budget (number of labelled images)",
        legend_below=True,
        size=(5.6, 4.0),
    )


def save_budget_curve(
    summary: Sequence[dict[str, Any]],
    folder: str | os.PathLike[str],
    metric: str = "srcc",
    title: str | None = None,
    stem: str = CURVE_STEM,
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Write ``folder/<stem>.png`` and/or ``.svg`` (each atomically); returns the paths written."""
    from iqalens.files import atomic_write_text
    from iqalens.plots import save_png, svg_text

    unknown = sorted(set(formats) - {"png", "svg"})
    if unknown:
        raise UnknownNameError(f"formats must be png and/or svg, got {', '.join(unknown)}")
    fig = budget_figure(summary, metric, title)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "png" in formats:
        written.append(save_png(fig, out / f"{stem}.png", dpi=130))
    if "svg" in formats:
        written.append(atomic_write_text(out / f"{stem}.svg", svg_text(fig, _SVG_SALT)))
    return written
