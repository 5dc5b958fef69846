"""The perception paper's experiment at full offline scale: which part of a vision-language model must
be fine-tuned so that it names low-level distortions, and what the drift constraint costs.

One command, resumable (every finished cell is kept; rerunning skips it):

    .venv/bin/python benchmarks/p1_reproduction.py -o runs/p1 --markdown docs/p1_reproduction.md

What it does (docs/p1_reproduction.md gives the numbers and says why each choice was made):

1. **Benchmark**: every photo of ``../shared/data/pristine`` (CBSD68 + McMaster) x 25 KADID-10k types x
   5 levels + the clean photo, content-disjoint train/val/test by photo (``iqalens bench build``).
2. **Class-balanced subset**: per photo and perception class at most ``--per-class`` images (seeded), so
   that every class weighs about the same in training and in the test accuracy (the paper's
   forced-choice task is over classes, not over the 25 types).
3. **Base model**: the pre-aligned mini model read at ``--resize-shorter`` (default 384 = the
   benchmark's native height: no down-scaling, so noise and compression artefacts stay visible to
   the encoder) and a centre crop of ``--image-size`` (default the model's 224; 384 shows the
   encoder the whole height). This model is the "untrained" cell.
4. **Cells**: one ``iqalens align`` run per (cell, seed), each with its before/after diagnostics
   (forced choice, per-site linear probes, semantic similarity on the test photos; ImageNet
   agreement and feature cosine on the clean photos). The vision encoder trains from site
   ``--encoder-frozen-sites`` on (stem and first stages frozen, their output cached: the probes
   show those sites still hold the distortion information), unless the cell sets its own (the
   V+P cells that tap site 3 train after site 4); cells without the encoder train on cached
   encoder outputs.
5. **Summary**: ``grid.json`` / ``grid.csv``, a markdown table (mean +- std over seeds) and one
   figure (forced choice per cell; probe accuracy per site before/after). ``--common-test MANIFEST``
   adds each run's forced choice on the test images of another subset (e.g. ``manifest_p1_4.csv``):
   above 4 per class the subset stops being balanced (a photo has at most 5 clean images, but 10-30
   versions of each other class), so runs of different ``--per-class`` compare only on the same images.

``--config FILE`` runs the same cells on another model (docs/recipes/p1_mplug_owl2.json): the file
gives ``model``, ``model_options``, ``seeds``, ``cells`` (each: ``name``, ``train``, ``w_constraint``,
``lora``, ``steps``, ``batch_size``, ``lr``), ``device`` and ``precision``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.align.config import AlignConfig, parse_components
from iqalens.align.grid_result import AlignGridResult, cell_numbers, mean_std, write_grid_result
from iqalens.align.mini import save_mini_at_resolution
from iqalens.align.run import finished

PRISTINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pristine"


@dataclass(frozen=True)
class Cell:
    """One grid cell: the components trained and the constraint weight (0 = off)."""

    name: str
    train: str  # "V+P", or "-" for the untrained model
    w_constraint: float = 0.0
    overrides: dict[str, Any] = field(default_factory=dict)


#: The tapped recipe of session 19 (``P+stats3-4+fh+std``): taps 3 and 4 as image-wide statistics,
#: the head's columns frozen, the tap columns trained on standardised inputs, all steps run.
_STD_TAPS: dict[str, Any] = {
    "projector_taps": (3, 4),
    "projector_tap_pool": "stats",
    "projector_head_frozen": True,
    "projector_tap_standardise": True,
    "patience": 100,
}
#: Session 20's longer schedule at a higher learning rate.
_LONG: dict[str, Any] = {"lr": 3e-3, "max_steps": 1200, "eval_every": 50, "checkpoint_every": 50}

#: The paper's cells on the mini model. The constraint weight 10 makes the drift term comparable to
#: the alignment loss (docs/alignment.md); main cells get every seed.
DEFAULT_CELLS: tuple[Cell, ...] = (
    Cell("untrained", "-"),
    Cell("V", "V"),
    Cell("P", "P"),
    Cell("L", "L"),
    Cell("V+P", "V+P"),
    Cell("V+P+c", "V+P", 10.0),
    # the same weight on the drift of the encoder's ImageNet *predictions* (KL of its classifier)
    # instead of its features: what the agreement target measures (added in session 8)
    Cell("V+P+kl", "V+P", 10.0, overrides={"constraint": "logits"}),
    Cell("V+P+L", "V+P+L"),
    # the projector also reads the mid-encoder site where the untrained model's probes peak (vision.4;
    # `iqalens align --projector-taps 4`, new weights zero at the start): distortion information
    # reaches the language model with the encoder untouched (P) or constrained (V+P+c), added in
    # session 13
    Cell("P+tap4", "P", overrides={"projector_taps": (4,)}),
    Cell("V+P+c+tap4", "V+P", 10.0, overrides={"projector_taps": (4,)}),
    # the taps summarised as image-wide channel mean + std instead of cell means
    # (`--projector-taps 3,4 --projector-tap-pool stats`): a one-off probe check found an MLP on these
    # statistics of sites 3 and 4 reads the classes better than on vision.4's means (added in session 14)
    Cell("P+stats3-4", "P", overrides={"projector_taps": (3, 4), "projector_tap_pool": "stats"}),
    # the same, every class drawn equally often in training (`--balance-classes`): clean has half the
    # images of the other classes at 8 per photo and class, and was almost never answered
    Cell(
        "P+stats3-4+bal",
        "P",
        overrides={"projector_taps": (3, 4), "projector_tap_pool": "stats", "balance_classes": True},
    ),
    # the same, the projector's weights on the head's inputs kept as they are
    # (`--projector-head-frozen`): an MLP on the tap statistics alone reads the classes of unseen
    # photos better than one also given the head's semantic channels (0.72 vs 0.58 on the validation
    # photos), which let it fit the training photos' content (added in session 17)
    Cell(
        "P+stats3-4+fh",
        "P",
        overrides={"projector_taps": (3, 4), "projector_tap_pool": "stats", "projector_head_frozen": True},
    ),
    # the same, the tap columns trained on standardised inputs (`--projector-tap-standardise`; the raw
    # statistics sit up to 9 from zero) and no early stopping (patience past the 300 steps: with 9
    # validation photos patience 4 stopped one seed of +fh at step 150); added in session 19
    Cell("P+stats3-4+fh+std", "P", overrides=_STD_TAPS),
    # the same, trained 4x longer at 3x the learning rate (1200 steps of 32 at lr 3e-3, validation
    # every 50): the MLP that reads these statistics best needs 60+ epochs, 300 steps are 5; added in
    # session 20
    Cell("P+stats3-4+fh+std+long", "P", overrides={**_STD_TAPS, **_LONG}),
    # the paper's target cell on top of that: the encoder trained too (after site 4, whose input is
    # the cached site-3 map: the site-4 tap is then live) under the feature constraint, at encoder
    # lr 1e-5 (session 17: 1e-4 cost ImageNet agreement, 0.93); added in session 20
    Cell(
        "V+P+c+stats3-4+fh+std",
        "V+P",
        10.0,
        overrides={**_STD_TAPS, "encoder_frozen_sites": 4, "pretrained_lr_scale": 0.01},
    ),
    # the same with the long recipe (projector lr 3e-3, encoder still 1e-5)
    Cell(
        "V+P+c+stats3-4+fh+std+long",
        "V+P",
        10.0,
        overrides={**_STD_TAPS, **_LONG, "encoder_frozen_sites": 4, "pretrained_lr_scale": 1 / 300},
    ),
    # the paper's Q-Instruct observation: the language model trained on quality-description templates
    # only (five MOS levels, "bad quality" .. "excellent quality"), then asked to name the distortion
    Cell("template-overfit", "L", overrides={"target": "quality"}),
)
MAIN_CELLS = (
    "V+P",
    "V+P+c",
    "P+tap4",
    "P+stats3-4",
    "P+stats3-4+bal",
    "P+stats3-4+fh",
    "P+stats3-4+fh+std",
    "P+stats3-4+fh+std+long",
    "V+P+c+stats3-4+fh+std",
    "V+P+c+stats3-4+fh+std+long",
)


# -- data ------------------------------------------------------------------------------------------


def build_bench(out: Path, pristine: Path, workers: int) -> Path:
    """All 25 types x 5 levels of every pristine photo (resumes an interrupted build)."""
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark

    folders = [pristine / "cbsd68", pristine / "mcmaster"]
    if not all(f.is_dir() for f in folders):
        raise SystemExit(f"{pristine}: need cbsd68/ and mcmaster/ (../shared/data/pristine beside the repo)")
    return build_benchmark(out, refs=[str(f) for f in folders], spec=BenchmarkSpec(), workers=workers)


def balanced_manifest(manifest: Path, out: Path, per_class: int, seed: int) -> Path:
    """At most ``per_class`` rows per (photo, perception class), seeded; written beside ``out``."""
    from iqalens.datasets.manifest import read_manifest, write_manifest
    from iqalens.taxonomy import CLASSES

    if out.is_file():
        return out
    full, _ = read_manifest(manifest)
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in full.rows:
        if row.perception_class in CLASSES:
            groups[(row.reference or row.path, row.perception_class)].append(row)
    rng = np.random.default_rng(seed)
    keep = []
    for key in sorted(groups):
        rows = groups[key]
        keep += [rows[i] for i in sorted(rng.permutation(len(rows))[:per_class])]
    sub = full.with_rows(keep)
    sub.provenance = {
        **sub.provenance,
        "subset": f"p1_reproduction: <= {per_class} per photo and class, seed {seed}",
    }
    return write_manifest(sub, out)


# -- cells -----------------------------------------------------------------------------------------


def cell_config(cell: Cell, seed: int, settings: dict[str, Any]) -> AlignConfig:
    """The cell's config: the grid's settings, then the cell's overrides (which win).
    A cell that trains no encoder drops ``encoder_frozen_sites``; the config refuses a bad mix
    (a tap inside the cached trunk, say) here, before any work."""
    train = parse_components(cell.train)
    fields = dict(settings)
    if "vision_encoder" not in train:
        fields.pop("encoder_frozen_sites", None)
    fields |= cell.overrides
    return AlignConfig(train=train, w_constraint=cell.w_constraint, seed=seed, **fields)


def run_cell(
    cell: Cell,
    seed: int,
    model_spec: str,
    manifest: Path,
    out: Path,
    settings: dict[str, Any],
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One align run (resumed or skipped when finished) -> its metrics."""
    from iqalens.align.run import run_align

    folder = out / "cells" / f"{cell.name}-s{seed}"
    if finished(folder):
        return dict(json.loads((folder / "metrics.json").read_text()))
    return run_align(
        model_spec,
        manifest,
        folder,
        cell_config(cell, seed, settings),
        cache_dir=out / "features",
        perceive_options={"samples": 0, "batch_size": 32},
        model_options=model_options,
    )


