"""The ``iqalens align`` trainer: fine-tune chosen components of an :class:`AlignableModel`.

``align(model, manifest, out_dir, config)`` freezes every component, makes the chosen ones trainable
(full weights, or LoRA adapters), trains them on the benchmark's train split with

    loss = w_template * template + w_align * InfoNCE(visual, class words) + w_constraint * drift

(:mod:`iqalens.align.objectives`), and writes ``train_log.csv``, ``model/`` (a plain checkpoint:
LoRA merged) and ``state/`` (resume state) into the run folder. Design decisions, and why:

- **Stateless randomness = exact resume.** The images of optimizer step k (micro-batch m) are a
  function of ``(seed, k * grad_accum + m)`` only (seeded permutations,
  :func:`iqalens.training.batch_stream`); the learning rate (linear warm-up, cosine decay) is a
  function of k; the model stays in eval mode (no dropout, BatchNorm statistics frozen). A
  checkpoint therefore holds just the trainable weights, the optimizer, the early-stopping state
  and the log, and a run interrupted anywhere and resumed ends with the same weights as an
  uninterrupted one (tested).
- **Frozen means untouched.** Frozen parameters never get ``requires_grad``; the trainer fingerprints
  them (bytes of every tensor) before and after, and the run fails rather than save a checkpoint in
  which they changed. For LoRA components the base weights are checked before the merge.
- **Data parallel under torchrun.** With ``WORLD_SIZE`` > 1 the process group is initialised (gloo on
  CPU, nccl on CUDA), each rank takes every ``world``-th image of the global batch and the flattened
  gradient is all-reduced and averaged before the step: the arithmetic of DistributedDataParallel
  without its module wrapper (the trainable parameters span several components and the forward pass
  is ``forward_align``, not ``Module.forward``). Rank 0 validates, decides early stopping and writes.
- **Early stopping** on validation accuracy (ties: lower validation template loss), evaluated every
  ``eval_every`` steps; the best weights are kept. The accuracy of the untrained model (step 0) is
  logged but not a candidate: the run reports what training produced. With ``ema_decay`` > 0 the
  candidates are the exponential moving average of the weights instead of the weights of that step.
- **Mixed precision** where the device supports it: ``precision=auto`` is bf16 autocast on CUDA with
  bf16 support, fp16 autocast with gradient scaling on other CUDA devices, fp32 on CPU.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iqalens.align.base import AlignableModel
from iqalens.align.config import AlignConfig, short_name
from iqalens.align.data import QUALITY_WORDS, InputBank, Rows, bank_file, select_rows
from iqalens.align.objectives import accuracy, feature_drift, info_nce, logit_drift
from iqalens.align.trainable import Trainable
from iqalens.align.weight_average import WeightAverage
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_write_text
from iqalens.models.mini_taps import taps_name
from iqalens.perception.features import manifest_hash
from iqalens.runs import start_run, write_json
from iqalens.taxonomy import CLASSES
from iqalens.training import (
    atomic_torch_save,
    batch_stream,
    broadcast,
    init_distributed,
    resolve_device,
    warmup_cosine_factor,
)

STATE_DIR = "state"
STATE_FILE = "state.pt"
MODEL_DIR = "model"
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("step", "lr", "loss", "template", "align", "constraint", "val_accuracy", "val_loss")
TERMS = ("loss", "template", "align", "constraint")


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether gradients need scaling) for a device."""
    if precision == "auto":
        if device.type != "cuda":
            return None, False
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    return torch.float16, True


def training_order(labels: np.ndarray, balance: bool, seed: int) -> np.ndarray:
    """The row indices one training epoch walks through (before its seeded shuffle): every row once,
    or with ``balance`` every class's rows repeated up to the largest class's count (whole copies,
    then a seeded draw without replacement for the rest), so each class is drawn equally often."""
    if not balance or len(labels) == 0:
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng([seed, 1])
    parts = []
    for c, n in zip(classes, counts, strict=True):
        rows = np.flatnonzero(labels == c)
        copies, rest = divmod(int(counts.max()), int(n))
        parts += [np.tile(rows, copies), np.sort(rng.choice(rows, rest, replace=False))]
    return np.concatenate(parts)


def touched_indices(order: np.ndarray, cfg: AlignConfig) -> np.ndarray:
    """Indices of every training image the schedule can use (all micro-batches of all steps), given
    the epoch's :func:`training_order`."""
    n = len(order)
    seen = [batch_stream(n, cfg.batch_size, s, cfg.seed, 0) for s in range(cfg.max_steps * cfg.grad_accum)]
    return np.unique(order[np.concatenate(seen)]) if seen else np.zeros(0, dtype=np.int64)


