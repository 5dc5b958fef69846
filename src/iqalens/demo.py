"""The embedded-default main job: ``iqalens demo``.

Today it builds a small distortion set from the bundled sample photos and summarises how strongly
each KADID-10k type changes them, per level. Later stages (perception diagnostics, LEAF) extend
this same entry point, so ``make demo`` keeps working as the project grows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iqalens.distortions._registry import all_types
from iqalens.distortions.variants import plan_variants, write_variants
from iqalens.evaluation.fidelity import psnr
from iqalens.images import load_rgb
from iqalens.runs import start_run, write_json
from iqalens.samples import sample_paths

DEFAULT_LEVELS = (1, 3, 5)


@dataclass
class DemoResult:
    """What the demo produced: where, how many images, and PSNR per (type, level)."""

    run_dir: Path
    n_images: int
    seconds: float
    mean_psnr: dict[int, dict[int, float]] = field(default_factory=dict)
    partial_range: list[str] = field(default_factory=list)  # photos not spanning 0..255


def run_demo(
    run_dir: str | Path,
    levels: Sequence[int] = DEFAULT_LEVELS,
    seed: int = 0,
    max_photos: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Distort the bundled photos with all 25 types at ``levels`` into ``run_dir/distortions``."""
    photos = sample_paths()[:max_photos]
    if not overwrite and (Path(run_dir) / "metrics.json").exists():
        # Checked before start_run, which would otherwise rewrite config.json of the earlier run.
        raise FileExistsError(f"{run_dir} holds an earlier demo run; pass --overwrite to replace it")
    folder = start_run(
        run_dir,
        "demo",
        {"levels": list(levels), "photos": [p.name for p in photos]},
        seed,
    )
    out = folder / "distortions"
    types = list(all_types())
    scores: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    started = time.perf_counter()
    n_images = 0
    partial_range = []
    for photo in tqdm(photos, desc="photos", unit="photo", disable=not progress):
        image = load_rgb(photo)
        if image.min() > 0 or image.max() < 255:
            partial_range.append(f"{photo.name}: {image.min()}..{image.max()}")
        plan = plan_variants(photo.stem, str(photo), types, levels, seed)
        write_variants(image, plan, out, f"{photo.stem}.csv", overwrite=overwrite, progress=False)
        for v in plan:
            variant = load_rgb(out / v.file)
            scores[v.type_id][v.level].append(psnr(image, variant))
        n_images += len(plan)
    seconds = time.perf_counter() - started
    mean_psnr = {t: {lv: float(np.mean(vals)) for lv, vals in per.items()} for t, per in scores.items()}
    write_json(
        folder / "metrics.json",
        {
            "n_images": n_images,
            "seconds": round(seconds, 2),
            "mean_psnr_db_vs_reference": {
                str(t): {str(k): v for k, v in d.items()} for t, d in mean_psnr.items()
            },
            "protocol": "PSNR of each variant against its bundled reference photo, mean over photos",
        },
    )
    return DemoResult(folder, n_images, seconds, mean_psnr, partial_range)


def format_summary(result: DemoResult) -> str:
    """A plain-text table of mean PSNR per type and level."""
    levels = sorted({lv for per in result.mean_psnr.values() for lv in per})
    header = f"{'id':>3} {'type':<28}" + "".join(f"{'L' + str(lv):>8}" for lv in levels)
    lines = [
        f"Distorted {result.n_images} images in {result.seconds:.1f} s -> {result.run_dir}",
        "Mean PSNR (dB) of each variant vs its reference photo (99 = unchanged).",
    ]
    if result.partial_range:
        lines.append(
            "Like the original generator, distort() min-max maps its input first, so photos that do not "
            f"span 0..255 ({', '.join(result.partial_range)}) change slightly even at identity levels."
        )
    lines.append(header)
    names = {t.id: t.name for t in all_types()}
    for tid in sorted(result.mean_psnr):
        row = result.mean_psnr[tid]
        lines.append(f"{tid:>3} {names[tid]:<28}" + "".join(f"{row[lv]:>8.1f}" for lv in levels))
    return "\n".join(lines)
