"""The student: preprocessing policy, backbones (tiny, HF from a config or a folder, EfficientNet-Lite0),
multi-crop prediction, and exact save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.leaf.student import (
    IMAGENET_MEAN,
    Student,
    StudentConfig,
    expected_from_logits,
    load_student,
    save_student,
)
from iqalens.models.efficientnet import LITE_MEAN, efficientnet_lite0_weights_path
from iqalens.models.preprocess import crop_boxes, normalise, resize_shorter
from tolerances import TINY_CNN_DEPTH, float32_atol

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "iqalens" / "data" / "samples"


def _tiny(**kw: object) -> StudentConfig:
    return StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, **kw)  # type: ignore[arg-type]


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24 + 3 * i, 30 + 5 * i, 3), dtype=np.uint8) for i in range(n)]


def _tiny_convnext_config() -> dict[str, object]:
    from transformers import ConvNextConfig

    return ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=4).to_dict()


# -- preprocessing ------------------------------------------------------------------------------


def test_resize_shorter_keeps_the_aspect_ratio() -> None:
    assert resize_shorter(np.zeros((30, 60, 3), np.uint8), 20).shape == (20, 40, 3)
    assert resize_shorter(np.zeros((90, 45, 3), np.uint8), 20).shape == (40, 20, 3)
    assert resize_shorter(Image.new("L", (10, 10)), 16).shape == (16, 16, 3)  # upscales and converts to RGB


def test_crop_boxes_centre_and_grid() -> None:
    assert crop_boxes(20, 40, 16) == [(2, 12)]
    assert crop_boxes(20, 40, 16, grid=2) == [(0, 0), (0, 24), (4, 0), (4, 24)]
    # An axis without slack gives one position, not three copies of it.
    assert crop_boxes(16, 40, 16, grid=3) == [(0, 0), (0, 12), (0, 24)]
    with pytest.raises(ValueError):
        crop_boxes(10, 40, 16)


def test_normalise_scales_orders_channels_and_standardises() -> None:
    crops = np.zeros((1, 2, 2, 3), np.uint8)
    crops[..., 0] = 255
    x = normalise(crops, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.ones(2, 2))  # (1 - 0.5) / 0.5
    assert torch.allclose(x[0, 1], torch.full((2, 2), -2.0))  # (0 - 0.5) / 0.25
    assert torch.allclose(x[0, 2], torch.zeros(2, 2))


def test_default_normalisation_per_backbone() -> None:
    assert Student(_tiny()).config.mean == IMAGENET_MEAN
    cfg = StudentConfig(mean=(0.1, 0.2, 0.3), std=(1, 1, 1), backbone="tiny")
    assert Student(cfg).config.mean == (0.1, 0.2, 0.3)
    assert LITE_MEAN[0] * 255 == pytest.approx(127.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "resnet"},
        {"backbone": "hf"},
        {"image_size": 32, "resize_shorter": 16},
        {"test_grid": 0},
        {"pooling": "max"},
        {"backbone": "hf", "hf_path": "somewhere", "pooling": "multiscale"},
    ],
)
def test_student_config_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StudentConfig(**kwargs)  # type: ignore[arg-type]


# -- model and prediction -----------------------------------------------------------------------


def test_forward_gives_a_score_and_five_level_logits() -> None:
    torch.manual_seed(0)
    student = Student(_tiny())
    score, logits = student(torch.randn(3, 3, 16, 16))
    assert score.shape == (3,) and logits.shape == (3, 5)
    e = expected_from_logits(torch.tensor([[10.0, -10, -10, -10, -10], [0.0, 0, 0, 0, 0]]))
    assert torch.allclose(e, torch.tensor([1.0, 0.5]), atol=1e-6)


def test_multi_crop_prediction_is_the_mean_over_the_grid_crops() -> None:
    torch.manual_seed(0)
    student = Student(_tiny(test_grid=2, dropout=0.5))
    image = _images(1)[0]
    got = student.predict([image])
    resized = resize_shorter(image, 20)
    crops = np.stack([resized[t : t + 16, c : c + 16] for t, c in crop_boxes(*resized.shape[:2], 16, 2)])
    assert len(crops) == 4
    student.eval()
    with torch.no_grad():
        s, z = student(student.to_tensor(crops))
    assert got["score"][0] == pytest.approx(s.double().mean().item(), abs=1e-6)
    assert np.allclose(got["probs"][0], z.double().softmax(-1).mean(0).numpy(), atol=1e-6)
    # Deterministic (dropout off in predict) and independent of the batch size.
    student.train()
    again = student.predict([image, *_images(2, seed=1)], batch_size=3)
    # (its 4 crops now batched with 8 others: the tiny CNN's float32 bound, tests/tolerances.py)
    assert again["score"][0] == pytest.approx(got["score"][0], abs=float32_atol(TINY_CNN_DEPTH, got["score"]))
    assert student.training  # predict restores the mode


def test_predict_paths_reads_odd_files(tmp_path: Path) -> None:
    Image.fromarray(_images(1)[0]).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(_images(1)[0]).convert("RGBA").save(tmp_path / "alpha.png")
    scores = Student(_tiny()).predict_paths([tmp_path / "grey.png", tmp_path / "alpha.png"])
    assert scores.shape == (2,) and np.isfinite(scores).all()


# -- save / load ----------------------------------------------------------------------------------


def _perturb_batchnorm_free(student: Student) -> None:
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))


def test_save_and_load_reproduce_scores_exactly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    student = Student(_tiny(test_grid=2))
    _perturb_batchnorm_free(student)
    images = _images(3)
    before = student.predict(images)
    save_student(student, tmp_path / "run")
    data = json.loads((tmp_path / "run" / "student.json").read_text())
    assert data["student"]["backbone"] == "tiny" and data["student"]["test_grid"] == 2
    loaded = load_student(tmp_path / "run")
    after = loaded.predict(images)
    assert np.array_equal(before["score"], after["score"])
    assert np.array_equal(before["probs"], after["probs"])
    assert not list((tmp_path / "run").glob(".*tmp*"))  # no temporary file left behind


def test_load_student_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="student.json"):
        load_student(tmp_path)


def test_hf_backbone_from_a_config_saves_and_reloads_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = StudentConfig(backbone="hf", hf_config=_tiny_convnext_config(), image_size=32, resize_shorter=40)
    student = Student(cfg)
    assert student.head.in_features == 16  # ConvNeXt pooler_output: last hidden size
    images = _images(2)
    before = student.predict(images)["score"]
    save_student(student, tmp_path / "run")
    after = load_student(tmp_path / "run").predict(images)["score"]
    assert np.array_equal(before, after)


def test_hf_backbone_from_a_local_folder_uses_its_weights_and_normalisation(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    data = _tiny_convnext_config()
    hf_cfg = AutoConfig.for_model(data.pop("model_type"), **data)  # type: ignore[arg-type]
    torch.manual_seed(3)
    model = AutoModel.from_config(hf_cfg)
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )
    student = Student(
        StudentConfig(backbone="hf", hf_path=str(tmp_path / "hf"), image_size=32, resize_shorter=32)
    )
    assert student.config.mean == (0.5, 0.5, 0.5) and student.config.std == (0.25, 0.25, 0.25)
    name, ref = next(iter(model.state_dict().items()))
    assert torch.equal(student.backbone.model.state_dict()[name], ref)
    save_student(student, tmp_path / "run")
    (tmp_path / "hf" / "model.safetensors").unlink()  # reload needs only the run folder
    reloaded = load_student(tmp_path / "run")
    assert torch.equal(reloaded.backbone.model.state_dict()[name], ref)


def test_efficientnet_weights_ship_with_the_package() -> None:
    path = efficientnet_lite0_weights_path()
    assert path.is_file() and path.stat().st_size > 10_000_000


def test_efficientnet_lite0_student_is_pretrained_and_reloads_exactly(tmp_path: Path) -> None:
    student = Student(StudentConfig(pooling="last"))
    assert student.head.in_features == 1280
    # The ImageNet classifier of the shipped weights, on the backbone's pooled feature, recognises the cat.
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    image = np.asarray(Image.open(SAMPLES / "cat.png").convert("RGB"))
    crops = student.test_crops(student.prepare(image))
    student.eval()
    with torch.no_grad():
        feature = student.backbone(student.to_tensor(crops))
        logits = feature @ state["_fc.weight"].T + state["_fc.bias"]
    assert int(logits.argmax()) in range(281, 286)  # ImageNet cat classes
    images = [np.asarray(Image.open(SAMPLES / f"{n}.png").convert("RGB")) for n in ("cat", "coffee")]
    before = student.predict(images)["score"]
    save_student(student, tmp_path / "run")
    after = load_student(tmp_path / "run").predict(images)["score"]
    assert np.array_equal(before, after)


# -- pooling ----------------------------------------------------------------------------------------


def _photo(size: int = 64) -> np.ndarray:
    """A real photo's centre, resized: natural texture, neither flat nor noise."""
    return resize_shorter(Image.open(SAMPLES / "cat.png").convert("RGB"), size)[:size, :size]


