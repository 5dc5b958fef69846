"""The label-budget protocol: LEAF (distil, then calibrate) vs a student trained on the labels alone.

The question the LEAF paper asks is how many human labels a teacher saves. This module answers it on
any manifest with MOS (for the synthetic benchmark: the KADID-10k *proxy* MOS, always named as a proxy)
and a teacher's judgments in a :class:`~iqalens.leaf.store.JudgmentStore`.

**Data.** Images of the manifest's ``train`` split are the pool: all of them are *unlabelled* for the
teacher arm, and the label budget is drawn from them. Images of the ``test`` split are only scored.
``val`` rows (and rows without MOS) are not used. Train and test must be *content-disjoint*: no
content group (the manifest's ``reference``: every distorted version of one photo) may appear in both,
otherwise :class:`BudgetData` refuses (a distorted copy of a training photo is not new content).
:func:`split_by_group` makes such a split for data without one.

**Arms**, for every budget b (a count, ``"P%"`` or a fraction of the train pool, drawn by
:func:`iqalens.leaf.calibration.draw_budget` with the repetition's seed, optionally stratified by the
teacher's expected score) and every seed:

- ``leaf`` (calibration mode (a)): a head distilled from the teacher's point and pair judgments on the
  train pool (:class:`~iqalens.leaf.losses.JointLoss`, no labels), then a monotone map fitted on the b
  labelled images (:func:`iqalens.leaf.calibration.fit`, default ``logistic4``; a simpler ``linear``
  map when b is below what the method needs; b = 0 uses :func:`~iqalens.leaf.calibration.label_free`).
  A monotone map cannot change the ranking, so this arm's SRCC does not depend on b (except through
  ties of the isotonic map); PLCC and RMSE do.
- ``leaf_ft`` (calibration mode (b)): the distilled head fine-tuned on the b labelled images,
  ``L = mean_i (s_i - y_i)^2 + lambda * L_distill`` with ``y = (MOS - low) / (high - low)`` on the
  MOS scale's range and ``L_distill`` the joint distillation loss on the teacher's judgments of the
  train pool, kept as a regulariser; the prediction is ``low + s (high - low)``. By default the
  regulariser keeps the KL and pair terms but drops the score regression to the teacher's expected
  score (``LossConfig(w_reg=0)``), which would pull the same output towards the teacher's scale.
  At b = 0 there is nothing to fine-tune on: the row is the label-free map of ``leaf`` and says so.
- ``labels_only``: the same head (same architecture, initialisation, optimiser and number of steps),
  trained from scratch by regression of its score on ``y`` of the b labelled images alone; prediction
  ``low + s (high - low)``. **At b < 2 it is undefined** (nothing to regress on; one label fixes no
  direction): the protocol does not train it and reports the row with status ``undefined`` and NaN
  metrics, and :func:`train_labels_only` raises :class:`ValueError` if asked.

Each (budget, seed) shares one labelled subset between the arms (a paired comparison); the distilled
head depends only on the seed. Every head training adds ``l2 * sum(W^2)`` on the head's weights; with
``HeadConfig.l2_candidates`` (the default protocol's :data:`DEFAULT_L2_CANDIDATES`) ``l2`` is chosen per
seed *without labels* by :func:`select_l2` (how well a head distilled on three quarters of the train
photos ranks the held-out quarter as the teacher does) and shared by every arm of that seed.

Metrics on the test split: SRCC, PLCC and RMSE of the predicted MOS
(raw, no further fitting, so calibration quality shows in PLCC/RMSE). Summaries are mean and sample
standard deviation (ddof = 1) over seeds.

**Cached features - a CPU-budget protocol.** Both arms share the *frozen* backbone of the default
student (EfficientNet-Lite0, ImageNet weights, centre crop of the student's preprocessing) and train
only the head (dropout + ``Linear(d, 6)``, the :class:`~iqalens.leaf.student.Student` head layout:
output 0 the score, 1..5 the level logits) on its pooled features (``student_config.pooling``: the last
map's mean, or with ``"multiscale"`` also mean and std of earlier stages), computed once per image and
stored as ``<content hash>.npy`` (:func:`cache_features`; one folder per backbone setting). This makes
dozens of trainings fit on two CPU cores; it is *not* the paper's protocol, which fine-tunes the whole
student. Features are standardised with the mean and standard deviation of the train pool (no labels
involved), the same for every arm.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iqalens.datasets.manifest import MosScale, read_manifest
from iqalens.evaluation.metrics import plcc, srcc
from iqalens.files import atomic_replace, atomic_write_text, content_hash
from iqalens.images import load_rgb
from iqalens.leaf.calibration import MIN_POINTS, Calibrator, draw_budget, fit, label_free, parse_budget
from iqalens.leaf.losses import JointLoss, LossConfig, PairTargets, PointTargets
from iqalens.leaf.names import ARM_TITLES, ARMS
from iqalens.leaf.results import BudgetResult
from iqalens.leaf.scoring import default_workers, torch_threads, usable_cores
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.student import Student, StudentConfig, default_normalisation
from iqalens.results import write_result
from iqalens.runs import start_run, write_json

DEFAULT_BUDGETS: tuple[str, ...] = ("0%", "1%", "5%", "10%", "30%", "100%")
#: Head l2 strengths :func:`select_l2` chooses from in the default protocol (label-free, per seed).
DEFAULT_L2_CANDIDATES: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Fewest labels the labels-only arm trains on; below it the arm is undefined.
LABELS_ONLY_MIN = 2
FEATURES_META = "features.json"
HeadT = TypeVar("HeadT", bound=nn.Module)


# -- data -----------------------------------------------------------------------------------------


@dataclass
class BudgetData:
    """Everything the protocol needs, as arrays over N images (cached features, not pixels).

    ``teacher_*`` rows of images without a judgment are NaN (they are not distilled on);
    ``pairs`` holds index pairs (a, b) with the teacher's P(a better) in ``pair_p``.
    """

    features: np.ndarray  # N x D
    mos: np.ndarray  # N (NaN allowed outside the train/test splits)
    groups: np.ndarray  # N content groups (str)
    split: np.ndarray  # N: "train", "test" or anything else (ignored)
    mos_range: tuple[float, float]
    teacher_probs: np.ndarray  # N x 5
    teacher_expected: np.ndarray  # N
    teacher_reliability: np.ndarray  # N
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    pair_p: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_reliability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        n = self.features.shape[0]
        self.mos = np.asarray(self.mos, dtype=np.float64)
        self.groups = np.asarray(self.groups, dtype=str)
        self.split = np.asarray(self.split, dtype=str)
        self.teacher_probs = np.asarray(self.teacher_probs, dtype=np.float64).reshape(n, 5)
        self.teacher_expected = np.asarray(self.teacher_expected, dtype=np.float64)
        self.teacher_reliability = np.asarray(self.teacher_reliability, dtype=np.float64)
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.pair_p = np.asarray(self.pair_p, dtype=np.float64)
        self.pair_reliability = np.asarray(self.pair_reliability, dtype=np.float64)
        if self.features.ndim != 2:
            raise ValueError(f"features must be N x D, got shape {self.features.shape}")
        for name in ("mos", "groups", "split", "teacher_expected", "teacher_reliability"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have {n} entries, got shape {getattr(self, name).shape}")
        m = self.pairs.shape[0]
        if self.pair_p.shape != (m,) or self.pair_reliability.shape != (m,):
            raise ValueError("pair_p and pair_reliability must have one entry per pair")
        if m and (self.pairs.min() < 0 or self.pairs.max() >= n):
            raise ValueError("pair indices out of range")
        low, high = (float(v) for v in self.mos_range)
        if not low < high:
            raise ValueError(f"mos_range must have low < high, got {self.mos_range}")
        self.mos_range = (low, high)
        if not self.names:
            self.names = [str(i) for i in range(n)]
        train, test = self.indices("train"), self.indices("test")
        if train.size == 0 or test.size < 3:
            raise ValueError(
                f"need train images and at least 3 test images, got {train.size} and {test.size}"
            )
        shared = sorted(set(self.groups[train]) & set(self.groups[test]))
        if shared:
            raise ValueError(
                f"train and test splits share {len(shared)} content group(s) (e.g. {shared[0]!r}); "
                "the protocol needs a content-disjoint test split"
            )
        for name in ("train", "test"):
            idx = self.indices(name)
            if not np.all(np.isfinite(self.mos[idx])):
                raise ValueError(f"every {name} image needs a finite MOS")

    def indices(self, split: str) -> np.ndarray:
        """Indices of one split, in data order."""
        return np.flatnonzero(self.split == split)


def split_by_group(groups: Sequence[str], test_fraction: float = 0.25, seed: int = 0) -> np.ndarray:
    """``"train"``/``"test"`` per item, whole content groups at a time (seeded shuffle of the groups).

    At least one group goes to each side when there are two or more groups.
    """
    g = np.asarray(groups, dtype=str)
    uniq = np.unique(g)
    if uniq.size < 2:
        raise ValueError("a content-disjoint split needs at least two content groups")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(uniq.size)
    n_test = min(uniq.size - 1, max(1, round(test_fraction * uniq.size)))
    test_groups = set(uniq[order[:n_test]])
    return np.array(["test" if x in test_groups else "train" for x in g])


# -- features -------------------------------------------------------------------------------------


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
    workers = default_workers()
    try:
        # torch gets the cores the decoders leave (see iqalens.leaf.scoring.score_paths for why)
        with torch.no_grad(), torch_threads(usable_cores() - workers), ThreadPoolExecutor(workers) as pool:
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
    return json.loads(json.dumps({"student": student, "crop": "test crops, mean"}))


def same_feature_setting(recorded: dict[str, Any], config: StudentConfig) -> bool:
    """Whether a folder's ``features.json`` describes the features ``config`` would compute.

    Checked on every call, also when every feature is already cached: reusing a folder of another
    setting (e.g. ``pooling``) would otherwise silently return features of the wrong kind and size.
    Files written before ``pooling`` existed hold pooling ``"last"``. An HF config dict is filled in
    from the model folder when a model is built, so a request that leaves it unset does not compare it.
    """
    now = feature_setting(config)
    was = {"pooling": "last", **recorded.get("student", {})}
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
        raise ValueError("need one hash per path")
    meta_file = out / FEATURES_META
    if meta_file.is_file() and not same_feature_setting(json.loads(meta_file.read_text()), cfg):
        raise ValueError(f"{out} holds features of another backbone setting; use a new folder")
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


def teacher_arrays(
    store: str | os.PathLike[str], teacher_id: str, prompt_version: str, hashes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A teacher's judgments of N images given by content hash, as arrays over those images.

    Returns ``(probs N x 5, expected N, reliability N, pairs M x 2, pair_p M, pair_reliability M)``;
    rows of images without a point judgment are NaN, and only pairs with both images among ``hashes``
    are kept. Byte-identical images (e.g. a distortion that left the reference unchanged) share one
    content hash, hence one judgment: every row with that hash gets it; a pair uses each hash's first row.
    """
    where: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        where.setdefault(h, []).append(i)
    n = len(hashes)
    probs = np.full((n, 5), np.nan)
    expected, rel = np.full(n, np.nan), np.full(n, np.nan)
    with JudgmentStore(store, create=False) as st:
        points = st.points(teacher_id, prompt_version)
        pair_records = st.pairs(teacher_id, prompt_version)
    for rec in points:
        for i in where.get(rec.hash, []):
            j = rec.judgment
            probs[i], expected[i], rel[i] = j.probs, j.expected, j.reliability
    pairs, pp, pr = [], [], []
    for rec in pair_records:
        a, b = where.get(rec.hash_a), where.get(rec.hash_b)
        if a and b:
            pairs.append((a[0], b[0]))
            pp.append(rec.judgment.p_first_better)
            pr.append(rec.judgment.reliability)
    return probs, expected, rel, np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(pp), np.array(pr)


