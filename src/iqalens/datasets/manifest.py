"""One manifest format for every dataset: a CSV of images plus a JSON provenance sidecar.

Both halves of iqalens read data only through manifests, so validation lives here once: a
manifest that loads is one whose files exist, whose paths are unique, whose classes are known,
whose scores are numbers inside their declared scale, and whose scale says higher = better.
Every problem is reported with the manifest file and row; nothing is dropped silently.

Paths are stored relative to the manifest's folder with ``/`` as the separator and are otherwise
taken verbatim (see :func:`manifest_path`): file names are data, and any name iqalens does not
refuse up front (:func:`iqalens.files.check_file_name`) comes back unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iqalens.errors import InvalidInputError
from iqalens.files import FileNameError, atomic_write_text, check_file_name
from iqalens.runs import package_versions, write_json
from iqalens.taxonomy import CLASSES, EXCLUDED

COLUMNS: tuple[str, ...] = (
    "path",
    "reference",
    "source",
    "dist_type",
    "dist_level",
    "perception_class",
    "mos",
    "mos_scale",
    "split",
)
SPLITS = ("train", "val", "test", "")


class ManifestError(InvalidInputError):
    """A manifest (or label file) is malformed; the message names the file and the row."""


@dataclass(frozen=True)
class MosScale:
    """The score range of a dataset and its direction; iqalens manifests store higher = better."""

    low: float
    high: float
    higher_is_better: bool = True

    def __str__(self) -> str:
        return f"{self.low:g}:{self.high:g}:{'higher' if self.higher_is_better else 'lower'}"

    @classmethod
    def parse(cls, text: str) -> MosScale:
        parts = text.split(":")
        if len(parts) != 3 or parts[2] not in ("higher", "lower"):
            raise InvalidInputError(f"mos_scale must look like 'min:max:higher', got {text!r}")
        low, high = float(parts[0]), float(parts[1])
        if not low < high:
            raise InvalidInputError(f"mos_scale min must be below max, got {text!r}")
        return cls(low, high, parts[2] == "higher")


@dataclass(frozen=True)
class ManifestRow:
    """One image. ``mos`` is NaN and ``mos_scale`` None when the image has no score."""

    path: str
    reference: str
    source: str
    dist_type: str = ""
    dist_level: int | None = None
    perception_class: str = ""
    mos: float = math.nan
    mos_scale: MosScale | None = None
    split: str = ""

    def as_csv(self) -> dict[str, str]:
        return {
            "path": self.path,
            "reference": self.reference,
            "source": self.source,
            "dist_type": self.dist_type,
            "dist_level": "" if self.dist_level is None else str(self.dist_level),
            "perception_class": self.perception_class,
            "mos": "" if math.isnan(self.mos) else repr(float(self.mos)),
            "mos_scale": "" if self.mos_scale is None else str(self.mos_scale),
            "split": self.split,
        }


@dataclass
class Manifest:
    """Rows plus the folder their paths are relative to, and the provenance sidecar."""

    rows: list[ManifestRow]
    root: Path
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def resolve(self, row: ManifestRow) -> Path:
        """Absolute path of a row's image."""
        return (self.root / row.path).resolve()

    def split(self, name: str) -> Manifest:
        """The rows of one split (same root and provenance)."""
        return Manifest([r for r in self.rows if r.split == name], self.root, self.provenance)

    def with_rows(self, rows: Iterable[ManifestRow]) -> Manifest:
        return Manifest(list(rows), self.root, dict(self.provenance))


def sidecar_path(csv_path: str | os.PathLike[str]) -> Path:
    """The provenance JSON that goes with a manifest CSV: ``name.csv`` -> ``name.json``."""
    return Path(csv_path).with_suffix(".json")


def make_provenance(
    builder: str, inputs: dict[str, Any], seed: int | None = None, **extra: Any
) -> dict[str, Any]:
    """The standard provenance record: who built it, from what, with which versions and seed."""
    return {
        "builder": builder,
        "inputs": inputs,
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        **extra,
    }