def test_default_pooling_is_multiscale_for_lite0_only() -> None:
    # measured better in every arm of the label-budget protocol (docs/label_budget.md)
    assert StudentConfig().pooling == "multiscale"
    assert StudentConfig(backbone="tiny").pooling == "last"
    assert StudentConfig(backbone="hf", hf_path="x").pooling == "last"
    assert StudentConfig.from_dict(StudentConfig().to_dict()).pooling == "multiscale"  # saved explicitly


def test_pooling_errors_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="pooling must be one of last, multiscale"):
        StudentConfig(pooling="max")
    with pytest.raises(ValueError, match="'hf' backbone supports pooling 'last' only"):
        StudentConfig(backbone="hf", hf_path="x", pooling="multiscale")


@pytest.mark.parametrize(("pooling", "dim"), [("last", 16), ("multiscale", 2 * (8 + 16) + 16)])
def test_tiny_feature_size_per_pooling(pooling: str, dim: int) -> None:
    student = Student(_tiny(pooling=pooling)).eval()
    assert student.backbone.out_features == dim == student.head.in_features
    assert sum(w for _, w in student.backbone.segments) == dim
    assert student.backbone.segments[-1] == ("final.mean", 16)
    with torch.no_grad():
        assert student.backbone(torch.randn(3, 3, 16, 16)).shape == (3, dim)
        score, logits = student(torch.randn(3, 3, 16, 16))
    assert score.shape == (3,) and logits.shape == (3, 5)