def wall_seconds(folder: Path) -> float | None:
    """Start (the run's config.json) to finish (its metrics.json): training, inputs and diagnostics."""
    from datetime import datetime

    try:
        started = json.loads((folder / "config.json").read_text())["started"]
        end = (folder / "metrics.json").stat().st_mtime
        return round(end - datetime.fromisoformat(started).timestamp(), 1)
    except (OSError, KeyError, ValueError):
        return None


def row_of(cell: Cell, seed: int, metrics: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    return {
        "cell": cell.name,
        "train": cell.train,
        "constraint": cell.w_constraint,
        "seed": seed,
        "run": f"cells/{cell.name}-s{seed}",
        **cell_numbers(metrics),
        "best_step": metrics.get("best_step"),
        "wall_seconds": wall_seconds(folder) if folder is not None else None,
    }


def common_test_scores(run: Path, side: str, base: Path, paths: set[str]) -> dict[str, Any]:
    """Forced choice and balanced accuracy of a finished run's ``side`` ("before"/"after") answers on
    those of its test images whose resolved path is in ``paths``; ``base``: the folder its manifest's
    relative paths start from. Empty when the run has no answers there."""
    file = run / side / "images.csv"
    if not file.is_file():
        return {}
    right: dict[str, list[bool]] = defaultdict(list)
    with file.open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == "test" and os.path.normpath(base / r["path"]) in paths:
                right[r["class"]].append(r["answer"] == r["class"])
    n = sum(len(v) for v in right.values())
    if not n:
        return {}
    return {
        "fc_common": sum(sum(v) for v in right.values()) / n,
        "bal_common": sum(sum(v) / len(v) for v in right.values()) / len(right),
        "n_common": n,
    }


def paths_of_test_split(manifest: Path) -> set[str]:
    """The normalised paths of a manifest's test rows (for :func:`common_test_scores`)."""
    with manifest.open(newline="") as fh:
        return {
            os.path.normpath(manifest.parent / r["path"]) for r in csv.DictReader(fh) if r["split"] == "test"
        }


def add_common_scores(rows: list[dict[str, Any]], out: Path, manifest: Path, common: Path) -> None:
    """Add every row's scores on ``common``'s test images (the untrained row: its "before" answers)."""
    paths = paths_of_test_split(common)
    for r in rows:
        side = "before" if r["cell"] == "untrained" else "after"
        r |= common_test_scores(out / r["run"], side, manifest.parent, paths)


def untrained_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The untrained cell: the "before" side every run measured on the same base model and test photos."""
    first = next((r for r in rows if r["fc_before"] is not None), None)
    if first is None:
        return []
    keys = ("fc_before", "bal_before", "sim_before")
    base = {k: first[k] for k in keys}
    return [
        {
            "cell": "untrained",
            "train": "-",
            "constraint": 0.0,
            "seed": 0,
            "run": first["run"],
            **base,
            "fc_after": base["fc_before"],
            "bal_after": base["bal_before"],
            "sim_after": base["sim_before"],
            "imagenet_agreement": 1.0,
            "feature_cosine": 1.0,
            "steps": 0,
            "best_step": 0,
            "train_seconds": 0.0,
            "wall_seconds": 0.0,
        }
    ]


# -- summary ---------------------------------------------------------------------------------------


def _ms(values: Sequence[Any]) -> str:
    m, s = mean_std(values)
    if m is None:
        return "n/a"
    return f"{m:.3f}" + (f" ± {s:.3f}" if len(values) > 1 else "")


def markdown(rows: Sequence[dict[str, Any]], header: str) -> str:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["cell"]].append(r)
    lines = [
        header,
        "",
        "| cell | trained | constraint | seeds | forced choice (test) | balanced acc. "
        "| similarity to true word | ImageNet top-1 agreement | encoder feature cosine "
        "| best step / steps | train s | whole run s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    common = any("fc_common" in r for r in rows)
    if common:
        lines[2] += " forced choice / balanced on the common test images (n) |"
        lines[3] += " --- |"
    for name, rs in by.items():
        r0 = rs[0]
        extra = (
            f" {_ms([r.get('fc_common') for r in rs])} / {_ms([r.get('bal_common') for r in rs])}"
            f" ({r0.get('n_common', 'n/a')}) |"
            if common
            else ""
        )
        lines.append(
            f"| {name} | {r0['train']} | {r0['constraint'] or 'off'} | {len(rs)} "
            f"| {_ms([r['fc_after'] for r in rs])} "
            f"| {_ms([r['bal_after'] for r in rs])} | {_ms([r['sim_after'] for r in rs])} "
            f"| {_ms([r['imagenet_agreement'] for r in rs])} | {_ms([r['feature_cosine'] for r in rs])} "
            f"| {'/'.join(str(r.get('best_step')) for r in rs)} / {r0['steps']} "
            f"| {_ms([r['train_seconds'] for r in rs])} | {_ms([r.get('wall_seconds') for r in rs])} |"
            + extra
        )
    return "\n".join(lines) + "\n"


def probe_curves(out: Path, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Probe accuracy per site: "before" (the base model) and "after" per cell (mean over seeds)."""
    curves: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for side, label in (("before", "untrained"), ("after", r["cell"])):
            if r["cell"] == "untrained" and side == "after":
                continue
            path = out / r["run"] / side / "probe_curve.csv"
            if not path.is_file():
                continue
            with path.open() as fh:
                for rec in csv.DictReader(fh):
                    curves[label][rec["site"]].append(float(rec["test_accuracy"]))
    return {k: {s: statistics.fmean(v) for s, v in c.items()} for k, c in curves.items()}


def figure(
    rows: Sequence[dict[str, Any]], curves: dict[str, dict[str, float]], chance: float, path: Path
) -> None:
    """Forced choice per cell (mean, std bar) and the probe curve per site before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if isinstance(r["fc_after"], int | float):
            by[r["cell"]].append(float(r["fc_after"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5))
    names = list(by)
    means = [statistics.fmean(by[n]) for n in names]
    spreads = [statistics.pstdev(by[n]) for n in names]
    a.bar(range(len(names)), means, yerr=spreads)
    # cell names are long (P+stats3-4+fh+std+long): slanted, and each bar says its mean and seed count
    a.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    for i, (name, mean, spread) in enumerate(zip(names, means, spreads, strict=True)):
        a.annotate(f"{mean:.3f}\nn={len(by[name])}", (i, mean + spread), ha="center", va="bottom", fontsize=6)
    a.axhline(chance, ls="--", c="grey", label=f"chance {chance:.3f}")
    a.set_ylabel("forced-choice accuracy (test photos)")
    a.set_title("Which component to fine-tune")
    a.set_ylim(0, min(1.0, max(means) + max(spreads) + 0.08))  # room for the labels above the bars
    a.legend(loc="center left")  # above the untrained bar, where no bar or label is
    sites = list(curves.get("untrained", next(iter(curves.values()), {})))
    for label, curve in curves.items():
        a_ = [curve.get(s, float("nan")) for s in sites]
        b.plot(range(len(sites)), a_, marker="o", lw=2.5 if label == "untrained" else 1.2, label=label)
    b.axhline(chance, ls="--", c="grey")
    b.set_xticks(range(len(sites)), sites, rotation=60, fontsize=7)
    b.set_ylabel("linear-probe accuracy (test photos)")
    b.set_title("Distortion information per site, before/after")
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_figure(out: Path, rows: Sequence[dict[str, Any]], chance: float, path: Path) -> None:
    """Validation forced choice against training step, one line per cell and seed (the plateau)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        log = out / r["run"] / "train_log.csv"
        if r["cell"] == "untrained" or not log.is_file():
            continue
        with log.open() as fh:
            points = [
                (int(x["step"]), float(x["val_accuracy"])) for x in csv.DictReader(fh) if x["val_accuracy"]
            ]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=f"{r['cell']} (seed {r['seed']})")
    ax.axhline(chance, ls="--", c="grey", label="chance")
    ax.set_xlabel("training step")
    ax.set_ylabel("forced choice, validation photos")
    ax.set_title("Training curves (the best validation step is kept)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------------


def load_config(path: Path) -> tuple[str, dict[str, Any], list[int], tuple[Cell, ...], dict[str, Any]]:
    """A ``--config`` file (docs/recipes/p1_mplug_owl2.json) -> model, options, seeds, cells, settings."""
    data = json.loads(path.read_text())
    cells = []
    for c in data["cells"]:
        over = {"max_steps": c.get("steps"), "batch_size": c.get("batch_size"), "lr": c.get("lr")}
        over = {k: v for k, v in over.items() if v is not None}
        if c.get("lora"):
            over["lora"] = c["lora"]
        cells.append(Cell(c["name"], c["train"], float(c.get("w_constraint", 0.0)), over))
    settings = {"device": data.get("device", "auto"), "precision": data.get("precision", "auto")}
    return (
        data["model"],
        dict(data.get("model_options") or {}),
        list(data.get("seeds", [0])),
        tuple(cells),
        settings,
    )


def _manifest_file(value: str) -> str:
    """argparse type: an existing manifest file (a clear error before any work starts)."""
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"no manifest at {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", default="runs/p1")
    parser.add_argument("--pristine", default=str(PRISTINE), help="folder with cbsd68/ and mcmaster/")
    parser.add_argument("--bench", help="existing benchmark folder (default: build one under OUTPUT/bench)")
    parser.add_argument("--per-class", type=int, default=4, help="images per photo and class (default 4)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="mini model's centre crop (default: its 224; 384 = the whole height of the benchmark's "
        "512x384 images, about 3x the encoder's cost, docs/p1_reproduction.md session 16)",
    )
    parser.add_argument(
        "--resize-shorter", type=int, default=384, help="mini model's shorter side (default 384)"
    )
    parser.add_argument(
        "--model",
        help="base model spec instead of the pre-aligned mini at --resize-shorter (e.g. a mini DIR)",
    )
    parser.add_argument("--cells", nargs="+", help="subset of cells by name (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the main cells")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pretrained-lr-scale", type=float, default=0.1)
    parser.add_argument("--encoder-frozen-sites", type=int, default=5)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--config", help="JSON config of another model's cells (see the module doc)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 (GPU) ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the finished cells in OUTPUT (unfinished ones are listed as missing)",
    )
    parser.add_argument("--markdown", help="write the table (machine, command, time) to this file")
    parser.add_argument(
        "--common-test",
        type=_manifest_file,
        help="also score every run on this manifest's test images (another --per-class subset's)",
    )
    parser.add_argument("--figure", help="figure path (default OUTPUT/p1_summary.png)")
    return parser


