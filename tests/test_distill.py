"""Distillation: learns the teacher, exact resume after a crash, content-disjoint val split, early
stopping, run folder, and a 2-process DistributedDataParallel run on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.datasets.manifest import Manifest, ManifestRow, write_manifest
from iqalens.leaf.distill import (
    CHECKPOINT_FILE,
    DistillConfig,
    distill,
    load_splits,
    lr_factor,
)
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.store import JudgmentStore, content_hash
from iqalens.leaf.student import Student, StudentConfig, TinyBackbone, load_student
from iqalens.training import batch_stream
from tolerances import TINY_CNN_DEPTH, float32_rtol

T, V = "toy:teacher", "v1"


def make_store(folder: Path, n: int = 24, pairs_per_image: int = 3) -> tuple[Path, list[Path]]:
    """Tiny noisy images whose teacher level follows the noise (less noise = better), plus pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    points = []
    for i in range(n):
        q = i / (n - 1)
        img = rng.integers(100, 156, (20, 24, 3)).astype(float) + rng.normal(0, 80 * (1 - q), (20, 24, 3))
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        probs = np.exp(-((np.arange(5) - 4 * (1 - q)) ** 2))  # level index 0 = excellent
        points.append((content_hash(path), path, PointJudgment.from_probs(probs)))
    pairs = []
    for i in range(n):
        for j in rng.choice(n, pairs_per_image, replace=False):
            if i != j:
                a, b = points[i], points[int(j)]
                pairs.append((a[0], b[0], a[1], b[1], PairJudgment.from_points(a[2], b[2])))
    store = folder / "judgments.sqlite"
    with JudgmentStore(store) as s:
        s.put_points(points, T, V)
        s.put_pairs(pairs, T, V)
    return store, [p[1] for p in points]


def tiny_config(**kw: object) -> DistillConfig:
    base = DistillConfig(
        student=StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, dropout=0.1),
        max_steps=30,
        point_batch=8,
        pair_batch=8,
        lr=1e-2,
        backbone_lr=1e-2,
        warmup_steps=5,
        eval_every=10,
        checkpoint_every=10,
        patience=100,
        val_fraction=0.25,
        progress=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return make_store(tmp_path_factory.mktemp("toy"))


