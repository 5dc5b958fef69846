"""Manifests: round trip, provenance sidecar, and one clear message per kind of bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from iqalens.datasets.manifest import (
    COLUMNS,
    Manifest,
    ManifestError,
    ManifestRow,
    MosScale,
    make_provenance,
    read_manifest,
    sidecar_path,
    write_manifest,
)
from iqalens.datasets.splits import assign_splits

HEADER = ",".join(COLUMNS)


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def _write(tmp_path: Path, lines: list[str], images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    for name in images:
        _img(tmp_path / name)
    path = tmp_path / "m.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def test_roundtrip_rebases_paths_and_writes_provenance(tmp_path: Path) -> None:
    _img(tmp_path / "data" / "x.png")
    rows = [
        ManifestRow("x.png", "ref1", "synthetic", "1", 3, "blur", 2.9, MosScale(1, 5), "train"),
    ]
    m = Manifest(rows, tmp_path / "data", make_provenance("test", {"from": "unit"}, seed=3))
    out = write_manifest(m, tmp_path / "elsewhere" / "m.csv")
    loaded, dropped = read_manifest(out)
    assert dropped == []
    assert loaded.rows[0].path == "../data/x.png"
    assert loaded.resolve(loaded.rows[0]) == (tmp_path / "data" / "x.png").resolve()
    assert loaded.rows[0].mos == 2.9 and loaded.rows[0].mos_scale == MosScale(1, 5)
    assert loaded.rows[0].dist_level == 3 and loaded.rows[0].split == "train"
    assert loaded.provenance["builder"] == "test" and loaded.provenance["seed"] == 3
    assert loaded.provenance["rows"] == 1 and "numpy" in loaded.provenance["versions"]
    assert sidecar_path(out).is_file()


def test_unscored_rows_keep_nan(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a.png,r1,synthetic,,,clean,,,"], images=("a.png",))
    m, _ = read_manifest(path)
    assert math.isnan(m.rows[0].mos) and m.rows[0].mos_scale is None


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["a.png,r1,s,,,blurry,,,"], "unknown perception_class 'blurry'"),
        (["a.png,r1,s,,,blur,,,", "a.png,r2,s,,,blur,,,"], "duplicate path 'a.png'"),
        (["a.png,r1,s,,,blur,nan,1:5:higher,"], "finite"),
        (["a.png,r1,s,,,blur,abc,1:5:higher,"], "not a number"),
        (["a.png,r1,s,,,blur,3,1:5:lower,"], "lower = better"),
        (["a.png,r1,s,,,blur,7,1:5:higher,"], "outside its scale"),
        (["a.png,r1,s,,,blur,3,,"], "needs a mos_scale"),
        (["a.png,r1,s,,,blur,3,5:1:higher,"], "min must be below max"),
        (["a.png,,s,,,blur,,,"], "empty reference"),
        (["a.png,r1,s,,x,blur,,,"], "not an integer"),
        (["a.png,r1,s,,,blur,,,holdout"], "unknown split"),
        (["missing.png,r1,s,,,blur,,,"], "does not exist"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    assert str(path) in str(info.value) and "row " in str(info.value)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("path,source\na.png,s\n")
    with pytest.raises(ManifestError, match="missing column.*reference"):
        read_manifest(path)


def test_skip_missing_drops_and_reports(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a.png,r1,s,,,blur,,,", "gone.png,r2,s,,,noise,,,", "b.png,r3,s,,,noise,,,"])
    m, dropped = read_manifest(path, skip_missing=True)
    assert [r.path for r in m.rows] == ["a.png", "b.png"]
    assert dropped == ["gone.png"]


def test_bad_sidecar_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, ["a.png,r1,s,,,blur,,,"])
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(path)


def test_splits_are_content_disjoint_seeded_and_proportional() -> None:
    rows = [ManifestRow(f"{r}_{k}.png", f"ref{r}", "s") for r in range(20) for k in range(5)]
    a = assign_splits(rows, (0.6, 0.2, 0.2), seed=1)
    b = assign_splits(rows, (0.6, 0.2, 0.2), seed=1)
    c = assign_splits(rows, (0.6, 0.2, 0.2), seed=2)
    assert [r.split for r in a] == [r.split for r in b]
    assert [r.split for r in a] != [r.split for r in c]
    by_ref: dict[str, set[str]] = {}
    for r in a:
        by_ref.setdefault(r.reference, set()).add(r.split)
    assert all(len(s) == 1 for s in by_ref.values())
    counts = {name: sum(1 for s in by_ref.values() if name in s) for name in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4, "test": 4}


def test_small_reference_sets_still_fill_every_split() -> None:
    rows = [ManifestRow(f"{r}.png", f"ref{r}", "s") for r in range(3)]
    assert {r.split for r in assign_splits(rows, (0.7, 0.1, 0.2))} == {"train", "val", "test"}


def test_bad_fractions_rejected() -> None:
    with pytest.raises(ValueError, match="sum"):
        assign_splits([], (0.5, 0.5, 0.5))
