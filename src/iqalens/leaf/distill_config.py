"""The settings of a distillation run (saved in its ``config.json`` and checkpoint).

Why a module of its own: the settings are read by every part of a distillation - the split and
image cache (:mod:`iqalens.leaf.distill_data`), the resume rule (:mod:`iqalens.leaf.distill_checkpoint`)
and the training loop (:mod:`iqalens.leaf.distill`) - so they sit below all three. What each choice
means is described in :mod:`iqalens.leaf.distill`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from iqalens.configs import dataclass_from_dict
from iqalens.errors import InvalidInputError
from iqalens.leaf.losses import LossConfig
from iqalens.leaf.names import TAIL_HEADS
from iqalens.leaf.student import StudentConfig

__all__ = ["DISTILL_SOLVERS", "DistillConfig"]

#: How the student is fitted: "adamw" (the training loop, any backbone setting) or "ridge" (the head
#: in closed form on stored features of a frozen backbone; :mod:`iqalens.leaf.distill_ridge`).
DISTILL_SOLVERS = ("adamw", "ridge")


@dataclass
class DistillConfig:
    """Settings of a distillation run (all saved in ``config.json``)."""

    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    max_steps: int = 2000
    point_batch: int = 32
    pair_batch: int = 16
    lr: float = 1e-3  # head
    backbone_lr: float = 2e-4  # pretrained layers move slower than the new head
    freeze_backbone: bool = False  # head-only training (fast on a CPU; backbone_lr is then unused)
    # With a frozen backbone and no augmentation every image's backbone features are fixed: compute
    # them once and train the head on the stored features (same result, far fewer backbone passes).
    cache_features: bool = True
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0
    checkpoint_every: int = 200
    eval_every: int = 100
    patience: int = 5
    val_fraction: float = 0.1
    split_salt: str = "iqalens-val"
    manifest: str | None = None  # optional manifest: split and reference (content group) per image
    augment: bool = True  # random crop position + horizontal flip in training
    cache_images: bool = True
    progress: bool = True
    device: str = "auto"
    solver: str = "adamw"
    # ridge only: the penalty (None = chosen by grouped cross-validation over the train + val photos,
    # by agreement with the teacher)
    # and where the backbone features are cached (None = RUN/features)
    l2: float | None = None
    feature_dir: str | None = None
    # ridge only: train the backbone's last resolution stage this many steps towards the teacher on
    # cached trunk outputs (:mod:`iqalens.leaf.tail_tune`), then refit the head; 0 = frozen backbone
    tail_steps: int = 0
    # ridge + tail_steps only: the score output keeps the linear head trained with the stage
    # ("trained") or a closed-form refit on the tuned features ("refit"); level logits are refitted
    tail_head: str = "trained"

    def __post_init__(self) -> None:
        if isinstance(self.student, dict):
            self.student = StudentConfig.from_dict(self.student)
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        for name in ("max_steps", "checkpoint_every", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.point_batch < 0 or self.pair_batch < 0 or self.point_batch + self.pair_batch == 0:
            raise InvalidInputError("point_batch and pair_batch must be >= 0 and not both 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidInputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        self._check_solver()

    def _check_solver(self) -> None:
        """The ridge solver's settings (l2, tail_steps) and what it needs of the rest."""
        if self.solver not in DISTILL_SOLVERS:
            raise InvalidInputError(
                f"solver must be one of {', '.join(DISTILL_SOLVERS)}, got {self.solver!r}"
            )
        if self.solver == "ridge" and (not self.freeze_backbone or self.augment):
            raise InvalidInputError(
                "the ridge solver fits the head on stored features: it needs freeze_backbone=True and "
                "augment=False (--freeze-backbone; augmentation would change the features every step)"
            )
        if self.l2 is not None and not self.l2 > 0:
            raise InvalidInputError(f"l2 must be > 0 (or None to choose it), got {self.l2}")
        if self.l2 is not None and self.solver != "ridge":
            raise InvalidInputError("l2 is the ridge solver's penalty; the adamw solver uses weight_decay")
        if self.tail_steps < 0:
            raise InvalidInputError(f"tail_steps must be >= 0, got {self.tail_steps}")
        if self.tail_head not in TAIL_HEADS:
            raise InvalidInputError(
                f"tail_head must be one of {', '.join(TAIL_HEADS)}, got {self.tail_head!r}"
            )
        if self.tail_steps and (self.solver != "ridge" or self.student.backbone != "efficientnet-lite0"):
            raise InvalidInputError(
                "tail_steps trains EfficientNet-Lite0's last stage from the ridge solution: it needs "
                "solver='ridge' and the efficientnet-lite0 backbone"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return dataclass_from_dict(cls, data, "distill")
