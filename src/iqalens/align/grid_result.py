"""The typed result of a grid of ``iqalens align`` runs: which component to fine-tune, side by side.

The perception paper's question (which part of a vision-language model to fine-tune so that it
names low-level distortions) is answered by a *grid*: one align run per cell (untrained, V, P, L,
V+P, V+P with the drift constraint, V+P+L, ...) and seed, all on one benchmark. Each cell's run is an
ordinary align run folder inside the grid folder; the grid folder's own ``metrics.json`` is this
result (kind ``align_grid``, version 1), written by the grid scripts (``benchmarks/align_grid.py``,
``benchmarks/p1_reproduction.py``) so that ``iqalens report`` can draw the paper-style summary
instead of guessing what a folder of runs holds.

One row per (cell, seed) rather than pre-aggregated numbers, because the mean and spread over seeds
are what a reader must be able to recompute; :func:`summarise_cells` aggregates them (the report and
the scripts' tables use the same function, so they cannot disagree).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from iqalens.results import write_result

__all__ = [
    "CELL_KEYS",
    "SUMMARY_MEASURES",
    "AlignGridResult",
    "cell_numbers",
    "mean_std",
    "summarise_cells",
    "write_grid_result",
]

#: The keys of one row of :attr:`AlignGridResult.cells`, in the order of the scripts' tables.
CELL_KEYS: tuple[str, ...] = (
    "cell",
    "train",
    "constraint",
    "seed",
    "run",
    "fc_before",
    "fc_after",
    "bal_before",
    "bal_after",
    "sim_before",
    "sim_after",
    "imagenet_agreement",
    "feature_cosine",
    "steps",
    "train_seconds",
)
#: Measures :func:`summarise_cells` gives a mean and a std over seeds for.
SUMMARY_MEASURES: tuple[str, ...] = ("fc_after", "bal_after", "imagenet_agreement", "feature_cosine")


@dataclass(kw_only=True)
class AlignGridResult:
    """A grid of align runs: one row per cell and seed, plus what produced them.

    ``protocol`` is free text naming the data, splits, steps and metric, because a grid's numbers are
    only comparable with another grid's when those agree, and the report prints it next to the table.
    ``chance`` is 1 / number of classes of the forced choice (None when unknown). A row's ``run`` is
    its align run folder relative to the grid folder, or None for a cell without a run of its own
    (the untrained model, whose numbers are every run's ``before``). ``complete`` is False while the
    grid is still running (rows missing or without their "after" numbers).
    """

    KIND: ClassVar[str] = "align_grid"
    VERSION: ClassVar[int] = 1

    model_id: str | None = None
    #: the benchmark's manifest path
    benchmark: str | None = None
    benchmark_hash: str | None = None
    protocol: str = ""
    chance: float | None = None
    #: one dict per (cell, seed), keys :data:`CELL_KEYS`
    cells: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    complete: bool = False


def write_grid_result(folder: str | os.PathLike[str], result: AlignGridResult) -> Path:
    """Save ``result`` as ``folder/metrics.json`` (atomically), the file ``iqalens report`` reads."""
    return write_result(folder, result)


def cell_numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The measured keys of a grid row, read from one finished align run's ``metrics.json`` dict.

    One reader for every grid script, so that their rows (and the report) mean the same thing.
    """

    def get(*keys: str) -> Any:
        d: Any = metrics
        for k in keys:
            d = d.get(k) if isinstance(d, Mapping) else None
        return d

    return {
        "fc_before": get("before", "forced_choice_accuracy"),
        "fc_after": get("after", "forced_choice_accuracy"),
        "bal_before": get("before", "balanced_accuracy"),
        "bal_after": get("after", "balanced_accuracy"),
        "sim_before": get("before", "mean_similarity_true"),
        "sim_after": get("after", "mean_similarity_true"),
        "imagenet_agreement": get("drift", "imagenet_top1_agreement"),
        "feature_cosine": get("drift", "feature_cosine"),
        "steps": metrics.get("steps_run"),
        "train_seconds": metrics.get("train_seconds"),
    }


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or non-finite value (never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and population std of the numbers among ``values`` (None and NaN left out).

    Population std (divide by n), so that one seed gives 0 rather than an undefined sample std;
    (None, None) when no value is a number.
    """
    xs = [x for x in (_number(v) for v in values) if x is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def summarise_cells(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary per cell, in the order cells first appear: mean and std over its seeds.

    Each summary has ``cell``, ``train``, ``constraint`` (of its first row), ``n_seeds`` (rows of the
    cell), ``n_after`` (rows with a forced-choice "after" number: fewer than ``n_seeds`` while runs
    are missing), ``seeds`` and ``runs`` (per row), ``<measure>_mean`` / ``<measure>_std`` for each of
    :data:`SUMMARY_MEASURES` and ``fc_before_mean``. A mean is over the rows that have the number,
    None when none has it.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in cells:
        groups.setdefault(str(row.get("cell")), []).append(row)
    out = []
    for name, rows in groups.items():
        summary: dict[str, Any] = {
            "cell": name,
            "train": rows[0].get("train"),
            "constraint": rows[0].get("constraint"),
            "n_seeds": len(rows),
            "n_after": sum(_number(r.get("fc_after")) is not None for r in rows),
            "seeds": [r.get("seed") for r in rows],
            "runs": [r.get("run") for r in rows],
        }
        for key in SUMMARY_MEASURES:
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std(r.get(key) for r in rows)
        summary["fc_before_mean"] = mean_std(r.get("fc_before") for r in rows)[0]
        out.append(summary)
    return out
