"""What the label-budget experiment compares: budgets, seeds, arms, maps, head settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from iqalens.errors import ConfigError, UnknownNameError
from iqalens.leaf.calibration import MIN_POINTS
from iqalens.leaf.head import HeadConfig
from iqalens.leaf.names import ARMS
from iqalens.leaf.ridge_head import LABEL_L2_GRID

DEFAULT_BUDGETS: tuple[str, ...] = ("0%", "1%", "5%", "10%", "30%", "100%")

#: Head l2 strengths the default protocol chooses from, per seed and without labels
#: (:func:`~iqalens.leaf.label_budget.run.select_l2`).
DEFAULT_L2_CANDIDATES: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: The same for the closed-form ridge head (mean-loss units on standardised features; must be > 0).
#: The label arms' cross-validation uses the same grid.
RIDGE_L2_CANDIDATES: tuple[float, ...] = LABEL_L2_GRID


@dataclass
class BudgetConfig:
    """What :func:`~iqalens.leaf.label_budget.run.run_protocol` compares (all saved with the results)."""

    budgets: tuple[int | float | str, ...] = DEFAULT_BUDGETS
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ARMS
    calibration: str = "logistic4"  # mode (a) map; "linear" when the budget is below its minimum
    label_free_method: str = "linear"
    stratify: bool = False  # draw budgets stratified by the teacher's expected score
    standardize: bool = True
    head: HeadConfig = field(default_factory=lambda: HeadConfig(l2_candidates=DEFAULT_L2_CANDIDATES))

    def __post_init__(self) -> None:
        if isinstance(self.head, dict):
            self.head = HeadConfig(**self.head)
        self.budgets = tuple(self.budgets)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.arms = tuple(self.arms)
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or not self.arms:
            raise UnknownNameError(f"arms must be among {', '.join(ARMS)}, got {list(self.arms)}")
        if not self.seeds or not self.budgets:
            raise ConfigError("need at least one budget and one seed")
        if self.calibration not in MIN_POINTS:
            raise UnknownNameError(
                f"unknown calibration {self.calibration!r}; known: {', '.join(MIN_POINTS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
