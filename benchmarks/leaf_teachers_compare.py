"""Three teachers side by side in the label-budget protocol: full-reference, classical, none.

Reads the ``results.json`` of two runs of ``benchmarks/label_budget.py`` on the same benchmark, the same
features and the same seeds, one per teacher, and writes one table (SRCC mean ± std over seeds on the
content-disjoint test split) to ``docs/leaf_fr_teacher.md``. "None" is the labels-only arm: the same
head trained on the budget's labels alone. It appears in both runs because each run chooses the head
penalty per seed from its own teacher (without labels); both are shown.

Usage: ``python benchmarks/leaf_teachers_compare.py --fr RUN_FR --classical RUN_CLASSICAL [--doc PATH]``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cell(entry: dict[str, Any] | None) -> str:
    if entry is None or entry.get("status") == "undefined" or not math.isfinite(entry["srcc_mean"]):
        return "undefined"
    return f"{entry['srcc_mean']:.3f} ± {entry['srcc_std']:.3f}"


def table(fr: dict[str, Any], classical: dict[str, Any]) -> list[str]:
    def by(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(str(e["budget"]), e["arm"]): e for e in result["summary"]}

    a, b = by(fr), by(classical)
    budgets = list(dict.fromkeys(str(e["budget"]) for e in fr["summary"]))
    head = [
        "budget",
        "labels",
        "FR: LEAF (a) distil + map",
        "FR: LEAF (b) distil + fine-tune",
        "classical: LEAF (a)",
        "classical: LEAF (b)",
        "none: labels only (FR run's l2)",
        "none: labels only (classical run's l2)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget in budgets:
        n = a[(budget, "leaf")]["n_labels"]
        cells = [
            cell(a.get((budget, "leaf"))),
            cell(a.get((budget, "leaf_ft"))),
            cell(b.get((budget, "leaf"))),
            cell(b.get((budget, "leaf_ft"))),
            cell(a.get((budget, "labels_only"))),
            cell(b.get((budget, "labels_only"))),
        ]
        lines.append(f"| {budget} | {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fr", type=Path, required=True, help="run folder of the FR-teacher protocol")
    parser.add_argument("--classical", type=Path, required=True, help="run folder of the classical one")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "leaf_fr_teacher_table.md")
    args = parser.parse_args()
    fr = json.loads((args.fr / "results.json").read_text())
    classical = json.loads((args.classical / "results.json").read_text())
    d_fr, d_cl = fr["data"], classical["data"]
    lines = [
        "| teacher | its own SRCC on the test split |",
        "|---|---|",
        f"| FR (`fr:gmsd+vsi+vif`) | {d_fr.get('teacher_srcc_test', float('nan')):.3f} |",
        f"| classical (`classical:niqe+brisque`) | {d_cl.get('teacher_srcc_test', float('nan')):.3f} |",
        "",
        *table(fr, classical),
        "",
    ]
    args.doc.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
