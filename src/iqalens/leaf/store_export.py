"""Judgments as plain files: a store table written to CSV or Parquet, and such a file read back.

Why a module of its own: exporting is the store's only file output besides the database itself and
the only place that needs the optional ``pyarrow``; it shares nothing with the store's write and
resume logic but the column order (:mod:`iqalens.leaf.store_schema`), which is what lets
:func:`read_export` give back exactly the records the store holds.
:meth:`iqalens.leaf.store.JudgmentStore.export` is the usual entry point.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path
from typing import Any, Literal

from iqalens.errors import InvalidInputError
from iqalens.files import sibling_tempfile
from iqalens.leaf.store_schema import (
    PAIR_COLUMNS,
    POINT_COLUMNS,
    PairRecord,
    PointRecord,
    StoreError,
    pair_record,
    point_record,
)

__all__ = ["export_table", "read_export"]


def export_table(
    conn: sqlite3.Connection,
    path: str | os.PathLike[str],
    table: Literal["points", "pairs"] = "points",
    *,
    teacher_id: str | None = None,
    prompt_version: str | None = None,
    fmt: Literal["csv", "parquet"] | None = None,
) -> int:
    """Write one table of the store open on ``conn`` to CSV or Parquet; returns the row count.

    See :meth:`iqalens.leaf.store.JudgmentStore.export`.
    """
    if table not in ("points", "pairs"):
        raise InvalidInputError(f"table must be 'points' or 'pairs', got {table!r}")
    out = Path(path)
    fmt = fmt or ("parquet" if out.suffix.lower() in (".parquet", ".pq") else "csv")
    if fmt not in ("csv", "parquet"):
        raise InvalidInputError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
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
    rows = conn.execute(sql, params).fetchall()

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
        return [point_record(r) for r in rows]
    if header == PAIR_COLUMNS:
        for r in rows:
            r[PAIR_COLUMNS.index("derived")] = str(r[PAIR_COLUMNS.index("derived")]) in ("1", "True", "true")
        return [pair_record(r) for r in rows]
    raise StoreError(src, f"not a judgments export (columns {list(header)})")
