"""Training helpers shared by the distillation loop (:mod:`iqalens.leaf.distill`) and the alignment
trainer (:mod:`iqalens.align.train`).

Both loops rest on the same decisions: randomness and the learning rate are functions of the step
only (so a resumed run ends with the same weights as an uninterrupted one), checkpoints are written
atomically, and data parallelism under ``torchrun`` is set up only when its environment says so.
The pieces that implement those decisions live here so both loops use one copy.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqalens.files import atomic_replace


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from a string (first 52 bits of its SHA-256)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16) / float(16**13)


def batch_stream(n: int, batch: int, step: int, seed: int, stream_id: int) -> np.ndarray:
    """Indices of step ``step`` in an endless sequence of seeded permutations of range(n)."""
    if n == 0 or batch == 0:
        return np.zeros(0, dtype=np.int64)
    pos = np.arange(step * batch, (step + 1) * batch)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(pos // n):
        perm = np.random.default_rng([seed, stream_id, int(epoch)]).permutation(n)
        mask = pos // n == epoch
        out[mask] = perm[pos[mask] % n]
    return out


def warmup_cosine_factor(step: int, max_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier of step ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -- distributed ----------------------------------------------------------------------------------


def init_distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world_size, initialised_here); initialises only under torchrun with world size > 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world <= 1 or not dist.is_available():
        return 0, 1, False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), True


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when there is one process)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_device(name: str) -> torch.device:
    """``name`` as a device; ``auto`` is this process's GPU (``LOCAL_RANK``) when there is one, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


# -- checkpoints ----------------------------------------------------------------------------------


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a
    truncated checkpoint."""
    atomic_replace(path, lambda tmp: torch.save(obj, tmp))
