"""Build the synthetic distortion-perception benchmark from reference photos.

Each reference is cropped/resized to the benchmark size (default 512x384, KADID-10k's), then
distorted with the chosen KADID types and levels; the reference itself is the ``clean`` class.
Every image gets its perception class, a documented proxy MOS and a content-disjoint split.
Work is spread over processes by reference, shows a progress bar, and is resumable: finished
images are verified (they decode at the right size) and skipped, and the manifest is written
atomically only at the end, so an interrupted build leaves no manifest that looks complete.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from iqalens.datasets.manifest import Manifest, ManifestRow, make_provenance, write_manifest
from iqalens.datasets.proxy_mos import PROXY_NOTE, PROXY_SCALE, proxy_mos
from iqalens.datasets.splits import assign_splits
from iqalens.distortions import distort, get_type
from iqalens.images import ImageLoadError, iter_image_files, load_rgb, save_rgb
from iqalens.samples import sample_paths
from iqalens.taxonomy import EXCLUDED, IDENTITY_CELLS, kadid_class

DEFAULT_SIZE = (512, 384)  # width, height


@dataclass(frozen=True)
class BenchmarkSpec:
    """What to build; every field is recorded in the manifest's provenance."""

    types: tuple[int, ...] = tuple(range(1, 26))
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    size: tuple[int, int] = DEFAULT_SIZE
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    balance: bool = False
    identity_as: str = "clean"


@dataclass(frozen=True)
class _Job:
    ref_path: str
    ref_id: str
    out_dir: str
    cells: tuple[tuple[int, int], ...]  # (type, level); type 0 = clean copy k (level = k)
    size: tuple[int, int]
    seed: int


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then Lanczos-resize to ``size`` (width, height)."""
    h, w = image.shape[:2]
    tw, th = size
    if (w, h) == (tw, th):
        return image
    if w * th > tw * h:  # too wide
        new_w = max(1, round(h * tw / th))
        x0 = (w - new_w) // 2
        image = image[:, x0 : x0 + new_w]
    else:
        new_h = max(1, round(w * th / tw))
        y0 = (h - new_h) // 2
        image = image[y0 : y0 + new_h]
    return np.asarray(Image.fromarray(image).resize((tw, th), Image.Resampling.LANCZOS))


def clean_variant(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th clean copy: 0 is the reference; others are mirrored and/or slightly re-cropped.

    Used only for class balancing, so that extra clean images are distinct pictures with no
    distortion rather than byte-identical duplicates.
    """
    if k == 0:
        return image
    h, w = image.shape[:2]
    out = image[:, ::-1] if k % 2 == 1 else image
    zoom = 1.0 - 0.04 * ((k + 1) // 2)
    ch, cw = max(8, round(h * zoom)), max(8, round(w * zoom))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(out[y0 : y0 + ch, x0 : x0 + cw])
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS))


def image_name(ref_id: str, type_id: int, level: int) -> str:
    """``<ref>_<type:02d>_<level>.png``; clean copies are ``<ref>_00_<k>.png``."""
    return f"{ref_id}_{type_id:02d}_{level}.png"


def _is_complete(path: Path, size: tuple[int, int]) -> bool:
    if not path.is_file():
        return False
    try:
        img = load_rgb(path)
    except ImageLoadError:
        return False
    return img.shape[1] == size[0] and img.shape[0] == size[1]


def _render(job: _Job) -> tuple[str, int, int]:
    """Render one reference's images; returns (ref_id, written, skipped). Runs in a worker."""
    out = Path(job.out_dir)
    base = fit_to_size(load_rgb(job.ref_path), job.size)
    written = skipped = 0
    for type_id, level in job.cells:
        target = out / image_name(job.ref_id, type_id, level)
        if _is_complete(target, job.size):
            skipped += 1
            continue
        pixels = clean_variant(base, level) if type_id == 0 else distort(base, type_id, level, seed=job.seed)
        save_rgb(pixels, target, overwrite=True)
        written += 1
    return job.ref_id, written, skipped


def reference_ids(paths: Sequence[Path]) -> list[str]:
    """Content ids from file stems; two references with the same stem are an error."""
    ids = [p.stem for p in paths]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"reference photos must have unique file names; duplicated: {', '.join(dupes)}")
    return ids


