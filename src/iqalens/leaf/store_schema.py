"""The judgments store's file format: its identity, tables and columns, and how a file is opened.

Why a module of its own: what makes a file a judgments store (SQLite's ``application_id`` and the
schema version in ``user_version``), the two tables, the column order that exports share, and
the careful opening sequence (check the file is ours *before* switching it to WAL, create the
tables under a write lock so that two processes creating the same file do not collide) are the
format's definition. :mod:`iqalens.leaf.store` (reading and writing judgments) and
:mod:`iqalens.leaf.store_export` (CSV/Parquet files of the same rows) both build on it; the
design of the store is described in :mod:`iqalens.leaf.store`.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from iqalens.errors import IqalensError
from iqalens.leaf.judgments import LEVELS, PairJudgment, PointJudgment

__all__ = [
    "APPLICATION_ID",
    "PAIR_COLUMNS",
    "POINT_COLUMNS",
    "PROB_COLUMNS",
    "SCHEMA_VERSION",
    "PairRecord",
    "PointRecord",
    "StoreError",
    "connect",
    "pair_record",
    "point_record",
]

#: SQLite ``application_id`` of an iqalens judgments store ("IQLJ").
APPLICATION_ID = 0x49514C4A
#: Schema version stored in ``user_version``; bump with a migration when the tables change.
SCHEMA_VERSION = 1

#: The point table's probability columns, one per quality level.
PROB_COLUMNS = tuple(f"p_{level}" for level in LEVELS)
#: Columns of a point row as read and exported (exports keep this order; :func:`point_record` reads it).
POINT_COLUMNS: tuple[str, ...] = (
    "hash",
    "path",
    "teacher_id",
    "prompt_version",
    *PROB_COLUMNS,
    "expected",
    "reliability",
    "created_at",
)
#: Columns of a pair row as read and exported.
PAIR_COLUMNS: tuple[str, ...] = (
    "hash_a",
    "hash_b",
    "path_a",
    "path_b",
    "teacher_id",
    "prompt_version",
    "p_first_better",
    "reliability",
    "p_ab",
    "p_ba",
    "derived",
    "created_at",
)

# Primary keys start with (teacher_id, prompt_version) so that listing one teacher's judgments and
# the per-teacher counts of status() read a contiguous range of the key index.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS points (
    teacher_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    hash TEXT NOT NULL,
    path TEXT,
    {", ".join(f"{c} REAL NOT NULL" for c in PROB_COLUMNS)},
    expected REAL NOT NULL,
    reliability REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (teacher_id, prompt_version, hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pairs (
    teacher_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    hash_a TEXT NOT NULL,
    hash_b TEXT NOT NULL,
    path_a TEXT,
    path_b TEXT,
    p_first_better REAL NOT NULL,
    reliability REAL NOT NULL,
    p_ab REAL,
    p_ba REAL,
    derived INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (teacher_id, prompt_version, hash_a, hash_b),
    CHECK (hash_a <> hash_b)
) WITHOUT ROWID;
"""


class StoreError(IqalensError):
    """A judgments store could not be opened or used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"judgments store {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[StoreError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))  # picklable across processes


@dataclass(frozen=True)
class PointRecord:
    """One stored point judgment with its key, the path it was seen at, and when it was written."""

    hash: str
    path: str | None
    teacher_id: str
    prompt_version: str
    judgment: PointJudgment
    created_at: str


@dataclass(frozen=True)
class PairRecord:
    """One stored judgment of the ordered pair (hash_a, hash_b)."""

    hash_a: str
    hash_b: str
    path_a: str | None
    path_b: str | None
    teacher_id: str
    prompt_version: str
    judgment: PairJudgment
    created_at: str


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def point_record(row: Sequence[Any]) -> PointRecord:
    """The record of one row in :data:`POINT_COLUMNS` order (from the table or an export)."""
    values = dict(zip(POINT_COLUMNS, row, strict=True))
    judgment = PointJudgment(
        probs=tuple(float(values[c]) for c in PROB_COLUMNS),  # type: ignore[arg-type]
        expected=float(values["expected"]),
        reliability=float(values["reliability"]),
    )
    return PointRecord(
        values["hash"],
        values["path"] or None,
        values["teacher_id"],
        values["prompt_version"],
        judgment,
        values["created_at"],
    )


def pair_record(row: Sequence[Any]) -> PairRecord:
    """The record of one row in :data:`PAIR_COLUMNS` order (a missing ``p_ab``/``p_ba`` is NaN)."""
    values = dict(zip(PAIR_COLUMNS, row, strict=True))
    judgment = PairJudgment(
        p_first_better=float(values["p_first_better"]),
        reliability=float(values["reliability"]),
        p_ab=_nan_if_none(values["p_ab"]),
        p_ba=_nan_if_none(values["p_ba"]),
        derived=bool(values["derived"]),
    )
    return PairRecord(
        values["hash_a"],
        values["hash_b"],
        values["path_a"] or None,
        values["path_b"] or None,
        values["teacher_id"],
        values["prompt_version"],
        judgment,
        values["created_at"],
    )


# -- opening a file ---------------------------------------------------------------------------------


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """An open connection to the store at ``path`` (created if new), in WAL mode with full sync.

    ``StoreError`` if the file is not a judgments store (another program's database, not a
    database at all, a newer schema, a corrupt file) or cannot use WAL.
    """
    # timeout= is SQLite's busy_timeout; isolation_level=None: no implicit transactions, every
    # write transaction of the store is explicit.
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        _open(conn, path, busy_timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


def _open(conn: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    try:
        # Check before switching to WAL, which would rewrite another program's file header. One
        # read transaction, so a concurrent creator's commit cannot land between the reads.
        conn.execute("BEGIN")
        try:
            _check_identity(conn, path)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
        mode = _enable_wal(conn, busy_timeout_s)
        if str(mode).lower() != "wal":  # e.g. a file system without shared memory
            raise StoreError(path, f"cannot use WAL mode (SQLite chose {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")  # serialises two processes creating the same new file
        try:
            if _check_identity(conn, path) == "empty":
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise _translate(exc, path) from exc


def _enable_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> str:
    """Switch to WAL (persistent in the file), retrying while another process holds a lock.

    SQLite answers "database is locked" to this switch at once, without the busy handler, when a
    second process is creating the same file at the same moment; so retry until the timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.2)


def _check_identity(conn: sqlite3.Connection, path: Path) -> Literal["empty", "store"]:
    """'empty' for a brand-new SQLite file, 'store' for ours; StoreError for anything else."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and n_objects == 0:
        return "empty"
    if app_id != APPLICATION_ID:
        raise StoreError(path, "an SQLite database of another program, not a judgments store")
    if version > SCHEMA_VERSION:
        raise StoreError(
            path,
            f"written by a newer iqalens (schema {version}; this version reads up to {SCHEMA_VERSION})",
        )
    return "store"


def _translate(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_NOTADB or "not a database" in str(exc):
        return StoreError(path, "not an SQLite database, so not an iqalens judgments store")
    if code == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc):
        return StoreError(path, f"the database file is corrupt ({exc})")
    return exc  # e.g. "database is locked" after busy_timeout: a real, different problem