def load_budget_data(
    manifest: str | os.PathLike[str],
    store: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    feature_dir: str | os.PathLike[str],
    student_config: StudentConfig | None = None,
    progress: bool = True,
) -> BudgetData:
    """Join a manifest (MOS, split, reference), a teacher's judgments (by content hash) and cached
    backbone features into :class:`BudgetData`. Rows outside train/test or without MOS are dropped."""
    m, _ = read_manifest(manifest)
    rows = [r for r in m.rows if r.split in ("train", "test") and math.isfinite(r.mos)]
    if not rows:
        raise ValueError(f"{manifest}: no train/test rows with MOS")
    scales = {r.mos_scale for r in rows}
    if len(scales) != 1 or None in scales:
        raise ValueError(f"{manifest}: the protocol needs one MOS scale, found {sorted(map(str, scales))}")
    scale: MosScale = scales.pop()  # type: ignore[assignment]
    paths = [m.resolve(r) for r in rows]
    hashes = [content_hash(p) for p in paths]
    feats = cache_features(paths, feature_dir, student_config, hashes=hashes, progress=progress)
    probs, expected, rel, pairs, pp, pr = teacher_arrays(store, teacher_id, prompt_version, hashes)
    return BudgetData(
        features=feats,
        mos=np.array([r.mos for r in rows]),
        groups=np.array([r.reference or r.path for r in rows]),
        split=np.array([r.split for r in rows]),
        mos_range=(scale.low, scale.high),
        teacher_probs=probs,
        teacher_expected=expected,
        teacher_reliability=rel,
        pairs=pairs,
        pair_p=pp,
        pair_reliability=pr,
        names=[r.path for r in rows],
    )


