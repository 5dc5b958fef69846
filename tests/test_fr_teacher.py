"""The full-reference teacher: references from manifests, the mapping, pairs, the CLI and bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from iqalens.cli import main
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.datasets.manifest import ManifestError, read_manifest, write_manifest
from iqalens.datasets.references import MissingReferenceError, ReferenceIndex, is_reference_row
from iqalens.images import ImageLoadError, load_rgb, save_rgb
from iqalens.leaf.judgments import PointJudgment
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.teachers.base import Teacher
from iqalens.leaf.teachers.fullref import FRMapping, FRTeacher, fit_fr_mapping
from iqalens.leaf.teachers.level_maps import LogisticMap
from iqalens.samples import sample_paths

# PSNR 30 dB -> 3, 40 dB -> ~4.9, 20 dB -> ~1.1 (the logistic is decreasing in -PSNR).
PSNR_MAP = FRMapping(("psnr",), (LogisticMap(1.0, 5.0, -30.0, 3.0),), (1.0,), 0.5, "test-psnr")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two bundled photos, Gaussian blur and white noise at levels 2 and 5, plus each clean image."""
    out = tmp_path_factory.mktemp("fr-bench")
    spec = BenchmarkSpec(types=(1, 11), levels=(2, 5), size=(96, 64), split_fractions=(1.0, 0.0, 0.0))
    return build_benchmark(out / "bench", sample_paths()[:2], spec, progress=False)


def _rows_by_name(manifest_path: Path) -> dict[str, Path]:
    manifest, _ = read_manifest(manifest_path)
    return {Path(r.path).stem: manifest.resolve(r) for r in manifest.rows}


def test_each_image_gets_its_references_clean_row(bench: Path) -> None:
    manifest, _ = read_manifest(bench)
    index = ReferenceIndex.from_manifests([bench])
    assert len(index) == len(manifest.rows) == 2 * 5
    for row in manifest.rows:
        ref = index.reference_of(manifest.resolve(row))
        assert ref.name == f"{row.reference}_00_0.png"  # the benchmark's clean image of that photo
    assert sum(is_reference_row(r) for r in manifest.rows) == 2


def test_a_references_folder_matches_names_stems_and_namespaced_ids(bench: Path, tmp_path: Path) -> None:
    manifest, _ = read_manifest(bench)
    refs = tmp_path / "refs"
    refs.mkdir()
    ids = sorted({r.reference for r in manifest.rows})
    for ref_id in ids:
        shutil.copy(manifest.root / "images" / f"{ref_id}_00_0.png", refs / f"{ref_id}.png")
    # Importers namespace reference ids ("kadid10k/I01"): the last part names the file.
    renamed = manifest.with_rows(
        r.__class__(**{**r.__dict__, "reference": f"db/{r.reference}"}) for r in manifest.rows
    )
    path = write_manifest(renamed, tmp_path / "named.csv")
    index = ReferenceIndex.from_manifests([path], references_dir=refs)
    some = manifest.resolve(manifest.rows[-1])
    assert index.reference_of(some).parent == refs.resolve()


def test_a_manifest_without_references_is_refused(bench: Path, tmp_path: Path) -> None:
    manifest, _ = read_manifest(bench)
    distorted_only = write_manifest(
        manifest.with_rows(r for r in manifest.rows if not is_reference_row(r)), tmp_path / "no-refs.csv"
    )
    with pytest.raises(ManifestError, match="no image has a reference image"):
        ReferenceIndex.from_manifests([distorted_only])
    with pytest.raises(ManifestError, match="needs a manifest"):
        FRTeacher(manifests=[], mapping=PSNR_MAP)
    with pytest.raises(ManifestError, match="does not exist"):
        ReferenceIndex.from_manifests([bench], references_dir=tmp_path / "nowhere")