def _all_reduce_mean(tensors: Sequence[torch.Tensor], world: int) -> None:
    """Average tensors across ranks in place (one flat all-reduce)."""
    if world == 1 or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def evaluate(
    model: AlignableModel, bank: InputBank, rows: Rows, class_words: Sequence[str], batch_size: int = 32
) -> dict[str, float]:
    """Forced-choice accuracy and mean template loss on ``rows`` (their inputs must be in the bank)."""
    scores, losses = [], []
    for start in range(0, len(rows), batch_size):
        keys = rows.keys[start : start + batch_size]
        labels = torch.as_tensor(rows.labels[start : start + batch_size])
        out = model.forward_align(bank.batch(keys), labels, class_words)
        scores.append(out.class_scores.float().cpu())
        losses.append(float(out.template_loss) * len(keys))
    if not scores:
        return {}
    return {
        "val_accuracy": accuracy(torch.cat(scores), torch.as_tensor(rows.labels)),
        "val_loss": sum(losses) / len(rows),
    }


def _log_cell(value: Any) -> Any:
    return "" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    writer.writerows([_log_cell(h.get(c)) for c in LOG_COLUMNS] for h in history)
    atomic_write_text(path, buf.getvalue())


@dataclass
class Progress:
    """Everything besides weights and optimizer that a resumed run needs: position, early stopping, log."""

    step: int = 0
    best_accuracy: float = -math.inf
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    done: bool = False
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    val_before: dict[str, float] = field(default_factory=dict)

    def improves(self, metrics: dict[str, float]) -> bool:
        """Higher validation accuracy, or the same with a lower validation loss."""
        return metrics["val_accuracy"] > self.best_accuracy or (
            metrics["val_accuracy"] == self.best_accuracy and metrics["val_loss"] < self.best_loss
        )


