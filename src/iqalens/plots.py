"""The figures more than one part of iqalens draws: the confusion matrix and the label-budget curve.

``perceive`` saves its confusion matrix as a PNG, the label-budget protocol its curve as PNG and SVG,
and ``iqalens report`` embeds both as SVG; each is drawn here once, so the run folder and the report
show the same picture. Functions return a matplotlib :class:`~matplotlib.figure.Figure` built
without pyplot (no display, no backend switch, no global state) and take plain numbers, not run
objects; :func:`save_png` and :func:`svg_text` write them. matplotlib is imported inside the
functions, so importing this module costs nothing and ``iqalens --help`` never loads matplotlib.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqalens.files import atomic_replace

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["STYLE", "budget_figure", "confusion_figure", "save_png", "svg_text"]

#: matplotlib settings of the shared figures: legible text, no top and right frame.
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


def _nan(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def confusion_figure(
    rows: Sequence[str],
    cols: Sequence[str],
    confusion: Sequence[Sequence[int]],
    title: str,
    size: tuple[float, float] = (5.0, 4.4),
) -> Figure:
    """Counts per (true class, answer), written in the cells; colour = share of the true class's
    images (row-normalised), with a colour bar. ``confusion`` must be ``len(rows) x len(cols)``."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=float).reshape(len(rows), len(cols))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(counts):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.spines[:].set_visible(False)
        fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
        ax.set_title(title)
        ax.set_xlabel("model's answer")
        ax.set_ylabel("true class")
    return fig


def budget_figure(
    budgets: Sequence[str],
    n_labels: Sequence[int],
    arms: Sequence[tuple[str, Sequence[float | None], Sequence[float | None]]],
    ylabel: str,
    title: str,
    xlabel: str = "label budget (labels)",
    legend_below: bool = False,
    size: tuple[float, float] = (5.0, 3.8),
) -> Figure:
    """One metric of the label-budget protocol: the mean per budget of each ``(arm, means, stds)``
    with a band of ± one std (NaN or None where the arm is undefined: a gap).

    Budgets sit at evenly spaced positions labelled with the budget and, where it differs, its number
    of labels: the usual budgets (0, 1, 5, 10, 30, 100%) span two orders of magnitude *and* include
    0, which neither a linear nor a log axis shows legibly. ``legend_below`` puts the legend under
    the axes, where it never covers a curve.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    x = np.arange(len(budgets))
    ticks = [b if str(n) == b else f"{b}\n({n})" for b, n in zip(budgets, n_labels, strict=True)]
    with rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.add_subplot()
        for k, (label, means, stds) in enumerate(arms):
            mean, std = _nan(means), _nan(stds)
            ax.plot(x, mean, marker="o", markersize=3.5, color=f"C{k}", label=label)
            ax.fill_between(x, mean - std, mean + std, color=f"C{k}", alpha=0.18, linewidth=0)
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(axis="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            if legend_below:
                fig.legend(loc="outside lower center", ncols=2)
            else:
                ax.legend()
    return fig


def svg_text(fig: Figure, salt: str = "iqalens", **savefig: Any) -> str:
    """The figure as an SVG document: glyphs as paths (the same look whatever fonts a viewer has),
    no date and a fixed hash salt for element ids, so the same figure gives the same text."""
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, **savefig)
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write the figure as a PNG, atomically (no timestamp in the file)."""
    return atomic_replace(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}), ".png"
    )
