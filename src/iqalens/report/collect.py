"""Find reportable results under the paths a user names and load them into typed records.

``iqalens report`` accepts anything an iqalens command leaves behind: run folders (``perceive``,
``align``, ``distill``, ``calibrate``, ``evaluate``, the label-budget protocol, ``demo``), a judgments
store written by ``iqalens teach`` (one SQLite file, no folder) and the CSV/JSON file of ``iqalens score``.
A folder that is none of these is searched a few levels down, so a demo folder holding many runs is
reported whole.

A run folder says what it is: its ``metrics.json`` is a typed result with a ``kind`` and a ``version``
(:mod:`iqalens.results`), and the kind names the entry of :data:`~iqalens.report.kinds.REPORT_KINDS`
that loads and draws it. Folders written before typed results existed go through the legacy detector
(:mod:`iqalens.report.legacy`). Stores and score files are recognised by their formats.

Reading never writes into the inputs, except that a judgments store is opened through
:class:`~iqalens.leaf.store.JudgmentStore` (which checks that the file really is one). Anything found but
not reportable (an interrupted run without its metrics, a malformed file, a kind or version this
iqalens does not know) is listed with the reason in :attr:`Collection.skipped` instead of failing the
whole report.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.leaf.store import APPLICATION_ID, StoreError
from iqalens.report.kinds import REPORT_KINDS
from iqalens.report.legacy import legacy_kind, legacy_result
from iqalens.report.reading import MAX_JSON_BYTES, manifest_mos_source, read_json
from iqalens.report.records import (
    AlignRun,
    BudgetRun,
    CalibrationRun,
    Collection,
    DistillRun,
    EvaluationRun,
    JudgmentsRun,
    MosSource,
    PerceptionRun,
    Provenance,
    Run,
    ScoreRun,
    TeacherJudgments,
)
from iqalens.results import StoredResult, peek_result

__all__ = [
    "AlignRun",
    "BudgetRun",
    "CalibrationRun",
    "Collection",
    "DistillRun",
    "EvaluationRun",
    "JudgmentsRun",
    "MosSource",
    "PerceptionRun",
    "Provenance",
    "Run",
    "ScoreRun",
    "TeacherJudgments",
    "collect",
    "is_judgments_store",
    "load_path",
    "manifest_mos_source",
]

#: How many folder levels below each named path are searched for runs.
DEFAULT_DEPTH = 3
#: Judgments store file suffixes considered while searching folders.
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
#: Header of a CSV written by ``iqalens score``: these first columns (older files have only these; newer
#: ones add the score's scale, see :data:`iqalens.leaf.scoring.CSV_COLUMNS`).
SCORE_CSV_HEADER = ["path", "score", "raw", "error"]
#: Folders never searched: caches and bulky outputs that cannot hold runs.
_SKIP_DIRS = frozenset({"features", "state", "distortions", "cache", "__pycache__"})
#: What reading one malformed run may raise; the run is skipped with the reason, the others reported.
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, StoreError, sqlite3.Error)


def is_judgments_store(path: Path) -> bool:
    """True for an SQLite file carrying the judgments store's ``application_id`` (read from the header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(72)
    except OSError:
        return False
    return (
        len(head) == 72
        and head.startswith(b"SQLite format 3\x00")
        and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    )


def _is_score_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
                return header is not None and header[: len(SCORE_CSV_HEADER)] == SCORE_CSV_HEADER
        if suffix == ".json" and path.stat().st_size <= MAX_JSON_BYTES:
            data = read_json(path)
            return isinstance(data, dict) and {"results", "n_images", "n_failed"} <= set(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def _display_name(path: Path, root: Path) -> str:
    """``path`` relative to the folder holding ``root`` (what the user named): ``demo/perceive``."""
    try:
        return path.resolve().relative_to(root.resolve().parent).as_posix()
    except ValueError:
        return path.as_posix()


def load_path(kind: str, path: Path, name: str, stored: StoredResult | None = None) -> Run:
    """The record of the ``kind`` result at ``path``: its typed result (``stored``, read from the
    folder) decoded and handed to the kind's loader; a folder without one is read as legacy."""
    entry = REPORT_KINDS.entry(kind)
    spec = entry.load()
    if spec.load is None:
        raise InvalidInputError(f"a {kind} result has nothing to draw")
    result = None
    if spec.result_type is not None:
        if stored is not None:
            result = stored.decode(spec.result_type)
        else:
            result = legacy_result(path, kind, spec.result_type)
    run = spec.load(path, name, result)
    run.kind = entry.name
    return run


def _load(kind: str, path: Path, root: Path, found: Collection, stored: StoredResult | None = None) -> None:
    try:
        found.runs.append(load_path(kind, path, _display_name(path, root), stored))
    except _READ_ERRORS as exc:
        # One malformed or half-written run must not cost the report of all the others.
        found.skipped.append((str(path), f"{kind} output that could not be read: {exc}"))


def _files_of(folder: Path) -> Iterable[tuple[str, Path]]:
    """Stores and score outputs directly inside ``folder``."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return
    for p in entries:
        suffix = p.suffix.lower()
        if suffix in STORE_SUFFIXES and is_judgments_store(p):
            yield "store", p
        elif suffix in (".csv", ".json") and _is_score_file(p):
            yield "score", p


def _search(folder: Path, root: Path, depth: int, found: Collection) -> None:
    try:
        stored = peek_result(folder)
        kind = stored.kind if stored is not None else legacy_kind(folder)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # e.g. a half-written or foreign config.json
        found.skipped.append((str(folder), f"unreadable run files: {exc}"))
        return
    if kind is not None:
        try:
            container = REPORT_KINDS.get(kind).container
        except UnknownNameError:
            found.skipped.append(
                (
                    str(folder),
                    f"a run of kind {kind!r}, which this iqalens cannot report "
                    f"(it reports: {', '.join(REPORT_KINDS.names())})",
                )
            )
            return
        if not container:  # a run's subfolders are its own (an align run's before/ and after/)
            _load(kind, folder, root, found, stored)
            return
    for file_kind, path in _files_of(folder):
        _load(file_kind, path, root, found)
    if depth <= 0:
        return
    try:
        children = sorted(
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIP_DIRS
        )
    except OSError as exc:
        found.skipped.append((str(folder), f"cannot be listed: {exc}"))
        return
    for child in children:
        _search(child, root, depth - 1, found)


def collect(paths: Sequence[str | os.PathLike[str]], max_depth: int = DEFAULT_DEPTH) -> Collection:
    """Every reportable result under ``paths`` (run folders, folders of runs, stores, score files).

    Raises ``ValueError`` (one line, naming the paths) when a path does not exist or nothing
    reportable is found at all.
    """
    if not paths:
        raise InvalidInputError("name at least one run folder, judgments store or score file")
    found = Collection()
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise InvalidInputError(f"{path} does not exist")
        if path.is_file():
            if is_judgments_store(path):
                _load("store", path, path, found)
            elif _is_score_file(path):
                _load("score", path, path, found)
            else:
                found.skipped.append((str(path), "not a judgments store or an iqalens score file"))
        else:
            _search(path, path, max_depth, found)
    if not found.runs:
        named = ", ".join(str(p) for p in paths)
        why = f" ({'; '.join(f'{p}: {r}' for p, r in found.skipped[:3])})" if found.skipped else ""
        raise InvalidInputError(
            f"nothing reportable in {named}: no perceive, align, distill, calibrate, evaluate, label-budget "
            f"or demo run folder, judgments store or score file found{why}"
        )
    return found