class _Run:
    """One training run of :func:`align`: data, trainable parameters, optimizer and progress."""

    def __init__(
        self,
        model: AlignableModel,
        manifest: Path,
        out: Path,
        cfg: AlignConfig,
        device: torch.device,
        rank: int,
        world: int,
        words: list[str],
        bank_path: Callable[[str], Path],
    ) -> None:
        self.model, self.out, self.cfg, self.device = model, out, cfg, device
        self.rank, self.world, self.words = rank, world, words
        self.train_rows, self.val_rows = select_rows(
            manifest,
            max_train=cfg.max_train_images,
            max_val=cfg.max_val_images,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            target=cfg.target,
        )
        if hasattr(model, "to"):
            model.to(device)
        self.trainable = Trainable(model, cfg)
        if self.trainable.uses_logits and not hasattr(model, "encoder_classifier"):
            raise InvalidInputError(
                f"{model.model_id}: the 'logits' constraint needs an encoder with its own classifier "
                "(the mini model's ImageNet head); use --constraint features or weights"
            )
        encoder_frozen = "vision_encoder" not in cfg.train
        self.kind = "encoded" if encoder_frozen and hasattr(model, "encode_frozen") else "pixels"
        if cfg.encoder_frozen_sites:
            self.kind = "trunk"
        sites = cfg.encoder_frozen_sites
        self.bank = InputBank(
            model, self.kind, bank_path(f"trunk{sites}" if sites else self.kind), trunk_sites=sites
        )
        self.order = training_order(self.train_rows.labels, cfg.balance_classes, cfg.seed)
        self.touched = self.train_rows.subset(touched_indices(self.order, cfg))
        self.optimizer = self.trainable.optimizer()
        self.amp_dtype, scaled = resolve_precision(cfg.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.progress = Progress()
        #: moving average of the trainable weights (``cfg.ema_decay`` > 0)
        self.ema = WeightAverage(self.trainable, cfg.ema_decay) if cfg.ema_decay > 0 else None

    @property
    def state_path(self) -> Path:
        return self.out / STATE_DIR / STATE_FILE

    def data_info(self) -> dict[str, Any]:
        return {
            "train_images": len(self.train_rows),
            "train_images_used": len(self.touched),
            "val_images": len(self.val_rows),
            "train_classes": self.train_rows.class_counts(),
            "inputs": self.kind,
            "inputs_file": str(self.bank.file),
        }

    def prepare_inputs(self) -> None:
        """Rank 0 computes (or loads) every input the run will use; the other ranks read its file."""
        if self.rank == 0:
            self.bank.ensure(self.touched, reference=self.trainable.uses_features, progress=self.cfg.progress)
            self.bank.ensure(self.val_rows, progress=self.cfg.progress)
        if self.world > 1:
            broadcast(None, self.world)
            if self.rank != 0:
                self.bank.load()
        if self.cfg.projector_tap_standardise:  # every rank alike: the statistics of the same bank
            self.trainable.standardise_taps(self.model, self.bank, self.touched.keys)
            self.ema = None if self.ema is None else WeightAverage(self.trainable, self.cfg.ema_decay)

    def resume(self, saved: dict[str, Any] | None) -> None:
        if saved is not None:
            self.trainable.load(saved["trainable"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scaler.load_state_dict(saved["scaler"])
            self.progress = Progress(**saved["progress"])
            if self.ema is not None and saved.get("ema") is not None:
                self.ema.load(saved["ema"], self.device)
        elif len(self.val_rows) and self.rank == 0:
            self.progress.val_before = evaluate(self.model, self.bank, self.val_rows, self.words)
            self.progress.history.append({"step": 0, **self.progress.val_before})

    def save_state(self) -> None:
        if self.rank != 0:
            return
        state = {
            "config": self.cfg.comparable(),
            "trainable": self.trainable.state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "ema": None if self.ema is None else self.ema.state(),
        }
        atomic_torch_save(state, self.state_path)
        _write_log(self.out / LOG_FILE, self.progress.history)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _micro_batch(self, index: int) -> torch.Tensor:
        """Forward and backward of this rank's share of micro-batch ``index``; returns the TERMS values."""
        cfg, model, device = self.cfg, self.model, self.device
        drawn = batch_stream(len(self.order), cfg.batch_size, index, cfg.seed, 0)
        idx = self.order[drawn][self.rank :: self.world]
        keys = [self.train_rows.keys[i] for i in idx]
        labels = torch.as_tensor(self.train_rows.labels[idx], device=device)
        zero = torch.zeros((), device=device)
        with self._autocast():
            fwd = model.forward_align(self.bank.batch(keys), labels, self.words)
            template = fwd.template_loss.float()
            align = zero
            if cfg.w_align > 0:
                words = model.class_word_embeddings(self.words)
                align = info_nce(fwd.visual, words, labels, cfg.align_temperature)
            constraint = zero
            if self.trainable.uses_logits:
                classify = model.encoder_classifier  # type: ignore[attr-defined]
                reference = self.bank.reference(keys).to(device)
                constraint = logit_drift(classify(fwd.encoder_features), classify(reference))
            elif self.trainable.uses_features:
                constraint = feature_drift(fwd.encoder_features, self.bank.reference(keys).to(device))
            elif self.trainable.uses_weights:
                constraint = self.trainable.weight_term()
            total = cfg.w_template * template + cfg.w_align * align + cfg.w_constraint * constraint
        self.scaler.scale(total / cfg.grad_accum).backward()
        return torch.stack([total, template, align, constraint]).detach().float()

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum`` micro-batches (gradients averaged across ranks)."""
        cfg, step = self.cfg, self.progress.step
        factor = warmup_cosine_factor(step, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        sums = (
            sum(self._micro_batch(step * cfg.grad_accum + m) for m in range(cfg.grad_accum)) / cfg.grad_accum
        )
        params = list(self.trainable.params.values())
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        _all_reduce_mean([*grads, sums], self.world)
        self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.progress.step += 1
        if self.ema is not None:
            self.ema.update(self.progress.step)
        return dict(zip(TERMS, sums.cpu().tolist(), strict=True)) | {"lr": cfg.lr * factor}

    def validate(self) -> dict[str, float]:
        """Rank 0 evaluates and decides; every rank applies the same early-stopping update."""
        decision = None
        if self.rank == 0:
            with nullcontext() if self.ema is None else self.ema.applied():
                metrics = evaluate(self.model, self.bank, self.val_rows, self.words)
            decision = (self.progress.improves(metrics), metrics)
        better, metrics = broadcast(decision, self.world)
        p = self.progress
        if better:
            p.best_accuracy, p.best_loss, p.best_step, p.bad_evals = (
                metrics["val_accuracy"],
                metrics["val_loss"],
                p.step,
                0,
            )
            p.best_state = self.trainable.state() if self.ema is None else self.ema.state()
        else:
            p.bad_evals += 1
            p.done = p.bad_evals >= self.cfg.patience
        return metrics

    def loop(self, on_step: Callable[[int, dict[str, float]], None] | None) -> None:
        cfg, p = self.cfg, self.progress
        bar = tqdm(
            total=cfg.max_steps,
            initial=p.step,
            desc=f"align {short_name(cfg.train)}",
            disable=not cfg.progress or self.rank != 0,
            leave=False,
        )
        try:
            while not p.done and p.step < cfg.max_steps:
                row: dict[str, Any] = self.train_step()
                terms = {k: row[k] for k in TERMS}
                postfix = {"loss": f"{row['loss']:.4f}"}
                if (p.step % cfg.eval_every == 0 or p.step == cfg.max_steps) and len(self.val_rows):
                    row |= self.validate()
                    postfix["val_acc"] = f"{row['val_accuracy']:.3f}"
                p.history.append({"step": p.step, **row})
                bar.set_postfix(postfix)
                bar.update(1)
                p.done = p.done or p.step == cfg.max_steps
                if p.step % cfg.checkpoint_every == 0 or p.done:
                    self.save_state()
                if on_step is not None:
                    on_step(p.step, terms)
        finally:
            bar.close()


def align(
    model: AlignableModel,
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: AlignConfig | None = None,
    *,
    class_words: Sequence[str] = CLASSES,
    checkpoint_id: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    info: dict[str, Any] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config.train`` of ``model`` on a benchmark; resumes from ``out_dir/state`` if present.

    ``checkpoint_id`` (from :func:`iqalens.models.loading.load_model`) identifies the base weights:
    with it and ``cache_dir``, prepared inputs are kept in ``cache_dir`` for later runs; without,
    in the run's ``state/`` folder only. ``info`` is merged into the run's and the checkpoint's config
    (base model spec, ...). ``on_step(step, terms)`` is called after every optimizer step and any
    checkpoint of it; an exception raised there stops training like a crash (tests use it). Returns
    the training metrics (also in ``metrics.json``). The model is modified in place (trained
    weights, LoRA merged).
    """
    cfg = config or AlignConfig()
    device = resolve_device(cfg.device)
    rank, world, own_group = init_distributed(device)
    try:
        out, manifest = Path(out_dir), Path(manifest_path)
        if cfg.target == "quality" and tuple(class_words) == CLASSES:
            class_words = QUALITY_WORDS
        setup = (device, rank, world, list(class_words))
        return _align(model, manifest, out, cfg, setup, checkpoint_id, cache_dir, info or {}, on_step)
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _saved_state(out: Path, cfg: AlignConfig) -> dict[str, Any] | None:
    """The resume state of an earlier run in ``out`` (refused when its settings differ)."""
    path = out / STATE_DIR / STATE_FILE
    if not path.is_file():
        return None
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    # a setting added since the run was written counts as its default (which is the old behaviour)
    defaults = AlignConfig().comparable()
    if {**defaults, **saved["config"]} != {**defaults, **cfg.comparable()}:
        raise InvalidInputError(
            f"{path} was written with other settings; use a new output folder or --overwrite"
        )
    return saved


def _align(
    model: AlignableModel,
    manifest: Path,
    out: Path,
    cfg: AlignConfig,
    setup: tuple[torch.device, int, int, list[str]],
    checkpoint_id: str | None,
    cache_dir: str | os.PathLike[str] | None,
    info: dict[str, Any],
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> dict[str, Any]:
    started = time.time()
    device, rank, world, words = setup
    if cfg.batch_size % world:
        raise InvalidInputError(
            f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes ({world})"
        )
    n_labels = len(QUALITY_WORDS) if cfg.target == "quality" else len(CLASSES)
    if len(words) != n_labels:
        raise InvalidInputError(f"need one answer word per label ({n_labels}), got {len(words)}")
    missing_taps = set(cfg.projector_taps) - set(getattr(model, "projector_taps", ()))
    model_pool = getattr(model, "projector_tap_pool", "cells")
    if cfg.projector_taps and model_pool != cfg.projector_tap_pool:
        raise InvalidInputError(
            f"{model.model_id}: the projector summarises its taps as {model_pool!r}, the config asks "
            f"for {cfg.projector_tap_pool!r}"
        )
    if missing_taps:
        raise InvalidInputError(
            f"{model.model_id}: the projector does not read vision site(s) {sorted(missing_taps)}; "
            "widen it first (iqalens.align.run.add_projector_taps; run_align and `iqalens align` do)"
        )
    saved = _saved_state(out, cfg)
    if saved is not None and saved.get("finished"):
        if (out / MODEL_DIR).is_dir():
            return dict(saved["metrics"])
        saved = None  # the model folder was removed: train again

    def bank_path(kind: str) -> Path:
        if cache_dir is not None and checkpoint_id is not None:
            return bank_file(cache_dir, model.model_id, checkpoint_id, manifest_hash(manifest), kind)
        return out / STATE_DIR / f"inputs-{kind}.pt"

    run = _Run(model, manifest, out, cfg, device, rank, world, words, bank_path)
    if rank == 0:
        run_config = {
            "manifest": str(manifest.resolve()),
            "model_id": model.model_id,
            "checkpoint_id": checkpoint_id,
            "class_words": words,
            "align": cfg.to_dict(),
            "world_size": world,
            "device": str(device),
            "resumed_from_step": 0 if saved is None else int(saved["progress"]["step"]),
            "data": run.data_info(),
            **info,
        }
        start_run(out, "align", run_config, cfg.seed)
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    run.prepare_inputs()
    run.resume(saved)
    run.loop(on_step)
    return _finish(run, checkpoint_id, info, manifest, time.time() - started)


def _finish(
    run: _Run, checkpoint_id: str | None, info: dict[str, Any], manifest: Path, seconds: float
) -> dict[str, Any]:
    """Best weights back, frozen parts verified, LoRA merged; rank 0 saves the checkpoint and metrics."""
    cfg, model, p = run.cfg, run.model, run.progress
    if p.best_state is not None:
        run.trainable.load(p.best_state)
    elif run.ema is not None:
        run.trainable.load(run.ema.state())  # no validation split: the average of the whole run
    frozen = run.trainable.check_frozen()
    changed = [c for c, same in frozen.items() if not same]
    if changed:
        raise RuntimeError(f"frozen weights changed during training: {', '.join(changed)}")
    n_trainable = sum(t.numel() for t in run.trainable.params.values())
    run.trainable.merge()
    best_step = p.best_step if p.best_state is not None else p.step
    taps = taps_name(cfg.projector_taps, cfg.projector_tap_pool)
    metrics: dict[str, Any] = {
        "model_id": f"{model.model_id}+align[{short_name(cfg.train)}{taps}]",
        "train": list(cfg.train),
        "lora": list(cfg.lora),
        "objectives": cfg.objectives,
        "constraint": cfg.constraint,
        "steps_run": p.step,
        "stopped_early": p.step < cfg.max_steps,
        "best_step": best_step,
        "best_val_accuracy": None if p.best_state is None else p.best_accuracy,
        "val_accuracy_before": p.val_before.get("val_accuracy"),
        "trainable_parameters": n_trainable,
        "frozen_unchanged": frozen,
        "precision": "fp32" if run.amp_dtype is None else str(run.amp_dtype).removeprefix("torch."),
        "world_size": run.world,
        "data": run.data_info(),
        "train_seconds": round(seconds, 3),
    }
    if run.rank == 0:
        checkpoint_info = {
            **info,
            "model_id": metrics["model_id"],
            "base_model_id": model.model_id,
            "base_checkpoint_id": checkpoint_id,
            "train": list(cfg.train),
            "lora": list(cfg.lora),
            "lora_settings": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "merged": True}
            if cfg.lora
            else None,
            "objectives": cfg.objectives,
            "constraint": cfg.constraint,
            "steps_run": p.step,
            "best_step": best_step,
            "seed": cfg.seed,
            "manifest": str(manifest.resolve()),
        }
        model.save_checkpoint(run.out / MODEL_DIR, cfg.train, checkpoint_info)
        _write_log(run.out / LOG_FILE, p.history)
        write_json(run.out / "metrics.json", metrics)
        # Keep a small record only: optimizer and inputs are not needed once the model is saved.
        record = {
            "config": cfg.comparable(),
            "finished": True,
            "metrics": metrics,
            "progress": {"step": p.step},
        }
        atomic_torch_save(record, run.state_path)
        for extra in (run.out / STATE_DIR).glob("inputs-*.pt"):
            extra.unlink(missing_ok=True)
    if run.world > 1:
        broadcast(None, run.world)
    return metrics


def remove_run(out: Path) -> None:
    """Delete an earlier align run folder (``--overwrite``); refuses a folder that is not one."""
    if not out.exists():
        return
    try:
        command = json.loads((out / "config.json").read_text()).get("command")
    except (OSError, ValueError):
        command = None
    if command != "align":
        raise InvalidInputError(f"{out} exists and is not an align run folder; choose another output folder")
    shutil.rmtree(out)
