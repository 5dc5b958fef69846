"""The perception paper's experiment on the mini model: which component to fine-tune, with or without
the constraint that keeps the vision encoder close to the original.

One command (see docs/alignment.md, "Results"):

    .venv/bin/python benchmarks/align_grid.py --photos 8 -o runs/align_grid --markdown docs/alignment_grid.md

It builds a benchmark from the first ``--photos`` CBSD68 photos of ``../shared/data/pristine/cbsd68``
(sorted by name; 25 KADID-10k types at ``--levels``), then runs ``iqalens align`` for each cell of the
grid (V, P, L, V+P, V+P+L; the constraint acts on the vision encoder, so it is varied only where the
vision encoder trains), each with the before/after diagnostics, and writes one table: forced-choice
accuracy and balanced accuracy (test split), mean similarity of the pooled visual tokens to the true
class word, the drift measure, and training time. All runs share one feature cache, so the "before"
features of the base model are extracted once. The output folder's ``metrics.json`` is the grid's typed
result (:class:`iqalens.align.grid_result.AlignGridResult`, rewritten after every cell), so
``iqalens report OUTPUT`` draws the per-cell table and the probe curves of every cell.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqalens.align.config import AlignConfig
from iqalens.align.grid_result import AlignGridResult, cell_numbers, write_grid_result
from iqalens.align.run import run_align

#: (components, constraint on?) per grid cell, in the order of the table.
DEFAULT_GRID: tuple[tuple[str, bool], ...] = (
    ("V", False),
    ("V", True),
    ("P", False),
    ("L", False),
    ("V+P", False),
    ("V+P", True),
    ("V+P+L", False),
    ("V+P+L", True),
)
#: Constraint weight of the "+c" cells. The drift term is a relative squared feature distance (about
#: 0.1-0.3 once the encoder has moved), the alignment InfoNCE about 2: at weight 1 the one orientation
#: run kept a feature cosine of 0.90 but agreed with the original ImageNet top-1 on only 1 of 7 clean
#: photos, so the grid uses 10 to make the two terms comparable.
DEFAULT_W_CONSTRAINT = 10.0
PRISTINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pristine" / "cbsd68"


def build_bench(out: Path, photos: int, levels: Sequence[int], workers: int) -> Path:
    """The benchmark of the first ``photos`` CBSD68 photos (resumes if it exists)."""
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark

    if not PRISTINE.is_dir():
        raise SystemExit(f"{PRISTINE} not found: the grid needs ../shared/data/pristine beside the repo")
    refs = sorted(PRISTINE.glob("*.png"))[:photos]
    return build_benchmark(
        out, refs=[str(p) for p in refs], spec=BenchmarkSpec(levels=tuple(levels)), workers=workers
    )


def cell_name(train: str, constrained: bool) -> str:
    """The cell's name in the table and its run folder: ``V``, ``V+c``, ``V+P+L+c``..."""
    return f"{train}{'+c' if constrained else ''}"