def test_judgments_order_the_levels_and_the_clean_image_is_best(bench: Path) -> None:
    teacher = FRTeacher(manifests=[bench], mapping=PSNR_MAP)
    assert isinstance(teacher, Teacher) and teacher.teacher_id == "fr:psnr"
    by_name = _rows_by_name(bench)
    for ref in sorted({n.rsplit("_", 2)[0] for n in by_name}):
        for t in ("01", "11"):
            names = [f"{ref}_00_0", f"{ref}_{t}_2", f"{ref}_{t}_5"]
            paths = [by_name[n] for n in names]
            psnr = [v[0] for v in teacher.metric_values(paths)]
            assert psnr[0] > psnr[1] > psnr[2], (names, psnr)
            expected = [j.expected for j in teacher.judge_images(paths)]
            # The map is monotone but saturates (a mild blur of a flat photo stays near the top).
            assert expected[0] >= expected[1] >= expected[2] and expected[0] > expected[2] + 0.5, expected
    outsider = sample_paths()[3]
    with pytest.raises(MissingReferenceError, match="not listed in the manifests"):
        teacher.judge_images([outsider])


def test_fit_recovers_the_direction_and_weights_on_the_simplex() -> None:
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 400)
    good = 1.0 - (5.0 - mos) / 8 + rng.normal(0, 0.02, mos.size)  # ssim-like, higher = better
    noise = rng.uniform(0, 1, mos.size)  # unrelated to quality
    gm = 0.05 * (5.0 - mos) + rng.normal(0, 0.01, mos.size)  # gmsd-like, lower = better
    fitted = fit_fr_mapping(np.column_stack([good, noise, gm]), mos, ("ssim", "vif", "gmsd"), "t")
    assert sum(fitted.weights) == pytest.approx(1.0) and min(fitted.weights) >= 0.0
    assert fitted.weights[1] < 0.1  # the unrelated measure gets (almost) no weight
    mu_hi, _ = fitted.scores([0.99, 0.5, 0.005])
    mu_lo, _ = fitted.scores([0.55, 0.5, 0.19])
    assert mu_hi > 4.5 and mu_lo < 1.6
    assert fitted.sigma0 < 0.3
    with pytest.raises(ValueError, match="n x 3"):
        fit_fr_mapping(np.zeros((4, 2)), [1, 2, 3, 4], ("ssim", "vif", "gmsd"), "t")


def test_reliability_falls_as_the_measures_disagree_and_nan_measures_drop_out() -> None:
    unit = LogisticMap(1.0, 5.0, 0.0, 1.0)
    mapping = FRMapping(("gmsd", "ciede2000"), (unit, unit), (0.5, 0.5), 0.3, "t")
    agree = PointJudgment.from_probs(mapping.probs([0.0, 0.0]))
    disagree = PointJudgment.from_probs(mapping.probs([-2.0, 2.0]))
    assert agree.expected == pytest.approx(disagree.expected, abs=1e-9)  # same mean score ...
    assert disagree.reliability < agree.reliability - 0.2  # ... less certain
    one = mapping.scores([-2.0, math.nan])
    assert one[0] == pytest.approx(float(unit(-2.0))) and one[1] == 0.0
    assert np.allclose(mapping.probs([math.nan, math.nan]), 0.2)
    half = mapping.subset(["ciede2000"])
    assert half.weights == (1.0,) and half.metrics == ("ciede2000",)
    with pytest.raises(ValueError, match="no fitted map for vif"):
        mapping.subset(["vif"])


def test_direct_pairs_prefer_the_better_image_in_both_orders(bench: Path) -> None:
    teacher = FRTeacher(manifests=[bench], mapping=PSNR_MAP, pair_mode="direct")
    assert teacher.supports_pairs and teacher.prompt_version.endswith("-direct-pairs")
    by_name = _rows_by_name(bench)
    ref = next(iter(by_name)).rsplit("_", 2)[0]
    mild, strong = by_name[f"{ref}_11_2"], by_name[f"{ref}_11_5"]
    ab, ba = teacher.judge_pairs([(mild, strong), (strong, mild)])
    assert ab.p_first_better > 0.9 and ba.p_first_better < 0.1
    assert ab.p_first_better == pytest.approx(1.0 - ba.p_first_better)
    assert not ab.derived and ab.p_ba == pytest.approx(1.0 - ab.p_ab)  # asked in both orders, consistent
    derived = FRTeacher(manifests=[bench], mapping=PSNR_MAP).judge_pairs([(mild, strong)])[0]
    assert derived.derived and derived.p_first_better > 0.5
    with pytest.raises(ValueError, match="pair mode"):
        FRTeacher(manifests=[bench], mapping=PSNR_MAP, pair_mode="asked")


