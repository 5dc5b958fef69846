"""Calibrate a student with a few MOS labels (mode (a)): the library entry point behind ``iqalens calibrate``.

It scores the manifest's labelled images with the student (raw scores), draws the label budget
reproducibly (:mod:`~iqalens.leaf.calibration.budgets`), fits the map
(:mod:`~iqalens.leaf.calibration.maps`, or :func:`~iqalens.leaf.calibration.label_free_map.label_free` at
budget 0) and writes a run folder holding the student, ``calibration.json`` and the typed result.
Mode (b), the head fine-tune, is :mod:`iqalens.leaf.calibration.finetune`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.leaf.calibration.budgets import draw_budget, parse_budget
from iqalens.leaf.calibration.label_free_map import label_free
from iqalens.leaf.calibration.maps import fit, save_calibrator
from iqalens.leaf.evaluate import rows_with_mos
from iqalens.leaf.results import CalibrationResult
from iqalens.leaf.scoring import CALIBRATION_FILE, StudentScorer, load_scorer, score_paths
from iqalens.leaf.student import save_student
from iqalens.results import write_result
from iqalens.runs import start_run


def calibrate_run(
    student_run: str | os.PathLike[str] | None,
    labels: str | os.PathLike[str],
    budget: int | float | str,
    out_dir: str | os.PathLike[str],
    method: str = "auto",
    split: str | None = "train",
    seed: int = 0,
    stratify: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a calibration of ``student_run`` (None = the bundled student) on ``budget`` labels.

    Labels come from ``labels`` (a manifest with MOS), restricted to ``split`` when the manifest has
    splits. ``method`` is a :data:`iqalens.leaf.calibration.METHODS` name; the default ``auto``
    picks the map by cross-validation, which keeps a few noisy labels from fitting a step. Budget 0
    is the label-free mode: the raw [0, 1] score is mapped linearly onto the manifest's MOS range.
    When the manifest names its MOS scale, fitted maps are clipped to it (a line fitted on a few
    labels would otherwise extrapolate off the scale for unusual images). The output run folder
    holds the student, ``calibration.json`` and ``metrics.json`` (which images were used, the fit).
    """
    scorer = load_scorer(student_run)
    if not isinstance(scorer, StudentScorer):
        raise InvalidInputError("calibrate needs a student run folder (not an .onnx file)")
    manifest, _ = read_manifest(labels)
    has_splits = any(r.split for r in manifest.rows)
    pool = rows_with_mos(manifest, split if has_splits else None)
    results = score_paths(scorer, [pool.resolve(r) for r in pool.rows], progress=progress)
    ok = [(row, res.raw) for row, res in zip(pool.rows, results, strict=True) if res.ok]
    if not ok:
        raise InvalidInputError(f"none of the labelled images of {labels} could be scored")
    raw = np.array([float(r) for _, r in ok])
    mos = np.array([row.mos for row, _ in ok])
    scale = ok[0][0].mos_scale
    if parse_budget(budget, len(ok)) == 0:
        idx = np.array([], dtype=int)
    else:
        idx = draw_budget(len(ok), budget, seed=seed, strata=raw if stratify else None, method=method)
    if len(idx) == 0:
        if scale is None:
            raise InvalidInputError("label-free calibration needs the manifest's mos_scale")
        calibrator = label_free(scale)
    else:
        calibrator = fit(raw[idx], mos[idx], method=method)
        if scale is not None:  # a line fitted on a few labels must not predict off the MOS scale
            calibrator = replace(calibrator, clip=(scale.low, scale.high))
    if scale is not None:
        # What the calibrated scores mean, carried with the calibrator so that every output of the
        # model (score files, reports) can say whether its scale is human MOS or a proxy.
        proxy = manifest.provenance.get("proxy_mos")
        name = f"proxy MOS: {proxy}" if proxy else f"MOS of {Path(labels).name}"
        calibrator.extra["scale"] = {
            "low": scale.low,
            "high": scale.high,
            "higher_is_better": scale.higher_is_better,
            "name": name,
        }
    folder = start_run(
        out_dir,
        "calibrate",
        {
            "student": str(student_run or "bundled default"),
            "labels": str(labels),
            "budget": str(budget),
            "method": method,
            "split": split,
            "stratify": stratify,
        },
        seed,
    )
    save_student(scorer.student, folder)
    save_calibrator(calibrator, folder / CALIBRATION_FILE)
    metrics = {
        "labels_available": len(ok),
        "labels_used": len(idx),
        "used_paths": [str(ok[i][0].path) for i in idx],
        "calibration": calibrator.to_dict(),
    }
    write_result(folder, CalibrationResult(**metrics))
    return metrics
