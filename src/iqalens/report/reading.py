"""Small readers the report's loaders share: JSON and CSV files, config.json, where MOS came from.

Every reader is tolerant in the way a report must be: a missing optional file is empty, a cell that
is not a number is NaN, a missing seed is None. What a loader cannot do without raises, and the
report lists that run under "Not reported" with the reason.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from iqalens.datasets.manifest import sidecar_path
from iqalens.errors import InvalidInputError
from iqalens.report.records import MosSource, Provenance

#: Run files larger than this are refused rather than read into memory.
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InvalidInputError(f"{path} is too large to be a run file")
    return json.loads(path.read_text(encoding="utf-8"))


def json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def to_float(value: Any) -> float:
    """A CSV/JSON cell as float; empty, None and text like ``nan`` become NaN."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_seed(config: dict[str, Any]) -> int | None:
    seed = config.get("seed")
    return int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None


def run_versions(config: dict[str, Any]) -> dict[str, str]:
    versions = config.get("versions")
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def manifest_mos_source(manifest: str | os.PathLike[str] | None) -> MosSource:
    """What the MOS of a manifest is, from its provenance sidecar (``name.json`` next to ``name.csv``).

    Benchmarks built by iqalens record ``proxy_mos`` there (the KADID-10k proxy), so a proxy is named
    as one; a manifest without that key carries the MOS of its source; a missing sidecar is said to be
    unknown rather than guessed.
    """
    if not manifest:
        return MosSource("MOS source not recorded", None)
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.csv"
    side = sidecar_path(path)
    try:
        prov = json_or_empty(side)
    except (OSError, ValueError):
        prov = {}
    if not prov:
        return MosSource(
            f"MOS of {path}; its provenance file {side.name} was not found, so the source is unknown", None
        )
    if prov.get("proxy_mos"):
        return MosSource(str(prov["proxy_mos"]), True)
    builder = prov.get("builder") or "unknown builder"
    return MosSource(f"MOS as given by the manifest ({builder}), not a proxy", False)


def note_mos_source(note: str | None) -> MosSource:
    """The ``mos_note`` an evaluate run records: the proxy note, or the plain manifest MOS."""
    if not note:
        return MosSource("MOS source not recorded", None)
    return MosSource(note, "proxy" in note.lower())


def run_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` that :func:`iqalens.runs.start_run` wrote into ``folder`` ({} if none)."""
    return json_or_empty(folder / "config.json")


def make_provenance(
    config: dict[str, Any], command: str, model: str, data: str, protocol: str, mos: MosSource | None = None
) -> Provenance:
    """A :class:`Provenance` with the seed, start time and versions taken from the run's ``config``."""
    return Provenance(
        command=command,
        model=model,
        data=data,
        protocol=protocol,
        seed=run_seed(config),
        started=config.get("started"),
        versions=run_versions(config),
        mos=mos,
    )


def inline(mapping: Any) -> str:
    """A small dict as ``key value, key value`` (nested dicts in parentheses)."""
    if isinstance(mapping, dict):
        return ", ".join(
            f"{k} {inline(v) if not isinstance(v, dict) else '(' + inline(v) + ')'}"
            for k, v in mapping.items()
        )
    return str(mapping)
