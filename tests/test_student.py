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
    LITE_MEAN,
    Student,
    StudentConfig,
    crop_boxes,
    efficientnet_lite0_weights_path,
    expected_from_logits,
    load_student,
    normalise,
    resize_shorter,
    save_student,
)

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
    [{"backbone": "resnet"}, {"backbone": "hf"}, {"image_size": 32, "resize_shorter": 16}, {"test_grid": 0}],
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
    assert again["score"][0] == pytest.approx(got["score"][0], abs=1e-6)
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
    student = Student(StudentConfig())
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