def test_multiscale_ends_with_the_last_feature_of_the_same_weights() -> None:
    torch.manual_seed(0)
    last = Student(_tiny()).eval()
    multi = Student(_tiny(pooling="multiscale")).eval()
    multi.backbone.load_state_dict(last.backbone.state_dict())  # same parameter names: same network
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        want, got = last.backbone(x), multi.backbone(x)
    # The same maps, averaged by Tensor.mean instead of AdaptiveAvgPool2d: a float32 mean of n = 4
    # values in another order is within n eps = 4.8e-7 relative (tests/tolerances.py).
    torch.testing.assert_close(got[:, -16:], want, rtol=1e-6, atol=1e-7)
    # and the first stage's mean is what it says: the mean of the first conv's ReLU output
    with torch.no_grad():
        stage1 = multi.backbone.net[:2](x)
    torch.testing.assert_close(got[:, :8], stage1.mean(dim=(2, 3)))
    torch.testing.assert_close(got[:, 8:16], stage1.std(dim=(2, 3), unbiased=False), rtol=1e-4, atol=1e-6)


def test_first_stage_std_rises_with_noise_and_falls_with_blur() -> None:
    """Why multiscale pooling exists: the std of an early map tracks high-frequency energy."""
    from PIL import ImageFilter

    torch.manual_seed(0)
    student = Student(StudentConfig(backbone="tiny", pooling="multiscale", image_size=64, resize_shorter=64))
    student.eval()
    clean = _photo()
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(clean).filter(ImageFilter.GaussianBlur(2)))
    with torch.no_grad():
        f = student.backbone(student.to_tensor(np.stack([clean, noisy, blurred]))).numpy()
    std1 = f[:, 8:16]  # segments: stage1.mean (8), stage1.std (8), ...
    # ReLU means move the same way, but less (about 1.2x and 0.85x here): these margins need the std.
    assert [n for n, _ in student.backbone.segments][:2] == ["stage1.mean", "stage1.std"]
    assert std1[1].mean() > 1.3 * std1[0].mean() and (std1[1] >= std1[0]).mean() >= 0.75
    assert std1[2].mean() < 0.75 * std1[0].mean() and (std1[2] <= std1[0]).mean() >= 0.75