# -- heads ----------------------------------------------------------------------------------------


class FeatureHead(nn.Module):
    """The student's head on cached features: dropout, then ``Linear(d, 6)`` -> (score, level logits)."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.dropout(x))
        return out[:, 0], out[:, 1:]


@dataclass
class HeadConfig:
    """Optimisation of every head training (shared by the arms so that they differ only in signal)."""

    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.01
    distill_steps: int = 400
    label_steps: int = 400
    finetune_steps: int = 200
    finetune_lr: float = 3e-4
    point_batch: int = 64
    pair_batch: int = 64
    label_batch: int = 64
    loss: LossConfig = field(default_factory=LossConfig)
    finetune_reg: LossConfig = field(default_factory=lambda: LossConfig(w_reg=0.0))
    finetune_lambda: float = 1.0
    # l2 * (sum of the squared head weights) is added to every training loss. AdamW's decoupled
    # weight decay (lr * weight_decay per step) barely shrinks a head in a few hundred steps, and a
    # 1280-d head on a few dozen photos otherwise fits their content instead of their quality.
    l2: float = 0.0
    # When given, l2 is chosen per seed among these, without labels (:func:`select_l2`).
    l2_candidates: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("loss", "finetune_reg"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, LossConfig(**getattr(self, name)))
        self.l2_candidates = tuple(float(v) for v in self.l2_candidates)
        if self.l2 < 0 or any(v < 0 for v in self.l2_candidates):
            raise ValueError("l2 and l2_candidates must be >= 0")
        for name in ("distill_steps", "label_steps", "finetune_steps", "point_batch", "label_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_lambda < 0:
            raise ValueError("finetune_lambda must be >= 0")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block, then restore the caller's setting.

    The head's tensors are tiny (a batch x 1280 matrix product): intra-op threads only add
    synchronisation, measured 4x slower with 2 threads than with 1 on two busy cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _new_head(dim: int, cfg: HeadConfig, seed: int) -> FeatureHead:
    torch.manual_seed(seed)  # same initialisation for every arm of one seed
    return FeatureHead(dim, cfg.dropout)


def _penalty(module: nn.Module, cfg: HeadConfig) -> torch.Tensor | float:
    """``cfg.l2`` times the squared weights of the module's final ``Linear`` (its ``head``)."""
    if cfg.l2 <= 0:
        return 0.0
    head = module.head
    assert isinstance(head, nn.Linear)
    return cfg.l2 * head.weight.pow(2).sum()


