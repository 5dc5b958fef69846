"""The report's figures: matplotlib (no pyplot, no display) rendered to self-contained SVG text.

SVG keeps lines and text sharp at any zoom on a phone, and the same inputs give byte-identical output
(fixed hash salt for element ids, no creation date), so a report can be diffed and tested. Each
function takes plain numbers (no run objects) and returns the SVG document as a string; the page
embeds it as an image (:mod:`iqalens.report.html`), which keeps each figure's element ids private to
that figure. Glyphs are stored as paths, so a figure looks the same whatever fonts the viewer has.

The confusion matrix and the label-budget curve are drawn by :mod:`iqalens.plots`, which the
commands use for the same figures in their run folders. Every figure has a single panel about 5
inches wide: two fit side by side on a desktop at their natural size, and one shrunk to a phone's
width keeps its text legible (a multi-panel figure would shrink its text below reading size).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import iqalens.plots as shared

#: matplotlib settings of every figure: deterministic SVG, glyphs as paths, legible text.
STYLE: dict[str, Any] = {
    "svg.hashsalt": "iqalens-report",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
#: Width and height of a figure (inches).
WIDTH, HEIGHT = 5.0, 3.4
#: Scatter plots with more points than this embed the points as a bitmap (at ``RASTER_DPI``).
RASTER_POINTS, RASTER_DPI = 2000, 150


def to_svg(fig: Figure) -> str:
    """The figure as an SVG document (no timestamp, so identical inputs give identical text)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", dpi=RASTER_DPI)
    return buf.getvalue()


def _render(draw: Callable[[Axes], None], size: tuple[float, float] = (WIDTH, HEIGHT)) -> str:
    with rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig.add_subplot())
        return to_svg(fig)


def _nan(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _finish(ax: Axes, title: str, xlabel: str, ylabel: str, grid: str | None = "both") -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if grid:
        ax.grid(axis=grid, alpha=0.3)  # type: ignore[arg-type]
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def _shared(fig: Figure) -> str:
    """A figure of :mod:`iqalens.plots` (drawn the same in run folders) as the report's SVG."""
    with rc_context(STYLE):
        return to_svg(fig)


def confusion_matrix(
    rows: Sequence[str], cols: Sequence[str], confusion: Sequence[Sequence[int]], title: str
) -> str:
    """Counts per (true class, answer); colour = share of the true class's images (row-normalised)."""
    return _shared(shared.confusion_figure(rows, cols, confusion, title, size=(WIDTH, 4.4)))


def site_curves(
    curves: Sequence[tuple[str, Sequence[str], Sequence[float | None]]],
    ylabel: str,
    title: str,
    reference: tuple[float, str] | None = None,
    ylim: tuple[float, float] | None = None,
) -> str:
    """One value per model site, one line per ``(label, sites, values)``; x = the first curve's sites.

    ``reference`` draws a dashed horizontal line (e.g. chance) with its legend label.
    """
    sites = list(curves[0][1]) if curves else []
    pos = {s: i for i, s in enumerate(sites)}

    def draw(ax: Axes) -> None:
        for k, (label, names, values) in enumerate(curves):
            xs = [pos.get(s, math.nan) for s in names]
            ax.plot(xs, _nan(values), marker="o", markersize=3.5, label=label, color=f"C{k}")
        if reference is not None and math.isfinite(reference[0]):
            ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
        step = max(1, math.ceil(len(sites) / 24))  # keep the labels of a 40-layer model legible
        ticks = list(range(0, len(sites), step))
        ax.set_xticks(ticks, [sites[i] for i in ticks], rotation=90, fontsize=7)
        if ylim is not None:
            ax.set_ylim(*ylim)
        _finish(ax, title, "site: vision encoder → projector → language model", ylabel, grid="y")

    return _render(draw, (WIDTH, 3.8))


def probe_curves(
    curves: Sequence[tuple[str, Sequence[str], Sequence[float | None]]],
    chance: float | None,
    title: str,
) -> str:
    """Probe test accuracy per site (vision encoder, projector, language model), chance dashed."""
    reference = None if chance is None else (chance, "chance (majority class)")
    return site_curves(curves, "probe test accuracy", title, reference, (0.0, 1.02))


def grouped_bars(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    ylabel: str,
    title: str,
) -> str:
    """One group of bars per category, one bar per series (missing values leave a gap)."""

    def draw(ax: Axes) -> None:
        x = np.arange(len(categories))
        width = 0.8 / max(1, len(series))
        for k, (label, values) in enumerate(series):
            offset = (k - (len(series) - 1) / 2) * width
            ax.bar(x + offset, _nan(values), width, label=label, color=f"C{k}")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, categories, rotation=45, ha="right")
        _finish(ax, title, "", ylabel, grid="y")

    return _render(draw)


