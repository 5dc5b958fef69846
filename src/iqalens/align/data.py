"""Training data of ``iqalens align``: which benchmark rows train and validate, and their inputs.

**Rows.** Labelled rows (one of the 8 classes) of the ``train`` split train and those of ``val``
validate; ``test`` rows are never touched (the before/after report measures on them). Rows without
a split go to val when a hash of their reference falls below ``val_fraction`` (all distortions of one
photo together), so validation never sees the content it trains on. ``max_train_images`` /
``max_val_images`` keep seeded random subsets.

**Inputs, once per image.** Decoding a 512x384 PNG and, above all, a vision-encoder pass are most of
the cost of a step, and the benchmark images do not change during a run. :class:`InputBank`
therefore computes each image's prepared inputs once (and, with a frozen encoder, the encoder's
outputs instead: training then starts at the projector), plus the original encoder's features when
the feature-drift constraint needs them; it keeps them in memory and in one file of the cache folder,
keyed by model checkpoint and benchmark manifest, so later runs on the same base model (the whole
experiment grid) reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from iqalens.align.base import AlignableModel
from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_replace
from iqalens.images import load_rgb
from iqalens.taxonomy import CLASSES
from iqalens.training import unit_hash

#: The answer words of ``target="quality"`` runs, worst to best: an image's MOS, cut into five equal
#: bins of its scale, picks one.
QUALITY_WORDS: tuple[str, ...] = (
    "bad quality",
    "poor quality",
    "fair quality",
    "good quality",
    "excellent quality",
)

#: Bump when the layout of the cached inputs changes.
BANK_VERSION = 3
REFERENCE = "_reference_features"


@dataclass
class Rows:
    """Images of one split: cache keys (manifest paths), absolute paths, references, class indices."""

    keys: list[str]
    paths: list[Path]
    references: list[str]
    labels: np.ndarray
    names: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: Sequence[int]) -> Rows:
        idx = list(index)
        return Rows(
            [self.keys[i] for i in idx],
            [self.paths[i] for i in idx],
            [self.references[i] for i in idx],
            self.labels[idx],
            self.names,
        )

    def class_counts(self) -> dict[str, int]:
        return {c: int((self.labels == k).sum()) for k, c in enumerate(self.names)}


def select_rows(
    manifest_path: str | os.PathLike[str],
    *,
    max_train: int = 0,
    max_val: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    salt: str = "iqalens-val",
    target: str = "class",
) -> tuple[Rows, Rows]:
    """(train, val) rows of a benchmark manifest; see the module docstring for the rules.

    ``target`` "quality" keeps the rows with a MOS and labels them with their quality level
    (:data:`QUALITY_WORDS`) instead of their perception class.
    """
    manifest, _ = read_manifest(manifest_path)
    parts: dict[str, list[Any]] = {"train": [], "val": []}
    for row in manifest.rows:
        if row.split == "test" or label_of(row, target) is None:
            continue
        split = row.split
        if split not in ("train", "val"):
            split = "val" if unit_hash(salt + (row.reference or row.path)) < val_fraction else "train"
        parts[split].append(row)
    if not parts["train"]:
        raise InvalidInputError(
            f"{manifest_path}: no labelled rows to train on (split 'train' or without a split)"
        )

    def rows_of(items: list[Any], cap: int, stream: int) -> Rows:
        if cap and len(items) > cap:
            keep = np.sort(np.random.default_rng([seed, stream]).permutation(len(items))[:cap])
            items = [items[i] for i in keep]
        return Rows(
            [r.path for r in items],
            [manifest.resolve(r) for r in items],
            [r.reference for r in items],
            np.asarray([label_of(r, target) for r in items], dtype=np.int64),
            QUALITY_WORDS if target == "quality" else CLASSES,
        )

    train, val = rows_of(parts["train"], max_train, 11), rows_of(parts["val"], max_val, 12)
    if not len(val):
        warnings.warn(
            "the benchmark has no validation rows: no early stopping, the last weights are kept", stacklevel=2
        )
    return train, val


def label_of(row: Any, target: str) -> int | None:
    """A row's training label: its perception class index, or (``quality``) its MOS level 0..4."""
    if target == "quality":
        if row.mos_scale is None or not np.isfinite(row.mos):
            return None
        lo, hi = row.mos_scale.low, row.mos_scale.high
        return int(min(len(QUALITY_WORDS) - 1, max(0.0, (row.mos - lo) / (hi - lo) * len(QUALITY_WORDS))))
    return CLASSES.index(row.perception_class) if row.perception_class in CLASSES else None


def bank_file(
    cache_dir: str | os.PathLike[str], model_id: str, checkpoint_id: str, manifest_hash: str, kind: str
) -> Path:
    """Where the inputs of one (model checkpoint, benchmark, kind) live in the cache folder."""
    payload = json.dumps(
        {
            "v": BANK_VERSION,
            "model": model_id,
            "ckpt": checkpoint_id,
            "manifest": manifest_hash,
            "kind": kind,
        },
        sort_keys=True,
    )
    slug = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in model_id)[:60] or "model"
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return Path(cache_dir) / "align-inputs" / f"{slug}-{kind}-{digest}.pt"