def _batch(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return rng.choice(n, size=size, replace=n < size) if n else np.zeros(0, dtype=np.int64)


def _distill_terms(
    head: nn.Module,
    x: torch.Tensor,
    data: TeacherTargets,
    rng: np.random.Generator,
    cfg: HeadConfig,
    loss: JointLoss,
) -> torch.Tensor:
    pi = data.points[_batch(rng, data.points.size, cfg.point_batch)]
    qi = _batch(rng, data.pairs.shape[0], cfg.pair_batch)
    a, b = data.pairs[qi, 0], data.pairs[qi, 1]
    idx = np.concatenate([pi, a, b])
    s, z = head(x[idx])
    n, m = pi.size, qi.size

    def t(v: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float32)

    pt = PointTargets(t(data.probs[pi]), t(data.expected[pi]), t(data.reliability[pi])) if n else None
    pr = PairTargets(t(data.pair_p[qi]), t(data.pair_rel[qi])) if m else None
    total, _ = loss(s[:n], z[:n], pt, s[n : n + m], s[n + m :], pr)
    return total


@dataclass
class TeacherTargets:
    """Teacher targets restricted to the train pool (indices into the feature matrix)."""

    points: np.ndarray
    probs: np.ndarray
    expected: np.ndarray
    reliability: np.ndarray
    pairs: np.ndarray
    pair_p: np.ndarray
    pair_rel: np.ndarray

    @classmethod
    def of(cls, data: BudgetData, pool: np.ndarray) -> TeacherTargets:
        return cls.restricted(
            pool,
            data.teacher_probs,
            data.teacher_expected,
            data.teacher_reliability,
            data.pairs,
            data.pair_p,
            data.pair_reliability,
        )

    @classmethod
    def restricted(
        cls,
        pool: np.ndarray,
        probs: np.ndarray,
        expected: np.ndarray,
        reliability: np.ndarray,
        pairs: np.ndarray,
        pair_p: np.ndarray,
        pair_rel: np.ndarray,
    ) -> TeacherTargets:
        """Targets of the judged images in ``pool`` and the pairs with both images in it
        (arrays as returned by :func:`teacher_arrays`)."""
        inside = np.zeros(len(expected), dtype=bool)
        inside[pool] = True
        pts = pool[np.all(np.isfinite(probs[pool]), axis=1)]
        keep = inside[pairs[:, 0]] & inside[pairs[:, 1]] if pairs.size else np.zeros(0, bool)
        return cls(pts, probs, expected, reliability, pairs[keep], pair_p[keep], pair_rel[keep])


def _adamw(head: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)


@single_thread()
def distill_head(x: torch.Tensor, teacher: TeacherTargets, cfg: HeadConfig, seed: int) -> FeatureHead:
    """Train a new head on the teacher's judgments only (joint loss, fixed number of steps)."""
    if teacher.points.size == 0 and teacher.pairs.shape[0] == 0:
        raise ValueError("no teacher judgments on the train pool: nothing to distil")
    head = _new_head(x.shape[1], cfg, seed)
    opt, loss = _adamw(head, cfg.lr, cfg.weight_decay), JointLoss(cfg.loss)
    rng = np.random.default_rng([seed, 1])
    head.train()
    for _ in range(cfg.distill_steps):
        total = _distill_terms(head, x, teacher, rng, cfg, loss) + _penalty(head, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return head.eval()


@single_thread()
def train_labels_only(
    x: torch.Tensor, labelled: np.ndarray, y: np.ndarray, cfg: HeadConfig, seed: int
) -> FeatureHead:
    """A new head regressed on ``y`` (MOS scaled to [0, 1]) of the labelled images alone.

    Refuses fewer than :data:`LABELS_ONLY_MIN` labels: with none there is nothing to learn, and one
    label determines no ranking.
    """
    if labelled.size < LABELS_ONLY_MIN:
        raise ValueError(
            f"a labels-only student needs at least {LABELS_ONLY_MIN} labels, got {labelled.size}; "
            "it is undefined at this budget"
        )
    head = _new_head(x.shape[1], cfg, seed)
    opt = _adamw(head, cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng([seed, 2])
    yt = torch.as_tensor(y, dtype=torch.float32)
    head.train()
    for _ in range(cfg.label_steps):
        i = _batch(rng, labelled.size, min(cfg.label_batch, labelled.size))
        s, _ = head(x[labelled[i]])
        total = ((s - yt[labelled[i]]) ** 2).mean() + _penalty(head, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return head.eval()


@single_thread()
def finetune_head(
    head: HeadT,
    x: torch.Tensor,
    labelled: np.ndarray,
    y: np.ndarray,
    teacher: TeacherTargets,
    cfg: HeadConfig,
    seed: int,
) -> HeadT:
    """Calibration mode (b): a copy of ``head`` fine-tuned on the labels with the distillation loss
    (``cfg.finetune_reg``, weight ``cfg.finetune_lambda``) on the teacher's judgments as a regulariser.

    ``head`` is any module mapping rows of ``x`` to ``(score, level logits)``: a :class:`FeatureHead`
    on pooled features, or a student's last block plus head on cached activations
    (:mod:`iqalens.leaf.finetune`)."""
    if labelled.size == 0:
        raise ValueError("fine-tuning needs at least one label")
    tuned = copy.deepcopy(head)
    opt = _adamw(tuned, cfg.finetune_lr, cfg.weight_decay)
    reg = JointLoss(cfg.finetune_reg)
    rng = np.random.default_rng([seed, 3])
    yt = torch.as_tensor(y, dtype=torch.float32)
    tuned.train()
    for _ in range(cfg.finetune_steps):
        i = _batch(rng, labelled.size, min(cfg.label_batch, labelled.size))
        s, _ = tuned(x[labelled[i]])
        total = ((s - yt[labelled[i]]) ** 2).mean() + _penalty(tuned, cfg)
        if cfg.finetune_lambda > 0:
            total = total + cfg.finetune_lambda * _distill_terms(tuned, x, teacher, rng, cfg, reg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return tuned.eval()


@torch.no_grad()
def head_scores(head: FeatureHead, x: torch.Tensor) -> np.ndarray:
    """The head's score output (eval mode, no dropout) as float64."""
    head.eval()
    return head(x)[0].double().numpy()


# -- the protocol ---------------------------------------------------------------------------------


@dataclass
class BudgetConfig:
    """What :func:`run_protocol` compares (all saved with the results)."""

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
            raise ValueError(f"arms must be among {', '.join(ARMS)}, got {list(self.arms)}")
        if not self.seeds or not self.budgets:
            raise ValueError("need at least one budget and one seed")
        if self.calibration not in MIN_POINTS:
            raise ValueError(f"unknown calibration {self.calibration!r}; known: {', '.join(MIN_POINTS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def budget_indices(
    data: BudgetData, budget: int | float | str, seed: int, stratify: bool = False
) -> np.ndarray:
    """Indices (into ``data``) of the labelled train images of one budget and seed (reproducible)."""
    pool = data.indices("train")
    strata = None
    if stratify:
        e = data.teacher_expected[pool]
        strata = np.where(np.isfinite(e), e, np.nanmedian(e) if np.any(np.isfinite(e)) else 0.5)
    return pool[draw_budget(pool.size, budget, seed=seed, strata=strata)]


def _metrics(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    return {
        "srcc": srcc(pred, mos),
        "plcc": plcc(pred, mos),
        "rmse": float(np.sqrt(np.mean((pred - mos) ** 2))),
    }


def _calibrate(
    score_l: np.ndarray, mos_l: np.ndarray, cfg: BudgetConfig, data: BudgetData, pool_scores: np.ndarray
) -> Calibrator:
    """Mode (a)'s map. A fitted logistic so steep that it saturates over most of the train pool (a
    step function: possible when strongly regularised scores span little) would map most images to one
    of two values, collapsing the ranking (a whole test split may get one MOS and an undefined SRCC); such
    a fit is replaced by a line. The check looks at the unlabelled pool's scores only: more than half
    of their distinct values merged into ties."""
    k = score_l.size
    if k == 0:
        return label_free(data.mos_range, cfg.label_free_method, scores=None)
    method = cfg.calibration if k >= MIN_POINTS[cfg.calibration] else "linear"
    if k < MIN_POINTS["linear"] or np.ptp(score_l) == 0:
        return label_free(data.mos_range, "linear")
    cal = fit(score_l, mos_l, method)
    if cal.kind in ("logistic4", "logistic5"):
        distinct = np.unique(pool_scores).size
        if np.unique(np.round(cal(pool_scores), 9)).size < 0.5 * distinct:
            return fit(score_l, mos_l, "linear")
    return cal


def run_protocol(
    data: BudgetData, config: BudgetConfig | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run every (seed, budget, arm) and return ``{"rows": [...], "summary": [...], "data": {...}}``.

    A row: arm, budget (as given), n_labels, seed, status (``ok``, ``label_free`` or ``undefined``),
    calibration (the map used, for LEAF (a)), srcc, plcc, rmse (NaN when undefined), seconds.
    """
    cfg = config or BudgetConfig()
    with single_thread():
        return _run_protocol(data, cfg, progress)


def select_l2(
    x: torch.Tensor, data: BudgetData, cfg: HeadConfig, seed: int, folds: int = 4
) -> tuple[float, dict[str, float]]:
    """Choose the head's ``l2`` among ``cfg.l2_candidates`` without any label.

    The train pool's content groups are dealt into ``folds`` folds (seeded); for each candidate and
    fold a head is distilled on the other folds, and the candidate whose scores best rank the held-out
    fold's images as the *teacher* does (SRCC against its expected score, mean over folds) wins; the
    first one on ties. Several folds, because one held-out quarter of a few dozen photos gives a
    criterion too noisy to rank candidates. Neither MOS labels nor the test split are touched, so every
    budget, including 0, may use the choice. Returns ``(l2, {candidate: mean criterion})``; with fewer
    than two content groups, ``cfg.l2`` is kept and the criteria are empty.
    """
    pool = data.indices("train")
    groups = np.unique(data.groups[pool])
    k = min(folds, groups.size)
    if k < 2:
        return cfg.l2, {}
    order = np.random.default_rng([seed, 4]).permutation(groups.size)
    fold_of = {g: i % k for i, g in enumerate(groups[order])}
    fold = np.array([fold_of[g] for g in data.groups[pool]])
    splits = []
    for f in range(k):
        val = pool[(fold == f) & np.isfinite(data.teacher_expected[pool])]
        teacher = TeacherTargets.of(data, pool[fold != f])
        if val.size >= 3 and (teacher.points.size or teacher.pairs.shape[0]):
            splits.append((teacher, val))
    if not splits:
        return cfg.l2, {}
    criteria: dict[str, float] = {}
    for value in cfg.l2_candidates:
        per_fold = []
        for teacher, val in splits:
            head = distill_head(x, teacher, replace(cfg, l2=value), seed)
            per_fold.append(srcc(head_scores(head, x[val]), data.teacher_expected[val]))
        criteria[f"{value:g}"] = float(np.mean(per_fold))
    best = max(cfg.l2_candidates, key=lambda v: (criteria[f"{v:g}"], -cfg.l2_candidates.index(v)))
    return float(best), criteria


def _run_protocol(data: BudgetData, cfg: BudgetConfig, progress: bool) -> dict[str, Any]:
    pool, test = data.indices("train"), data.indices("test")
    x_np = data.features
    if cfg.standardize:
        mu, sd = x_np[pool].mean(axis=0), x_np[pool].std(axis=0)
        x_np = (x_np - mu) / np.where(sd > 1e-8, sd, 1.0)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    low, high = data.mos_range
    y01 = (data.mos - low) / (high - low)
    teacher = TeacherTargets.of(data, pool)
    counts = {str(b): parse_budget(b, pool.size) for b in cfg.budgets}
    rows: list[dict[str, Any]] = []
    total = len(cfg.seeds) * len(cfg.budgets)
    bar = tqdm(total=total, desc="label budgets", disable=not progress, leave=False)
    selection: dict[str, Any] = {}
    for seed in cfg.seeds:
        needs_leaf = "leaf" in cfg.arms or "leaf_ft" in cfg.arms
        t0 = time.perf_counter()
        head_cfg = cfg.head
        if cfg.head.l2_candidates:
            chosen, criterion = select_l2(x, data, cfg.head, seed)
            head_cfg = replace(cfg.head, l2=chosen)
            selection[str(seed)] = {"l2": chosen, "teacher_srcc_val": criterion}
        leaf_head = distill_head(x, teacher, head_cfg, seed) if needs_leaf else None
        distill_s = time.perf_counter() - t0
        leaf_scores = head_scores(leaf_head, x) if leaf_head is not None else None
        for budget in cfg.budgets:
            lab = budget_indices(data, budget, seed, cfg.stratify)
            base = {"budget": str(budget), "n_labels": int(lab.size), "seed": seed, "l2": head_cfg.l2}
            if leaf_scores is not None:
                t0 = time.perf_counter()
                cal = _calibrate(leaf_scores[lab], data.mos[lab], cfg, data, leaf_scores[pool])
                leaf_pred = cal(leaf_scores[test])
                leaf_row = {
                    **base,
                    "status": "label_free" if lab.size == 0 else "ok",
                    "calibration": cal.kind + (" (label-free)" if lab.size == 0 else ""),
                    **_metrics(leaf_pred, data.mos[test]),
                    "seconds": round(distill_s + time.perf_counter() - t0, 3),
                }
                if "leaf" in cfg.arms:
                    rows.append({"arm": "leaf", **leaf_row})
                if "leaf_ft" in cfg.arms:
                    if lab.size == 0:
                        rows.append(
                            {**leaf_row, "arm": "leaf_ft", "calibration": "none: label-free map of (a)"}
                        )
                    else:
                        t0 = time.perf_counter()
                        assert leaf_head is not None
                        tuned = finetune_head(leaf_head, x, lab, y01, teacher, head_cfg, seed)
                        pred = low + head_scores(tuned, x[test]) * (high - low)
                        rows.append(
                            {
                                "arm": "leaf_ft",
                                **base,
                                "status": "ok",
                                "calibration": "head fine-tune + distillation regulariser",
                                **_metrics(pred, data.mos[test]),
                                "seconds": round(distill_s + time.perf_counter() - t0, 3),
                            }
                        )
            if "labels_only" in cfg.arms:
                if lab.size < LABELS_ONLY_MIN:
                    rows.append(
                        {
                            "arm": "labels_only",
                            **base,
                            "status": "undefined",
                            "calibration": "",
                            "srcc": math.nan,
                            "plcc": math.nan,
                            "rmse": math.nan,
                            "seconds": 0.0,
                        }
                    )
                else:
                    t0 = time.perf_counter()
                    head = train_labels_only(x, lab, y01, head_cfg, seed)
                    pred = low + head_scores(head, x[test]) * (high - low)
                    rows.append(
                        {
                            "arm": "labels_only",
                            **base,
                            "status": "ok",
                            "calibration": "regression to MOS",
                            **_metrics(pred, data.mos[test]),
                            "seconds": round(time.perf_counter() - t0, 3),
                        }
                    )
            bar.update(1)
    bar.close()
    return {
        "l2_selection": selection,
        "rows": rows,
        "summary": summarize(rows, cfg.arms, [str(b) for b in cfg.budgets], counts),
        "data": describe(data),
    }


def describe(data: BudgetData) -> dict[str, Any]:
    """Sizes of the pool and test split (images, content groups, judgments) and the teacher's SRCC
    against the MOS on the test split (its judged images; None below 3) for the report."""
    pool, test = data.indices("train"), data.indices("test")
    teacher = TeacherTargets.of(data, pool)
    judged = test[np.isfinite(data.teacher_expected[test])]
    # the teacher's own ranking of the test split: the reference every arm is compared with
    teacher_srcc = srcc(data.teacher_expected[judged], data.mos[judged]) if judged.size >= 3 else None
    return {
        "teacher_srcc_test": teacher_srcc,
        "teacher_judged_test": int(judged.size),
        "train_images": int(pool.size),
        "train_groups": int(np.unique(data.groups[pool]).size),
        "test_images": int(test.size),
        "test_groups": int(np.unique(data.groups[test]).size),
        "feature_dim": int(data.features.shape[1]),
        "teacher_points_train": int(teacher.points.size),
        "teacher_pairs_train": int(teacher.pairs.shape[0]),
        "mos_range": list(data.mos_range),
    }


def summarize(
    rows: Sequence[dict[str, Any]], arms: Sequence[str], budgets: Sequence[str], counts: dict[str, int]
) -> list[dict[str, Any]]:
    """Mean and sample std (ddof 1; 0 with one seed) over seeds per (budget, arm); undefined rows give
    NaN with ``status`` ``undefined``."""
    out = []
    for b in budgets:
        for arm in arms:
            sel = [r for r in rows if r["arm"] == arm and r["budget"] == b]
            ok = [r for r in sel if r["status"] != "undefined"]
            entry: dict[str, Any] = {"budget": b, "n_labels": counts[b], "arm": arm, "n_seeds": len(ok)}
            entry["status"] = "undefined" if not ok else sel[0]["status"]
            for k in ("srcc", "plcc", "rmse"):
                v = np.array([r[k] for r in ok], dtype=np.float64)
                entry[f"{k}_mean"] = float(np.mean(v)) if v.size else math.nan
                entry[f"{k}_std"] = float(np.std(v, ddof=1)) if v.size > 1 else (0.0 if v.size else math.nan)
            out.append(entry)
    return out


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
    (:func:`iqalens.leaf.budget_plot.save_budget_curve`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"config": config.to_dict(), **result})
    _write_csv(out / "rows.csv", result["rows"])
    _write_csv(out / "summary.csv", result["summary"])
    atomic_write_text(out / "table.md", table_markdown(result["summary"], ("srcc", "plcc", "rmse")))
    metrics = headline(result)
    if plots:
        from iqalens.leaf.budget_plot import save_budget_curve

        metrics["plots"] = [p.name for p in save_budget_curve(result["summary"], out)]
    write_result(out, BudgetResult(**metrics))
    return out


def choose_teacher(
    store: str | os.PathLike[str], teacher_id: str | None = None, prompt_version: str | None = None
) -> tuple[str, str]:
    """The one (teacher id, prompt version) of ``store`` matching the given filters (None = any).

    A store may hold several teachers; guessing would silently mix them up, so anything but exactly
    one match is an error that lists what the store holds.
    """
    with JudgmentStore(store, create=False) as st:
        groups = [(g["teacher_id"], g["prompt_version"]) for g in st.status()["teachers"]]
    chosen = [g for g in groups if teacher_id in (None, g[0]) and prompt_version in (None, g[1])]
    if len(chosen) != 1:
        listed = "; ".join(f"{t} / {v}" for t, v in groups) or "none"
        raise ValueError(f"choose one teacher with --teacher-id/--prompt-version; {store} holds: {listed}")
    return chosen[0]


def run_label_budget(
    manifest: str | os.PathLike[str],
    store: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    out_dir: str | os.PathLike[str],
    config: BudgetConfig | None = None,
    student_config: StudentConfig | None = None,
    progress: bool = True,
    feature_dir: str | os.PathLike[str] | None = None,
    command: str = "label-budget",
) -> dict[str, Any]:
    """The whole protocol as one call: cache features (default ``out_dir/features``), run, write results.

    Re-running into the same folder (or with the same ``feature_dir``) reuses the cached features.
    ``command`` names the run in ``config.json`` (``budget`` for the CLI).
    """
    cfg = config or BudgetConfig()
    out = Path(out_dir)
    features = Path(feature_dir) if feature_dir is not None else out / "features"
    started = time.perf_counter()
    start_run(
        out,
        command,
        {
            "manifest": str(Path(manifest).resolve()),
            "store": str(Path(store).resolve()),
            "teacher_id": teacher_id,
            "prompt_version": prompt_version,
            "protocol": cfg.to_dict(),
            "student_backbone": (student_config or StudentConfig()).to_dict(),
            "features": str(features.resolve()),
        },
        cfg.seeds[0],
    )
    t0 = time.perf_counter()
    data = load_budget_data(manifest, store, teacher_id, prompt_version, features, student_config, progress)
    feature_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_protocol(data, cfg, progress)
    result["timing"] = {
        "features_s": round(feature_s, 2),
        "protocol_s": round(time.perf_counter() - t0, 2),
        "total_s": round(time.perf_counter() - started, 2),
    }
    write_results(out, result, cfg)
    return result