def count_backbone_forwards(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``{"n": forward passes of the tiny backbone so far}``, counted from now on (tests reset it)."""
    calls = {"n": 0}
    original = TinyBackbone.forward

    def counting(self: TinyBackbone, x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(TinyBackbone, "forward", counting)
    return calls


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "student.safetensors"))


# -- building blocks ------------------------------------------------------------------------------


def test_streams_are_seeded_permutations_epoch_after_epoch() -> None:
    n, batch = 10, 4
    seq = np.concatenate([batch_stream(n, batch, s, seed=3, stream_id=0) for s in range(5)])  # 20 = 2 epochs
    assert sorted(seq[:10]) == list(range(10)) and sorted(seq[10:]) == list(range(10))
    assert not np.array_equal(seq[:10], seq[10:])  # each epoch reshuffled
    assert np.array_equal(batch_stream(n, batch, 2, 3, 0), seq[8:12])  # stateless: step 2 alone = same items
    assert not np.array_equal(batch_stream(n, batch, 0, 4, 0), seq[:4])
    assert batch_stream(0, 4, 0, 0, 0).size == 0


def test_lr_schedule_warms_up_then_decays_by_cosine() -> None:
    cfg = DistillConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))


def test_val_split_is_content_disjoint_by_manifest_reference(tmp_path: Path) -> None:
    store, paths = make_store(tmp_path / "data", n=24, pairs_per_image=6)
    # 8 "references" x 3 versions each; one reference is a declared test item.
    rows = [
        ManifestRow(path=p.name, reference=f"ref{i // 3}", source="toy", split="test" if i // 3 == 7 else "")
        for i, p in enumerate(paths)
    ]
    write_manifest(Manifest(rows, tmp_path / "data"), tmp_path / "data" / "m.csv")
    cfg = tiny_config(manifest=str(tmp_path / "data" / "m.csv"), val_fraction=0.4)
    train, val, _, skipped = load_splits(store, T, V, cfg)
    ref = {str(p.resolve()): i // 3 for i, p in enumerate(paths)}
    train_refs = {ref[p.path] for p in train.points}
    val_refs = {ref[p.path] for p in val.points}
    assert train_refs and val_refs and not train_refs & val_refs
    assert 7 not in train_refs | val_refs and skipped["test_items"] >= 3
    by_hash = {p.hash: ref[p.path] for p in train.points + val.points}
    for q in train.pairs:
        assert by_hash[q.hash_a] in train_refs and by_hash[q.hash_b] in train_refs
    for q in val.pairs:
        assert by_hash[q.hash_a] in val_refs and by_hash[q.hash_b] in val_refs
    assert skipped["pairs_across_splits"] > 0
    # Without a manifest: by content hash, stable, and the same for the same salt.
    a = load_splits(store, T, V, tiny_config(val_fraction=0.4))
    b = load_splits(store, T, V, tiny_config(val_fraction=0.4))
    assert [p.hash for p in a[1].points] == [p.hash for p in b[1].points] and a[1].points


def test_missing_images_are_skipped_and_counted(tmp_path: Path) -> None:
    store, paths = make_store(tmp_path / "data", n=12, pairs_per_image=2)
    paths[0].unlink()
    with pytest.warns(UserWarning, match="not found on disk"):
        train, val, _, skipped = load_splits(store, T, V, tiny_config())
    assert skipped["points_no_image"] == 1 and skipped["pairs_no_image"] >= 2
    assert len(train.points) + len(val.points) == 11


def test_unknown_teacher_is_an_error(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no judgments"):
        distill(toy[0], "other", V, tmp_path / "run", tiny_config())


# -- whole runs -----------------------------------------------------------------------------------


def test_distill_learns_the_teacher_and_writes_a_run_folder(
    toy: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    metrics = distill(toy[0], T, V, run, tiny_config(max_steps=60))
    for name in ("config.json", "metrics.json", "student.safetensors", "student.json", CHECKPOINT_FILE):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["command"] == "distill"
    assert "torch" in config["versions"] and config["config"]["teacher_id"] == T
    assert config["config"]["distill"]["student"]["backbone"] == "tiny"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["steps"] == 60 and len(saved["history"]) == 6
    # The student ranks held-out images like the teacher (noise level) and orders held-out pairs.
    assert metrics["val"]["srcc_vs_teacher"] > 0.8
    assert metrics["val"]["pair_agreement"] >= 0.75
    first, last = saved["history"][0]["loss_total"], saved["history"][-1]["loss_total"]
    assert last < first
    student = load_student(run)
    clean, noisy = student.predict_paths([toy[1][-1], toy[1][0]])
    assert clean > noisy


class Crash(RuntimeError):
    """An interruption in the middle of a run (after a checkpoint, before the next)."""


def crash_at(step: int) -> Callable[[int, dict[str, float]], None]:
    def on_step(done: int, terms: dict[str, float]) -> None:
        if done == step:
            raise Crash

    return on_step


def test_interrupted_run_resumes_to_the_same_weights(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    cfg = tiny_config(max_steps=30, checkpoint_every=10, eval_every=10)
    distill(toy[0], T, V, tmp_path / "straight", cfg)

    with pytest.raises(Crash):
        distill(toy[0], T, V, tmp_path / "resumed", cfg, on_step=crash_at(17))
    ckpt = torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=False)
    assert ckpt["step"] == 10 and not (tmp_path / "resumed" / "student.safetensors").exists()
    metrics = distill(toy[0], T, V, tmp_path / "resumed", cfg)
    assert metrics["steps"] == 30
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["config"]["resumed_from_step"] == 10
    # A finished run given again does no more steps and keeps its weights.
    assert distill(toy[0], T, V, tmp_path / "resumed", cfg)["steps"] == 30
    assert torch.equal(_weights(tmp_path / "resumed")["head.weight"], a["head.weight"])


def test_resume_with_other_settings_is_refused(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    distill(toy[0], T, V, tmp_path / "run", tiny_config(max_steps=10))
    with pytest.raises(ValueError, match="other settings"):
        distill(toy[0], T, V, tmp_path / "run", tiny_config(max_steps=10, lr=0.5))


def test_a_checkpoint_from_before_pooling_resumes(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    # What a checkpoint written before the pooling and cache_features fields holds in its config.
    cfg = tiny_config(max_steps=20, checkpoint_every=10)

    with pytest.raises(Crash):
        distill(toy[0], T, V, tmp_path / "run", cfg, on_step=crash_at(12))
    path = tmp_path / "run" / CHECKPOINT_FILE
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["config"]["student"].pop("pooling") == "last"  # the tiny backbone's default
    ckpt["config"]["cache_features"] = True  # an old checkpoint may hold it or not: resume-free either way
    torch.save(ckpt, path)
    assert distill(toy[0], T, V, tmp_path / "run", cfg)["steps"] == 20


def test_early_stopping_keeps_the_best_weights(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    # Zero learning rate: the first evaluation is the best, the next one does not improve -> stop.
    cfg = tiny_config(max_steps=100, eval_every=5, patience=1, lr=0.0, backbone_lr=0.0)
    metrics = distill(toy[0], T, V, tmp_path / "run", cfg)
    assert metrics["stopped_early"] and metrics["steps"] == 10 and metrics["best_step"] == 5


def test_pairs_only_and_points_only_runs(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    m1 = distill(toy[0], T, V, tmp_path / "pairs", tiny_config(max_steps=5, point_batch=0))
    assert set(m1["val"]) >= {"loss_pair", "loss_total"}
    cfg = tiny_config(max_steps=5, pair_batch=0)
    cfg.loss.pair_loss = "bt"
    assert distill(toy[0], T, V, tmp_path / "points", cfg)["steps"] == 5


_DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    from iqalens.leaf.distill import DistillConfig, distill
    cfg = DistillConfig.from_dict(__import__("json").loads(sys.argv[2]))
    distill(sys.argv[1], "toy:teacher", "v1", sys.argv[3], cfg)
    """
)


