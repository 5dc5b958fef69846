"""Pooled features of a frozen student backbone, computed once per image and cached on disk.

Training only a head on stored features makes dozens of trainings fit on two CPU cores: the label-budget
experiment (:mod:`iqalens.leaf.label_budget`) and the head fine-tune of calibration mode (b)
(:mod:`iqalens.leaf.calibration.finetune`) both work this way. A feature is the student's pooled
backbone output (``StudentConfig.pooling``: the last map's mean, or with ``"multiscale"`` also mean and
std of earlier stages) in eval mode, averaged over its test crops; :func:`cache_features` stores it as
``<content hash>.npy`` with ``features.json`` recording the backbone setting (one folder per setting).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from iqalens.errors import InvalidInputError
from iqalens.files import atomic_replace, content_hash
from iqalens.images import load_rgb
from iqalens.leaf.pipeline import default_workers, torch_threads, usable_cores
from iqalens.leaf.student import Student, StudentConfig, default_normalisation
from iqalens.runs import write_json

FEATURES_META = "features.json"


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    atomic_replace(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def backbone_features(
    student: Student,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 32,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """``(indices, features)`` per batch of ``paths``: the student's pooled backbone feature (eval mode,
    the mean over its test crops), float32; ``forward`` replaces the backbone (e.g. the part of it
    below a block that will be fine-tuned).

    Files are decoded by a thread pool one batch ahead of the network (decoding releases the GIL), so
    decoding and the forward pass overlap; the numbers are those of a sequential loop.
    """

    def crops_of(path: str | os.PathLike[str]) -> np.ndarray:
        return student.test_crops(student.prepare(load_rgb(path)))

    chunks = [list(range(s, min(s + batch_size, len(paths)))) for s in range(0, len(paths), batch_size)]
    was_training = student.training
    student.eval()
    # Half the usual decoders, and torch keeps every core: decoding a batch ahead takes a fraction of
    # the network's time, and on 2 cores the usual split (2 decoders, 1 torch thread) ran the network on
    # one core (measured at a 384 crop: 3.1 img/s vs 5.1 img/s with 1 decoder and 2 torch threads).
    workers = max(1, default_workers() // 2)
    try:
        with torch.no_grad(), torch_threads(usable_cores()), ThreadPoolExecutor(workers) as pool:
            upcoming = [pool.submit(crops_of, paths[i]) for i in chunks[0]] if chunks else []
            for k, chunk in enumerate(chunks):
                current = upcoming
                if k + 1 < len(chunks):
                    upcoming = [pool.submit(crops_of, paths[i]) for i in chunks[k + 1]]
                crops = [f.result() for f in current]
                owner = np.repeat(np.arange(len(chunk)), [len(c) for c in crops])
                x = student.to_tensor(np.concatenate(crops)).to(next(student.parameters()).device)
                feats = (forward or student.backbone)(x).float().cpu().numpy()
                yield (
                    chunk,
                    np.stack([feats[owner == j].mean(axis=0) for j in range(len(chunk))]).astype(np.float32),
                )
    finally:
        student.train(was_training)


def feature_setting(config: StudentConfig) -> dict[str, Any]:
    """What ``features.json`` records: every student setting that changes a cached feature (all but
    the head's dropout), default normalisation filled in, as JSON values (tuples become lists, so a
    setting compares equal to the file it was written to)."""
    student = config.to_dict()
    student.pop("dropout", None)
    if student["mean"] is None or student["std"] is None:
        student["mean"], student["std"] = default_normalisation(config)
    if config.quality_stats:  # the statistics are code, not weights: their version keys the cache
        from iqalens.leaf.quality_stats import STATISTICS_VERSION

        student["quality_stats"] = STATISTICS_VERSION
    return json.loads(json.dumps({"student": student, "crop": "test crops, mean"}))


def same_feature_setting(recorded: dict[str, Any], config: StudentConfig) -> bool:
    """Whether a folder's ``features.json`` describes the features ``config`` would compute.

    Checked on every call, also when every feature is already cached: reusing a folder of another
    setting (e.g. ``pooling``) would otherwise silently return features of the wrong kind and size.
    Files written before ``pooling`` existed hold pooling ``"last"``, before ``quality_stats`` none.
    An HF config dict is filled in from the model folder when a model is built, so a request that
    leaves it unset does not compare it.
    """
    now = feature_setting(config)
    was = {"pooling": "last", "quality_stats": False, **recorded.get("student", {})}
    keys = [k for k, v in now["student"].items() if not (k == "hf_config" and v is None)]
    return recorded.get("crop") == now["crop"] and all(was.get(k) == now["student"][k] for k in keys)


def cache_features(
    paths: Sequence[str | os.PathLike[str]],
    folder: str | os.PathLike[str],
    student_config: StudentConfig | None = None,
    batch_size: int = 32,
    hashes: Sequence[str] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Pooled features of the frozen student backbone (eval mode, test crops averaged), N x D float32.

    Each image's feature is stored once as ``folder/<content hash>.npy`` (atomically), so a re-run or an
    interrupted run recomputes only what is missing; ``folder/features.json`` records the backbone
    settings (:func:`feature_setting`, ``pooling`` included) and a folder written with other settings is
    refused (:func:`same_feature_setting`), whether or not anything is left to compute.
    """
    cfg = student_config or StudentConfig()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(hashes) if hashes is not None else [content_hash(p) for p in paths]
    if len(keys) != len(paths):
        raise InvalidInputError("need one hash per path")
    meta_file = out / FEATURES_META
    if meta_file.is_file() and not same_feature_setting(json.loads(meta_file.read_text()), cfg):
        raise InvalidInputError(f"{out} holds features of another backbone setting; use a new folder")
    todo = [i for i, h in enumerate(keys) if not (out / f"{h}.npy").is_file()]
    student: Student | None = None
    if todo:
        torch.manual_seed(0)  # the (unused) head's initialisation; the backbone is pretrained
        student = Student(copy.deepcopy(cfg)).eval()
    if not meta_file.is_file():
        write_json(meta_file, feature_setting(student.config if student else cfg))
    bar = tqdm(total=len(todo), desc="features", unit="img", disable=not progress or not todo, leave=False)
    if student is not None:
        for chunk, feats in backbone_features(student, [paths[i] for i in todo], batch_size):
            for j, feat in zip(chunk, feats, strict=True):
                _atomic_npy(out / f"{keys[todo[j]]}.npy", feat)
            bar.update(len(chunk))
    bar.close()
    return np.stack([np.load(out / f"{h}.npy") for h in keys]).astype(np.float32)
