"""Write sets of distorted variants of an image, all-or-nothing, with a CSV index.

Used by ``iqalens distort --all`` and by the demo. A set is only complete when its CSV index
exists: images are written atomically one by one and the index last, and if anything fails
(an error, Ctrl-C) every file this call wrote is removed again, so a folder never holds a
partial set that looks complete.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iqalens.distortions import distort, get_type
from iqalens.distortions._registry import DistortionType, all_types, check_level
from iqalens.files import atomic_write_text
from iqalens.images import save_rgb

INDEX_COLUMNS = (
    "file",
    "reference",
    "type_id",
    "type_name",
    "group",
    "level",
    "parameter",
    "stochastic",
    "seed",
)


@dataclass(frozen=True)
class Variant:
    """One row of a variant index (``file`` is relative to the index's folder)."""

    file: str
    reference: str
    type_id: int
    type_name: str
    group: str
    level: int
    parameter: float
    stochastic: bool
    seed: int


def variant_name(stem: str, type_id: int, level: int) -> str:
    """KADID-10k's naming: ``<stem>_<type:02d>_<level>.png``."""
    return f"{stem}_{type_id:02d}_{level}.png"


def resolve_types(keys: Iterable[int | str] | None) -> list[DistortionType]:
    """Types for the given ids/names (all 25 when ``keys`` is None)."""
    return list(all_types()) if keys is None else [get_type(k) for k in keys]


def plan_variants(
    stem: str,
    reference: str,
    types: Sequence[DistortionType],
    levels: Sequence[int],
    seed: int,
) -> list[Variant]:
    """The rows a run will produce, before any pixel is computed."""
    return [
        Variant(
            file=variant_name(stem, t.id, lv),
            reference=reference,
            type_id=t.id,
            type_name=t.name,
            group=t.group,
            level=lv,
            parameter=t.parameter(lv),
            stochastic=t.stochastic,
            seed=seed,
        )
        for t in types
        for lv in (check_level(x) for x in levels)
    ]


def write_variants(
    image: np.ndarray,
    plan: Sequence[Variant],
    out_dir: str | os.PathLike[str],
    index_name: str,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``plan`` into ``out_dir`` and write the CSV index last; returns the index path.

    Raises ``FileExistsError`` before writing anything if a target exists and ``overwrite`` is
    false. On any failure the files written by this call are removed and the error re-raised.
    """
    folder = Path(out_dir)
    index_path = folder / index_name
    targets = [folder / v.file for v in plan] + [index_path]
    if not overwrite:
        existing = [str(p) for p in targets if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(f"{existing[0]} already exists{more}; pass --overwrite to replace")
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for v in tqdm(plan, desc="distort", unit="img", disable=not progress, leave=False):
            out = distort(image, v.type_id, v.level, seed=v.seed)
            written.append(save_rgb(out, folder / v.file, overwrite=True))
        written.append(_write_index(plan, index_path))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return index_path


def _write_index(plan: Sequence[Variant], path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for v in plan:
        writer.writerow(asdict(v))
    return atomic_write_text(path, buf.getvalue())
