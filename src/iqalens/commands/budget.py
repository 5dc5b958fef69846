"""``iqalens budget``: the label-budget protocol (LEAF vs labels-only) from the command line.

A thin wrapper over :func:`iqalens.leaf.label_budget.run_label_budget`: it picks the teacher in the store,
parses budgets, seeds and arms, and prints the SRCC table. The run folder holds ``config.json``,
``metrics.json``, ``rows.csv`` (one row per seed, budget and arm), ``summary.csv`` (mean and std over
seeds), ``table.md``, ``results.json`` and the curve ``budget_curve.png`` / ``.svg``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from iqalens.commands import (
    ARM_CHOICES,
    CALIBRATION_CHOICES,
    add_pooling_argument,
    student_feature_settings,
)
from iqalens.errors import InvalidInputError

if TYPE_CHECKING:
    from iqalens.leaf.head import HeadConfig

#: What an interrupted run leaves behind.
INTERRUPTED = {
    "budget": "features computed so far stay in the feature cache; re-running the same command reuses them"
}
_DEFAULT_BUDGETS = "0,1%,5%,10%,30%,100%"


def _items(values: list[str]) -> list[str]:
    """Accept both ``0,1%,5%`` and ``0 1% 5%`` (and mixtures)."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``iqalens budget``."""
    ARMS, METHODS = ARM_CHOICES, CALIBRATION_CHOICES  # noqa: N806 (torch-free copies, see commands)

    p = sub.add_parser(
        "budget",
        help="LEAF label-budget protocol: SRCC vs number of labels, LEAF vs labels-only",
        description="For every budget (count, P%% or fraction of the manifest's train split) and seed: "
        "LEAF (a) distils a head from the teacher's judgments and fits a monotone map on the budget's "
        "labels, LEAF (b) fine-tunes the distilled head on them with the distillation loss as a "
        "regulariser, and labels-only trains the same head on the labels alone; all are scored on the "
        "content-disjoint test split. Heads train on cached frozen EfficientNet-Lite0 features (a CPU "
        "protocol; --pooling multiscale adds earlier stages' mean and std). "
        "Writes the table (summary.csv, rows.csv, table.md) and the SRCC curve (PNG, SVG).",
    )
    p.add_argument("--store", required=True, help="judgments store written by 'iqalens teach'")
    p.add_argument("--manifest", required=True, help="manifest with MOS and train/test splits")
    p.add_argument("--output", "-o", required=True, help="run folder")
    p.add_argument("--teacher-id", help="teacher to use (needed if the store holds several)")
    p.add_argument("--prompt-version", help="prompt version (needed if the store holds several)")
    p.add_argument(
        "--budgets",
        nargs="+",
        default=[_DEFAULT_BUDGETS],
        help="label budgets: counts, P%% or fractions, comma/space-separated (default "
        + _DEFAULT_BUDGETS.replace("%", "%%")
        + ")",
    )
    p.add_argument("--seeds", nargs="+", default=["0,1,2"], help="seeds (default 0,1,2)")
    p.add_argument(
        "--arms", nargs="+", default=[",".join(ARMS)], help=f"arms to run (default {','.join(ARMS)})"
    )
    p.add_argument("--calibration", choices=METHODS, default="logistic4", help="monotone map of LEAF (a)")
    p.add_argument("--stratify", action="store_true", help="draw budgets stratified by the teacher score")
    p.add_argument(
        "--l2",
        default="auto",
        help="head weight penalty: a number, or 'auto' (default: chosen per seed without labels, by how "
        "well distilled heads rank held-out train photos as the teacher does)",
    )
    p.add_argument(
        "--solver",
        choices=("ridge", "adamw"),
        default="ridge",
        help="how heads are fitted: 'ridge' (default: closed form; the label arms' penalty is chosen by "
        "grouped cross-validation on the budget's labels) or 'adamw' (step-wise, the earlier protocol)",
    )
    add_pooling_argument(p)
    p.add_argument(
        "--features",
        help="feature cache folder (default RUN/features; share it between runs of the same --pooling: "
        "a folder of another setting is refused)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_budget)


def _budget(text: str) -> int | float | str:
    """``"5%"`` and ``"50"`` stay strings (the protocol parses them); ``"0.1"`` becomes a fraction."""
    return float(text) if "." in text and not text.endswith("%") else text


def head_config(l2: str, solver: str = "adamw") -> HeadConfig:
    """The heads' settings for ``--l2``: ``auto`` chooses l2 per seed without labels, a number fixes it
    (> 0 for the ridge solver, whose candidates are :data:`RIDGE_L2_CANDIDATES`)."""
    from iqalens.leaf.head import HeadConfig
    from iqalens.leaf.label_budget import DEFAULT_L2_CANDIDATES, RIDGE_L2_CANDIDATES

    if l2 == "auto":
        if solver == "ridge":
            return HeadConfig(solver="ridge", l2=1.0, l2_candidates=RIDGE_L2_CANDIDATES)
        return HeadConfig(l2_candidates=DEFAULT_L2_CANDIDATES)
    try:
        return HeadConfig(l2=float(l2), solver=solver)
    except ValueError:
        raise InvalidInputError(
            f"--l2 must be 'auto' or a number >= 0 (> 0 with --solver ridge), got {l2!r}"
        ) from None


def _cmd_budget(args: argparse.Namespace) -> int:
    from iqalens.leaf.calibration import parse_budget
    from iqalens.leaf.label_budget import BudgetConfig, choose_teacher, run_label_budget, table_markdown
    from iqalens.leaf.student import StudentConfig
    from iqalens.leaf.targets import TeacherChoiceError

    budgets = tuple(_budget(b) for b in _items(args.budgets))
    for b in budgets:  # reject malformed budgets before any work (the pool size is not known yet)
        parse_budget(b, 10**9)
    try:
        seeds = tuple(int(s) for s in _items(args.seeds))
    except ValueError:
        raise InvalidInputError(f"--seeds must be integers, got {' '.join(args.seeds)!r}") from None
    config = BudgetConfig(
        head=head_config(args.l2, args.solver),
        budgets=budgets,
        seeds=seeds,
        arms=tuple(_items(args.arms)),
        calibration=args.calibration,
        stratify=args.stratify,
    )
    try:
        teacher_id, prompt_version = choose_teacher(args.store, args.teacher_id, args.prompt_version)
    except TeacherChoiceError as exc:
        raise TeacherChoiceError(f"{exc} (choose with --teacher-id/--prompt-version)") from None
    result = run_label_budget(
        args.manifest,
        args.store,
        teacher_id,
        prompt_version,
        args.output,
        config,
        student_config=StudentConfig(**student_feature_settings(args)),
        progress=not args.quiet,
        feature_dir=args.features,
        command="budget",
    )
    d = result["data"]
    print(
        f"label budgets -> {args.output} ({teacher_id} / {prompt_version}; train {d['train_images']} "
        f"images of {d['train_groups']} groups, test {d['test_images']} of {d['test_groups']})"
    )
    print(table_markdown(result["summary"], ("srcc",)), end="")
    print(f"curve: {args.output}/budget_curve.png, table: {args.output}/summary.csv")
    return 0