class InputBank:
    """Per-image model inputs (``kind`` "pixels": :meth:`prepare` output; "encoded": the frozen encoder's
    outputs) and, on request, the original encoder's features, computed once and kept.

    ``file``: where to keep them between runs (None: memory only). Entries are keyed by the manifest
    path of the image; the file's name carries the model checkpoint and manifest hash.
    """

    def __init__(
        self, model: AlignableModel, kind: str, file: Path | None = None, *, trunk_sites: int = 0
    ) -> None:
        if kind not in ("pixels", "encoded", "trunk"):
            raise InvalidInputError(f"kind must be 'pixels', 'encoded' or 'trunk', got {kind!r}")
        if kind == "encoded" and not hasattr(model, "encode_frozen"):
            raise InvalidInputError(f"{model.model_id} cannot cache encoder outputs (no encode_frozen)")
        if kind == "trunk" and (trunk_sites < 1 or not hasattr(model, "encode_trunk")):
            raise InvalidInputError(
                f"{model.model_id} cannot cache an encoder trunk (encoder_frozen_sites is for the mini model)"
            )
        self.model, self.kind, self.file, self.trunk_sites = model, kind, file, trunk_sites
        self.entries: dict[str, dict[str, torch.Tensor]] = {}
        self._dirty = False
        if file is not None and file.is_file():
            self.load()

    def load(self) -> None:
        """Read the kept entries (an unreadable file is ignored and rewritten later)."""
        if self.file is None or not self.file.is_file():
            return
        try:
            data = torch.load(self.file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return
        if data.get("version") == BANK_VERSION and data.get("kind") == self.kind:
            self.entries.update(data["entries"])

    def save(self) -> None:
        if self.file is None or not self._dirty:
            return
        self.file.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": BANK_VERSION, "kind": self.kind, "entries": self.entries}
        atomic_replace(self.file, lambda tmp: torch.save(payload, tmp))
        self._dirty = False

    def missing(self, rows: Rows, reference: bool) -> list[int]:
        need = [REFERENCE] if reference else []
        return [
            i
            for i, k in enumerate(rows.keys)
            if k not in self.entries or any(n not in self.entries[k] for n in need)
        ]

    @torch.no_grad()
    def ensure(
        self, rows: Rows, *, reference: bool = False, batch_size: int = 16, progress: bool = True
    ) -> None:
        """Compute the entries (and reference features) ``rows`` lack; keep them in the file.

        Images are prepared (and encoded) in batches; each entry is one image's slice of every
        tensor (``tensor[i]``), re-batched by :meth:`batch`.
        """
        todo = self.missing(rows, reference)
        if not todo:
            return
        bar = tqdm(total=len(todo), desc="align inputs", unit="img", disable=not progress, leave=False)
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                inputs = self.model.prepare([load_rgb(rows.paths[i]) for i in chunk])
                feats = _encoder_features(self.model, inputs).detach().float().cpu() if reference else None
                if self.kind == "encoded":
                    inputs = self.model.encode_frozen(inputs)  # type: ignore[attr-defined]
                elif self.kind == "trunk":
                    inputs = self.model.encode_trunk(inputs, self.trunk_sites)  # type: ignore[attr-defined]
                for j, i in enumerate(chunk):
                    entry = {k: v[j].detach().cpu().clone() for k, v in inputs.items()}
                    if feats is not None:
                        entry[REFERENCE] = feats[j].clone()
                    self.entries[rows.keys[i]] = entry
                self._dirty = True
                bar.update(len(chunk))
        finally:
            bar.close()
        self.save()

    def batch(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The model inputs of ``keys`` as one batch: the model's ``collate`` when it has one (entries
        of different widths, e.g. token rows), else the entries' tensors stacked."""
        entries = [{k: v for k, v in self.entries[key].items() if k != REFERENCE} for key in keys]
        collate = getattr(self.model, "collate", None) if self.kind == "pixels" else None
        if collate is not None:
            return dict(collate(entries))
        return {name: torch.stack([e[name] for e in entries]) for name in entries[0]}

    def reference(self, keys: Sequence[str]) -> torch.Tensor:
        """[B, D_v] original-encoder features of ``keys``."""
        return torch.stack([self.entries[k][REFERENCE] for k in keys])


def _encoder_features(model: AlignableModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Vision-encoder features of prepared inputs, through ``encoder_features`` when the model has it."""
    if hasattr(model, "encoder_features"):
        return model.encoder_features(inputs)
    n = len(next(iter(inputs.values())))
    return model.forward_align(
        inputs, torch.zeros(n, dtype=torch.long), list(CLASSES)
    ).encoder_features.detach()
