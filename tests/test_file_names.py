"""File names are data: odd names round-trip through the benchmark, manifests, the judgments store,
score outputs and the HTML report, or are refused up front with a message naming the file."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.cli import build_parser, main
from iqalens.datasets.benchmark import reference_ids
from iqalens.datasets.importers._common import FileIndex
from iqalens.datasets.manifest import Manifest, ManifestError, ManifestRow, read_manifest, write_manifest
from iqalens.files import FileNameError, check_file_name, file_name_problem
from iqalens.images import load_rgb
from iqalens.leaf.judgments import PointJudgment
from iqalens.leaf.scoring import InputError, collect_inputs, score_paths, write_csv, write_json
from iqalens.leaf.store import JudgmentStore, read_export
from iqalens.leaf.teach import collect_images, run_teach
from iqalens.report import write_report

POSIX = os.sep == "/"
#: Stems of reference photos: each must come back unchanged as a reference and in its image names.
ODD_STEMS = [
    "with space",
    " lead",
    "trail ",
    "it's",
    'say "hi"',
    "a<b>c",
    "<script>alert(1)",
    "a,b",
    "café",
    "日本",
    "-x",
    "50%&amp;",
] + (["a\\b"] if POSIX else [])  # a backslash is a separator on Windows, a character on POSIX

SIZE = (16, 12)


def _odd_refs(folder: Path) -> dict[str, np.ndarray]:
    """One small distinct random photo per odd stem; returns stem -> pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for stem in ODD_STEMS:
        arr = (rng.random((SIZE[1], SIZE[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{stem}.png")
        pixels[stem] = arr
    return pixels


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A benchmark built by the CLI from the odd-named photos (one type, one level: fast)."""
    base = tmp_path_factory.mktemp("names")
    pixels = _odd_refs(base / "refs")
    argv = ["bench", "build", "--refs", str(base / "refs"), "--types", "1", "--levels", "1"]
    assert main([*argv, "--size", f"{SIZE[0]}x{SIZE[1]}", "-o", str(base / "bench"), "-q"]) == 0
    return base / "bench" / "manifest.csv", pixels


class MeanTeacher:
    """A stand-in teacher: brighter images are judged better."""

    teacher_id = "test:mean"
    prompt_version = "v1"
    supports_pairs = False

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        out = []
        for p in paths:
            b = load_rgb(p).mean() / 255.0
            out.append(PointJudgment.from_logits([4 * b, 3 * b, 2 * b, b, 0.0]))
        return out


class MeanScorer:
    """A stand-in for a student: the score is the image's mean brightness."""

    name = "mean"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(image, dtype=np.float64)

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        raw = np.array([im.mean() for im in images])
        return raw, raw

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "runtime": "test"}


def test_bench_manifest_names_every_odd_file_and_maps_to_its_photo(
    bench: tuple[Path, dict[str, np.ndarray]],
) -> None:
    manifest_path, pixels = bench
    m, dropped = read_manifest(manifest_path)
    assert dropped == []
    assert {r.reference for r in m.rows} == {s.strip() for s in ODD_STEMS}  # readers strip references
    assert len(m) == 2 * len(ODD_STEMS)  # one clean copy + one blur per photo
    with open(manifest_path, newline="", encoding="utf-8") as fh:
        written = [row["path"] for row in csv.DictReader(fh)]
    assert sorted(written) == sorted(r.path for r in m.rows)  # read back verbatim
    for stem in ODD_STEMS:
        clean, blur = f"images/{stem}_00_0.png", f"images/{stem}_01_1.png"
        assert clean in written and blur in written
        row = next(r for r in m.rows if r.path == clean)
        image = m.resolve(row)
        assert image.is_file() and image.parent == (manifest_path.parent / "images").resolve()
        assert image.name == f"{stem}_00_0.png"
        assert np.array_equal(load_rgb(image), pixels[stem])  # the right photo, not a look-alike
        assert row.reference == stem.strip() and row.perception_class == "clean"

    # rebasing into another folder and reading back keeps every name
    moved = write_manifest(m, manifest_path.parent.parent / "elsewhere" / "copy.csv")
    again, _ = read_manifest(moved)
    assert [again.resolve(r) for r in again.rows] == [m.resolve(r) for r in m.rows]
    assert all(r.path.startswith("../bench/images/") for r in again.rows)


def test_odd_names_round_trip_through_store_and_export(
    bench: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    manifest_path, _ = bench
    paths = collect_images([manifest_path])
    assert len(paths) == 2 * len(ODD_STEMS)
    with JudgmentStore(tmp_path / "j.sqlite") as store:
        report = run_teach(MeanTeacher(), paths, store, progress=False)
        assert report.images_judged == len(paths) and not report.unreadable
        stored = {r.path for r in store.points("test:mean", "v1")}
        n = store.export(tmp_path / "points.csv")
    assert stored == {str(p) for p in paths}
    assert n == len(paths)
    assert {r.path for r in read_export(tmp_path / "points.csv")} == stored


def test_odd_names_round_trip_through_score_outputs(bench: tuple[Path, dict[str, np.ndarray]]) -> None:
    manifest_path, pixels = bench
    images = manifest_path.parent / "images"
    from_manifest = collect_inputs([manifest_path])
    from_folder = collect_inputs([images])
    assert sorted(p.resolve() for p in from_manifest) == sorted(p.resolve() for p in from_folder)
    results = score_paths(MeanScorer(), from_folder, batch_size=5, workers=0)
    assert all(r.ok for r in results)
    names = [str(p) for p in from_folder]
    assert [r.path for r in results] == names
    by_name = {r.path: r.score for r in results}
    for stem, arr in pixels.items():
        assert by_name[str(images / f"{stem}_00_0.png")] == pytest.approx(arr.mean())

    buf = io.StringIO()
    write_csv(results, buf)
    assert [row["path"] for row in csv.DictReader(io.StringIO(buf.getvalue()))] == names
    buf = io.StringIO()
    write_json(results, buf)
    assert [r["path"] for r in json.loads(buf.getvalue())["results"]] == names


def test_leading_dash_names_go_after_double_dash() -> None:
    parser = build_parser()
    assert parser.parse_args(["score", "--", "-x.png", "b.png"]).paths == ["-x.png", "b.png"]
    assert parser.parse_args(["score", "./-x.png"]).paths == ["./-x.png"]


def test_report_escapes_odd_names(bench: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    manifest_path, _ = bench
    folder = tmp_path / '<b>it\'s "runs" & more'
    folder.mkdir()
    results = score_paths(MeanScorer(), collect_inputs([manifest_path]), workers=0)
    with open(folder / "<script>alert(1)<.json", "w", encoding="utf-8") as fh:
        write_json(results, fh, MeanScorer().describe())
    with JudgmentStore(folder / "<img src=x>.sqlite") as store:
        run_teach(MeanTeacher(), [Path(r.path) for r in results[:3]], store, progress=False)
    page = write_report([folder], tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page and "<b>it" not in page
    assert "&lt;script&gt;alert(1)&lt;.json" in page
    assert "&lt;img src=x&gt;.sqlite" in page
    assert "&lt;b&gt;it&#x27;s &quot;runs&quot; &amp; more" in page


# -- refused up front ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["new\nline.png", "tab\t.png", "cr\r.png", "bell\x07.png", "del\x7f.png"])
def test_control_characters_are_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    assert "control character" in (file_name_problem(name) or "")
    with pytest.raises(FileNameError) as info:
        check_file_name(tmp_path / name)
    assert repr(str(tmp_path / name)) in str(info.value)  # escaped: the message stays on one line
    assert "\n" not in str(info.value) and "\r" not in str(info.value)


def test_bench_build_refuses_a_newline_name_before_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = tmp_path / "refs"
    _odd_refs(refs)
    Image.new("RGB", SIZE).save(refs / "new\nline.png")
    out = tmp_path / "bench"
    assert main(["bench", "build", "--refs", str(refs), "--types", "1", "--levels", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert repr(str(refs / "new\nline.png")) in err and "control character" in err
    assert not out.exists()  # refused before anything was rendered


@pytest.mark.skipif(not POSIX, reason="undecodable bytes in names exist on POSIX file systems")
def test_undecodable_names_are_refused(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/bad\xff.png"
    try:
        with open(raw, "wb") as fh:
            fh.write(b"")
    except OSError:
        pytest.skip("this file system does not take undecodable names")
    Image.new("RGB", SIZE).save(raw, format="PNG")
    with pytest.raises(InputError, match="not valid UTF-8"):
        collect_inputs([tmp_path])
    with pytest.raises(FileNameError, match="not valid UTF-8"):
        collect_images([tmp_path])


def test_manifests_refuse_control_characters_on_read_and_write(tmp_path: Path) -> None:
    Image.new("RGB", SIZE).save(tmp_path / "a\nb.png")
    text = 'path,reference,source\n"a\nb.png",r,s\n'
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"m\.csv row 2: file name 'a\\nb\.png' holds control"):
        read_manifest(tmp_path / "m.csv")
    manifest = Manifest([ManifestRow(path="a\nb.png", reference="r", source="s")], tmp_path)
    with pytest.raises(ManifestError, match=r"out\.csv row 2: file name 'a\\nb\.png'"):
        write_manifest(manifest, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_manifest_paths_are_verbatim_and_windows_backslashes_get_a_hint(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.new("RGB", SIZE).save(tmp_path / "sub" / "x.png")
    Image.new("RGB", SIZE).save(tmp_path / " y.png")
    (tmp_path / "m.csv").write_text("path,reference,source\n./sub/x.png,r,s\n y.png,q,s\n", encoding="utf-8")
    m, _ = read_manifest(tmp_path / "m.csv")
    assert [r.path for r in m.rows] == ["sub/x.png", " y.png"]  # ./ normalised, the space kept
    if POSIX:
        (tmp_path / "w.csv").write_text("path,reference,source\nsub\\x.png,r,s\n", encoding="utf-8")
        with pytest.raises(ManifestError, match="backslash, which on this system is part of a file name"):
            read_manifest(tmp_path / "w.csv")


def test_reference_ids_refuse_collisions_and_overlong_names(tmp_path: Path) -> None:
    assert reference_ids([Path("a b.png"), Path("a\\b.png")]) == ["a b", "a\\b"]
    with pytest.raises(ValueError, match="unique file names"):
        reference_ids([Path("x/a.png"), Path("y/A.png")])
    with pytest.raises(ValueError, match="unique file names"):
        reference_ids([Path("a.png"), Path("a .png")])
    with pytest.raises(ValueError, match="too long"):
        reference_ids([Path("é" * 124 + ".png")])  # 252 bytes: a legal name, but not with _25_5


@pytest.mark.skipif(not POSIX, reason="a backslash cannot be part of a file name on Windows")
def test_importer_file_index_takes_backslash_names_verbatim(tmp_path: Path) -> None:
    (tmp_path / "a\\b.png").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "c.png").write_bytes(b"")
    index = FileIndex(tmp_path)
    assert index.find(["a\\b.png"]) == "a\\b.png"  # a POSIX name with a backslash in it
    assert index.find(["dir\\c.png"]) == "dir/c.png"  # a Windows-written label file
    assert index.find(["./dir/c.png"]) == "dir/c.png"
