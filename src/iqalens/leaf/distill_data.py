"""A teacher's judgments as distillation data: content-disjoint splits, cached images, crops, targets.

Why a module of its own: turning store records into training items - finding each image, keeping
every version of one photo on the same side of the train/val split, skipping what cannot be used
and counting why - and feeding images to the student (resized once, cropped and flipped by given
uniforms, or replaced by stored backbone features) is independent of how the student is optimised.
:mod:`iqalens.leaf.distill` explains the split rule and runs the training loop on this data.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqalens.errors import InvalidInputError
from iqalens.images import load_rgb
from iqalens.leaf.distill_config import DistillConfig
from iqalens.leaf.losses import PairTargets, PointTargets
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.student import Student
from iqalens.training import unit_hash

__all__ = [
    "ImageCache",
    "PairItem",
    "PointItem",
    "SplitData",
    "batch_targets",
    "content_groups",
    "load_splits",
    "train_crop",
]


@dataclass(frozen=True)
class PointItem:
    """One point judgment ready for training: the image (hash, resolved path) and its targets."""

    hash: str
    path: str
    probs: tuple[float, ...]
    expected: float
    reliability: float


@dataclass(frozen=True)
class PairItem:
    """One pair judgment ready for training: P(a better than b) and how much to trust it."""

    hash_a: str
    hash_b: str
    p: float
    reliability: float


@dataclass
class SplitData:
    """The point and pair items of one split (train or val)."""

    points: list[PointItem]
    pairs: list[PairItem]


def _manifest_index(manifest: str | None) -> dict[str, tuple[str, str]]:
    """Resolved image path -> (split, reference) from a manifest."""
    if manifest is None:
        return {}
    from iqalens.datasets.manifest import read_manifest

    m, _ = read_manifest(manifest, check_files=False)
    return {str(m.resolve(r)): (r.split, r.reference or r.path) for r in m.rows}


def content_groups(points: list[PointItem], manifest: str | None) -> list[str]:
    """The content group of each point: its manifest row's reference (every version of one photo
    together), else its own content hash (each image a group of its own)."""
    index = _manifest_index(manifest)
    return [index.get(p.path, ("", p.hash))[1] for p in points]


def load_splits(
    store_path: str | os.PathLike[str], teacher_id: str, prompt_version: str, config: DistillConfig
) -> tuple[SplitData, SplitData, dict[str, str], dict[str, int]]:
    """Train and val judgments, the hash -> image path map, and counts of what was skipped and why."""
    with JudgmentStore(store_path, create=False) as store:
        point_records = store.points(teacher_id, prompt_version)
        pair_records = store.pairs(teacher_id, prompt_version)
    if not point_records and not pair_records:
        raise InvalidInputError(
            f"{store_path}: no judgments for teacher {teacher_id!r}, prompt {prompt_version!r}"
        )

    paths: dict[str, str] = {}
    for r in point_records:
        if r.path:
            paths.setdefault(r.hash, r.path)
    for r in pair_records:
        if r.path_a:
            paths.setdefault(r.hash_a, r.path_a)
        if r.path_b:
            paths.setdefault(r.hash_b, r.path_b)
    missing = {h for h, p in paths.items() if not Path(p).is_file()}
    usable = {h: str(Path(p).resolve()) for h, p in paths.items() if h not in missing}

    index = _manifest_index(config.manifest)

    def split_of(h: str) -> str:
        split, group = index.get(usable[h], ("", h))
        if split in ("train", "val", "test"):
            return split
        return "val" if unit_hash(config.split_salt + group) < config.val_fraction else "train"

    split = {h: split_of(h) for h in usable}
    skipped = {"points_no_image": 0, "pairs_no_image": 0, "pairs_across_splits": 0, "test_items": 0}
    out = {"train": SplitData([], []), "val": SplitData([], [])}
    for r in point_records:
        if r.hash not in usable:
            skipped["points_no_image"] += 1
            continue
        s = split[r.hash]
        if s == "test":
            skipped["test_items"] += 1
            continue
        j = r.judgment
        out[s].points.append(PointItem(r.hash, usable[r.hash], tuple(j.probs), j.expected, j.reliability))
    for r in pair_records:
        if r.hash_a not in usable or r.hash_b not in usable:
            skipped["pairs_no_image"] += 1
            continue
        sa, sb = split[r.hash_a], split[r.hash_b]
        if "test" in (sa, sb):
            skipped["test_items"] += 1
            continue
        if sa != sb:
            skipped["pairs_across_splits"] += 1
            continue
        j = r.judgment
        out[sa].pairs.append(PairItem(r.hash_a, r.hash_b, j.p_first_better, j.reliability))
    if missing:
        warnings.warn(
            f"{len(missing)} image(s) of the store were not found on disk; their judgments are skipped "
            f"(e.g. {paths[sorted(missing)[0]]})",
            stacklevel=2,
        )
    return out["train"], out["val"], usable, skipped


class ImageCache:
    """Resized (shorter side) uint8 images by content hash, loaded on first use; with
    ``store_features`` and a frozen backbone also their centre crops' backbone features."""

    def __init__(
        self, student: Student, paths: dict[str, str], keep: bool = True, store_features: bool = False
    ) -> None:
        self.student, self.paths, self.keep = student, paths, keep
        self.store_features = store_features and student.backbone_frozen
        self._data: dict[str, np.ndarray] = {}
        self._features: dict[str, torch.Tensor] = {}

    def __getitem__(self, h: str) -> np.ndarray:
        img = self._data.get(h)
        if img is None:
            img = self.student.prepare(load_rgb(self.paths[h]))
            if self.keep:
                self._data[h] = img
        return img

    def features(self, hashes: list[str], device: torch.device, batch_size: int = 64) -> torch.Tensor:
        """[len(hashes), D] backbone features of each image's centre crop, each computed once.

        Only valid for a frozen backbone (eval-mode batch norms, fixed weights), where a centre
        crop's features never change during training; the head then trains on them directly.
        """
        if not self.student.backbone_frozen:
            raise RuntimeError("stored backbone features need a frozen backbone (Student.freeze_backbone)")
        missing = [h for h in dict.fromkeys(hashes) if h not in self._features]
        size = self.student.config.image_size
        zero = np.zeros(3)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            crops = np.stack([train_crop(self[h], size, zero, False) for h in chunk])
            with torch.no_grad():
                feats = self.student.backbone(self.student.to_tensor(crops).to(device)).cpu()
            self._features.update(zip(chunk, feats, strict=True))
        return torch.stack([self._features[h] for h in hashes]).to(device)


def train_crop(img: np.ndarray, size: int, u: np.ndarray, augment: bool) -> np.ndarray:
    """A ``size`` square of ``img``: placed and flipped by the uniforms ``u`` (3 values) with
    ``augment``, else the centre crop."""
    h, w = img.shape[:2]
    if augment:
        top, left = int(u[0] * (h - size + 1)), int(u[1] * (w - size + 1))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    crop = img[top : top + size, left : left + size]
    return crop[:, ::-1] if augment and u[2] < 0.5 else crop


def batch_targets(
    points: list[PointItem], pairs: list[PairItem], device: torch.device
) -> tuple[PointTargets, PairTargets]:
    """The loss targets of a batch's point and pair items, as float32 tensors on ``device``."""

    def t(values: list[Any]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    pt = PointTargets(
        probs=t([p.probs for p in points]).reshape(len(points), 5),
        expected=t([p.expected for p in points]),
        reliability=t([p.reliability for p in points]),
    )
    return pt, PairTargets(p=t([q.p for q in pairs]), reliability=t([q.reliability for q in pairs]))