def write_manifest(manifest: Manifest, csv_path: str | os.PathLike[str]) -> Path:
    """Write the CSV and its JSON sidecar atomically; paths are written relative to the CSV's folder."""
    out = Path(csv_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rebased = [_rebase(r, manifest.root, out.parent.resolve()) for r in manifest.rows]
    for number, row in enumerate(rebased, start=2):
        try:
            check_file_name(row.path)
        except FileNameError as exc:
            raise ManifestError(f"{out} row {number}: {exc}") from None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rebased:
        writer.writerow(row.as_csv())
    atomic_write_text(out, buf.getvalue())
    write_json(sidecar_path(out), {**manifest.provenance, "rows": len(rebased)})
    return out


def _rebase(row: ManifestRow, old_root: Path, new_root: Path) -> ManifestRow:
    absolute = (old_root / row.path).resolve()
    return replace(row, path=Path(os.path.relpath(absolute, new_root)).as_posix())


def manifest_path(text: str) -> str:
    """A path cell as iqalens keeps it: ``/``-separated and normalised (``./a.png`` == ``a.png``).

    A backslash is a separator only where the operating system uses it as one (Windows); on POSIX it
    is an ordinary character of a file name (``a\\b.png`` is one file), so it is kept. Nothing else
    is changed: spaces (leading and trailing too), quotes, commas and any letters are part of the name.
    """
    if os.sep == "\\":
        text = text.replace("\\", "/")
    return posixpath.normpath(text)


def _missing_hint(root: Path, path: str) -> str:
    """Why a listed file may be missing when a near-identical path exists (a Windows-written manifest)."""
    if "\\" in path and os.sep == "/" and (root / path.replace("\\", "/")).is_file():
        return (
            "; the path holds a backslash, which on this system is part of a file name, not a folder "
            "separator: write manifest paths with '/'"
        )
    if path != path.strip() and (root / path.strip()).is_file():
        return "; the path has leading or trailing spaces, which are part of a file name"
    return ""


def read_manifest(
    csv_path: str | os.PathLike[str], check_files: bool = True, skip_missing: bool = False
) -> tuple[Manifest, list[str]]:
    """Load and validate a manifest; returns it and the list of dropped rows' paths.

    Missing image files are an error unless ``skip_missing`` is set, in which case those rows are
    dropped and returned so the caller can say how many and which. All other problems raise
    :class:`ManifestError` naming the file and the row number (header = row 1).
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets add a BOM
        reader = csv.DictReader(fh)
        missing_cols = [c for c in ("path", "reference", "source") if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise ManifestError(
                f"{path}: missing column(s) {', '.join(missing_cols)}; expected {', '.join(COLUMNS)}"
            )
        raw_rows = list(reader)
    root = path.parent.resolve()
    rows: list[ManifestRow] = []
    dropped: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(raw_rows, start=2):
        row = _parse_row(raw, path, number)
        row = replace(row, path=manifest_path(row.path))
        if row.path in seen:
            raise ManifestError(
                f"{path} row {number}: duplicate path {row.path!r} (first at row {seen[row.path]})"
            )
        seen[row.path] = number
        if check_files and not (root / row.path).is_file():
            if skip_missing:
                dropped.append(row.path)
                continue
            raise ManifestError(
                f"{path} row {number}: image file {str(root / row.path)!r} does not exist "
                f"(use --skip-missing to drop such rows){_missing_hint(root, row.path)}"
            )
        rows.append(row)
    provenance: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            provenance = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{side}: provenance sidecar is not valid JSON ({exc})") from None
    return Manifest(rows, root, provenance), dropped


def _parse_row(raw: dict[str, str | None], path: Path, number: int) -> ManifestRow:
    def cell(name: str) -> str:
        return (raw.get(name) or "").strip()

    where = f"{path} row {number}"
    image = raw.get("path") or ""  # verbatim: spaces at either end are part of a file name
    if not image.strip():
        raise ManifestError(f"{where}: empty path")
    try:
        check_file_name(image)
    except FileNameError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if not cell("reference"):
        raise ManifestError(f"{where}: empty reference (content id, needed for content-disjoint splits)")
    cls = cell("perception_class")
    if cls and cls not in CLASSES and cls != EXCLUDED:
        raise ManifestError(
            f"{where}: unknown perception_class {cls!r}; known: {', '.join(CLASSES)}, {EXCLUDED}"
        )
    split = cell("split")
    if split not in SPLITS:
        raise ManifestError(f"{where}: unknown split {split!r}; use train, val, test or leave empty")
    level_text = cell("dist_level")
    try:
        level = int(level_text) if level_text else None
    except ValueError:
        raise ManifestError(f"{where}: dist_level {level_text!r} is not an integer") from None
    mos_text = cell("mos")
    scale_text = cell("mos_scale")
    mos = math.nan
    scale = None
    if mos_text:
        try:
            mos = float(mos_text)
        except ValueError:
            raise ManifestError(f"{where}: mos {mos_text!r} is not a number") from None
        if not math.isfinite(mos):
            raise ManifestError(f"{where}: mos is {mos_text!r}; scores must be finite numbers")
        if not scale_text:
            raise ManifestError(f"{where}: a mos needs a mos_scale 'min:max:higher'")
        try:
            scale = MosScale.parse(scale_text)
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        if not scale.higher_is_better:
            raise ManifestError(
                f"{where}: mos_scale {scale_text!r} says lower = better; iqalens manifests store "
                "higher = better (importers flip DMOS-style scores)"
            )
        if not scale.low <= mos <= scale.high:
            raise ManifestError(f"{where}: mos {mos:g} outside its scale [{scale.low:g}, {scale.high:g}]")
    return ManifestRow(
        path=image,
        reference=cell("reference"),
        source=cell("source"),
        dist_type=cell("dist_type"),
        dist_level=level,
        perception_class=cls,
        mos=mos,
        mos_scale=scale,
        split=split,
    )
