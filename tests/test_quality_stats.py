"""The student's hand-designed distortion statistics (iqalens.leaf.quality_stats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iqalens.images import load_rgb
from iqalens.leaf.quality_stats import QualityStatistics, statistic_names
from iqalens.leaf.student import Student, StudentConfig, build_student, load_student, save_student
from iqalens.samples import sample_paths

NAMES = statistic_names()


def _stats(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Named statistics of uint8 H x W x 3 images (identity normalisation)."""
    qs = QualityStatistics((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x = torch.as_tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        out = qs(x).numpy()
    assert out.shape == (len(images), len(NAMES)) and np.all(np.isfinite(out))
    return {name: out[:, i] for i, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_rgb(sample_paths()[0])[:128, :128]


def _box_blur(img: np.ndarray, k: int = 5) -> np.ndarray:
    x = img.astype(np.float64)
    pad = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for dy in range(k):
        for dx in range(k):
            out += pad[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return np.clip(out / k**2, 0, 255).astype(np.uint8)


def test_each_distortion_moves_the_statistic_meant_to_see_it(photo: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    clean = photo
    brighter = np.clip(photo.astype(int) + 60, 0, 255).astype(np.uint8)
    flat = (0.4 * (photo.astype(float) - photo.mean()) + photo.mean()).astype(np.uint8)
    noisy = np.clip(photo + rng.normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    blurred = _box_blur(photo)
    grey = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    blocky = photo.reshape(16, 8, 16, 8, 3).mean(axis=(1, 3), keepdims=True)
    blocky = np.broadcast_to(blocky, (16, 8, 16, 8, 3)).reshape(128, 128, 3).astype(np.uint8)
    s = _stats([clean, brighter, flat, noisy, blurred, grey, blocky])
    assert s["luma.mean"][1] > s["luma.mean"][0] + 0.15  # brightness
    assert s["luma.std"][2] < 0.6 * s["luma.std"][0]  # contrast
    assert s["s0.grad.mean"][3] > 1.5 * s["s0.grad.mean"][0]  # noise adds fine gradients ...
    assert s["s0.grad.mean"][4] < 0.7 * s["s0.grad.mean"][0]  # ... blur removes them
    assert s["s0.pairh.mean"][3] < s["s0.pairh.mean"][0]  # noise decorrelates neighbours
    assert s["sat.mean"][5] < 0.02 < s["sat.mean"][0]  # colour removed
    assert s["block.h"][6] > 5 * s["block.h"][0] and s["block.v"][6] > 5 * s["block.v"][0]


def test_normalisation_is_undone_before_measuring(photo: np.ndarray) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = torch.as_tensor(photo[None], dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    normalised = (x - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]
    with torch.no_grad():
        a = QualityStatistics(mean, std)(normalised)
        b = QualityStatistics((0, 0, 0), (1, 1, 1))(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_student_with_statistics_saves_reloads_and_old_configs_lack_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = StudentConfig(
        backbone="tiny", image_size=32, resize_shorter=40, pretrained=False, quality_stats=True
    )
    student = build_student(cfg).eval()
    assert student.backbone.out_features == 16 + len(NAMES)
    assert student.backbone.segments[-1] == ("quality_stats", len(NAMES))
    x = torch.rand(3, 3, 32, 32)
    save_student(student, tmp_path / "s")
    again = load_student(tmp_path / "s").eval()
    assert again.config.quality_stats
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], student(x)[0])
    legacy = {k: v for k, v in cfg.to_dict().items() if k != "quality_stats"}
    assert not StudentConfig.from_dict(legacy).quality_stats
    assert Student(StudentConfig.from_dict(legacy)).backbone.out_features == 16


def test_student_with_statistics_exports_to_onnx_with_the_same_scores(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from iqalens.leaf.onnx_export import OnnxScorer, export_onnx
    from iqalens.leaf.scoring import StudentScorer

    torch.manual_seed(2)
    cfg = StudentConfig(
        backbone="tiny", image_size=32, resize_shorter=40, pretrained=False, quality_stats=True
    )
    scorer = StudentScorer(build_student(cfg))
    onnx_scorer = OnnxScorer(export_onnx(scorer, tmp_path / "qs.onnx"), threads=1)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (64, 80)]]
    prepared = [onnx_scorer.prepare(im) for im in images]
    want = scorer.score_prepared(prepared, 2)[1]
    got = onnx_scorer.score_prepared(prepared, 2)[1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.ptp(want) > 1e-3


def test_a_feature_cache_of_other_statistics_is_refused(tmp_path: Path) -> None:
    import json

    from iqalens.errors import InvalidInputError
    from iqalens.leaf.features import cache_features
    from iqalens.leaf.quality_stats import STATISTICS_VERSION

    paths = sample_paths()[:2]
    cfg = StudentConfig(
        backbone="tiny", image_size=32, resize_shorter=40, pretrained=False, quality_stats=True
    )
    feats = cache_features(paths, tmp_path / "f", cfg, progress=False)
    assert feats.shape == (2, 16 + len(NAMES))
    meta = tmp_path / "f" / "features.json"
    recorded = json.loads(meta.read_text())
    assert recorded["student"]["quality_stats"] == STATISTICS_VERSION
    plain = StudentConfig(backbone="tiny", image_size=32, resize_shorter=40, pretrained=False)
    with pytest.raises(InvalidInputError, match="another backbone setting"):
        cache_features(paths, tmp_path / "f", plain, progress=False)
    recorded["student"]["quality_stats"] = STATISTICS_VERSION - 1  # written by earlier statistics
    meta.write_text(json.dumps(recorded))
    with pytest.raises(InvalidInputError, match="another backbone setting"):
        cache_features(paths, tmp_path / "f", cfg, progress=False)