def collect_references(refs: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """Image files from the given files/folders (recursive); the bundled photos when ``refs`` is empty."""
    if not refs:
        return sample_paths()
    paths: list[Path] = []
    for item in refs:
        p = Path(item)
        if p.is_dir():
            found = iter_image_files(p)
            if not found:
                raise ValueError(f"no image files found in {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise ValueError(f"reference {p} does not exist")
    return paths


def plan_cells(spec: BenchmarkSpec, n_clean: int) -> list[tuple[int, int]]:
    """The (type, level) cells for one reference, clean copies as (0, k); excluded cells left out."""
    cells = [(0, k) for k in range(n_clean)]
    for t in spec.types:
        for lv in spec.levels:
            if kadid_class(t, lv, spec.identity_as) != EXCLUDED:
                cells.append((get_type(t).id, lv))
    return cells


def balanced_cells(spec: BenchmarkSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Per reference, equal counts per class: the smallest distorted class sets the count.

    Larger classes are subsampled (seeded, spread over their types and levels), and the clean
    class is filled with distinct clean copies up to the same count. Identity cells (mean shift
    level 3) are left out here: their output is byte-identical to the reference, i.e. to clean
    copy 0, and a balanced set should not count one picture twice.
    """
    by_class: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for cell in plan_cells(spec, 0):
        if cell not in IDENTITY_CELLS:
            by_class[kadid_class(cell[0], cell[1], spec.identity_as)].append(cell)
    target = min(len(v) for v in by_class.values())
    cells: list[tuple[int, int]] = []
    for cls in sorted(by_class):
        members = by_class[cls]
        keep = sorted(rng.choice(len(members), size=target, replace=False))
        cells += [members[i] for i in keep]
    return [(0, k) for k in range(target)] + cells


def build_benchmark(
    out_dir: str | os.PathLike[str],
    refs: Sequence[str | os.PathLike[str]] | None = None,
    spec: BenchmarkSpec | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Build into ``out_dir`` (images/, manifest.csv, manifest.json); returns the manifest path."""
    spec = spec or BenchmarkSpec()
    for t in spec.types:
        get_type(t)
    ref_paths = collect_references(refs)
    ids = reference_ids(ref_paths)
    folder = Path(out_dir)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    jobs = []
    for path, ref_id in zip(ref_paths, ids, strict=True):
        cells = balanced_cells(spec, rng) if spec.balance else plan_cells(spec, 1)
        jobs.append(_Job(str(path), ref_id, str(images), tuple(cells), spec.size, spec.seed))
    total = sum(len(j.cells) for j in jobs)
    bar = tqdm(total=total, desc="bench build", unit="img", disable=not progress)
    written = skipped = 0
    try:
        if workers <= 1:
            for job in jobs:
                _, w, s = _render(job)
                written, skipped = written + w, skipped + s
                bar.update(len(job.cells))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_render, job): job for job in jobs}
                for fut in as_completed(futures):
                    _, w, s = fut.result()
                    written, skipped = written + w, skipped + s
                    bar.update(len(futures[fut].cells))
    finally:
        bar.close()
    rows = _rows(jobs, spec, folder)
    manifest = Manifest(
        assign_splits(rows, spec.split_fractions, spec.seed),
        folder,
        make_provenance(
            "iqalens bench build",
            {"references": [str(p) for p in ref_paths]},
            seed=spec.seed,
            spec={
                "types": list(spec.types),
                "levels": list(spec.levels),
                "size": list(spec.size),
                "split_fractions": list(spec.split_fractions),
                "balance": spec.balance,
                "identity_as": spec.identity_as,
            },
            proxy_mos=PROXY_NOTE,
            images_written=written,
            images_reused=skipped,
        ),
    )
    return write_manifest(manifest, folder / "manifest.csv")


def _rows(jobs: Sequence[_Job], spec: BenchmarkSpec, folder: Path) -> list[ManifestRow]:
    rows = []
    for job in jobs:
        for type_id, level in job.cells:
            clean = type_id == 0
            cls = "clean" if clean else kadid_class(type_id, level, spec.identity_as)
            rows.append(
                ManifestRow(
                    path=f"images/{image_name(job.ref_id, type_id, level)}",
                    reference=job.ref_id,
                    source="synthetic",
                    dist_type="" if clean else str(type_id),
                    dist_level=None if clean else level,
                    perception_class=cls,
                    mos=proxy_mos(None, None) if clean else proxy_mos(type_id, level),
                    mos_scale=PROXY_SCALE,
                )
            )
    return rows
