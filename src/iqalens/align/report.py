"""Before/after report of an alignment run: what changed, and what the vision encoder kept.

``perceive`` runs on the base model (``RUN/before``) and on the trained checkpoint (``RUN/after``)
over the same benchmark; :func:`compare_runs` puts their numbers side by side (forced-choice
accuracy and balanced accuracy, probe accuracy per site, semantic similarity / margin / rank per
class via :func:`iqalens.perception.semantic.compare`), and :func:`drift_measure` says how much of
the encoder's original behaviour survived: the share of clean images whose top-1 prediction of the
encoder's own pretraining classifier (EfficientNet-Lite0's ImageNet head for the mini model) is
unchanged, and the mean cosine between the encoder's pooled features before and after.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqalens.align.base import AlignableModel
from iqalens.align.data import _encoder_features
from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_write_text
from iqalens.images import load_rgb
from iqalens.perception.semantic import compare
from iqalens.runs import write_json
from iqalens.taxonomy import CLASSES


def clean_image_paths(
    manifest_path: str | os.PathLike[str], max_images: int = 64, seed: int = 0
) -> list[Path]:
    """Clean (reference) images of a benchmark: the test split's when it has any, else all of them."""
    manifest, _ = read_manifest(manifest_path)
    clean = [r for r in manifest.rows if r.perception_class == "clean"]
    test = [r for r in clean if r.split == "test"]
    rows = test or clean
    if max_images and len(rows) > max_images:
        keep = np.sort(np.random.default_rng([seed, 21]).permutation(len(rows))[:max_images])
        rows = [rows[i] for i in keep]
    return [manifest.resolve(r) for r in rows]


@torch.no_grad()
def encoder_readout(
    model: AlignableModel, paths: list[Path], batch_size: int = 16
) -> dict[str, np.ndarray | None]:
    """Pooled vision-encoder features [N, D] and top-1 classes of the encoder's own classifier [N]
    (None when the model has no such classifier) on images."""
    feats, top1 = [], []
    has_head = hasattr(model, "encoder_class_logits")
    for start in range(0, len(paths), batch_size):
        inputs = model.prepare([load_rgb(p) for p in paths[start : start + batch_size]])
        feats.append(_encoder_features(model, inputs).float().cpu().numpy())
        logits = model.encoder_class_logits(inputs) if has_head else None  # type: ignore[attr-defined]
        if logits is None:
            has_head = False
        else:
            top1.append(logits.argmax(dim=-1).cpu().numpy())
    return {
        "features": np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32),
        "top1": np.concatenate(top1) if has_head and top1 else None,
    }


def drift_measure(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Top-1 agreement of the encoder's classifier and mean feature cosine, before vs after (1.0 = kept)."""
    fb, fa = np.asarray(before["features"], np.float64), np.asarray(after["features"], np.float64)
    if fb.shape != fa.shape:
        raise InvalidInputError(f"feature shapes differ before {fb.shape} and after {fa.shape}")
    cos = (fb * fa).sum(1) / np.maximum(np.linalg.norm(fb, axis=1) * np.linalg.norm(fa, axis=1), 1e-12)
    agree = None
    if before.get("top1") is not None and after.get("top1") is not None:
        agree = float(np.mean(np.asarray(before["top1"]) == np.asarray(after["top1"])))
    return {
        "imagenet_top1_agreement": agree,
        "feature_cosine": float(cos.mean()) if len(cos) else None,
        "feature_cosine_min": float(cos.min()) if len(cos) else None,
        "n_images": int(len(cos)),
    }


def _entry(before: float | None, after: float | None) -> dict[str, float | None]:
    change = None if before is None or after is None else after - before
    rel = None if change is None or not before else change / abs(before)
    return {"before": before, "after": after, "change": change, "relative_change": rel}


def headline(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The three numbers metrics.json reports for each side."""
    fc, sem = metrics["forced_choice"], metrics["semantic"]["overall"]
    return {
        "forced_choice_accuracy": fc["accuracy"],
        "balanced_accuracy": fc["balanced_accuracy"],
        "mean_similarity_true": sem["mean_similarity_true"],
    }


def compare_runs(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Before/after of two ``perceive`` metrics dicts: forced choice, probes per site, semantic per class."""
    fb, fa = before["forced_choice"], after["forced_choice"]
    probes_b = {p["site"]: p for p in before["probes"]["curve"]}
    probes_a = {p["site"]: p for p in after["probes"]["curve"]}
    return {
        "forced_choice": {k: _entry(fb[k], fa[k]) for k in ("accuracy", "balanced_accuracy")},
        "probes": {
            site: {
                "test_accuracy": _entry(probes_b[site]["test_accuracy"], probes_a[site]["test_accuracy"]),
                "test_balanced_accuracy": _entry(
                    probes_b[site].get("test_balanced_accuracy"), probes_a[site].get("test_balanced_accuracy")
                ),
            }
            for site in probes_b
            if site in probes_a
        },
        "semantic": compare(before, after),
    }


def comparison_rows(comparison: Mapping[str, Any]) -> list[list[Any]]:
    """Long-format rows ``section, item, metric, before, after, change, relative_change``."""
    rows: list[list[Any]] = []

    def add(section: str, item: str, metric: str, e: Mapping[str, Any]) -> None:
        rows.append([section, item, metric, e["before"], e["after"], e["change"], e["relative_change"]])

    for metric, e in comparison["forced_choice"].items():
        add("forced_choice", "all", metric, e)
    for site, entries in comparison["probes"].items():
        for metric, e in entries.items():
            add("probe", site, metric, e)
    sem = comparison["semantic"]
    for metric, e in sem["overall"].items():
        add("semantic", "all", metric, e)
    for name in CLASSES:
        for metric, e in sem["per_class"].get(name, {}).items():
            add("semantic", name, metric, e)
    for metric, value in comparison.get("drift", {}).items():
        if metric in ("imagenet_top1_agreement", "feature_cosine"):
            add(
                "drift",
                "vision_encoder",
                metric,
                {"before": 1.0, "after": value, "change": None, "relative_change": None},
            )
    return rows


def write_comparison(out: str | os.PathLike[str], comparison: Mapping[str, Any]) -> None:
    """``comparison.json`` and ``comparison.csv`` in a run folder."""
    folder = Path(out)
    write_json(folder / "comparison.json", comparison)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["section", "item", "metric", "before", "after", "change", "relative_change"])
    for row in comparison_rows(comparison):
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    atomic_write_text(folder / "comparison.csv", buf.getvalue())
