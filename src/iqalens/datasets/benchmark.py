"""Build the synthetic distortion-perception benchmark from reference photos.

Each reference is cropped/resized to the benchmark size (default 512x384, KADID-10k's), then
distorted with the chosen KADID types and levels; the reference itself is the ``clean`` class.
Every image gets its perception class, a documented proxy MOS and a content-disjoint split.
Work is spread over processes by reference, shows a progress bar, and is resumable: finished
images are verified (they decode at the right size) and skipped, and the manifest is written
atomically only at the end, so an interrupted build leaves no manifest that looks complete.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from iqalens.datasets.manifest import Manifest, ManifestRow, make_provenance, write_manifest
from iqalens.datasets.proxy_mos import PROXY_NOTE, PROXY_SCALE, proxy_mos
from iqalens.datasets.splits import assign_splits, check_fractions
from iqalens.distortions import all_types, distort, get_type
from iqalens.distortions._registry import check_level
from iqalens.errors import InvalidInputError
from iqalens.files import check_file_name, content_hash
from iqalens.images import ImageLoadError, iter_image_files, load_rgb, save_rgb
from iqalens.runs import write_json
from iqalens.samples import sample_paths
from iqalens.taxonomy import EXCLUDED, USUALLY_IDENTITY_CELLS, kadid_class

DEFAULT_SIZE = (512, 384)  # width, height


@dataclass(frozen=True)
class BenchmarkSpec:
    """What to build; every field is recorded in the manifest's provenance."""

    types: tuple[int, ...] = field(default_factory=lambda: tuple(t.id for t in all_types()))
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


