"""Train the student's last resolution stage on cached activations: the step beyond a frozen backbone.

Why: a linear head on frozen ImageNet features stops near SRCC 0.65 on the 86-photo label-budget
protocol whatever the teacher (docs/leaf_fr_teacher.md), and training the whole backbone costs hours
per seed on two CPU cores. Most of EfficientNet-Lite0's compute is in its early, high-resolution
blocks; its last resolution stage (blocks 11-15 and the 1280-channel head convolution, 7x7 maps at a
224 crop, 12x12 at 384) holds most of its parameters but a fraction of its compute. Everything below
that stage - the stem, the first four stages, the multiscale taps at their ends and the quality
statistics of the crop - is computed once per image and cached (:func:`cache_trunk`); only the stage
above trains (:func:`tune_tail`), so a run costs minutes, not hours.

**Objective.** The student's score regresses the teacher's expected score (rows weighted by the
teacher's reliability, the ridge distillation's objective), starting from the closed-form ridge head
on the frozen features, so step 0 *is* the frozen student. The score's linear head trains with the
stage and is returned (:class:`TunedHead`); the level logits are not trained here. The caller refits
them in closed form on the tuned features and either keeps the trained score head or refits it too
(:mod:`iqalens.leaf.distill_ridge`, ``tail_head``): the held-out check that picks the step scores the
trained head, and on the 86-photo protocol that head ranked unseen photos better and more steadily
than a refit (docs/leaf_fr_teacher.md).

**Regularisation and stopping, without labels.** BatchNorm keeps its ImageNet statistics (eval mode),
each step sees a random crop of the cached maps (a shifted view of the same image), and a share of
the photos is held out: every ``eval_every`` steps the held-out images are scored, and the tail of the
step whose scores rank them most like the teacher is kept (step 0 included, so tuning can only be
kept when it helps on photos it did not train on).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.feature_head import FeatureHead
from iqalens.leaf.features import backbone_features, feature_setting
from iqalens.leaf.ridge_head import RidgePath, standardise
from iqalens.leaf.student import EfficientNetLite0Backbone, Student, mean_std_pool
from iqalens.models.efficientnet import run_blocks
from iqalens.runs import write_json

TRUNK_META = "trunk.json"


#: Learning-rate schedules of :class:`TailTuneConfig`.
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TunedHead:
    """The linear head trained together with the tail, at the kept step: ``scores`` of features laid
    out like :meth:`TrunkCache.features`. Kept for comparison with the closed-form refit."""

    coef: np.ndarray  # D, on standardised features
    bias: float
    mean: np.ndarray  # D
    std: np.ndarray  # D

    def standardised(self, features: np.ndarray) -> np.ndarray:
        """Features on the scale the head was trained on."""
        return (features - self.mean) / self.std

    def scores(self, features: np.ndarray) -> np.ndarray:
        return self.standardised(features) @ self.coef + self.bias

    def on_raw_features(self) -> tuple[np.ndarray, float]:
        """``(weight, bias)`` of the same score on unstandardised features (the standardisation
        folded in), how a saved student's ``Linear`` holds it."""
        weight = self.coef / self.std
        return weight, float(self.bias - weight @ self.mean)

    def as_feature_head(self) -> FeatureHead:
        """The same score as a :class:`FeatureHead` on :meth:`standardised` features (level logits
        zero), so the closed-form label fits (e.g. a ridge centred on it) can start from it."""
        head = FeatureHead(self.coef.size)
        with torch.no_grad():
            head.head.weight.zero_()
            head.head.bias.zero_()
            head.head.weight[0] = torch.as_tensor(self.coef, dtype=torch.float32)
            head.head.bias[0] = self.bias
        return head.eval()


