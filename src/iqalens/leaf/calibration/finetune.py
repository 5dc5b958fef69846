"""Calibration mode (b) on a real student: fine-tune its head on a few MOS labels, regularised by the teacher.

What ``iqalens calibrate --method head-finetune`` does. Mode (a) (:mod:`iqalens.leaf.calibration.maps`)
fits a monotone map and cannot change which image the student ranks higher; mode (b) lets the labels
change the ranking too, at the risk of overfitting a handful of them. The distillation loss on the
teacher's judgments of the same pool of images (:func:`iqalens.leaf.head.finetune_head`) keeps the
head close to what it learned from the teacher:

    L = mean_labelled (s - y)^2 + lambda * L_distill(teacher judgments of the pool),
    y = (MOS - low) / (high - low)

with ``low``/``high`` the manifest's MOS range; the saved calibration maps the score back,
``low + s (high - low)``, clipped to the range (a 1..5 scale has no 5.3; the label-budget protocol
reports the unclipped value instead, to show extrapolation). The regulariser keeps the teacher's
level (KL) and pair terms and drops the regression onto the teacher's expected score, which would pull
the same output towards the teacher's scale (``LossConfig(w_reg=0)``, as in the protocol).

**What trains.** By default only the head (``Linear(d, 6)``), on pooled backbone features computed once
(frozen backbone, eval mode). With ``last_block`` the backbone's last block trains too, on cached
activations of the layers below it: EfficientNet-Lite0's last MBConv block and its 1x1 head
convolution; the tiny test backbone's last convolution. BatchNorm keeps its stored statistics (a few
labels are no basis for new ones). The output run folder is a complete student
(``student.safetensors``, ``student.json``, ``calibration.json``): ``iqalens score --model RUN`` and
``iqalens evaluate --model RUN`` accept it.

**Data.** The pool is the manifest's rows with a MOS (in ``split`` when the manifest has splits); the
budget's labels are drawn from it (:func:`iqalens.leaf.calibration.budgets.draw_budget`), and the regulariser
uses the teacher's judgments of every pool image that the store holds (matched by content hash).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from iqalens.datasets.manifest import read_manifest
from iqalens.errors import ConfigError, InvalidInputError
from iqalens.evaluation.metrics import plcc, srcc
from iqalens.files import content_hash
from iqalens.leaf.calibration.budgets import draw_budget, parse_budget
from iqalens.leaf.calibration.maps import Calibrator, save_calibrator
from iqalens.leaf.features import backbone_features
from iqalens.leaf.head import HeadConfig, finetune_head
from iqalens.leaf.losses import LossConfig
from iqalens.leaf.results import CalibrationResult
from iqalens.leaf.scoring import CALIBRATION_FILE, StudentScorer, load_scorer
from iqalens.leaf.student import Student, save_student
from iqalens.leaf.targets import TeacherTargets, choose_teacher, teacher_arrays
from iqalens.results import write_result
from iqalens.runs import start_run

#: The ``--method`` name of this mode.
METHOD = "head-finetune"


@dataclass
class FinetuneSettings:
    """Optimisation of the fine-tune (defaults: those of the label-budget protocol's mode (b))."""

    steps: int = 200
    lr: float = 3e-4
    reg_weight: float = 1.0  # lambda of the distillation regulariser (0 = labels only)
    last_block: bool = False
    batch: int = 64  # labelled images per step; teacher points and pairs per step each
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ConfigError(f"steps and batch must be >= 1, got {self.steps} and {self.batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.reg_weight < 0:
            raise ConfigError(f"reg_weight must be >= 0, got {self.reg_weight}")

    def head_config(self, dropout: float) -> HeadConfig:
        return HeadConfig(
            dropout=dropout,
            weight_decay=self.weight_decay,
            finetune_steps=self.steps,
            finetune_lr=self.lr,
            finetune_lambda=self.reg_weight,
            finetune_reg=LossConfig(w_reg=0.0),
            point_batch=self.batch,
            pair_batch=self.batch,
            label_batch=self.batch,
        )


# -- the trainable part ---------------------------------------------------------------------------


class _LiteTail(nn.Module):
    """EfficientNet-Lite0 from the input of its last MBConv block to the pooled 1280-d feature."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.block = net._blocks[-1]
        self.conv_head = net._conv_head
        self.bn = net._bn1
        self.act = net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)  # no drop-connect: deterministic fine-tuning
        return self.act(self.bn(self.conv_head(x))).mean(dim=(2, 3))


def split_backbone(student: Student) -> tuple[nn.Module, nn.Module]:
    """``(trunk, tail)`` of the student's backbone with ``tail(trunk(x)) == backbone(x)``; the tail's
    parameters are the student's own (shared, not copied)."""
    backbone = student.backbone
    kind = student.config.backbone
    if student.config.quality_stats:
        raise InvalidInputError(
            "fine-tuning the last block needs a student without quality_stats (the statistics are "
            "taken from the input crop, which a tail above the trunk never sees); fine-tune the head only"
        )
    if student.config.pooling != "last":
        # The multiscale feature also pools earlier stages, which a tail above the trunk never sees.
        raise InvalidInputError(
            "fine-tuning the last block needs a student with pooling 'last', not "
            f"{student.config.pooling!r}; "
            "fine-tune the head only"
        )
    if kind == "efficientnet-lite0":
        net = backbone.net  # type: ignore[union-attr]

        def trunk(x: torch.Tensor) -> torch.Tensor:
            x = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks[:-1]:
                x = block(x)
            return x

        return _Callable(trunk), _LiteTail(net)
    if kind == "tiny":
        layers = backbone.net  # type: ignore[union-attr]
        return layers[:4], layers[4:]
    raise InvalidInputError(
        f"fine-tuning the last block supports the efficientnet-lite0 and tiny backbones, not {kind!r}; "
        "fine-tune the head only"
    )


class _Callable(nn.Module):
    """A function as a module (the trunk: no parameters of its own)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class TrainableHead(nn.Module):
    """Optional backbone tail, then the student's dropout and head: cached inputs -> (score, logits).

    BatchNorm layers of the tail stay in eval mode even while training (stored statistics).
    """

    def __init__(self, head: nn.Linear, dropout: float, tail: nn.Module | None = None) -> None:
        super().__init__()
        self.tail = tail
        self.dropout = nn.Dropout(dropout)
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = x if self.tail is None else self.tail(x)
        out = self.head(self.dropout(feats))
        return out[:, 0], out[:, 1:]

    def train(self, mode: bool = True) -> TrainableHead:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


@torch.no_grad()
def _scores(module: TrainableHead, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    module.eval()
    return np.concatenate([module(x[i : i + batch])[0].double().numpy() for i in range(0, len(x), batch)])


# -- the run --------------------------------------------------------------------------------------


def _fit_metrics(pred: np.ndarray, mos: np.ndarray) -> dict[str, float | int]:
    if pred.size < 3 or np.ptp(mos) == 0:
        return {"n": int(pred.size)}
    return {"n": int(pred.size), "srcc": srcc(pred, mos), "plcc": plcc(pred, mos)}


def finetune_run(
    student_run: str | os.PathLike[str] | None,
    labels: str | os.PathLike[str],
    budget: int | float | str,
    store: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    teacher_id: str | None = None,
    prompt_version: str | None = None,
    split: str | None = "train",
    seed: int = 0,
    stratify: bool = False,
    settings: FinetuneSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``student_run`` (None = the bundled student) on ``budget`` labels of ``labels`` with the
    teacher's judgments in ``store`` as a regulariser; write a run folder; return its metrics."""
    from tqdm.auto import tqdm

    cfg = settings or FinetuneSettings()
    scorer = load_scorer(student_run)
    if not isinstance(scorer, StudentScorer):
        raise InvalidInputError("calibrate needs a student run folder (not an .onnx file)")
    student = copy.deepcopy(scorer.student).eval()
    manifest, _ = read_manifest(labels)
    has_splits = any(r.split for r in manifest.rows)
    rows = [
        r
        for r in manifest.rows
        if math.isfinite(r.mos) and (not has_splits or split is None or r.split == split)
    ]
    if not rows:
        raise InvalidInputError(
            f"{labels}: no images with a MOS" + (f" in split {split!r}" if has_splits else "")
        )
    scales = {r.mos_scale for r in rows}
    if len(scales) != 1 or None in scales:
        raise InvalidInputError(
            f"{labels}: fine-tuning needs one MOS scale, found {sorted(map(str, scales))}"
        )
    scale = rows[0].mos_scale
    assert scale is not None
    low, high = scale.low, scale.high
    paths = [manifest.resolve(r) for r in rows]
    mos = np.array([r.mos for r in rows])
    k = parse_budget(budget, len(rows))
    if k == 0:
        raise InvalidInputError(
            "head fine-tuning needs at least one label; budget 0 is the label-free mapping"
        )
    tid, pv = choose_teacher(store, teacher_id, prompt_version)
    started = time.perf_counter()

    # inputs of the trainable part, computed once with the frozen layers below it
    if cfg.last_block:
        if student.config.test_grid != 1:
            raise InvalidInputError(
                "fine-tuning the last block needs a student scored on one crop (test_grid 1)"
            )
        trunk, tail = split_backbone(student)
    else:
        trunk, tail = student.backbone, None
    bar = tqdm(total=len(paths), desc="features", unit="img", disable=not progress, leave=False)
    parts = []
    for chunk, feats in backbone_features(student, paths, forward=trunk):
        parts.append(feats)
        bar.update(len(chunk))
    bar.close()
    x = torch.from_numpy(np.concatenate(parts))

    module = TrainableHead(student.head, student.config.dropout, tail)
    before = _scores(module, x)
    labelled = draw_budget(len(rows), budget, seed=seed, strata=before if stratify else None)
    probs, expected, rel, pairs, pp, pr = teacher_arrays(store, tid, pv, [content_hash(p) for p in paths])
    teacher = TeacherTargets.restricted(np.arange(len(rows)), probs, expected, rel, pairs, pp, pr)
    if teacher.points.size == 0 and teacher.pairs.shape[0] == 0 and cfg.reg_weight > 0:
        raise InvalidInputError(
            f"{store} holds no judgments of {tid} / {pv} for these images: nothing to regularise with "
            "(teach them first, or set the regulariser weight to 0)"
        )
    y01 = (mos - low) / (high - low)
    tuned = finetune_head(module, x, labelled, y01, teacher, cfg.head_config(student.config.dropout), seed)
    after = _scores(tuned, x)

    # the tuned weights go back into the student (its head, and its tail when trained)
    student.head.load_state_dict(tuned.head.state_dict())
    if tuned.tail is not None:
        split_backbone(student)[1].load_state_dict(tuned.tail.state_dict())
    calibrator = Calibrator(
        "linear",
        {"slope": high - low, "intercept": low},
        n_fit=int(labelled.size),
        note=f"head fine-tune: score trained on (MOS - {low:g}) / ({high:g} - {low:g}); clipped to the range",
        clip=(low, high),
    )
    folder = start_run(
        out_dir,
        "calibrate",
        {
            "student": str(student_run or "bundled default"),
            "labels": str(labels),
            "budget": str(budget),
            "method": METHOD,
            "split": split,
            "stratify": stratify,
            "store": str(store),
            "teacher_id": tid,
            "prompt_version": pv,
            "finetune": asdict(cfg),
        },
        seed,
    )
    save_student(student, folder)
    save_calibrator(calibrator, folder / CALIBRATION_FILE)
    rest = np.setdiff1d(np.arange(len(rows)), labelled)
    metrics = {
        "method": METHOD,
        "labels_available": len(rows),
        "labels_used": int(labelled.size),
        "used_paths": [str(rows[i].path) for i in labelled],
        "calibration": calibrator.to_dict(),
        "trained": "last block + head" if cfg.last_block else "head",
        "teacher_points": int(teacher.points.size),
        "teacher_pairs": int(teacher.pairs.shape[0]),
        # Not a test result: the pool's unlabelled images may show the same content as labelled ones.
        "pool_unlabelled_before": _fit_metrics(before[rest], mos[rest]),
        "pool_unlabelled_after": _fit_metrics(low + after[rest] * (high - low), mos[rest]),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_result(folder, CalibrationResult(**metrics))
    return metrics