def test_worker_processes_give_the_same_values(bench: Path) -> None:
    paths = list(_rows_by_name(bench).values())
    one = FRTeacher(manifests=[bench], mapping=PSNR_MAP).metric_values(paths)
    two = FRTeacher(manifests=[bench], mapping=PSNR_MAP, workers=2)
    try:
        assert two.metric_values(paths) == one
    finally:
        two.close()


def test_bad_files_are_skipped_with_a_reason_never_judged(bench: Path, tmp_path: Path) -> None:
    """A reference of another size, an unreadable image: per-row skips with a count; the rest is judged."""
    root = tmp_path / "copy"
    shutil.copytree(bench.parent, root)
    manifest_path = root / bench.name
    manifest, _ = read_manifest(manifest_path)
    refs = sorted({r.reference for r in manifest.rows})
    small = load_rgb(root / "images" / f"{refs[0]}_00_0.png")[:32, :48]
    save_rgb(
        small, root / "images" / f"{refs[0]}_00_0.png", overwrite=True
    )  # reference of photo 0 now has another size
    (root / "images" / f"{refs[1]}_11_5.png").write_bytes(b"not a png")
    teacher = FRTeacher(manifests=[manifest_path], mapping=PSNR_MAP)
    with pytest.raises(ImageLoadError, match="needs images of one size"):
        teacher.judge_images([root / "images" / f"{refs[0]}_01_2.png"])
    store = tmp_path / "s.db"
    from iqalens.leaf.teach import run_teach

    skipped: list[tuple[Path, str]] = []
    with JudgmentStore(store) as s:
        report = run_teach(
            teacher,
            [manifest.resolve(r) for r in manifest.rows],
            s,
            progress=False,
            on_unreadable=lambda p, why: skipped.append((p, why)),
        )
    # Photo 0's four distorted images meet a smaller reference; its (now small) clean row is its own
    # reference and is judged; photo 1 loses the unreadable file only.
    assert len(report.unreadable) == 5 and report.images_judged == 10 - 5
    assert sum("one size" in why for _, why in skipped) == 4
    assert [p.name for p, why in skipped if "one size" not in why] == [f"{refs[1]}_11_5.png"], skipped


def test_cli_teach_fr_and_its_errors(bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iqalens.leaf.teachers import fullref

    if fullref.FITTED_MAPPING is None:
        pytest.skip("no fitted FR mapping shipped yet")
    store = tmp_path / "s.db"
    args = [
        "teach",
        "--teacher",
        "fr",
        "--images",
        str(bench),
        "-o",
        str(store),
        "-q",
        "--pairs-per-image",
        "2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fr:" in out and "derived from point judgments" in out
    with JudgmentStore(store, create=False) as s:
        status = s.status()
    assert status["points"] == 10 and status["pairs_derived"] > 0
    # A folder of images has no references: one clear line, exit 2.
    assert main(["teach", "--teacher", "fr", "--images", str(bench.parent / "images"), "-o", str(store)]) == 2
    assert "needs a manifest" in capsys.readouterr().err
    assert main(["teach", "--teacher", "fr:nope", "--images", str(bench), "-o", str(store), "-q"]) == 2
    assert "nope" in capsys.readouterr().err


def test_the_default_teacher_uses_the_weighted_measures_and_survives_an_undefined_one(bench: Path) -> None:
    from iqalens.leaf.teachers import fullref

    assert fullref.FITTED_MAPPING is not None
    teacher = FRTeacher(manifests=[bench])
    fitted = fullref.FITTED_MAPPING
    weighted = [m for m, w in zip(fitted.metrics, fitted.weights, strict=True) if w > 1e-3]
    assert list(teacher.mapping.metrics) == weighted and teacher.teacher_id == "fr:" + "+".join(weighted)
    assert sum(teacher.mapping.weights) == pytest.approx(1.0)
    by_name = _rows_by_name(bench)
    ref = next(iter(by_name)).rsplit("_", 2)[0]
    values = teacher.metric_values([by_name[f"{ref}_11_5"]])[0]
    if "vif" in weighted:  # VIF needs 65 pixels per side; these images are 96x64
        assert math.isnan(values[weighted.index("vif")])
    clean, noisy = teacher.judge_images([by_name[f"{ref}_00_0"], by_name[f"{ref}_11_5"]])
    assert clean.expected > noisy.expected + 0.3 and 0.0 < noisy.reliability < 1.0