@dataclass
class TailTuneConfig:
    """Optimisation of :func:`tune_tail`. Defaults: the schedule of docs/leaf_fr_teacher.md "A faster
    schedule for the last stage" (lr 3e-4, cosine), whose head as trained ranked unseen photos best
    (label-free 0.715 +- 0.003 over 3 seeds, against 0.677 +- 0.012 refitted after lr 1e-4 constant)."""

    steps: int = 600
    lr: float = 3e-4  # Adam, tail and head alike
    batch: int = 32
    crop_fraction: float = 0.67  # side of the random crop of the cached maps, as a share of their side
    holdout_fraction: float = 0.2  # of the photos (content groups), for choosing the step
    eval_every: int = 100
    seed: int = 0
    schedule: str = "cosine"  # the rate decays to 0 at the last step; or "constant"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.eval_every < 1:
            raise InvalidInputError("steps, batch and eval_every must be >= 1")
        if self.schedule not in LR_SCHEDULES:
            raise InvalidInputError(
                f"schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.schedule!r}"
            )
        if not self.lr > 0:
            raise InvalidInputError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise InvalidInputError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise InvalidInputError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the split of the backbone ----------------------------------------------------------------------


def _lite_backbone(student: Student) -> EfficientNetLite0Backbone:
    backbone = student.backbone
    inner = getattr(backbone, "backbone", backbone) if student.config.quality_stats else backbone
    if not isinstance(inner, EfficientNetLite0Backbone):
        raise InvalidInputError(
            f"tail tuning is implemented for the efficientnet-lite0 backbone, not {student.config.backbone!r}"
        )
    if student.config.test_grid != 1:
        raise InvalidInputError("tail tuning caches one crop per image: use test_grid 1")
    return inner


def tail_start(student: Student) -> int:
    """Index of the first block of the last resolution stage (11 for EfficientNet-Lite0)."""
    from iqalens.leaf.student import resolution_stage_ends

    return resolution_stage_ends(_lite_backbone(student).net._blocks)[-1] + 1


class StudentTail(nn.Module):
    """The last resolution stage, the head convolution and the mean: a cached map -> the final feature.

    Its modules are the student's own (shared, not copied): training it trains the student.
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        net = _lite_backbone(student).net
        self.blocks = nn.ModuleList(list(net._blocks)[tail_start(student) :])
        self.conv_head, self.bn, self.act = net._conv_head, net._bn1, net._swish
        self.eval()

    def train(self, mode: bool = True) -> StudentTail:
        """Always eval mode: BatchNorm keeps its stored statistics (and the student's shared modules
        are never switched to training by the tail), gradients flow all the same."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:  # no drop-connect: eval-mode blocks, the rate is unused
            x = block(x)
        return self.act(self.bn(self.conv_head(x))).mean(dim=(2, 3))


