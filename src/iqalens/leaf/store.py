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

This module reads and writes judgments; the file format (identity, tables, the opening sequence)
is :mod:`iqalens.leaf.store_schema` and the CSV/Parquet exports are :mod:`iqalens.leaf.store_export`.
Every name of both that callers use is importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from iqalens.errors import InvalidInputError
from iqalens.files import content_hash
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.store_export import export_table, read_export
from iqalens.leaf.store_schema import (
    APPLICATION_ID,
    PAIR_COLUMNS,
    POINT_COLUMNS,
    PROB_COLUMNS,
    SCHEMA_VERSION,
    PairRecord,
    PointRecord,
    StoreError,
    connect,
    pair_record,
    point_record,
)

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BUSY_TIMEOUT_S",
    "PAIR_COLUMNS",
    "POINT_COLUMNS",
    "SCHEMA_VERSION",
    "JudgmentStore",
    "PairRecord",
    "PointRecord",
    "StoreError",
    "content_hash",
    "read_export",
]

#: Seconds a writer waits for another process's write lock before failing.
DEFAULT_BUSY_TIMEOUT_S = 60.0
#: Rows per transaction: at most this many judgments are lost by a hard kill.
DEFAULT_BATCH_SIZE = 256
# Keys per lookup query (well under SQLite's limit on bound parameters).
_LOOKUP_CHUNK = 500


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _key(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _path_text(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


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
        self._conn = connect(self.path, busy_timeout_s)

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
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
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
            *PROB_COLUMNS,
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
                    raise InvalidInputError(f"self-pair {hash_a!r}: a pair needs two different images")
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
        return [point_record(row) for row in self._conn.execute(sql, (teacher_id, prompt_version))]

    def pairs(self, teacher_id: str, prompt_version: str) -> list[PairRecord]:
        """All pair judgments of one teacher and prompt version, ordered by (hash_a, hash_b)."""
        sql = (
            f"SELECT {', '.join(PAIR_COLUMNS)} FROM pairs WHERE teacher_id = ? AND prompt_version = ? "
            "ORDER BY hash_a, hash_b"
        )
        return [pair_record(row) for row in self._conn.execute(sql, (teacher_id, prompt_version))]

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
        return export_table(
            self._conn, path, table, teacher_id=teacher_id, prompt_version=prompt_version, fmt=fmt
        )