def test_multiscale_student_saves_and_reloads_exactly(tmp_path: Path) -> None:
    torch.manual_seed(2)
    student = Student(_tiny(pooling="multiscale", test_grid=2))
    _perturb_batchnorm_free(student)
    images = _images(3)
    before = student.predict(images)
    save_student(student, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "student.json").read_text())["student"]["pooling"] == "multiscale"
    loaded = load_student(tmp_path / "run")
    assert loaded.config.pooling == "multiscale" and loaded.head.in_features == 64
    after = loaded.predict(images)
    assert np.array_equal(before["score"], after["score"])
    assert np.array_equal(before["probs"], after["probs"])


def test_a_student_json_from_before_pooling_loads_as_last(tmp_path: Path) -> None:
    torch.manual_seed(3)
    student = Student(_tiny())
    save_student(student, tmp_path / "run")
    file = tmp_path / "run" / "student.json"
    data = json.loads(file.read_text())
    del data["student"]["pooling"]  # what every student.json written before the field looks like
    file.write_text(json.dumps(data))
    loaded = load_student(tmp_path / "run")
    assert loaded.config.pooling == "last" and loaded.head.in_features == 16
    images = _images(2)
    assert np.array_equal(loaded.predict(images)["score"], student.predict(images)["score"])


def test_efficientnet_lite0_multiscale_taps_the_resolution_stages_and_keeps_the_last_feature() -> None:
    """The real network: the final block equals ``extract_features`` exactly (eval mode, and in train
    mode with the same drop-connect draws), and early-stage std tracks noise and blur on a photo."""
    from PIL import ImageFilter

    student = Student(StudentConfig(pooling="multiscale")).eval()
    backbone = student.backbone
    assert backbone.stage_ends == [0, 2, 4, 10]
    assert [w for _, w in backbone.segments] == [16, 16, 24, 24, 40, 40, 112, 112, 1280]
    assert backbone.out_features == 1664 == student.head.in_features
    clean = _photo(224)
    x = student.to_tensor(clean[None])
    with torch.no_grad():
        feats = backbone(x)
        want = backbone.net.extract_features(x).mean(dim=(2, 3))
        last = Student(StudentConfig(pooling="last")).eval().backbone(x)  # same shipped weights
    assert feats.shape == (1, 1664)
    assert torch.equal(feats[:, -1280:], want) and torch.equal(last, want)

    backbone.train()  # drop-connect acts now: the same random draws must give the same map
    x2 = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        torch.manual_seed(5)
        final = backbone.stage_outputs(x2)[1]
        torch.manual_seed(5)
        reference = backbone.net.extract_features(x2)
    assert torch.equal(final, reference)
    backbone.eval()

    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(clean).filter(ImageFilter.GaussianBlur(2)))
    with torch.no_grad():
        f = backbone(student.to_tensor(np.stack([clean, noisy, blurred]))).numpy()
    std1 = f[:, 16:32]  # stage 1 (112 px): mean 0..15, std 16..31
    assert std1[1].mean() > 1.2 * std1[0].mean()
    assert std1[2].mean() < 0.75 * std1[0].mean()