@pytest.mark.slow
def test_two_process_ddp_run_matches_one_process(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): same global batch, same gradient -> same weights (no BN)."""
    cfg = tiny_config(max_steps=12)
    cfg.student.dropout = 0.0  # dropout masks are drawn per rank
    distill(toy[0], T, V, tmp_path / "single", cfg)
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    cmd += [str(toy[0]), json.dumps(cfg.to_dict()), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["config"]["world_size"] == 2
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    # Two half-batch gradients averaged vs one sum: the tiny CNN's float32 bound on the gradients
    # (tests/tolerances.py, 2.4e-5 relative); an Adam step lr * m / sqrt(v) moves by <= lr * 2 * that,
    # so 12 steps at lr 1e-2 by <= 5.7e-6 (measured 1.2e-7), while training moves weights by ~1e-2.
    # (That holds for gradients well above their own rounding noise: Adam's division by sqrt(v) + 1e-8
    # would turn noise in a near-zero gradient into steps up to lr; test_align_train's DDP check meets
    # that; the tiny CNN did not show it in the 5 CPU variants of docs/testing.md.)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
def test_distill_with_the_pretrained_efficientnet_lite0(tmp_path: Path) -> None:
    """The real default backbone end to end on a few photos: blurred copies judged worse by a toy teacher."""
    from PIL import ImageFilter

    samples = Path(__file__).resolve().parents[1] / "src" / "iqalens" / "data" / "samples"
    points = []
    for name in ("cat", "coffee", "rocket", "flower"):
        im = Image.open(samples / f"{name}.png").convert("RGB")
        im.thumbnail((128, 128))
        for level, radius in enumerate((0.0, 1.5, 4.0)):
            path = tmp_path / f"{name}_{level}.png"
            im.filter(ImageFilter.GaussianBlur(radius)).save(path)
            probs = np.exp(-((np.arange(5) - 2 * level) ** 2))
            points.append((content_hash(path), path, PointJudgment.from_probs(probs)))
    with JudgmentStore(tmp_path / "s.sqlite") as s:
        s.put_points(points, T, V)
        s.put_pairs(
            [
                (a[0], b[0], a[1], b[1], PairJudgment.from_points(a[2], b[2]))
                for a, b in zip(points, points[1:], strict=False)
            ],
            T,
            V,
        )
    cfg = tiny_config(
        student=StudentConfig(image_size=96, resize_shorter=96),
        max_steps=4,
        point_batch=4,
        pair_batch=2,
        lr=1e-3,
        backbone_lr=1e-4,
        eval_every=2,
        val_fraction=0.0,
    )
    with pytest.warns(UserWarning, match="validation split is empty"):
        metrics = distill(tmp_path / "s.sqlite", T, V, tmp_path / "run", cfg)
    assert metrics["steps"] == 4 and metrics["best_val_loss"] is None
    student = load_student(tmp_path / "run")
    assert student.config.backbone == "efficientnet-lite0" and student.head.in_features == 1664  # multiscale
    scores = student.predict_paths([p[1] for p in points])
    assert np.isfinite(scores).all()


def test_frozen_backbone_trains_the_head_only(toy: tuple[Path, list[Path]], tmp_path: Path) -> None:
    run = tmp_path / "run"
    distill(toy[0], T, V, run, tiny_config(max_steps=10, freeze_backbone=True))
    torch.manual_seed(0)  # distill seeds the initialisation the same way
    initial = Student(tiny_config().student).state_dict()
    trained = _weights(run)
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert backbone and all(torch.equal(trained[k], initial[k]) for k in backbone)
    assert not torch.equal(trained["head.weight"], initial["head.weight"])


def test_frozen_backbone_without_augmentation_reuses_stored_features(
    toy: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_backbone_forwards(monkeypatch)
    weights, counts = [], []
    for cached in (True, False):
        calls["n"] = 0
        run = tmp_path / f"run-{cached}"
        cfg = tiny_config(max_steps=20, freeze_backbone=True, augment=False, cache_features=cached)
        distill(toy[0], T, V, run, cfg)
        weights.append(_weights(run))
        counts.append(calls["n"])
    # the same head, trained on the same (stored or recomputed) features of a frozen backbone; features
    # computed in other batches may round differently (the tiny CNN's float32 bound, tests/tolerances.py),
    # each Adam step then by <= lr * 2 * that: 20 steps at lr 1e-2 -> <= 9.5e-6 (training moves ~1e-2)
    tol = cfg.max_steps * cfg.lr * 2 * float32_rtol(TINY_CNN_DEPTH)
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=tol)
    # recomputing runs the backbone once per step and per evaluation chunk; storing, once per new image batch
    assert counts[1] >= 20 and counts[0] < counts[1] / 2


def test_multiscale_head_only_distillation_on_stored_features(
    toy: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    multiscale = StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pooling="multiscale")
    cfg = tiny_config(student=multiscale, max_steps=20, freeze_backbone=True, augment=False)
    metrics = distill(toy[0], T, V, run, cfg)
    assert metrics["steps"] == 20 and np.isfinite(metrics["val"]["loss_total"])
    student = load_student(run)
    assert student.config.pooling == "multiscale" and student.head.in_features == 64
    assert np.isfinite(student.predict_paths(toy[1][:3])).all()
    # resuming checks the settings, pooling included
    with pytest.raises(ValueError, match="other settings"):
        distill(toy[0], T, V, run, tiny_config(max_steps=20, freeze_backbone=True, augment=False))


@pytest.mark.parametrize("pooling", ["last", "multiscale"])
def test_student_forward_on_features_equals_forward_on_images(pooling: str) -> None:
    student = Student(
        StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, pretrained=False, pooling=pooling)
    )
    student.eval()
    x = torch.rand(3, 3, 16, 16)
    s_img, z_img = student(x)
    s_feat, z_feat = student(student.backbone(x))
    torch.testing.assert_close(s_img, s_feat)
    torch.testing.assert_close(z_img, z_feat)


def test_frozen_backbone_keeps_batch_norm_statistics_in_train_mode() -> None:
    student = Student(StudentConfig(pretrained=False))
    student.freeze_backbone()
    student.train()
    norms = [m for m in student.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert student.dropout.training
    before = [m.running_mean.clone() for m in norms]
    score, _ = student(torch.rand(2, 3, 64, 64))
    score.sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))
    assert all(p.grad is None for p in student.backbone.parameters())
    assert student.head.weight.grad is not None
