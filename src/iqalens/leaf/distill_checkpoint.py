"""What a distillation checkpoint holds, how it is written, and when it may be resumed.

Why a module of its own: exact resume rests on two rules that are easy to break from inside a
training loop - a checkpoint holds the *whole* mutable state of a run (model, optimizer, early
stopping, history; everything else is a function of the seed and the step), and it is resumed only
under the settings it was written with (minus those that cannot change the result, and allowing for
checkpoints written before a setting existed). Keeping the file's contents and that comparison
here keeps ``checkpoint.pt`` files of older runs loading. The loop is :mod:`iqalens.leaf.distill`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iqalens.errors import InvalidInputError
from iqalens.leaf.distill_config import DistillConfig
from iqalens.training import atomic_torch_save

__all__ = [
    "CHECKPOINT_FILE",
    "RESUME_FREE",
    "TrainState",
    "comparable_config",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
#: Fields that may differ between an interrupted run and its resumption.
RESUME_FREE = ("progress", "device", "cache_images", "cache_features")


@dataclass
class TrainState:
    """The mutable state of a run besides the weights and the optimizer (steps completed, early stopping)."""

    step: int = 0
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    done: bool = False


def _legacy_compatible(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's comparable config as written today: a checkpoint from before the ``pooling``
    field used the last-map pooling, and resume-free keys it may hold are dropped."""
    saved = {k: v for k, v in saved.items() if k not in RESUME_FREE}
    if isinstance(saved.get("student"), dict):
        saved["student"] = {"pooling": "last", **saved["student"]}
    return saved


def comparable_config(config: DistillConfig) -> dict[str, Any]:
    """The settings a checkpoint records and a resumption must match."""
    d = config.to_dict()
    for k in RESUME_FREE:
        d.pop(k, None)
    # Compared after the student is built (mean/std filled in); the HF config dict comes from the model
    # folder and names the transformers version, which may be upgraded between the two runs.
    d["student"] = {k: v for k, v in d["student"].items() if k != "hf_config"}
    return d


def save_checkpoint(
    path: Path,
    config: DistillConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
) -> None:
    """Write the run's state to ``path`` atomically (temporary file, then rename)."""
    atomic_torch_save(
        {
            "config": comparable_config(config),
            "step": state.step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "best_loss": state.best_loss,
            "best_step": state.best_step,
            "best_state": state.best_state,
            "bad_evals": state.bad_evals,
            "history": state.history,
            "done": state.done,
        },
        path,
    )


def load_checkpoint(
    path: Path,
    config: DistillConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> TrainState:
    """Restore ``model`` and ``optimizer`` from ``path`` and return the rest of the state.

    ``ValueError`` if the checkpoint was written with other settings than ``config``.
    """
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if _legacy_compatible(ckpt["config"]) != comparable_config(config):
        raise InvalidInputError(
            f"{path} was written with other settings; use a new output folder or delete the checkpoint"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return TrainState(
        step=ckpt["step"],
        best_loss=ckpt["best_loss"],
        best_step=ckpt["best_step"],
        bad_evals=ckpt["bad_evals"],
        best_state=ckpt["best_state"],
        history=ckpt["history"],
        done=ckpt["done"],
    )