def grid_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``AlignConfig`` fields every cell shares (a cell's overrides come on top)."""
    return {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "pretrained_lr_scale": args.pretrained_lr_scale,
        "encoder_frozen_sites": args.encoder_frozen_sites,
        "eval_every": args.eval_every,
        "checkpoint_every": args.eval_every,
        "patience": args.patience,
        "max_train_images": 0,
        "max_val_images": 0,
        "device": args.device,
        "precision": args.precision,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.output)
    started = time.perf_counter()
    bench = Path(args.bench) if args.bench else build_bench(out / "bench", Path(args.pristine), args.workers)
    manifest = bench / "manifest.csv" if bench.is_dir() else bench
    sub = balanced_manifest(
        manifest, manifest.parent / f"manifest_p1_{args.per_class}.csv", args.per_class, 0
    )
    settings = grid_settings(args)
    cells, seeds = DEFAULT_CELLS, list(args.seeds)
    options: dict[str, Any] = {}
    if args.config:
        model_spec, options, seeds, cells, extra = load_config(Path(args.config))
        settings |= extra
        settings.pop("encoder_frozen_sites")
    elif args.model:
        model_spec = args.model
    else:
        model_spec = str(save_mini_at_resolution(out / "base_model", args.resize_shorter, args.image_size))
    if args.cells:
        unknown = set(args.cells) - {c.name for c in cells}
        if unknown:
            parser.error(f"unknown cell(s) {sorted(unknown)}; choose from {[c.name for c in cells]}")
        cells = tuple(c for c in cells if c.name in args.cells)
    rows: list[dict[str, Any]] = []
    for cell in cells:
        if cell.train == "-":
            continue
        for seed in seeds if cell.name in MAIN_CELLS or args.config else seeds[:1]:
            t = time.perf_counter()
            if args.summary_only and not finished(out / "cells" / f"{cell.name}-s{seed}"):
                print(f"{cell.name} seed {seed}: not finished, left out of the summary", flush=True)
                continue
            metrics = run_cell(cell, seed, model_spec, sub, out, settings, options)
            rows.append(row_of(cell, seed, metrics, out / "cells" / f"{cell.name}-s{seed}"))
            print(
                f"{cell.name} seed {seed}: forced choice {rows[-1]['fc_after']} "
                f"({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    if any(c.train == "-" for c in cells):
        rows = untrained_rows(rows) + rows
    if args.common_test:
        add_common_scores(rows, out, sub, Path(args.common_test))
    if not rows:
        print(f"{out}: no finished cell to summarise", file=sys.stderr)
        return 1
    write_outputs(out, rows, sub, model_spec, args, time.perf_counter() - started)
    return 0


def write_outputs(
    out: Path, rows: list[dict[str, Any]], manifest: Path, model: str, args: Any, seconds: float
) -> None:
    from iqalens.taxonomy import CLASSES

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "grid.csv").write_text(buf.getvalue())
    (out / "grid.json").write_text(json.dumps(rows, indent=2))
    chance = 1.0 / len(CLASSES)
    curves = probe_curves(out, rows)
    (out / "probe_curves.json").write_text(json.dumps(curves, indent=2))
    fig = Path(args.figure) if args.figure else out / "p1_summary.png"
    figure(rows, curves, chance, fig)
    curves_figure(out, rows, chance, fig.with_name(fig.stem + "_curves.png"))
    header = (
        f"Model: {model}; data: {manifest} (test split: content-disjoint photos); chance {chance:.3f}. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, device {args.device}. "
        f"Whole run (this invocation): {seconds / 60:.1f} min.\n\n"
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`"
        + (f"\n\nCommon test images: the test split of {args.common_test}." if args.common_test else "")
    )
    table = markdown(rows, header)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    write_grid_result(
        out,
        AlignGridResult(
            model_id=model,
            benchmark=str(manifest),
            protocol=header,
            chance=chance,
            cells=rows,
            complete=True,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
