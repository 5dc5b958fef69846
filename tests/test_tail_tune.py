"""Training the student's last stage on cached trunk outputs (iqalens.leaf.tail_tune)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.errors import InvalidInputError
from iqalens.evaluation.metrics import srcc
from iqalens.leaf.student import Student, StudentConfig
from iqalens.leaf.tail_tune import (
    StudentTail,
    TailTuneConfig,
    cache_trunk,
    holdout_split,
    tail_features,
    tail_start,
    trunk_outputs,
    tune_tail,
)

pytest.importorskip("efficientnet_lite_pytorch")


def _student(**kw: object) -> Student:
    torch.manual_seed(0)
    settings: dict = {"pretrained": True, "image_size": 64, "resize_shorter": 64, **kw}
    cfg = StudentConfig(**settings)
    return Student(cfg).eval()


def _images(tmp_path, n: int = 12) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.uniform(0, 255, (8, 8, 3))
        img = np.kron(base, np.ones((10, 10, 1))) + rng.normal(0, 4 * i, (80, 80, 3))
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("kw", [{"quality_stats": True}, {"pooling": "last"}])
def test_trunk_and_tail_reproduce_the_student_feature(kw: dict) -> None:
    student = _student(**kw)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        prefix, fmap, suffix = trunk_outputs(student, x)
        rebuilt = torch.cat([prefix, StudentTail(student)(fmap), suffix], dim=1)
        direct = student.backbone(x)
    assert tail_start(student) == 11
    assert rebuilt.shape == direct.shape
    assert torch.allclose(rebuilt, direct, atol=1e-5)


def test_other_backbones_and_multicrop_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="efficientnet-lite0"):
        StudentTail(Student(StudentConfig(backbone="tiny")))
    with pytest.raises(InvalidInputError, match="test_grid"):
        StudentTail(_student(resize_shorter=96, test_grid=2))


def test_cache_trunk_round_trip_and_setting_check(tmp_path) -> None:
    student = _student(quality_stats=True)
    paths = _images(tmp_path, 4)
    hashes = [f"h{i}" for i in range(4)]
    trunk = cache_trunk(student, paths, hashes, tmp_path / "trunk", progress=False)
    assert trunk.maps.dtype == np.float16 and trunk.maps.shape[0] == 4
    again = cache_trunk(student, paths, hashes, tmp_path / "trunk", progress=False)
    np.testing.assert_array_equal(again.maps, trunk.maps)
    features = trunk.features(tail_features(StudentTail(student), trunk.maps))
    with torch.no_grad():
        direct = student.backbone(
            student.to_tensor(
                np.stack([student.test_crops(student.prepare(Image.open(p)))[0] for p in paths])
            )
        )
    np.testing.assert_allclose(features, direct.numpy(), atol=2e-2, rtol=1e-2)  # maps stored as float16
    with pytest.raises(InvalidInputError, match="another student setting"):
        cache_trunk(_student(quality_stats=False), paths, hashes, tmp_path / "trunk", progress=False)


def test_holdout_split_keeps_photos_whole() -> None:
    groups = np.repeat(np.array(["a", "b", "c", "d", "e"]), 3)
    fit, held = holdout_split(groups, 0.2, seed=1)
    assert set(groups[fit]).isdisjoint(groups[held])
    assert len(set(groups[held])) == 1 and fit.size + held.size == groups.size
    with pytest.raises(InvalidInputError, match=">= 2 content groups"):
        holdout_split(np.array(["a", "a"]), 0.2, seed=0)


def test_tune_tail_trains_the_students_own_tail_and_keeps_the_best_step(tmp_path) -> None:
    student = _student(quality_stats=True)
    paths = _images(tmp_path, 12)
    trunk = cache_trunk(student, paths, [f"h{i}" for i in range(12)], tmp_path / "trunk", progress=False)
    before = [p.detach().clone() for p in StudentTail(student).parameters()]
    expected = np.linspace(0.9, 0.1, 12)  # noisier images (higher index) rated worse
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 3)
    cfg = TailTuneConfig(steps=6, batch=4, eval_every=2, lr=1e-3, holdout_fraction=0.25, seed=0)
    result = tune_tail(student, trunk, expected, np.ones(12), groups, l2=1.0, config=cfg)
    steps = [c["step"] for c in result["curve"]]
    assert steps == [0, 2, 4, 6]
    best = max(result["curve"], key=lambda c: c["held_out_srcc_vs_teacher"])
    assert result["chosen_step"] == best["step"]
    assert result["fit_images"] == 9 and result["held_out_images"] == 3
    moved = any(not torch.equal(a, b) for a, b in zip(before, StudentTail(student).parameters(), strict=True))
    assert moved == (result["chosen_step"] > 0)
    # the head trained with the tail, taken at the kept step, ranks the held-out photos as the curve says
    _, held = holdout_split(groups, 0.25, 0)
    tuned = trunk.features(tail_features(StudentTail(student), trunk.maps))
    got = srcc(result["head"].scores(tuned)[held], expected[held])
    assert got == pytest.approx(best["held_out_srcc_vs_teacher"], abs=1e-9)
    # as a FeatureHead on its standardised features it gives the same scores (the label fits' prior)
    as_module = result["head"].as_feature_head()
    z = torch.as_tensor(result["head"].standardised(tuned), dtype=torch.float32)
    with torch.no_grad():
        score, logits = as_module(z)
    np.testing.assert_allclose(score.double().numpy(), result["head"].scores(tuned), rtol=1e-4, atol=1e-4)
    assert not logits.any()
    # and folded onto raw features, as a saved student's Linear holds it
    weight, bias = result["head"].on_raw_features()
    np.testing.assert_allclose(tuned @ weight + bias, result["head"].scores(tuned), rtol=1e-9, atol=1e-9)
    # the tuned tail is the student's: its own backbone now computes the tuned features
    x = student.to_tensor(
        np.stack([student.test_crops(student.prepare(Image.open(p)))[0] for p in paths[:2]])
    )
    with torch.no_grad():
        prefix, fmap, suffix = trunk_outputs(student, x)
        assert torch.allclose(
            student.backbone(x), torch.cat([prefix, StudentTail(student)(fmap), suffix], 1), atol=1e-5
        )


def test_tune_tail_checks_its_inputs(tmp_path) -> None:
    student = _student()
    paths = _images(tmp_path, 6)
    trunk = cache_trunk(student, paths, [f"h{i}" for i in range(6)], tmp_path / "trunk", progress=False)
    groups = ["a", "a", "a", "b", "b", "b"]  # seed 1 holds out photo "a"
    with pytest.raises(InvalidInputError, match="one teacher score"):
        tune_tail(student, trunk, np.ones(5), np.ones(6), groups, l2=1.0)
    unjudged_held = np.array([0.9, np.nan, 0.7, 0.5, 0.4, 0.3])
    cfg = TailTuneConfig(steps=2, batch=2, holdout_fraction=0.5, seed=1)
    with pytest.raises(InvalidInputError, match="teacher scores on both"):
        tune_tail(student, trunk, unjudged_held, np.ones(6), groups, l2=1.0, config=cfg)
    # an unjudged training image is skipped, not fitted as NaN
    ok = tune_tail(student, trunk, np.array([0.9, 0.8, 0.7, 0.5, np.nan, 0.3]), np.ones(6), groups, 1.0, cfg)
    assert ok["fit_images"] == 2 and ok["held_out_images"] == 3
    assert all(np.isfinite(c["held_out_srcc_vs_teacher"]) for c in ok["curve"])
    with pytest.raises(InvalidInputError, match="lr"):
        TailTuneConfig(lr=0)
    with pytest.raises(InvalidInputError, match="schedule"):
        TailTuneConfig(schedule="linear")
    decayed = tune_tail(
        student,
        trunk,
        unjudged_held[::-1].copy(),
        np.ones(6),
        groups,
        1.0,
        TailTuneConfig(steps=2, batch=2, holdout_fraction=0.5, seed=1, schedule="cosine"),
    )
    assert decayed["config"]["schedule"] == "cosine" and len(decayed["curve"]) == 2


def _tail_distill_config(**kw: object):  # noqa: ANN202 - DistillConfig is imported lazily
    """A ridge distillation of the toy store with 4 last-stage steps."""
    from iqalens.leaf.distill import DistillConfig

    settings: dict = {
        "student": StudentConfig(image_size=64, resize_shorter=64), "solver": "ridge",
        "freeze_backbone": True, "augment": False, "tail_steps": 4, "l2": 1.0, "progress": False, **kw,
    }  # fmt: skip
    return DistillConfig(**settings)


def test_distill_with_tail_steps_saves_the_tuned_backbone(tmp_path) -> None:
    from iqalens.leaf.distill import distill
    from iqalens.leaf.student import load_student
    from test_distill import T, V, make_store

    store, images = make_store(tmp_path / "toy", n=20)
    cfg = _tail_distill_config()
    with pytest.warns(UserWarning, match="no manifest"):
        metrics = distill(store, T, V, tmp_path / "run", cfg)
    tail = metrics["ridge"]["tail"]
    assert [c["step"] for c in tail["curve"]] == [0, 4] and tail["chosen_step"] in (0, 4)
    assert (tmp_path / "run" / "features" / "trunk" / "trunk.json").is_file()
    saved, fresh = load_student(tmp_path / "run"), _student()
    same = all(
        torch.equal(a, b)
        for a, b in zip(StudentTail(saved).parameters(), StudentTail(fresh).parameters(), strict=True)
    )
    assert same == (tail["chosen_step"] == 0)
    assert np.all(np.isfinite(saved.predict_paths(images[:3])))


def test_distill_tail_head_chooses_what_the_score_keeps(tmp_path) -> None:
    """The "trained" and "refit" heads share the tuned stage and the refitted level logits; only the score's
    weights differ, and the metrics say which one was kept."""
    from iqalens.leaf.distill import DistillConfig, distill
    from iqalens.leaf.student import load_student
    from test_distill import T, V, make_store

    store, images = make_store(tmp_path / "toy", n=20)
    students, tails = {}, {}
    for kept in ("trained", "refit"):
        cfg = _tail_distill_config(tail_head=kept)
        with pytest.warns(UserWarning, match="no manifest"):
            metrics = distill(store, T, V, tmp_path / kept, cfg)
        tails[kept] = metrics["ridge"]["tail"]
        students[kept] = load_student(tmp_path / kept)
    assert tails["trained"]["score_head"] == "trained" and tails["refit"]["score_head"] == "refit"
    assert tails["trained"]["curve"] == tails["refit"]["curve"]  # same seed: the same stage training
    a, b = students["trained"].head, students["refit"].head
    assert torch.equal(a.weight[1:], b.weight[1:]) and torch.equal(a.bias[1:], b.bias[1:])
    assert not torch.allclose(a.weight[0], b.weight[0])
    with pytest.raises(InvalidInputError, match="tail_head"):
        DistillConfig(tail_head="mean")


def test_tail_steps_need_the_ridge_solver_and_efficientnet() -> None:
    from iqalens.leaf.distill import DistillConfig

    with pytest.raises(InvalidInputError, match="tail_steps"):
        DistillConfig(tail_steps=5)
    with pytest.raises(InvalidInputError, match="tail_steps"):
        DistillConfig(
            student=StudentConfig(backbone="tiny"),
            solver="ridge",
            freeze_backbone=True,
            augment=False,
            tail_steps=5,
        )
    with pytest.raises(InvalidInputError, match=">= 0"):
        DistillConfig(tail_steps=-1)


def test_default_student_takes_the_shipped_last_stage(tmp_path, monkeypatch) -> None:
    """A ``tail.safetensors`` next to the default head replaces the ImageNet last stage (float16 on
    disk, float32 in the network) and joins the files its exported-graph cache is keyed on."""
    import shutil

    from safetensors.torch import save_file

    from iqalens.leaf import default_model

    for f in default_model.default_model_files():
        shutil.copy(f, tmp_path)
    (tmp_path / default_model.TAIL_FILE).unlink(missing_ok=True)
    monkeypatch.setattr(default_model, "default_model_dir", lambda: tmp_path)
    plain = default_model.load_default_student()
    assert default_model.TAIL_FILE not in {f.name for f in default_model.default_model_files()}
    state = {k: v.clone() for k, v in StudentTail(plain).state_dict().items()}
    state["conv_head.weight"] = state["conv_head.weight"] * 1.5
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / default_model.TAIL_FILE))
    tuned = default_model.load_default_student()
    assert default_model.TAIL_FILE in {f.name for f in default_model.default_model_files()}
    got = StudentTail(tuned).state_dict()["conv_head.weight"]
    assert got.dtype == torch.float32
    assert torch.equal(got, state["conv_head.weight"].half().float())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(plain(x)[0], tuned(x)[0])


def test_tune_tail_can_choose_its_step_by_another_target(tmp_path) -> None:
    """``check`` replaces what the held-out scores are ranked against (a LEAF run checks the labels
    while it fits the teacher); NaN rows of it are not checked."""
    paths = _images(tmp_path, 12)
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 3)
    expected = np.linspace(0.9, 0.1, 12)
    cfg = TailTuneConfig(steps=2, batch=4, eval_every=2, lr=1e-3, holdout_fraction=0.25, seed=0)
    runs = {}
    for name, check in (("teacher", None), ("reversed", -expected), ("none", np.full(12, np.nan))):
        student = _student(quality_stats=True)
        trunk = cache_trunk(student, paths, [f"h{i}" for i in range(12)], tmp_path / "trunk", progress=False)
        if name == "none":
            with pytest.raises(InvalidInputError):
                tune_tail(student, trunk, expected, np.ones(12), groups, l2=1.0, config=cfg, check=check)
            continue
        runs[name] = tune_tail(student, trunk, expected, np.ones(12), groups, l2=1.0, config=cfg, check=check)
    first = [c["held_out_srcc_vs_teacher"] for c in runs["teacher"]["curve"]]
    flipped = [c["held_out_srcc_vs_teacher"] for c in runs["reversed"]["curve"]]
    assert flipped == pytest.approx([-v for v in first], abs=1e-9)
