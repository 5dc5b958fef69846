"""``perceive``: all three diagnostics of one model on one benchmark, written to a run folder.

The run folder gets ``config.json`` (what produced the numbers), ``metrics.json`` (every number),
CSVs a spreadsheet can open (per-class table, confusion matrix, probe curve, per-image answers
and similarities) and, when matplotlib is importable, PNG plots. matplotlib is optional on purpose:
the numbers are the result, the plots a convenience, and a headless server should not need it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.files import atomic_write_text
from iqalens.models.base import ComponentModel
from iqalens.perception.features import FeatureSet, extract_features
from iqalens.perception.forced_choice import forced_choice
from iqalens.perception.probes import probe_sites, probe_splits
from iqalens.perception.semantic import SEMANTIC_KEYS, semantic_distance
from iqalens.runs import start_run, write_json
from iqalens.taxonomy import CLASSES


def evaluation_mask(fs: FeatureSet, split: str = "test") -> tuple[np.ndarray, str]:
    """Rows forced choice and semantic distance are measured on: ``split`` when the manifest has it,
    else every labelled row (a benchmark without splits, or one whose ``split`` rows are absent)."""
    mask = np.array([s == split for s in fs.splits])
    if mask.any():
        return mask, split
    return np.ones(len(fs), dtype=bool), "all"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def perceive(
    model: ComponentModel,
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_id: str | None = None,
    class_words: Sequence[str] = CLASSES,
    batch_size: int = 8,
    eval_split: str = "test",
    l2: float = 1e-3,
    seed: int = 0,
    probe_max_iter: int = 300,
    plots: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Forced choice, per-site probes and semantic distance of ``model`` on a benchmark manifest.

    Features come from the on-disk cache (:func:`~iqalens.perception.features.extract_features`),
    so re-running with other probe settings does not touch the model. Forced choice and semantic
    distance use ``eval_split`` (all rows if the manifest has none of it); probes train on the
    train split and score on the test split (content-disjoint, assigned by reference if the
    manifest has no splits). Returns the dict written to ``metrics.json``.
    """
    out = Path(out_dir)
    config = {
        "model_id": model.model_id,
        "model_kind": getattr(model, "kind", ""),
        "checkpoint_id": checkpoint_id,
        "manifest": str(Path(manifest_path).resolve()),
        "class_words": list(class_words),
        "batch_size": batch_size,
        "eval_split": eval_split,
        "probe_l2": l2,
        "probe_max_iter": probe_max_iter,
    }
    start_run(out, "perceive", config, seed)
    fs = extract_features(
        model,
        manifest_path,
        cache_dir,
        checkpoint_id=checkpoint_id,
        class_words=class_words,
        batch_size=batch_size,
        progress=progress,
    )
    mask, used_split = evaluation_mask(fs, eval_split)
    fc = forced_choice(fs.class_scores[mask], fs.labels[mask])
    train, test, split_origin = probe_splits(fs.references, fs.splits, seed=seed)
    pr = probe_sites(
        fs.sites, fs.site_names, fs.labels, train, test, l2=l2, seed=seed, max_iter=probe_max_iter
    )
    pr["split_origin"] = split_origin
    sem = semantic_distance(fs.projector[mask], fs.word_embeddings, fs.labels[mask])

    predictions = fc.pop("predictions")
    similarities = np.asarray(sem.pop("similarities"))
    metrics: dict[str, Any] = {
        "model_id": fs.model_id,
        "checkpoint_id": fs.checkpoint_id,
        "manifest": config["manifest"],
        "manifest_hash": fs.manifest_hash,
        "feature_cache": str(fs.cache_dir),
        "n_images": len(fs),
        "skipped_rows": fs.skipped_rows,
        "eval_split": used_split,
        "class_words": fs.class_words,
        "forced_choice": fc,
        "probes": pr,
        "semantic": sem,
    }
    _write_tables(out, fs, mask, fc, pr, sem, predictions, similarities)
    metrics["plots"] = write_plots(out, metrics) if plots else {"note": "plots disabled"}
    write_json(out / "metrics.json", metrics)
    return metrics


def _write_tables(
    out: Path,
    fs: FeatureSet,
    mask: np.ndarray,
    fc: dict[str, Any],
    pr: dict[str, Any],
    sem: dict[str, Any],
    predictions: list[int],
    similarities: np.ndarray,
) -> None:
    classes = fc["classes"]
    _write_csv(
        out / "confusion.csv",
        ["true \\ answer", *classes],
        [[name, *row] for name, row in zip(classes, fc["confusion"], strict=True)],
    )
    _write_csv(
        out / "per_class.csv",
        ["class", "support", "forced_choice_recall", *SEMANTIC_KEYS],
        [
            [name, fc["support"][name], _fmt(fc["per_class_recall"][name])]
            + [_fmt(sem["per_class"][name][k]) for k in SEMANTIC_KEYS]
            for name in classes
        ],
    )
    _write_csv(
        out / "probe_curve.csv",
        ["site", "dim", "train_accuracy", "test_accuracy", "test_balanced_accuracy", "chance"],
        [
            [
                p["site"],
                p["dim"],
                _fmt(p["train_accuracy"]),
                _fmt(p["test_accuracy"]),
                _fmt(p["test_balanced_accuracy"]),
                _fmt(pr["chance"]),
            ]
            for p in pr["curve"]
        ],
    )
    idx = np.flatnonzero(mask)
    _write_csv(
        out / "images.csv",
        ["path", "reference", "split", "class", "answer", *[f"sim_{w}" for w in fs.class_words]],
        [
            [fs.paths[i], fs.references[i], fs.splits[i], classes[fs.labels[i]], classes[p]]
            + [f"{v:.6g}" for v in sims]
            for i, p, sims in zip(idx, predictions, similarities, strict=True)
        ],
    )


def write_plots(out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Probe curve, confusion matrix and per-class similarity as PNGs; a note instead without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"note": "matplotlib is not installed; plots skipped (pip install matplotlib to get them)"}
    files: list[str] = []
    pr, fc, sem = metrics["probes"], metrics["forced_choice"], metrics["semantic"]

    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(pr["sites"])), 3.5))
    ax.plot(range(len(pr["sites"])), pr["accuracy"], marker="o", label="probe test accuracy")
    ax.axhline(pr["chance"], color="grey", linestyle="--", label="chance (majority class)")
    ax.set_xticks(range(len(pr["sites"])), pr["sites"], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{metrics['model_id']}: distortion information per site")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "probe_curve.png", dpi=120)
    plt.close(fig)
    files.append("probe_curve.png")

    classes = fc["classes"]
    conf = np.asarray(fc["confusion"], dtype=float)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("answer")
    ax.set_ylabel("true class")
    ax.set_title(f"forced choice: accuracy {fc['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=120)
    plt.close(fig)
    files.append("confusion.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    vals = [sem["per_class"][c]["mean_similarity_true"] for c in classes]
    margins = [sem["per_class"][c]["mean_margin"] for c in classes]
    x = np.arange(len(classes))
    ax.bar(x - 0.2, [np.nan if v is None else v for v in vals], 0.4, label="similarity to true word")
    ax.bar(x + 0.2, [np.nan if v is None else v for v in margins], 0.4, label="margin over best wrong word")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.legend(fontsize=7)
    ax.set_title("semantic distance per class")
    fig.tight_layout()
    fig.savefig(out / "semantic.png", dpi=120)
    plt.close(fig)
    files.append("semantic.png")
    return {"files": files}
