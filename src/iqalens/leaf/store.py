"""The durable judgments store: one SQLite file that a labeling run can be killed and resumed on.

Teacher labeling is the slow, expensive step of LEAF (minutes per thousand images on a GPU,
hours for a large collection), so its results are written as they arrive and never recomputed:

- **Keys.** A point judgment is keyed by ``(content hash, teacher_id, prompt_version)`` and a pair
  judgment by ``(hash_a, hash_b, teacher_id, prompt_version)`` for the *ordered* pair. The image path
  is stored too, but only as information: the same file moved or copied keeps its judgments, and a
  changed teacher or prompt gets new rows instead of being mixed with incompatible old ones.
- **Content hash = SHA-256 of the file bytes**, not of decoded pixels: hashing bytes needs no decoder
  (about as fast as the disk), it cannot change when Pillow or libjpeg is upgraded (decoded JPEG
  pixels can differ by a level or two between decoder versions, which would silently re-key every
  judgment), and it identifies exactly what a server-based teacher receives (the file's bytes, as a
  base64 data URL). The price is that a re-encoded copy of an image is judged again, which is right:
  re-encoding changes what the teacher sees.
- **Idempotent, first write wins.** Writes are ``INSERT OR IGNORE``: re-putting a stored key neither
  errors nor duplicates and keeps the *first* judgment, so a resumed or concurrent run cannot replace
  a judgment that a student may already have been trained on. ``replace=True`` overwrites on purpose.
- **Small transactions.** Rows are committed in batches (``batch_size``, default 256) inside
  ``BEGIN IMMEDIATE`` with ``synchronous=FULL``, so a crash, ``kill -9`` or power cut loses at most the
  batch in flight; on an ordinary exception (including Ctrl-C) in the caller's iterator the rows
  already received are committed before the exception propagates.
- **Several writers.** WAL mode lets readers run during a write, ``BEGIN IMMEDIATE`` takes the write
  lock up front (a deferred transaction that upgrades can fail with "database is locked" without
  waiting), and ``busy_timeout`` makes a writer wait for the lock instead of failing. Keep the file on
  a local disk: SQLite's locking is unreliable on network file systems (NFS), so on a cluster give each
  node its own store.
- **Recognisable.** The file carries SQLite's ``application_id`` and a schema version in
  ``user_version``; anything else (a text file, an image, another program's database) gets a
  :class:`StoreError` naming the file instead of being written into.
"""

from __future__ import annotations

import csv
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from iqalens.files import content_hash, sibling_tempfile

__all__ = ["JudgmentStore", "PairRecord", "PointRecord", "StoreError", "content_hash", "read_export"]
from iqalens.leaf.judgments import LEVELS, PairJudgment, PointJudgment

#: SQLite ``application_id`` of an iqalens judgments store ("IQLJ").
APPLICATION_ID = 0x49514C4A
#: Schema version stored in ``user_version``; bump with a migration when the tables change.
SCHEMA_VERSION = 1
#: Seconds a writer waits for another process's write lock before failing.
DEFAULT_BUSY_TIMEOUT_S = 60.0
#: Rows per transaction: at most this many judgments are lost by a hard kill.
DEFAULT_BATCH_SIZE = 256
# Keys per lookup query (well under SQLite's limit on bound parameters).
_LOOKUP_CHUNK = 500

_PROB_COLUMNS = tuple(f"p_{level}" for level in LEVELS)
POINT_COLUMNS: tuple[str, ...] = (
    "hash",
    "path",
    "teacher_id",
    "prompt_version",
    *_PROB_COLUMNS,
    "expected",
    "reliability",
    "created_at",
)
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
    {", ".join(f"{c} REAL NOT NULL" for c in _PROB_COLUMNS)},
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


