"""Which pristine reference image belongs to each image of a manifest.

Full-reference measures (and the reference-aware teacher built on them) need, for every distorted
image, the undistorted photo it was made from. A manifest names each image's reference *content id*
(the ``reference`` column); the reference *image* is found, per manifest:

1. in a references folder, when one is given: the file whose name or stem is the reference id (or
   the id's last ``/``-separated part, since importers namespace ids as ``kadid10k/I01``);
2. otherwise among the manifest's own rows: the unchanged image of that reference, i.e. a row with
   an empty ``dist_type`` and no level or level 0 (a synthetic benchmark's clean image ``<ref>_00_0``;
   an importer's ``clean`` row, written with ``include_references``).

A manifest in which no image has a reference image is refused up front (:class:`ManifestError`);
single images without one are reported when they are asked for (:class:`MissingReferenceError`, an
``ImageLoadError``, so the teach loop skips and counts them instead of judging them wrongly).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from iqalens.datasets.manifest import Manifest, ManifestError, ManifestRow, read_manifest
from iqalens.images import ImageLoadError, iter_image_files

__all__ = ["MissingReferenceError", "ReferenceIndex", "is_reference_row"]


class MissingReferenceError(ImageLoadError):
    """An image has no known reference image (the message says where it was looked for)."""


def is_reference_row(row: ManifestRow) -> bool:
    """True for a row that *is* its reference's unchanged image (clean copy 0 or an importer's clean row)."""
    return row.dist_type == "" and row.dist_level in (None, 0)


def _folder_index(folder: Path) -> dict[str, Path]:
    """Reference folder files by name and by stem (a stem shared by two files is ambiguous: dropped)."""
    by_key: dict[str, Path] = {}
    ambiguous: set[str] = set()
    for path in iter_image_files(folder):
        for key in {path.name, path.stem}:
            if key in by_key and by_key[key] != path:
                ambiguous.add(key)
            by_key[key] = path
    return {k: v for k, v in by_key.items() if k not in ambiguous}


def _lookup(index: dict[str, Path], reference_id: str) -> Path | None:
    return index.get(reference_id) or index.get(reference_id.rsplit("/", 1)[-1])


class ReferenceIndex:
    """Image path -> its reference image path, for the rows of one or more manifests."""

    def __init__(self) -> None:
        self._reference_of: dict[Path, Path] = {}
        self._why_missing: dict[Path, str] = {}

    def __len__(self) -> int:
        return len(self._reference_of)

    @classmethod
    def from_manifests(
        cls,
        manifests: Sequence[str | os.PathLike[str]] | Sequence[Manifest],
        references_dir: str | os.PathLike[str] | None = None,
    ) -> ReferenceIndex:
        """Index every row of ``manifests`` (paths of manifest CSVs or loaded manifests)."""
        if not manifests:
            raise ManifestError(
                "the full-reference teacher needs a manifest (a .csv with a reference column) to know "
                "each image's reference"
            )
        folder_index: dict[str, Path] | None = None
        if references_dir is not None:
            folder = Path(references_dir)
            if not folder.is_dir():
                raise ManifestError(f"references folder {folder} does not exist")
            folder_index = _folder_index(folder)
            if not folder_index:
                raise ManifestError(f"no image files found in references folder {folder}")
        index = cls()
        for item in manifests:
            manifest = item if isinstance(item, Manifest) else read_manifest(item)[0]
            index._add(manifest, folder_index, str(item) if not isinstance(item, Manifest) else "manifest")
        return index

    def _add(self, manifest: Manifest, folder_index: dict[str, Path] | None, name: str) -> None:
        own: dict[str, Path] = {}
        for row in manifest.rows:
            if is_reference_row(row):
                own.setdefault(row.reference, manifest.resolve(row))
        found = 0
        for row in manifest.rows:
            path = manifest.resolve(row)
            ref = _lookup(folder_index, row.reference) if folder_index is not None else own.get(row.reference)
            if ref is None:
                where = "in the references folder" if folder_index is not None else "among its rows"
                self._why_missing[path] = (
                    f"no reference image for reference {row.reference!r} {where} ({name}); "
                    "a full-reference judgment needs it"
                )
                continue
            self._reference_of[path] = ref.resolve()
            found += 1
        if manifest.rows and found == 0:
            hint = (
                "no file in the references folder is named after its reference ids"
                if folder_index is not None
                else "it has no clean rows (empty dist_type) and no references folder was given"
            )
            raise ManifestError(f"{name}: no image has a reference image: {hint}")

    def reference_of(self, path: str | os.PathLike[str]) -> Path:
        """The reference image of ``path``; :class:`MissingReferenceError` when there is none."""
        key = Path(path).resolve()
        ref = self._reference_of.get(key)
        if ref is None:
            reason = self._why_missing.get(key, "not listed in the manifests given to the teacher")
            raise MissingReferenceError(key, reason)
        return ref

    def paths(self) -> Iterable[Path]:
        """The indexed image paths (those with a reference)."""
        return self._reference_of.keys()