def _existing(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The pixels of a finished image from an earlier run, or None if absent, broken or mis-sized."""
    if not path.is_file():
        return None
    try:
        img = load_rgb(path)
    except ImageLoadError:
        return None
    return img if (img.shape[1], img.shape[0]) == tuple(size) else None


def _render(job: _Job) -> tuple[str, int, int, list[tuple[int, int]]]:
    """Render one reference's images. Runs in a worker.

    Returns (ref_id, written, reused, identity cells): the distorted cells whose image came out
    byte-identical to the reference (e.g. Gaussian blur sigma 0.1 on a full-range photo), which
    must not be labelled as a distortion.
    """
    out = Path(job.out_dir)
    base = fit_to_size(load_rgb(job.ref_path), job.size)
    written = reused = 0
    identity: list[tuple[int, int]] = []
    for type_id, level in job.cells:
        target = out / image_name(job.ref_id, type_id, level)
        pixels = _existing(target, job.size)
        if pixels is None:
            pixels = (
                clean_variant(base, level) if type_id == 0 else distort(base, type_id, level, seed=job.seed)
            )
            save_rgb(pixels, target, overwrite=True)
            written += 1
        else:
            reused += 1
        if type_id != 0 and np.array_equal(pixels, base):
            identity.append((type_id, level))
    return job.ref_id, written, reused, identity


#: Longest file name (bytes) most file systems allow; the derived image names must fit.
NAME_MAX = 255


def reference_ids(paths: Sequence[Path]) -> list[str]:
    """Content ids from file stems, used verbatim in the image names (``a\\b.png`` -> ``a\\b_01_1.png``
    on POSIX, where a backslash is part of a name).

    Refused up front, naming the files: two stems that differ only in case (their images would
    collide on case-insensitive file systems) or in spaces at either end (manifest readers strip
    those from the reference column, so two photos would become one content id); a stem whose image
    names would be longer than file systems allow.
    """
    ids = [p.stem for p in paths]
    folded = [i.strip().casefold() for i in ids]
    dupes = sorted({repr(i) for i, f in zip(ids, folded, strict=True) if folded.count(f) > 1})
    if dupes:
        raise InvalidInputError(
            f"reference photos must have unique file names; duplicated: {', '.join(dupes)}"
        )
    for path, ref_id in zip(paths, ids, strict=True):
        longest = image_name(ref_id, 25, 5)
        if len(os.fsencode(longest)) > NAME_MAX:
            raise InvalidInputError(
                f"reference photo {str(path)!r}: its file name is too long for the benchmark's image names "
                f"({longest!r} would be {len(os.fsencode(longest))} bytes, file systems allow {NAME_MAX}); "
                "rename it"
            )
    return ids


def collect_references(
    refs: Sequence[str | os.PathLike[str]] | None, exclude: Path | None = None
) -> list[Path]:
    """Image files from the given files/folders (recursive); the bundled photos when ``refs`` is empty.

    Files under ``exclude`` (the benchmark's own output folder, if it sits inside a reference
    folder) are skipped, so a re-run does not take its own outputs as new references. A file name
    iqalens refuses (:func:`iqalens.files.check_file_name`) raises before anything is rendered.
    """
    if not refs:
        return sample_paths()
    skip = exclude.resolve() if exclude is not None else None
    paths: list[Path] = []
    for item in refs:
        p = Path(item)
        if p.is_dir():
            found = [f for f in iter_image_files(p) if skip is None or not f.resolve().is_relative_to(skip)]
            if not found:
                raise InvalidInputError(f"no image files found in {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise InvalidInputError(f"reference {str(p)!r} does not exist")
    for path in paths:
        check_file_name(path)
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
    level 3, and the cells that are identical for most photos, see ``USUALLY_IDENTITY_CELLS``) are
    left out here: their output would be byte-identical to clean copy 0, and a balanced set should
    not count one picture twice.
    """
    by_class: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for cell in plan_cells(spec, 0):
        if cell not in USUALLY_IDENTITY_CELLS:
            by_class[kadid_class(cell[0], cell[1], spec.identity_as)].append(cell)
    if not by_class:
        raise InvalidInputError(
            "--balance needs at least one distorted (type, level) cell that changes the image"
        )
    target = min(len(v) for v in by_class.values())
    cells: list[tuple[int, int]] = []
    for cls in sorted(by_class):
        members = by_class[cls]
        keep = sorted(rng.choice(len(members), size=target, replace=False))
        cells += [members[i] for i in keep]
    return [(0, k) for k in range(target)] + cells


def normalized_spec(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Resolve type names to ids, drop repeated types and levels, and check everything before rendering."""
    types = tuple(dict.fromkeys(get_type(t).id for t in spec.types))
    levels = tuple(dict.fromkeys(check_level(lv) for lv in spec.levels))
    check_fractions(spec.split_fractions)
    if spec.identity_as not in ("clean", EXCLUDED):
        raise InvalidInputError(f"identity_as must be 'clean' or 'excluded', got {spec.identity_as!r}")
    if min(spec.size) < 8:
        raise InvalidInputError(f"benchmark size must be at least 8x8, got {spec.size}")
    return replace(spec, types=types, levels=levels)


def _check_build_record(folder: Path, record: dict[str, object]) -> None:
    """Refuse to resume into a folder built with other settings or other reference photos.

    Resuming reuses finished images without recomputing them, which is only right when they were
    made by the same spec, seed and photos; the record of the first run says what they were.
    """
    path = folder / BUILD_RECORD
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != record:
            differs = sorted(k for k in record if earlier.get(k) != record[k])
            raise InvalidInputError(
                f"{folder} holds a benchmark built with other {', '.join(differs)}; "
                "build into a new folder (or delete this one) instead of resuming"
            )
    else:
        write_json(path, record)


BUILD_RECORD = "build.json"


def build_benchmark(
    out_dir: str | os.PathLike[str],
    refs: Sequence[str | os.PathLike[str]] | None = None,
    spec: BenchmarkSpec | None = None,
    workers: int = 1,
    progress: bool = True,
    executor: Executor | None = None,
) -> Path:
    """Build into ``out_dir`` (images/, manifest.csv, manifest.json); returns the manifest path.

    Re-running into the same folder resumes (finished images are verified and reused) if the spec,
    seed and reference photos are the same; otherwise it refuses with a message. The references are
    rendered by ``workers`` processes, or as tasks of ``executor`` when one is given (e.g.
    :class:`iqalens.ray_executor.RayExecutor`: ``bench build --engine ray``; every path it is given is
    absolute, so tasks on other machines find them on a shared file system).
    """
    spec = normalized_spec(spec or BenchmarkSpec())
    folder = Path(out_dir)
    ref_paths = collect_references(refs, exclude=folder)
    ids = reference_ids(ref_paths)
    spec_record = {
        "types": list(spec.types),
        "levels": list(spec.levels),
        "size": list(spec.size),
        "split_fractions": list(spec.split_fractions),
        "balance": spec.balance,
        "identity_as": spec.identity_as,
    }
    record = {
        "spec": spec_record,
        "seed": spec.seed,
        "references": {ref_id: content_hash(p) for p, ref_id in zip(ref_paths, ids, strict=True)},
    }
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    _check_build_record(folder, record)
    rng = np.random.default_rng(spec.seed)
    jobs = []
    for path, ref_id in zip(ref_paths, ids, strict=True):
        cells = balanced_cells(spec, rng) if spec.balance else plan_cells(spec, 1)
        jobs.append(
            _Job(str(path.resolve()), ref_id, str(images.resolve()), tuple(cells), spec.size, spec.seed)
        )
    total = sum(len(j.cells) for j in jobs)
    bar = tqdm(total=total, desc="bench build", unit="img", disable=not progress)
    written = reused = 0
    identity: dict[str, set[tuple[int, int]]] = {}
    try:
        if workers <= 1 and executor is None:
            results = (_render(job) for job in jobs)
            for (ref_id, w, r, same), job in zip(results, jobs, strict=True):
                written, reused, identity[ref_id] = written + w, reused + r, set(same)
                bar.update(len(job.cells))
        else:
            pool_of = ProcessPoolExecutor(max_workers=workers) if executor is None else nullcontext(executor)
            with pool_of as pool:
                futures = {pool.submit(_render, job): job for job in jobs}
                for fut in as_completed(futures):
                    ref_id, w, r, same = fut.result()
                    written, reused, identity[ref_id] = written + w, reused + r, set(same)
                    bar.update(len(futures[fut].cells))
    finally:
        bar.close()
    rows = _rows(jobs, spec, identity)
    n_identity = sum(len(v) for v in identity.values())
    manifest = Manifest(
        assign_splits(rows, spec.split_fractions, spec.seed),
        folder,
        make_provenance(
            "iqalens bench build",
            {"references": [str(p) for p in ref_paths]},
            seed=spec.seed,
            spec=spec_record,
            proxy_mos=PROXY_NOTE,
            images_written=written,
            images_reused=reused,
            identity_images={
                "count": n_identity,
                "treated_as": spec.identity_as,
                "note": "distorted cells whose image is byte-identical to the reference",
            },
        ),
    )
    return write_manifest(manifest, folder / "manifest.csv")


def _rows(
    jobs: Sequence[_Job], spec: BenchmarkSpec, identity: dict[str, set[tuple[int, int]]]
) -> list[ManifestRow]:
    rows = []
    for job in jobs:
        for type_id, level in job.cells:
            clean = type_id == 0
            if clean:
                cls = "clean"
            elif (type_id, level) in identity.get(job.ref_id, set()):
                cls = spec.identity_as
                if cls == EXCLUDED:
                    continue
            else:
                cls = kadid_class(type_id, level, spec.identity_as)
            mos = proxy_mos(None, None) if clean else proxy_mos(type_id, level)
            rows.append(
                ManifestRow(
                    path=f"images/{image_name(job.ref_id, type_id, level)}",
                    reference=job.ref_id,
                    source="synthetic",
                    dist_type="" if clean else str(type_id),
                    dist_level=None if clean else level,
                    perception_class=cls,
                    mos=mos,
                    mos_scale=PROXY_SCALE if math.isfinite(mos) else None,
                )
            )
    return rows
