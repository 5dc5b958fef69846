"""The label-budget experiment: every (seed, budget, arm), the label-free l2 choice, the summary.

See :mod:`iqalens.leaf.label_budget` for what the arms are and how they are compared.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from iqalens.evaluation.metrics import plcc, rmse, srcc
from iqalens.leaf.calibration import MIN_POINTS, Calibrator, draw_budget, fit, label_free, parse_budget
from iqalens.leaf.head import (
    LABELS_ONLY_MIN,
    HeadConfig,
    distill_head,
    finetune_head,
    head_scores,
    single_thread,
    train_labels_only,
)
from iqalens.leaf.label_budget.config import BudgetConfig
from iqalens.leaf.label_budget.data import BudgetData, load_budget_data
from iqalens.leaf.label_budget.results import write_results
from iqalens.leaf.ridge_head import choose_l2_by_labels, choose_l2_by_teacher, standardise, teacher_folds
from iqalens.leaf.student import StudentConfig
from iqalens.leaf.targets import TeacherTargets
from iqalens.runs import start_run


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
        "rmse": rmse(pred, mos),
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
    if cfg.solver == "ridge":  # closed form: one decomposition per fold serves every candidate
        teacher_all = TeacherTargets.of(data, pool)
        chosen, criteria = choose_l2_by_teacher(
            x, teacher_all, pool, data.groups, cfg.l2_candidates, folds, seed
        )
        return (cfg.l2, {}) if chosen is None else (chosen, criteria)
    fold = teacher_folds(np.asarray(data.groups), pool, folds, seed)
    if fold is None:
        return cfg.l2, {}
    splits = []
    for f in range(int(fold.max()) + 1):
        val = pool[(fold == f) & np.isfinite(data.teacher_expected[pool])]
        teacher = TeacherTargets.of(data, pool[fold != f])
        if val.size >= 3 and (teacher.points.size or teacher.pairs.shape[0]):
            splits.append((teacher, val))
    if not splits:
        return cfg.l2, {}
    per_fold: dict[float, list[float]] = {value: [] for value in cfg.l2_candidates}
    for teacher, val in splits:
        for value in cfg.l2_candidates:
            head = distill_head(x, teacher, replace(cfg, l2=value), seed)
            per_fold[value].append(srcc(head_scores(head, x[val]), data.teacher_expected[val]))
    criteria = {f"{value:g}": float(np.mean(scores)) for value, scores in per_fold.items()}
    best = max(cfg.l2_candidates, key=lambda v: (criteria[f"{v:g}"], -cfg.l2_candidates.index(v)))
    return float(best), criteria


def _label_cfg(
    cfg: HeadConfig,
    x: torch.Tensor,
    labelled: np.ndarray,
    y01: np.ndarray,
    data: BudgetData,
    prior: torch.nn.Module | None,
) -> HeadConfig:
    """The head setting of a label fit: with the ridge solver its penalty is chosen by grouped
    cross-validation on the budget's labels (the same rule for labels-only and mode (b); the
    label-free choice is kept when the labels are too few to cross-validate)."""
    if cfg.solver != "ridge":
        return cfg
    chosen, _ = choose_l2_by_labels(x, labelled, y01, data.groups, prior=prior)
    return cfg if chosen is None else replace(cfg, l2=chosen)


def _run_protocol(data: BudgetData, cfg: BudgetConfig, progress: bool) -> dict[str, Any]:
    pool, test = data.indices("train"), data.indices("test")
    x_np = data.features
    if cfg.standardize:
        x_np, _, _ = standardise(x_np, pool)
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
                        ft_cfg = _label_cfg(head_cfg, x, lab, y01, data, leaf_head)
                        tuned = finetune_head(leaf_head, x, lab, y01, teacher, ft_cfg, seed)
                        pred = low + head_scores(tuned, x[test]) * (high - low)
                        rows.append(
                            {
                                "arm": "leaf_ft",
                                **base,
                                "status": "ok",
                                "calibration": "head fine-tune + distillation regulariser",
                                "l2": ft_cfg.l2,
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
                    lo_cfg = _label_cfg(head_cfg, x, lab, y01, data, None)
                    head = train_labels_only(x, lab, y01, lo_cfg, seed)
                    pred = low + head_scores(head, x[test]) * (high - low)
                    rows.append(
                        {
                            "arm": "labels_only",
                            **base,
                            "status": "ok",
                            "calibration": "regression to MOS",
                            "l2": lo_cfg.l2,
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