def lines(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
) -> str:
    """Lines ``(label, x, y)`` on numeric axes (training curves, a calibration map)."""

    def draw(ax: Axes) -> None:
        for k, (label, x, y) in enumerate(series):
            xs, ys = _nan(x), _nan(y)
            ok = np.isfinite(xs) & np.isfinite(ys)  # e.g. validation measured every few steps only
            marker = "o" if ok.sum() < 30 else None
            ax.plot(
                xs[ok], ys[ok], label=label or None, color=f"C{k}", linewidth=1.5, marker=marker, markersize=3
            )
        _finish(ax, title, xlabel, ylabel)

    return _render(draw)


def reliability_histogram(series: Sequence[tuple[str, Sequence[float]]], title: str) -> str:
    """Histogram of reliabilities in [0, 1], one filled outline per ``(teacher label, values)``."""
    bins = np.linspace(0.0, 1.0, 21)

    def draw(ax: Axes) -> None:
        for k, (label, raw) in enumerate(series):
            values = np.asarray(raw, dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.35, color=f"C{k}", label=label)
                ax.hist(values, bins=bins, histtype="step", color=f"C{k}")
        if not ax.has_data():
            ax.text(0.5, 0.5, "none stored", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(0, 1)
        _finish(ax, title, "reliability", "judgments", grid="y")

    return _render(draw)


def budget_curve(
    budgets: Sequence[str],
    n_labels: Sequence[int],
    arms: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    ylabel: str,
    title: str,
) -> str:
    """One metric of the label-budget protocol: mean per budget for each ``(arm, means, stds)``, with a
    band of ± one std (NaN where the arm is undefined), as the protocol's own curve draws it."""
    return _shared(shared.budget_figure(budgets, n_labels, arms, ylabel, title, size=(WIDTH, 3.8)))


def scatter_vs_mos(
    predictions: Sequence[float] | np.ndarray,
    mos: Sequence[float] | np.ndarray,
    fit: Callable[[np.ndarray], np.ndarray] | None,
    mos_label: str,
    title: str,
) -> str:
    """Predicted score against MOS, with the fitted monotone map drawn through the points."""
    pred = np.asarray(predictions, dtype=float)
    y = np.asarray(mos, dtype=float)
    ok = np.isfinite(pred) & np.isfinite(y)
    pred, y = pred[ok], y[ok]

    def draw(ax: Axes) -> None:
        alpha = 0.7 if pred.size < 300 else 0.35
        # Thousands of points as vector shapes make a megabyte-sized page; draw them as one bitmap.
        many = pred.size > RASTER_POINTS
        ax.scatter(pred, y, s=12, alpha=alpha, color="C0", edgecolors="none", label="image", rasterized=many)
        if fit is not None and pred.size:
            xs = np.linspace(pred.min(), pred.max(), 200)
            with np.errstate(all="ignore"):
                ys = np.asarray(fit(xs), dtype=float)
            if np.isfinite(ys).any():
                ax.plot(xs, ys, color="C3", linewidth=1.5, label="fitted monotone map")
        _finish(ax, title, "predicted score", mos_label)

    return _render(draw, (WIDTH, 4.0))


def histogram(values: Sequence[float] | np.ndarray, xlabel: str, title: str) -> str:
    """A plain histogram of the finite values (about 2 sqrt(n) bins, 5 to 40)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    bins = int(min(40, max(5, round(2 * math.sqrt(v.size)))))

    def draw(ax: Axes) -> None:
        if v.size:
            ax.hist(v, bins=bins, color="C0", alpha=0.8)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        _finish(ax, title, xlabel, "images", grid="y")

    return _render(draw)
