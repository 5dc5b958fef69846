"""The labels-only baseline: the same student trained on the labelled images alone, no teacher.

LEAF's claim is that a teacher's judgments of the *unlabelled* images make a few human labels go
further. The fair comparison is therefore the same student (frozen backbone + linear head, the same
pooled features) trained only on the labels a calibration used, and evaluated on the same test
images. :func:`labels_only_baseline` is that comparison for one calibrated run (the demo shows it
next to the LEAF student); the label-budget experiment (``iqalens budget``) repeats it over budgets
and seeds. With ``HeadConfig(solver="ridge")`` the head is fitted in closed form and its penalty
chosen by grouped cross-validation on the same labels (by content: a photo's versions stay together),
the rule the label-budget protocol uses for both label arms.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import plcc, srcc
from iqalens.leaf.features import cache_features
from iqalens.leaf.head import HeadConfig, head_scores, train_labels_only
from iqalens.leaf.ridge_head import choose_l2_by_labels
from iqalens.leaf.student import StudentConfig

__all__ = ["labels_only_baseline"]

#: Head penalty of the baseline: what the label-budget protocol's label-free selection chose for the
#: multiscale features on every seed (docs/label_budget_multiscale.md), so no labels pick it here.
BASELINE_L2 = 10.0


def labels_only_baseline(
    manifest_path: str | os.PathLike[str],
    used_paths: Sequence[str],
    feature_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    student_config: StudentConfig | None = None,
    seed: int = 0,
    head: HeadConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a head on the MOS of ``used_paths`` (manifest-relative, as a calibration records them)
    and score the ``split`` rows; returns the labels used, the test images and SRCC/PLCC.

    Features are standardised with the mean and std of the manifest's train split (no labels
    involved), as in the label-budget protocol.
    """
    manifest, _ = read_manifest(manifest_path)
    by_path = {r.path: r for r in manifest.rows}
    missing = [p for p in used_paths if p not in by_path]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} labelled images are not in {manifest_path}, e.g. {missing[0]}"
        )
    labelled = [by_path[p] for p in used_paths]
    test = [r for r in manifest.rows if r.split == split and math.isfinite(r.mos)]
    train = [r for r in manifest.rows if r.split == "train"] or labelled
    if not test:
        raise InvalidInputError(f"{manifest_path} has no '{split}' rows with a MOS to evaluate on")
    scale = labelled[0].mos_scale if labelled else None
    if scale is None:
        raise InvalidInputError("the labelled rows need a MOS and its scale")
    rows = list(dict.fromkeys([*train, *labelled, *test]))
    feats = cache_features(
        [manifest.resolve(r) for r in rows], feature_dir, student_config, progress=progress
    )
    index = {r.path: i for i, r in enumerate(rows)}
    train_x = feats[[index[r.path] for r in train]]
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    x = torch.as_tensor((feats - mean) / std, dtype=torch.float32)
    lab = np.array([index[r.path] for r in labelled])
    y = np.zeros(len(rows))
    y[lab] = [(r.mos - scale.low) / (scale.high - scale.low) for r in labelled]
    cfg = head or HeadConfig(l2=BASELINE_L2)
    chosen_by = "given"
    if cfg.solver == "ridge":  # the penalty by grouped cross-validation on these labels alone
        groups = np.array([r.reference or r.path for r in rows])
        chosen, _ = choose_l2_by_labels(x, lab, y, groups)
        if chosen is not None:
            cfg, chosen_by = replace(cfg, l2=chosen), "grouped_cv_on_labels"
    trained = train_labels_only(x, lab, y, cfg, seed)
    pred = scale.low + (scale.high - scale.low) * head_scores(trained, x[[index[r.path] for r in test]])
    mos = np.array([r.mos for r in test])
    return {
        "labels_used": len(labelled),
        "test_images": len(test),
        "srcc": srcc(pred, mos),
        "plcc": plcc(pred, mos),
        "solver": cfg.solver,
        "l2": cfg.l2,
        "l2_chosen_by": chosen_by,
        "steps": cfg.label_steps if cfg.solver == "adamw" else 0,
    }
