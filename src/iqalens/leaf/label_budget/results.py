"""The label-budget experiment's outputs: the table, the CSV and JSON files, the curve."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqalens.files import atomic_replace, atomic_write_text
from iqalens.leaf.label_budget.config import BudgetConfig
from iqalens.leaf.names import ARM_TITLES
from iqalens.leaf.results import BudgetResult
from iqalens.results import write_result
from iqalens.runs import write_json


def _cell(entry: dict[str, Any], metric: str) -> str:
    if entry["status"] == "undefined":
        return "undefined"
    return f"{entry[metric + '_mean']:.3f} ± {entry[metric + '_std']:.3f}"


def table_markdown(summary: Sequence[dict[str, Any]], metrics: Sequence[str] = ("srcc", "plcc")) -> str:
    """One row per budget, one column per (metric, arm): ``mean ± std`` over seeds."""
    budgets = list(dict.fromkeys(e["budget"] for e in summary))
    arms = list(dict.fromkeys(e["arm"] for e in summary))
    head = ["budget", "labels"] + [f"{m.upper()} {ARM_TITLES[a]}" for m in metrics for a in arms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in budgets:
        by_arm = {e["arm"]: e for e in summary if e["budget"] == b}
        n = next(iter(by_arm.values()))["n_labels"]
        cells = [b, str(n)] + [_cell(by_arm[a], m) for m in metrics for a in arms]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_replace(path, write)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` of a protocol run: SRCC/PLCC/RMSE mean and std per budget and arm, data, timing."""
    table: dict[str, dict[str, Any]] = {}
    for e in result["summary"]:
        cell = {k: e[k] for k in e if k.endswith(("_mean", "_std"))} | {"n_seeds": e["n_seeds"]}
        table.setdefault(str(e["budget"]), {"n_labels": e["n_labels"]})[e["arm"]] = (
            {"status": "undefined"} if e["status"] == "undefined" else cell
        )
    return {"by_budget": table, "data": result.get("data", {}), "timing": result.get("timing", {})}


def write_results(
    out_dir: str | os.PathLike[str], result: dict[str, Any], config: BudgetConfig, plots: bool = True
) -> Path:
    """``results.json`` (config, data, rows, summary), ``rows.csv`` (one row per seed, budget and arm),
    ``summary.csv`` (mean and std over seeds), ``table.md``, ``metrics.json`` (:func:`headline`) and,
    with ``plots``, the SRCC curve ``budget_curve.png`` / ``.svg``
    (:func:`iqalens.leaf.label_budget.plot.save_budget_curve`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"config": config.to_dict(), **result})
    _write_csv(out / "rows.csv", result["rows"])
    _write_csv(out / "summary.csv", result["summary"])
    atomic_write_text(out / "table.md", table_markdown(result["summary"], ("srcc", "plcc", "rmse")))
    metrics = headline(result)
    if plots:
        from iqalens.leaf.label_budget.plot import save_budget_curve

        metrics["plots"] = [p.name for p in save_budget_curve(result["summary"], out)]
    write_result(out, BudgetResult(**metrics))
    return out
