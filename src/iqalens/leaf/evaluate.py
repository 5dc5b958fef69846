"""Evaluate any model on a manifest: the library entry point behind ``iqalens evaluate``.

It scores the manifest's images (its test split by default) with the model and compares them with their
MOS (:func:`iqalens.evaluation.metrics.evaluate`: correlations, the fitted map, bootstrap intervals
over whole reference images), writing a run folder with config, metrics and predictions.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

import numpy as np

from iqalens.datasets.distortion_names import distortion_label
from iqalens.datasets.manifest import Manifest, read_manifest
from iqalens.errors import InvalidInputError
from iqalens.evaluation.by_distortion import distortion_breakdown
from iqalens.evaluation.metrics import evaluate
from iqalens.leaf.results import EvaluationResult
from iqalens.leaf.scoring import load_scorer, score_paths
from iqalens.results import write_result
from iqalens.runs import start_run


def rows_with_mos(manifest: Manifest, split: str | None) -> Manifest:
    """The rows of ``manifest`` with a MOS (in ``split`` unless None); an error when there are none."""
    rows = [r for r in manifest.rows if not math.isnan(r.mos) and (split is None or r.split == split)]
    if not rows:
        where = f" in split {split!r}" if split else ""
        raise InvalidInputError(f"the manifest has no images with a MOS{where}")
    return manifest.with_rows(rows)


def evaluate_run(
    model: str | os.PathLike[str] | None,
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str | None = "test",
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a manifest's images (its ``split`` if it has splits) and compare with their MOS.

    Writes ``metrics.json`` (SRCC, PLCC raw and after the 4-parameter logistic, KRCC, RMSE, 95%
    bootstrap intervals resampling whole references, per-source breakdown, and per distortion type when
    the manifest names types) and ``predictions.csv``.
    With fewer than :data:`iqalens.evaluation.metrics.MIN_BOOTSTRAP_GROUPS` reference images there are
    no intervals: ``ci_unavailable`` says so instead.
    """
    scorer = load_scorer(model)
    manifest, _ = read_manifest(manifest_path)
    has_splits = any(r.split for r in manifest.rows)
    pool = rows_with_mos(manifest, split if has_splits else None)
    results = score_paths(scorer, [pool.resolve(r) for r in pool.rows], progress=progress)
    pairs = [(row, res) for row, res in zip(pool.rows, results, strict=True) if res.ok]
    pred = np.array([float(res.score) for _, res in pairs])
    mos = np.array([row.mos for row, _ in pairs])
    result = evaluate(
        pred,
        mos,
        sources=[r.source for r, _ in pairs],
        n_boot=n_boot,
        seed=seed,
        groups=[r.reference for r, _ in pairs],
        group_name="reference images",
    )
    folder = start_run(
        out_dir,
        "evaluate",
        {
            "model": str(model or "bundled default"),
            "manifest": str(manifest_path),
            "split": split,
            "n_boot": n_boot,
        },
        seed,
    )
    metrics = {
        "images": len(pairs),
        "unreadable": [res.path for res in results if not res.ok],
        "mos_note": manifest.provenance.get("proxy_mos", "MOS as given by the manifest"),
        **result.to_dict(),
    }
    if any(r.dist_type for r, _ in pairs):  # a synthetic benchmark: where does the model fail?
        labels = [distortion_label(r.dist_type, r.source) for r, _ in pairs]
        metrics["per_distortion"] = distortion_breakdown(pred, mos, labels, result.fit)
    write_result(folder, EvaluationResult(**metrics))
    with open(folder / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reference", "source", "dist_type", "dist_level", "mos", "prediction"])
        for (row, _res), p in zip(pairs, pred, strict=True):
            level = "" if row.dist_level is None else row.dist_level
            writer.writerow([row.path, row.reference, row.source, row.dist_type, level, row.mos, p])
    return metrics