class StoreError(Exception):
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _path_text(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class JudgmentStore:
    """Teacher judgments in one SQLite file (WAL), keyed by content hash, teacher and prompt version.

    Open one store object per process (or thread); several processes may write the same file at once.
    ``create=False`` refuses to create a missing file (for status and export, where a typo should not
    produce an empty store). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(self.path, "is a directory, not a store file")
        if not self.path.exists():
            if not create:
                raise StoreError(self.path, "no such file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not create and self.path.stat().st_size == 0:
            raise StoreError(self.path, "is an empty file, not a judgments store")
        # timeout= is SQLite's busy_timeout; isolation_level=None: no implicit transactions, every
        # write transaction below is explicit.
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        try:
            self._open(busy_timeout_s)
        except BaseException:
            self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _open(self, busy_timeout_s: float) -> None:
        conn = self._conn
        try:
            # Check before switching to WAL, which would rewrite another program's file header. One
            # read transaction, so a concurrent creator's commit cannot land between the reads.
            conn.execute("BEGIN")
            try:
                self._check_identity()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
            mode = self._enable_wal(busy_timeout_s)
            if str(mode).lower() != "wal":  # e.g. a file system without shared memory
                raise StoreError(self.path, f"cannot use WAL mode (SQLite chose {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")  # serialises two processes creating the same new file
            try:
                if self._check_identity() == "empty":
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
            raise self._translate(exc) from exc

    def _enable_wal(self, busy_timeout_s: float) -> str:
        """Switch to WAL (persistent in the file), retrying while another process holds a lock.

        SQLite answers "database is locked" to this switch at once, without the busy handler, when a
        second process is creating the same file at the same moment; so retry until the timeout.
        """
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.005
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.2)

    def _check_identity(self) -> Literal["empty", "store"]:
        """'empty' for a brand-new SQLite file, 'store' for ours; StoreError for anything else."""
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        n_objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and n_objects == 0:
            return "empty"
        if app_id != APPLICATION_ID:
            raise StoreError(self.path, "an SQLite database of another program, not a judgments store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                self.path,
                f"written by a newer iqalens (schema {version}; this version reads up to {SCHEMA_VERSION})",
            )
        return "store"

    def _translate(self, exc: sqlite3.DatabaseError) -> Exception:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_NOTADB or "not a database" in str(exc):
            return StoreError(self.path, "not an SQLite database, so not an iqalens judgments store")
        if code == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc):
            return StoreError(self.path, f"the database file is corrupt ({exc})")
        return exc  # e.g. "database is locked" after busy_timeout: a real, different problem

    def close(self) -> None:
        """Close the connection (the last one to close folds the WAL back into the main file)."""
        self._conn.close()

    def __enter__(self) -> JudgmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def _commit(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        conn = self._conn
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn.total_changes - before

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]], batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        written = 0
        batch: list[tuple[Any, ...]] = []
        try:
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    todo, batch = batch, []
                    written += self._commit(sql, todo)
        finally:
            # The caller's iterator failed (or was interrupted) between rows: keep what it delivered.
            if batch:
                todo, batch = batch, []
                written += self._commit(sql, todo)
        return written

    def put_points(
        self,
        items: Iterable[tuple[str, str | os.PathLike[str] | None, PointJudgment]],
        teacher_id: str,
        prompt_version: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        replace: bool = False,
    ) -> int:
        """Store ``(content_hash, path, judgment)`` items; returns how many rows were written.

        Existing keys are left as they are (first write wins) unless ``replace`` is true.
        ``items`` may be a generator: rows are committed every ``batch_size`` items.
        """
        teacher_id = _key(teacher_id, "teacher_id")
        prompt_version = _key(prompt_version, "prompt_version")
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        columns = (
            "teacher_id",
            "prompt_version",
            "hash",
            "path",
            *_PROB_COLUMNS,
            "expected",
            "reliability",
            "created_at",
        )
        sql = f"{verb} INTO points ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def rows() -> Iterator[tuple[Any, ...]]:
            for item in items:
                digest, path, judgment = item
                if not isinstance(judgment, PointJudgment):
                    raise TypeError(f"expected a PointJudgment for {digest!r}, got {type(judgment).__name__}")
                yield (
                    teacher_id,
                    prompt_version,
                    _key(digest, "content hash"),
                    _path_text(path),
                    *judgment.probs,
                    judgment.expected,
                    judgment.reliability,
                    _now(),
                )

        return self._write(sql, rows(), batch_size)

    def put_pairs(
        self,
        items: Iterable[
            tuple[str, str, str | os.PathLike[str] | None, str | os.PathLike[str] | None, PairJudgment]
        ],
        teacher_id: str,
        prompt_version: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        replace: bool = False,
    ) -> int:
        """Store ``(hash_a, hash_b, path_a, path_b, judgment)`` items for ordered pairs; returns rows written.

        Same semantics as :meth:`put_points`. A self-pair (``hash_a == hash_b``, e.g. two identical
        files) is refused with ``ValueError``: it carries no preference.
        """
        teacher_id = _key(teacher_id, "teacher_id")
        prompt_version = _key(prompt_version, "prompt_version")
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        columns = (
            "teacher_id",
            "prompt_version",
            "hash_a",
            "hash_b",
            "path_a",
            "path_b",
            "p_first_better",
            "reliability",
            "p_ab",
            "p_ba",
            "derived",
            "created_at",
        )
        sql = f"{verb} INTO pairs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        def rows() -> Iterator[tuple[Any, ...]]:
            for item in items:
                hash_a, hash_b, path_a, path_b, judgment = item
                if not isinstance(judgment, PairJudgment):
                    raise TypeError(
                        f"expected a PairJudgment for {hash_a!r}, {hash_b!r}, got {type(judgment).__name__}"
                    )
                if hash_a == hash_b:
                    raise ValueError(f"self-pair {hash_a!r}: a pair needs two different images")
                yield (
                    teacher_id,
                    prompt_version,
                    _key(hash_a, "content hash"),
                    _key(hash_b, "content hash"),
                    _path_text(path_a),
                    _path_text(path_b),
                    judgment.p_first_better,
                    judgment.reliability,
                    judgment.p_ab,
                    judgment.p_ba,
                    int(judgment.derived),
                    _now(),
                )

        return self._write(sql, rows(), batch_size)

    # -- reading ---------------------------------------------------------------------------------

    def missing_points(self, hashes: Iterable[str], teacher_id: str, prompt_version: str) -> list[str]:
        """The hashes without a point judgment by this teacher and prompt, in input order, each once.

        This is how a run resumes: judge only what this returns.
        """
        wanted = list(dict.fromkeys(hashes))
        present: set[str] = set()
        for chunk in _chunks(wanted, _LOOKUP_CHUNK):
            sql = (
                f"SELECT hash FROM points WHERE teacher_id = ? AND prompt_version = ? "
                f"AND hash IN ({', '.join('?' * len(chunk))})"
            )
            present.update(h for (h,) in self._conn.execute(sql, (teacher_id, prompt_version, *chunk)))
        return [h for h in wanted if h not in present]

    def missing_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        teacher_id: str,
        prompt_version: str,
        *,
        either_order: bool = False,
    ) -> list[tuple[str, str]]:
        """The ordered pairs without a judgment, in input order, each once.

        With ``either_order`` a stored (b, a) also counts for (a, b): an asked pair is judged in both
        presentation orders anyway, so re-sampling with another seed need not ask it again.
        """
        wanted = list(dict.fromkeys((a, b) for a, b in pairs))
        seconds = [b for _, b in wanted] if either_order else []
        firsts = list(dict.fromkeys([a for a, _ in wanted] + seconds))
        present: set[tuple[str, str]] = set()
        for chunk in _chunks(firsts, _LOOKUP_CHUNK):
            sql = (
                f"SELECT hash_a, hash_b FROM pairs WHERE teacher_id = ? AND prompt_version = ? "
                f"AND hash_a IN ({', '.join('?' * len(chunk))})"
            )
            present.update(self._conn.execute(sql, (teacher_id, prompt_version, *chunk)))
        return [
            (a, b) for a, b in wanted if (a, b) not in present and not (either_order and (b, a) in present)
        ]

    def points(self, teacher_id: str, prompt_version: str) -> list[PointRecord]:
        """All point judgments of one teacher and prompt version, ordered by hash."""
        sql = (
            f"SELECT {', '.join(POINT_COLUMNS)} FROM points WHERE teacher_id = ? AND prompt_version = ? "
            "ORDER BY hash"
        )
        return [_point_record(row) for row in self._conn.execute(sql, (teacher_id, prompt_version))]

    def pairs(self, teacher_id: str, prompt_version: str) -> list[PairRecord]:
        """All pair judgments of one teacher and prompt version, ordered by (hash_a, hash_b)."""
        sql = (
            f"SELECT {', '.join(PAIR_COLUMNS)} FROM pairs WHERE teacher_id = ? AND prompt_version = ? "
            "ORDER BY hash_a, hash_b"
        )
        return [_pair_record(row) for row in self._conn.execute(sql, (teacher_id, prompt_version))]

    def status(self) -> dict[str, Any]:
        """Counts per (teacher_id, prompt_version): points, pairs asked, pairs derived; plus totals."""
        conn = self._conn
        conn.execute("BEGIN")  # one snapshot for all counts, even while another process writes
        try:
            groups: dict[tuple[str, str], dict[str, Any]] = {}

            def group(teacher: str, prompt: str) -> dict[str, Any]:
                return groups.setdefault(
                    (teacher, prompt),
                    {
                        "teacher_id": teacher,
                        "prompt_version": prompt,
                        "points": 0,
                        "pairs_asked": 0,
                        "pairs_derived": 0,
                    },
                )

            for teacher, prompt, n in conn.execute(
                "SELECT teacher_id, prompt_version, count(*) FROM points GROUP BY teacher_id, prompt_version"
            ):
                group(teacher, prompt)["points"] = n
            for teacher, prompt, derived, n in conn.execute(
                "SELECT teacher_id, prompt_version, derived, count(*) FROM pairs "
                "GROUP BY teacher_id, prompt_version, derived"
            ):
                group(teacher, prompt)["pairs_derived" if derived else "pairs_asked"] += n
        finally:
            conn.execute("COMMIT")
        teachers = [groups[k] for k in sorted(groups)]
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "points": sum(g["points"] for g in teachers),
            "pairs_asked": sum(g["pairs_asked"] for g in teachers),
            "pairs_derived": sum(g["pairs_derived"] for g in teachers),
            "teachers": teachers,
        }

    # -- export ----------------------------------------------------------------------------------

    def export(
        self,
        path: str | os.PathLike[str],
        table: Literal["points", "pairs"] = "points",
        *,
        teacher_id: str | None = None,
        prompt_version: str | None = None,
        fmt: Literal["csv", "parquet"] | None = None,
    ) -> int:
        """Write one table (optionally one teacher/prompt) to CSV or Parquet; returns the row count.

        The format comes from ``fmt`` or the suffix (``.parquet``/``.pq`` -> Parquet, else CSV).
        Parquet needs the optional ``pyarrow`` (``pip install 'iqalens[parquet]'``). Missing pair
        probabilities (``p_ab``/``p_ba`` of derived pairs) are empty CSV cells / Parquet nulls; floats
        are written with all their digits, so :func:`read_export` gives back the stored values. The
        file is written atomically (temporary file, then rename).
        """
        if table not in ("points", "pairs"):
            raise ValueError(f"table must be 'points' or 'pairs', got {table!r}")
        out = Path(path)
        fmt = fmt or ("parquet" if out.suffix.lower() in (".parquet", ".pq") else "csv")
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
        pa = pq = None
        if fmt == "parquet":
            pa, pq = _import_pyarrow()
        columns = POINT_COLUMNS if table == "points" else PAIR_COLUMNS
        where, params = [], []
        if teacher_id is not None:
            where.append("teacher_id = ?")
            params.append(teacher_id)
        if prompt_version is not None:
            where.append("prompt_version = ?")
            params.append(prompt_version)
        order = "hash" if table == "points" else "hash_a, hash_b"
        sql = (
            f"SELECT {', '.join(columns)} FROM {table}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY teacher_id, prompt_version, {order}"
        )
        rows = self._conn.execute(sql, params).fetchall()

        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = sibling_tempfile(out)
        try:
            if fmt == "csv":
                with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(columns)
                    writer.writerows(rows)  # NULL -> empty cell; floats via repr (round-trips exactly)
            else:
                os.close(fd)
                arrays = {name: [row[i] for row in rows] for i, name in enumerate(columns)}
                if table == "pairs":
                    arrays["derived"] = [bool(v) for v in arrays["derived"]]
                pq.write_table(pa.table(arrays), tmp)  # type: ignore[union-attr]
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(rows)


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "Parquet export needs pyarrow, which is optional: pip install 'iqalens[parquet]' "
            "(or pip install pyarrow), or export to .csv"
        ) from exc
    return pa, pq


def _point_record(row: Sequence[Any]) -> PointRecord:
    values = dict(zip(POINT_COLUMNS, row, strict=True))
    judgment = PointJudgment(
        probs=tuple(float(values[c]) for c in _PROB_COLUMNS),  # type: ignore[arg-type]
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


def _pair_record(row: Sequence[Any]) -> PairRecord:
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


def read_export(path: str | os.PathLike[str]) -> list[PointRecord] | list[PairRecord]:
    """Read a file written by :meth:`JudgmentStore.export` back into records (table told by the columns)."""
    src = Path(path)
    if src.suffix.lower() in (".parquet", ".pq"):
        _, pq = _import_pyarrow()
        data = pq.read_table(src).to_pydict()
        header = tuple(data)
        rows: list[list[Any]] = [list(r) for r in zip(*(data[c] for c in header), strict=True)]
    else:
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            rows = [[None if cell == "" else cell for cell in r] for r in reader]
    if header == POINT_COLUMNS:
        return [_point_record(r) for r in rows]
    if header == PAIR_COLUMNS:
        for r in rows:
            r[PAIR_COLUMNS.index("derived")] = str(r[PAIR_COLUMNS.index("derived")]) in ("1", "True", "true")
        return [_pair_record(r) for r in rows]
    raise StoreError(src, f"not a judgments export (columns {list(header)})")