def trunk_outputs(student: Student, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prefix [B, P], map [B, C, h, w], suffix [B, S])`` of image tensors, such that
    ``cat(prefix, StudentTail(student)(map), suffix)`` is the student's pooled feature: the prefix is
    the multiscale taps' means and standard deviations (empty with pooling "last"), the suffix the
    quality statistics (empty without them)."""
    lite = _lite_backbone(student)
    net = lite.net
    h = net._swish(net._bn0(net._conv_stem(x)))
    taps = []
    for idx in range(tail_start(student)):
        h = run_blocks(net, h, range(idx, idx + 1))
        if idx in lite.stage_ends:
            taps.append(h)
    prefix = (
        torch.cat([part for tap in taps for part in mean_std_pool(tap)], dim=1)
        if taps
        else x.new_zeros(len(x), 0)
    )
    statistics = getattr(student.backbone, "statistics", None)
    suffix = statistics(x).to(x.dtype) if statistics is not None else x.new_zeros(len(x), 0)
    return prefix, h, suffix


@dataclass
class TrunkCache:
    """Cached trunk outputs of N images (maps in float16: the bulk, 1.4 GB for 10836 crops of 384 px)."""

    prefix: np.ndarray  # N x P float32
    maps: np.ndarray  # N x C x h x w float16
    suffix: np.ndarray  # N x S float32

    def features(self, tail_features: np.ndarray) -> np.ndarray:
        """The student's pooled features given the tail's output for every image."""
        return np.concatenate([self.prefix, tail_features, self.suffix], axis=1)


def cache_trunk(
    student: Student,
    paths: Sequence[str | os.PathLike[str]],
    hashes: Sequence[str],
    folder: str | os.PathLike[str],
    progress: bool = True,
) -> TrunkCache:
    """Trunk outputs of ``paths`` (eval mode, the student's test crop), one ``<hash>.npz`` each; a
    folder written for another student setting is refused, like the feature cache."""
    if len(hashes) != len(paths):
        raise InvalidInputError("need one hash per path")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    setting = {**feature_setting(student.config), "tail_start": tail_start(student)}
    meta = out / TRUNK_META
    if meta.is_file() and json.loads(meta.read_text()) != setting:
        raise InvalidInputError(f"{out} holds trunk outputs of another student setting; use a new folder")
    if not meta.is_file():
        write_json(meta, setting)
    todo = [i for i, h in enumerate(hashes) if not (out / f"{h}.npz").is_file()]
    shapes: dict[str, tuple[int, ...]] = {}

    def flat(x: torch.Tensor) -> torch.Tensor:
        prefix, fmap, suffix = trunk_outputs(student, x)
        shapes.update(
            prefix=tuple(prefix.shape[1:]), map=tuple(fmap.shape[1:]), suffix=tuple(suffix.shape[1:])
        )
        return torch.cat([prefix, suffix, fmap.flatten(1)], dim=1)

    bar = tqdm(total=len(todo), desc="trunk", unit="img", disable=not progress or not todo, leave=False)
    for chunk, rows in backbone_features(student, [paths[i] for i in todo], forward=flat):
        p, s = shapes["prefix"][0], shapes["suffix"][0]
        for j, row in zip(chunk, rows, strict=True):
            np.savez(
                out / f"{hashes[todo[j]]}.npz",
                prefix=row[:p],
                suffix=row[p : p + s],
                map=row[p + s :].reshape(shapes["map"]).astype(np.float16),
            )
        bar.update(len(chunk))
    bar.close()
    loaded = [np.load(out / f"{h}.npz") for h in hashes]
    return TrunkCache(
        np.stack([f["prefix"] for f in loaded]).astype(np.float32),
        np.stack([f["map"] for f in loaded]),
        np.stack([f["suffix"] for f in loaded]).astype(np.float32),
    )


# -- tuning ---------------------------------------------------------------------------------------


@torch.no_grad()
def tail_features(tail: nn.Module, maps: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
    """The tail's output (N x 1280, float64) for cached maps (the tail is always in eval mode)."""
    m = torch.as_tensor(maps)
    parts = [tail(m[s : s + batch].float()).double().numpy() for s in range(0, len(m), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def holdout_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit rows, held-out rows)``: whole content groups on either side (at least one each)."""
    uniq = np.unique(groups)
    if uniq.size < 2:
        raise InvalidInputError(
            "tail tuning holds out whole photos to choose its step: need >= 2 content groups"
        )
    n_hold = min(uniq.size - 1, max(1, round(fraction * uniq.size)))
    held = set(np.random.default_rng(seed).permutation(uniq)[:n_hold])
    mask = np.isin(groups, list(held))
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def tune_tail(
    student: Student,
    trunk: TrunkCache,
    expected: np.ndarray,
    reliability: np.ndarray,
    groups: Sequence[str],
    l2: float,
    config: TailTuneConfig | None = None,
    progress: bool = False,
    check: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``student``'s last stage (in place) towards the teacher's expected score of N images.

    Returns the curve (held-out agreement with the teacher per evaluated step), the step kept, the
    time taken and, under ``"head"``, the :class:`TunedHead` trained with the tail (not JSON: drop it
    before writing). The student's head is *not* updated: refit it on the tuned features.

    ``check``: what the held-out photos' scores are ranked against to choose the step (default
    ``expected``; NaN rows are not checked), e.g. only the labels when ``expected`` mixes the
    teacher's scores with labels.
    """
    cfg = config or TailTuneConfig()
    n = len(expected)
    if not (len(reliability) == len(groups) == n == len(trunk.maps)):
        raise InvalidInputError("need one teacher score, reliability and content group per cached image")
    started = time.time()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    fit, held = holdout_split(np.asarray(groups, dtype=str), cfg.holdout_fraction, cfg.seed)
    judged = np.isfinite(expected)  # an image without a teacher score is neither fitted nor checked
    reference = np.asarray(expected if check is None else check, dtype=np.float64)
    if reference.shape != (n,):
        raise InvalidInputError("check needs one value (or NaN) per cached image")
    fit, held = fit[judged[fit]], held[np.isfinite(reference[held])]
    if fit.size == 0 or held.size < 3:  # a rank correlation needs three images
        raise InvalidInputError("tail tuning needs teacher scores on both the fitted and the held-out photos")
    expected = np.where(judged, expected, 0.0)
    tail = StudentTail(student)
    was_trainable = [q.requires_grad for q in tail.parameters()]
    tail.requires_grad_(True)  # a frozen student's backbone has requires_grad off
    maps = torch.as_tensor(trunk.maps)
    x0 = trunk.features(tail_features(tail, maps)).astype(np.float64)
    _, mean, std = standardise(x0, fit)
    weights = np.clip(np.nan_to_num(reliability, nan=0.0), 0.0, None)
    coef, bias = RidgePath(((x0 - mean) / std)[fit], expected[fit], weights[fit]).solve(l2)
    z0 = (x0 - mean) / std
    p, d_tail = trunk.prefix.shape[1], x0.shape[1] - trunk.prefix.shape[1] - trunk.suffix.shape[1]
    tail_cols = np.arange(p, p + d_tail)
    frozen_cols = np.setdiff1d(np.arange(x0.shape[1]), tail_cols)
    frozen = torch.as_tensor(z0[:, frozen_cols], dtype=torch.float32)
    t_mean, t_std = (torch.as_tensor(v[tail_cols], dtype=torch.float32) for v in (mean, std))
    w_frozen = nn.Parameter(torch.as_tensor(coef[frozen_cols, 0], dtype=torch.float32))
    w_tail = nn.Parameter(torch.as_tensor(coef[tail_cols, 0], dtype=torch.float32))
    b = nn.Parameter(torch.as_tensor(float(bias[0]), dtype=torch.float32))

    def scores(rows: np.ndarray | torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        t = (tail(fmap) - t_mean) / t_std
        return frozen[rows] @ w_frozen + t @ w_tail + b

    def held_agreement() -> float:
        with torch.no_grad():
            t = (torch.as_tensor(tail_features(tail, maps[held]), dtype=torch.float32) - t_mean) / t_std
            s = frozen[held] @ w_frozen + t @ w_tail + b
        return float(srcc(s.double().numpy(), reference[held]))

    y = torch.as_tensor(expected, dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float32)
    side = int(maps.shape[-1])
    crop = max(1, round(cfg.crop_fraction * side))
    optimiser = torch.optim.Adam([*tail.parameters(), w_frozen, w_tail, b], lr=cfg.lr)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.steps) if cfg.schedule == "cosine" else None
    )

    def snapshot() -> tuple[dict[str, torch.Tensor], TunedHead]:
        coef = np.zeros(x0.shape[1])
        coef[frozen_cols], coef[tail_cols] = w_frozen.detach().numpy(), w_tail.detach().numpy()
        return copy.deepcopy(tail.state_dict()), TunedHead(coef, float(b.item()), mean, std)

    curve = [{"step": 0, "held_out_srcc_vs_teacher": held_agreement()}]
    (best_state, best_head), best = snapshot(), curve[0]
    bar = tqdm(total=cfg.steps, desc="tail", disable=not progress, leave=False)
    for step in range(1, cfg.steps + 1):
        rows = torch.as_tensor(rng.choice(fit, min(cfg.batch, fit.size), replace=False))
        top, left = rng.integers(0, side - crop + 1, 2)
        fmap = maps[rows].float()[:, :, top : top + crop, left : left + crop]
        loss = (w[rows] * (scores(rows, fmap) - y[rows]) ** 2).sum() / w[rows].sum().clamp_min(1e-12)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if schedule is not None:
            schedule.step()
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            curve.append({"step": step, "held_out_srcc_vs_teacher": held_agreement(), "loss": loss.item()})
            if curve[-1]["held_out_srcc_vs_teacher"] > best["held_out_srcc_vs_teacher"]:
                (best_state, best_head), best = snapshot(), curve[-1]
    bar.close()
    tail.load_state_dict(best_state)
    for q, flag in zip(tail.parameters(), was_trainable, strict=True):
        q.requires_grad_(flag)
    return {
        "config": cfg.to_dict(),
        "tail_start_block": tail_start(student),
        "fit_images": int(fit.size),
        "held_out_images": int(held.size),
        "held_out_groups": int(np.unique(np.asarray(groups)[held]).size),
        "curve": curve,
        "chosen_step": int(best["step"]),
        "seconds": round(time.time() - started, 3),
        "head": best_head,
    }