def run_grid(
    manifest: Path,
    out: Path,
    grid: Sequence[tuple[str, bool]] = DEFAULT_GRID,
    *,
    model: str = "mini",
    w_constraint: float = DEFAULT_W_CONSTRAINT,
    steps: int = 60,
    max_train_images: int = 1024,
    seed: int = 0,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One align run per grid cell into ``out/<cell>``; returns one table row per cell.

    ``overrides`` are further :class:`AlignConfig` fields for every cell (the reduced grid of the
    tests uses them for tiny batches).
    """
    rows: list[dict[str, Any]] = []
    protocol = (
        f"benchmark {manifest}; each cell fine-tunes its components with iqalens align on the train split "
        f"(at most {steps} steps, at most {max_train_images} training images, seed {seed}, constraint "
        f"weight {w_constraint} in the +c cells); forced-choice accuracy (share of test-split images "
        "named as their perception class) before and after, on the test split"
    )
    for train, constrained in grid:
        name = cell_name(train, constrained)
        started = time.perf_counter()
        config = AlignConfig(
            train=tuple(train.split("+")),
            w_constraint=w_constraint if constrained else 0.0,
            max_steps=steps,
            max_train_images=max_train_images,
            seed=seed,
            device="cpu",
            progress=progress,
            **(overrides or {}),
        )
        metrics = run_align(model, manifest, out / name, config, cache_dir=out / "features", overwrite=True)
        rows.append(
            {
                "cell": name,
                "train": train,
                "constraint": w_constraint if constrained else 0.0,
                "seed": seed,
                "run": name,
                **cell_numbers(metrics),
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        )
        # after every cell, so that an interrupted grid is reportable with the cells it has
        write_grid_result(out, grid_result(out, manifest, rows, protocol, complete=len(rows) == len(grid)))
    return rows


def grid_result(
    out: Path, manifest: Path, rows: Sequence[dict[str, Any]], protocol: str, *, complete: bool
) -> AlignGridResult:
    """The typed result of the grid folder (what ``iqalens report`` draws): the rows, with the base
    model, benchmark hash and chance read from the first cell's "before" diagnostics."""
    before: dict[str, Any] = {}
    if rows:
        path = out / str(rows[0]["run"]) / "before" / "metrics.json"
        before = json.loads(path.read_text()) if path.is_file() else {}
    classes = (before.get("forced_choice") or {}).get("classes") or []
    return AlignGridResult(
        model_id=before.get("model_id"),
        benchmark=before.get("manifest") or str(manifest),
        benchmark_hash=before.get("manifest_hash"),
        protocol=protocol,
        chance=1.0 / len(classes) if classes else None,
        cells=[{k: v for k, v in r.items() if k != "total_seconds"} for r in rows],
        notes=["grid written by benchmarks/align_grid.py"],
        complete=complete,
    )


def _f(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "n/a"


def markdown(rows: Sequence[dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| trained | constraint | forced choice before -> after | balanced acc. before -> after "
        "| similarity to true word before -> after | ImageNet top-1 agreement | encoder feature cosine "
        "| steps | train s | total s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['train']} | {_f(r['constraint'], 1) if r['constraint'] else 'off'} "
            f"| {_f(r['fc_before'])} -> {_f(r['fc_after'])} | {_f(r['bal_before'])} -> {_f(r['bal_after'])} "
            f"| {_f(r['sim_before'])} -> {_f(r['sim_after'])} | {_f(r['imagenet_agreement'])} "
            f"| {_f(r['feature_cosine'])} | {r['steps']} | {_f(r['train_seconds'], 0)} "
            f"| {_f(r['total_seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", help="existing benchmark folder/manifest (default: build one from CBSD68)")
    parser.add_argument("--photos", type=int, default=8, help="CBSD68 photos in the built benchmark")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max-train-images", type=int, default=1024)
    parser.add_argument(
        "--w-constraint", type=float, default=DEFAULT_W_CONSTRAINT, help="constraint weight of the +c cells"
    )
    parser.add_argument("--cells", nargs="+", help="subset of cells, e.g. V V+c P (default: the whole grid)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", "-o", default="runs/align_grid")
    parser.add_argument("--markdown", help="also write the table (with machine and command) to this file")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.output)
    started = time.perf_counter()
    manifest = (
        Path(args.bench) if args.bench else build_bench(out / "bench", args.photos, args.levels, args.workers)
    )
    grid = DEFAULT_GRID
    if args.cells:
        by_name = {cell_name(t, c): (t, c) for t, c in DEFAULT_GRID}
        unknown = [c for c in args.cells if c not in by_name]
        if unknown:
            parser.error(f"unknown cell(s) {unknown}; choose from {list(by_name)}")
        grid = tuple(by_name[c] for c in args.cells)
    rows = run_grid(
        manifest,
        out,
        grid,
        steps=args.steps,
        w_constraint=args.w_constraint,
        max_train_images=args.max_train_images,
        seed=args.seed,
        progress=not args.quiet,
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "grid.csv").write_text(buf.getvalue())
    (out / "grid.json").write_text(json.dumps(rows, indent=2))
    total = time.perf_counter() - started
    header = (
        f"Grid on {manifest} (model: pre-aligned mini; test split; labels are the benchmark's "
        f"distortion classes, no MOS involved). Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads default. Whole grid: {total / 60:.1f} min.\n\n"
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`"
    )
    table = markdown(rows, header)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
