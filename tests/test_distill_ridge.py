"""Closed-form distillation (``DistillConfig(solver="ridge")``) and the ridge labels-only baseline:
the head learns the teacher, its penalty is chosen by grouped cross-validation, the saved student is the
ridge solution on raw features, features are cached once, and bad settings are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.datasets.manifest import Manifest, ManifestRow, MosScale, write_manifest
from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.baseline import labels_only_baseline
from iqalens.leaf.distill import CHECKPOINT_FILE, DistillConfig, distill, load_splits
from iqalens.leaf.distill_ridge import DISTILL_L2_GRID, _targets
from iqalens.leaf.features import cache_features
from iqalens.leaf.head import HeadConfig
from iqalens.leaf.ridge_head import RidgePath, distill_targets
from iqalens.leaf.student import StudentConfig, load_student
from test_distill import T, V, count_backbone_forwards, make_store

TINY = StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pooling="multiscale")


def ridge_config(**kw: object) -> DistillConfig:
    base = DistillConfig(
        student=TINY,
        solver="ridge",
        freeze_backbone=True,
        augment=False,
        val_fraction=0.3,
        progress=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return make_store(tmp_path_factory.mktemp("toy"), n=40)


def test_ridge_distillation_learns_the_teacher_and_writes_an_ordinary_student(
    toy: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="no manifest: every image is its own content group"):
        metrics = distill(toy[0], T, V, run, ridge_config())
    for name in ("config.json", "metrics.json", "student.safetensors", "student.json"):
        assert (run / name).is_file(), name
    assert not (run / CHECKPOINT_FILE).exists()  # nothing iterative to resume
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["kind"] == "distill" and saved["steps"] == 0
    fit = saved["ridge"]
    # without a manifest every image is its own content group; the penalty was chosen among the grid
    # by held-out agreement with the teacher
    assert fit["l2_chosen_by"] == "grouped_cv_vs_teacher" and fit["l2"] in DISTILL_L2_GRID
    assert fit["cv_groups"] == 40 and fit["fitted_points"] == 40
    per_l2 = fit["cv_srcc_vs_teacher_per_l2"]
    assert len(per_l2) == len(DISTILL_L2_GRID) and per_l2[f"{fit['l2']:g}"] == max(per_l2.values())
    assert metrics["val"]["cv_srcc_vs_teacher"] > 0.8
    assert fit["fit_srcc_vs_teacher"] > 0.9
    student = load_student(run)
    scores = student.predict_paths(toy[1])
    assert srcc(scores, np.arange(len(toy[1]))) > 0.8  # image i's teacher quality rises with i


def test_the_saved_head_is_the_ridge_solution_on_standardised_features(
    toy: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = ridge_config(l2=0.3, feature_dir=str(tmp_path / "features"), seed=1)
    metrics = distill(toy[0], T, V, run, cfg)
    assert metrics["ridge"]["l2"] == 0.3 and metrics["ridge"]["l2_chosen_by"] == "given"
    train, val, _, _ = load_splits(toy[0], T, V, cfg)
    points = train.points + val.points
    x = cache_features([p.path for p in points], tmp_path / "features", TINY, progress=False)
    x = x.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / np.where(std > 1e-8, std, 1.0)
    rows, y, w = distill_targets(_targets(points))
    coef, bias = RidgePath(z[rows], y, w).solve(0.3)
    with torch.no_grad():
        out = load_student(run).head(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(out, z @ coef + bias, atol=2e-3 * np.abs(z @ coef + bias).max())
    # the saved backbone is the one the features came from, whatever the seed (the tiny backbone is
    # randomly initialised: a seed-1 backbone would not match features cached under seed 0)
    from iqalens.leaf.features import backbone_features

    again = np.concatenate([f for _, f in backbone_features(load_student(run), [p.path for p in points[:4]])])
    np.testing.assert_allclose(again, x[:4], rtol=1e-4, atol=1e-5)


def test_features_are_computed_once_per_image_in_a_shared_folder(
    toy: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_backbone_forwards(monkeypatch)
    shared = str(tmp_path / "features")
    distill(toy[0], T, V, tmp_path / "a", ridge_config(feature_dir=shared))
    first = calls["n"]
    distill(toy[0], T, V, tmp_path / "b", ridge_config(feature_dir=shared, seed=1))
    assert first > 0 and calls["n"] == first  # the second run read every feature from the folder


def test_photos_stay_on_one_side_of_the_penalty_folds(tmp_path: Path) -> None:
    from iqalens.datasets.manifest import Manifest, ManifestRow, write_manifest

    store, paths = make_store(tmp_path / "toy", n=24)
    rows = [
        ManifestRow(path=p.name, reference=f"photo{i // 6}.png", source="toy") for i, p in enumerate(paths)
    ]
    manifest = write_manifest(Manifest(rows, root=tmp_path / "toy"), tmp_path / "toy" / "manifest.csv")
    metrics = distill(store, T, V, tmp_path / "run", ridge_config(manifest=str(manifest), val_fraction=0.0))
    assert metrics["ridge"]["cv_groups"] == 4  # 4 photos, not 24 images: folds are by photo


def test_penalty_folds_never_split_a_photo() -> None:
    from iqalens.leaf.ridge_head import teacher_folds

    groups = np.repeat(np.array([f"photo{i}" for i in range(7)]), 5)
    pool = np.arange(groups.size)
    for folds in (2, 4, 10):
        fold = teacher_folds(groups, pool, folds, seed=3)
        assert fold is not None and len(set(fold.tolist())) == min(folds, 7)
        for g in np.unique(groups):
            assert len(set(fold[groups == g].tolist())) == 1  # every version of a photo in one fold
    assert teacher_folds(np.array(["one"] * 5), np.arange(5), 4, 0) is None  # nothing to hold out


def test_a_step_wise_checkpoint_in_the_folder_is_refused(
    toy: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT_FILE).write_bytes(b"earlier adamw run")
    with pytest.raises(InvalidInputError, match="checkpoint of a step-wise run"):
        distill(toy[0], T, V, run, ridge_config())


def test_bad_ridge_settings_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="freeze_backbone"):
        ridge_config(freeze_backbone=False)
    with pytest.raises(InvalidInputError, match="augment"):
        ridge_config(augment=True)
    with pytest.raises(InvalidInputError, match="l2 must be > 0"):
        ridge_config(l2=0.0)
    with pytest.raises(InvalidInputError, match="solver must be one of"):
        ridge_config(solver="lbfgs")
    with pytest.raises(InvalidInputError, match="ridge solver's penalty"):
        DistillConfig(l2=1.0)  # adamw has no such penalty: an error, not silently ignored


def test_a_store_with_pairs_only_is_refused_by_the_ridge_solver(tmp_path: Path) -> None:
    from iqalens.leaf.store import JudgmentStore

    store, _ = make_store(tmp_path / "toy", n=8)
    pairs_only = tmp_path / "pairs.sqlite"
    with JudgmentStore(store, create=False) as src, JudgmentStore(pairs_only) as dst:
        records = src.pairs(T, V)
        dst.put_pairs([(r.hash_a, r.hash_b, r.path_a, r.path_b, r.judgment) for r in records], T, V)
    with pytest.raises(InvalidInputError, match="point judgments only"):
        distill(pairs_only, T, V, tmp_path / "run", ridge_config())


def _labelled_manifest(folder: Path, photos: int = 6, per_photo: int = 6) -> Path:
    """Noisy versions of a few flat 'photos'; MOS falls with the noise; content groups by photo."""
    rng = np.random.default_rng(1)
    rows = []
    for p in range(photos):
        base = rng.integers(60, 190, 3)
        for k in range(per_photo):
            sigma = 10.0 * k
            img = base + rng.normal(0, sigma + 1e-3, (20, 24, 3))
            name = f"p{p}_{k}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
            split = "test" if p >= photos - 2 else "train"
            rows.append(
                ManifestRow(
                    path=name,
                    reference=f"ref{p}.png",
                    source="toy",
                    mos=5.0 - 0.7 * k,
                    mos_scale=MosScale(1.0, 5.0),
                    split=split,
                )
            )
    out = folder / "manifest.csv"
    write_manifest(Manifest(rows, root=folder), out)
    return out


def test_the_ridge_labels_only_baseline_chooses_its_penalty_on_the_labels(tmp_path: Path) -> None:
    manifest = _labelled_manifest(tmp_path)
    used = [f"p{p}_{k}.png" for p in range(4) for k in range(6)]
    result = labels_only_baseline(
        manifest,
        used,
        tmp_path / "features",
        student_config=replace(TINY, quality_stats=True),
        head=HeadConfig(solver="ridge", l2=1.0),
    )
    assert result["solver"] == "ridge" and result["l2_chosen_by"] == "grouped_cv_on_labels"
    assert result["labels_used"] == 24 and result["test_images"] == 12
    assert result["srcc"] > 0.7  # the MOS follows the noise, which the quality statistics see
