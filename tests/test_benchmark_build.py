"""The synthetic perception benchmark: classes, proxy MOS, disjoint splits, resumability, workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.cli import main
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark, fit_to_size
from iqalens.datasets.manifest import read_manifest
from iqalens.datasets.proxy_mos import proxy_mos
from iqalens.images import ImageLoadError, load_rgb
from iqalens.taxonomy import CLASSES, kadid_class

SMALL = BenchmarkSpec(
    types=(1, 10, 18, 25), levels=(1, 3, 5), size=(48, 32), split_fractions=(0.5, 0.25, 0.25)
)


@pytest.fixture()
def refs(tmp_path: Path) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"r{i}.png")
    return folder


def test_build_writes_classes_proxy_mos_and_disjoint_splits(refs: Path, tmp_path: Path) -> None:
    path = build_benchmark(tmp_path / "b", refs=[refs], spec=SMALL, progress=False)
    m, _ = read_manifest(path)
    assert len(m) == 4 * (1 + 4 * 3)  # per reference: 1 clean + 4 types x 3 levels
    clean_of = {r.reference: load_rgb(m.resolve(r)) for r in m.rows if not r.dist_type}
    for row in m.rows:
        assert row.perception_class in CLASSES
        pixels = load_rgb(m.resolve(row))
        assert pixels.shape == (32, 48, 3)
        if row.dist_type:
            # a distorted cell that left the picture byte-identical (here: sigma 0.1 blur) is clean
            unchanged = np.array_equal(pixels, clean_of[row.reference])
            expected = "clean" if unchanged else kadid_class(int(row.dist_type), row.dist_level)
            assert row.perception_class == expected
            assert row.mos == pytest.approx(proxy_mos(int(row.dist_type), row.dist_level))
        else:
            assert row.perception_class == "clean" and row.mos == pytest.approx(proxy_mos(None, None))
    # mean shift level 3 leaves the image unchanged: it is a clean image, not a distortion
    ms3 = next(r for r in m.rows if r.dist_type == "18" and r.dist_level == 3)
    assert ms3.perception_class == "clean"
    splits_per_ref: dict[str, set[str]] = {}
    for row in m.rows:
        splits_per_ref.setdefault(row.reference, set()).add(row.split)
    assert all(len(s) == 1 for s in splits_per_ref.values())
    assert {s for v in splits_per_ref.values() for s in v} == {"train", "val", "test"}
    assert m.provenance["builder"] == "iqalens bench build" and m.provenance["spec"]["types"] == [
        1,
        10,
        18,
        25,
    ]


def test_identity_cells_can_be_excluded(refs: Path, tmp_path: Path) -> None:
    spec = BenchmarkSpec(**{**SMALL.__dict__, "identity_as": "excluded"})
    m, _ = read_manifest(build_benchmark(tmp_path / "b", refs=[refs], spec=spec, progress=False))
    assert not any(r.dist_type == "18" and r.dist_level == 3 for r in m.rows)
    assert all(r.perception_class != "clean" for r in m.rows if r.dist_type)
    assert len(m) <= 4 * (1 + 4 * 3 - 1)


def test_rerun_reuses_finished_images_and_repairs_broken_ones(refs: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    first = read_manifest(build_benchmark(out, refs=[refs], spec=SMALL, progress=False))[0]
    victim = first.resolve(first.rows[5])
    good = victim.read_bytes()
    victim.write_bytes(good[:20])  # truncated, as after a crash
    second = read_manifest(build_benchmark(out, refs=[refs], spec=SMALL, progress=False))[0]
    assert second.provenance["images_written"] == 1
    assert second.provenance["images_reused"] == len(first) - 1
    np.testing.assert_array_equal(load_rgb(victim), np.asarray(Image.open(__import__("io").BytesIO(good))))


def test_two_workers_give_identical_images(refs: Path, tmp_path: Path) -> None:
    a = read_manifest(build_benchmark(tmp_path / "a", refs=[refs], spec=SMALL, workers=1, progress=False))[0]
    b = read_manifest(build_benchmark(tmp_path / "b", refs=[refs], spec=SMALL, workers=2, progress=False))[0]
    assert [r.path for r in a.rows] == [r.path for r in b.rows]
    for ra, rb in zip(a.rows, b.rows, strict=True):
        np.testing.assert_array_equal(load_rgb(a.resolve(ra)), load_rgb(b.resolve(rb)))


def test_balance_gives_equal_counts_per_class_and_reference(refs: Path, tmp_path: Path) -> None:
    spec = BenchmarkSpec(size=(48, 32), balance=True)
    m, _ = read_manifest(build_benchmark(tmp_path / "b", refs=[refs], spec=spec, progress=False))
    for ref in {r.reference for r in m.rows}:
        counts = Counter(r.perception_class for r in m.rows if r.reference == ref)
        assert set(counts) == set(CLASSES)
        assert len(set(counts.values())) == 1, counts
    clean = [load_rgb(m.resolve(r)) for r in m.rows if r.reference == "r0" and r.perception_class == "clean"]
    assert len({c.tobytes() for c in clean}) == len(clean)  # clean copies are distinct pictures


def test_fit_to_size_crops_then_resizes() -> None:
    tall = np.zeros((100, 50, 3), np.uint8)
    tall[:25] = 255  # top quarter white: cropped away by a centre crop to 4:3
    out = fit_to_size(tall, (40, 30))
    assert out.shape == (30, 40, 3)
    assert out.mean() < 5


def test_bad_references_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["bench", "build", "--refs", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main(["bench", "build", "--refs", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "build", "--types", "99", "-o", str(tmp_path / "o")]) == 2


def test_classes_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "classes"]) == 0
    out = capsys.readouterr().out
    assert "jitter" in out and "TID2013" in out and "excluded" in out
    assert out.count("KADID-10k") == 25


@pytest.mark.slow
def test_default_build_on_bundled_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "build", "-o", str(out), "--workers", "2", "-q"]) == 0
    m, _ = read_manifest(out / "manifest.csv")
    assert len(m) == 8 * 126
    assert "1008 images from 8 references" in capsys.readouterr().out


CBSD68 = Path(__file__).resolve().parents[2] / "shared" / "data" / "pristine" / "cbsd68"


@pytest.mark.slow
@pytest.mark.skipif(not CBSD68.is_dir(), reason=f"{CBSD68} not found (needs ../shared)")
def test_cbsd68_build_uses_all_68_photos_with_disjoint_splits(tmp_path: Path) -> None:
    # Two cells per photo keep this fast; the full 68 x 126 build is timed in benchmarks/bench_build.py.
    args = ["bench", "build", "--refs", str(CBSD68), "--types", "1", "--levels", "3", "--size", "128x96"]
    assert main([*args, "-o", str(tmp_path / "b"), "--workers", "2", "-q"]) == 0
    m, _ = read_manifest(tmp_path / "b" / "manifest.csv")
    assert len({r.reference for r in m.rows}) == 68 and len(m) == 136
    split_of: dict[str, set[str]] = {}
    for row in m.rows:
        split_of.setdefault(row.reference, set()).add(row.split)
    assert all(len(s) == 1 for s in split_of.values())
    per_split = Counter(next(iter(s)) for s in split_of.values())
    assert per_split["train"] in (47, 48) and per_split["val"] in (6, 7) and per_split["test"] in (13, 14)


def test_resume_refuses_other_seed_or_photos(refs: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    build_benchmark(out, refs=[refs], spec=SMALL, progress=False)
    other_seed = BenchmarkSpec(**{**SMALL.__dict__, "seed": 5})
    with pytest.raises(ValueError, match="other seed"):
        build_benchmark(out, refs=[refs], spec=other_seed, progress=False)
    Image.new("RGB", (80, 60), (9, 9, 9)).save(refs / "r0.png")  # same name, other photo
    with pytest.raises(ValueError, match="other references"):
        build_benchmark(out, refs=[refs], spec=SMALL, progress=False)


def test_output_inside_refs_is_not_taken_as_references(refs: Path) -> None:
    out = refs / "bench"
    first = read_manifest(build_benchmark(out, refs=[refs], spec=SMALL, progress=False))[0]
    second = read_manifest(build_benchmark(out, refs=[refs], spec=SMALL, progress=False))[0]
    assert len(second) == len(first) and second.provenance["images_written"] == 0


def test_bad_reference_with_two_workers_is_one_clear_error(refs: Path, tmp_path: Path) -> None:
    (refs / "zz.png").write_bytes(b"\x89PNG\r\n truncated")
    with pytest.raises(ImageLoadError, match="zz.png"):
        build_benchmark(tmp_path / "b", refs=[refs], spec=SMALL, workers=2, progress=False)


def test_repeated_types_and_bad_splits_fail_before_rendering(refs: Path, tmp_path: Path) -> None:
    spec = BenchmarkSpec(**{**SMALL.__dict__, "types": (1, "gaussian_blur"), "levels": (1, 1)})
    m, _ = read_manifest(build_benchmark(tmp_path / "a", refs=[refs], spec=spec, progress=False))
    assert len(m) == 4 * 2
    bad = BenchmarkSpec(**{**SMALL.__dict__, "split_fractions": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match="sum"):
        build_benchmark(tmp_path / "c", refs=[refs], spec=bad, progress=False)
    assert not (tmp_path / "c" / "images").exists() or not any((tmp_path / "c" / "images").iterdir())


def test_a_registered_26th_type_is_built_by_default_without_a_proxy_mos(refs: Path, tmp_path: Path) -> None:
    """A new distortion type is one register call: the default spec builds it, and since KADID-10k has
    no human ratings for it, its images carry no MOS instead of an invented one."""
    from iqalens.distortions import DistortionType, get_type, register, unregister

    def darken(x: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
        return np.sqrt(x) * (1.0 - param) + param * x  # not undone by the min-max mapping

    register(
        DistortionType(
            26, "test_darken", "brightness_change", "test", (0.1, 0.2, 0.3, 0.4, 0.5), False, darken, "test"
        )
    )
    try:
        spec = BenchmarkSpec(levels=(5,), size=(48, 32), split_fractions=(0.5, 0.25, 0.25))
        assert spec.types[-1] == 26 and len(spec.types) == 26
        m, _ = read_manifest(build_benchmark(tmp_path / "b", refs=[refs], spec=spec, progress=False))
    finally:
        unregister(26)
    new = [r for r in m.rows if r.dist_type == "26"]
    assert len(new) == 4 and all(r.perception_class == "brightness" for r in new)
    assert all(np.isnan(r.mos) and r.mos_scale is None for r in new)
    kadid = [r for r in m.rows if r.dist_type == "10"]
    assert all(r.mos == pytest.approx(proxy_mos(10, 5)) for r in kadid)
    with pytest.raises(KeyError):
        get_type(26)
