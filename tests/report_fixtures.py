"""Small real run folders of every kind ``iqalens report`` reads, made by the library's own writers.

Perception runs come from :func:`iqalens.perception.run.perceive` on a fake component model (its
features are built so that class information appears at known sites); the LEAF runs from the real
store, distillation (tiny backbone), calibration, evaluation, label-budget protocol and score writers
on a few 20x24 images, so those run folders carry the typed results (:mod:`iqalens.results`) the
commands save. The align run follows the contract of ``iqalens align`` (``before/``,
``after/``, ``comparison.json``, ``metrics.json``, ``train_log.csv``) with two perceive runs of two fake
models. Everything together takes a few seconds on a CPU.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iqalens.datasets.manifest import Manifest, ManifestRow, MosScale, write_manifest
from iqalens.files import content_hash
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.store import JudgmentStore
from iqalens.models.base import ComponentFeatures
from iqalens.runs import start_run, write_json
from iqalens.taxonomy import CLASSES

TEACHER, PROMPT = "test-teacher", "v1"
PROXY_NOTE = "proxy MOS = a test proxy of the image's distortion level"
D_LM = 12


class FakeComponentModel:
    """Reads the class from pixel [0, 0, 0] // 10; ``skill`` sets how much class signal the projector and
    the answers carry, so a "fine-tuned" model (higher skill) sees more than its base."""

    kind = "mini"

    def __init__(self, model_id: str, skill: float) -> None:
        self.model_id = model_id
        self.skill = skill

    @staticmethod
    def _decode(image: np.ndarray) -> tuple[int, np.random.Generator]:
        c = int(image[0, 0, 0]) // 10
        return c, np.random.default_rng(int(image[0, 0, 1]) * 100 + c)

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        v0, v1, proj, lm0, lm1 = [], [], [], [], []
        eye = np.eye(D_LM)
        for image in images:
            c, rng = self._decode(image)
            v0.append(rng.normal(size=6))
            v1.append(np.eye(8)[c] + 0.2 * rng.normal(size=8))
            proj.append(eye[0] + self.skill * eye[c] + 0.05 * rng.normal(size=D_LM))
            lm0.append(self.skill * eye[c] + rng.normal(size=D_LM))
            lm1.append(0.5 * self.skill * eye[c] + rng.normal(size=D_LM))
        return ComponentFeatures(
            [np.array(v0, np.float32), np.array(v1, np.float32)],
            np.array(proj, np.float32),
            [np.array(lm0, np.float32), np.array(lm1, np.float32)],
        )

    def contextual_word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        return np.stack([np.eye(len(words), D_LM, dtype=np.float32)] * 2)

    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        return np.eye(len(words), D_LM, dtype=np.float32)

    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        scores = np.zeros((len(images), len(class_words)))
        for i, image in enumerate(images):
            c, rng = self._decode(image)
            scores[i] = rng.normal(size=len(class_words))
            scores[i, c] += 3.0 * self.skill
            scores[i, 0] += 1.0  # a bias towards "blur", as an untuned model might have
        return scores


def write_perception_bench(folder: Path, n_refs: int = 6) -> Path:
    """One 8x8 image per class and reference; references split train/test (content-disjoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref in range(n_refs):
        for c in range(len(CLASSES)):
            img = np.zeros((8, 8, 3), np.uint8)
            img[..., 0], img[..., 1] = c * 10, ref
            name = f"r{ref}_c{c}.png"
            Image.fromarray(img).save(folder / name)
            rows.append(
                ManifestRow(
                    path=name,
                    reference=f"ref{ref}",
                    source="synthetic",
                    perception_class=CLASSES[c],
                    split="train" if ref < n_refs // 2 else "test",
                )
            )
    return write_manifest(Manifest(rows, folder, {"builder": "test"}), folder / "manifest.csv")


def make_perceive_run(
    out: Path, bench: Path, cache: Path, model_id: str = "fake/base", skill: float = 0.3
) -> Path:
    from iqalens.perception.run import perceive

    perceive(
        FakeComponentModel(model_id, skill),
        bench,
        out,
        cache_dir=cache,
        batch_size=16,
        probe_max_iter=40,
        progress=False,
    )
    return out


def make_align_run(out: Path, bench: Path, cache: Path) -> Path:
    """An align run folder following the contract of ``iqalens align``."""
    from iqalens.perception.semantic import compare

    start_run(
        out,
        "align",
        {"model": "fake/base", "bench": str(bench), "train": ["vision_encoder", "projector"], "steps": 4},
        seed=0,
    )
    make_perceive_run(out / "before", bench, cache / "before", "fake/base", 0.3)
    make_perceive_run(out / "after", bench, cache / "after", "fake/aligned", 1.0)
    before = json.loads((out / "before" / "metrics.json").read_text())
    after = json.loads((out / "after" / "metrics.json").read_text())

    def headline(m: dict) -> dict:
        return {
            "forced_choice_accuracy": m["forced_choice"]["accuracy"],
            "balanced_accuracy": m["forced_choice"]["balanced_accuracy"],
            "mean_similarity_true": m["semantic"]["overall"]["mean_similarity_true"],
        }

    drift = {
        "imagenet_top1_agreement": 0.91,
        "feature_cosine": 0.97,
        "feature_cosine_min": 0.9,
        "n_images": 6,
    }
    write_json(out / "comparison.json", {"semantic": compare(before, after), "drift": drift})
    write_json(
        out / "metrics.json",
        {
            "model_id": "fake/base+align[vision_encoder+projector]",
            "base_model": "fake/base",
            "train": ["vision_encoder", "projector"],
            "lora": [],
            "objectives": {"template": 1.0, "align": 0.5, "constraint": 1.0},
            "constraint": "features",
            "steps_run": 6,
            "best_step": 6,
            "best_val_accuracy": 0.75,
            "val_accuracy_before": 0.3,
            "trainable_parameters": 1234,
            "train_seconds": 1.5,
            "before": headline(before),
            "after": headline(after),
            "drift": drift,
            "complete": True,
        },
    )
    with open(out / "train_log.csv", "w", newline="") as fh:  # the columns iqalens align writes
        writer = csv.writer(fh)
        writer.writerow(["step", "lr", "loss", "template", "align", "constraint", "val_accuracy", "val_loss"])
        for step in range(1, 7):
            val = [0.3 + 0.075 * step, 1.2 / step] if step % 2 == 0 else ["", ""]  # validated every 2 steps
            writer.writerow([step, 1e-3, 2.0 / step, 1.5 / step, 0.4 / step, 0.1 * step, *val])
    (out / "model").mkdir()
    return out


@dataclass
class LeafData:
    """Images with a hidden quality, their teacher judgments and a manifest with (proxy) MOS."""

    store: Path
    manifest: Path
    paths: list[Path]


def make_leaf_data(folder: Path, n: int = 24) -> LeafData:
    """Noisy images (less noise = better), point + pair judgments that follow the noise, and a manifest
    whose MOS follows it too, marked as a proxy in its provenance (as benchmarks built by iqalens are)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    points, rows = [], []
    for i in range(n):
        q = i / (n - 1)
        img = rng.integers(100, 156, (20, 24, 3)).astype(float) + rng.normal(0, 80 * (1 - q), (20, 24, 3))
        path = folder / f"img{i:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        probs = np.exp(-((np.arange(5) - 4 * (1 - q)) ** 2) / (0.5 + rng.random()))
        points.append((content_hash(path), path, PointJudgment.from_probs(probs)))
        rows.append(
            ManifestRow(
                path=path.name,
                reference=f"ref{i // 2}",
                source="synthetic",
                mos=1.0 + 4.0 * q,
                mos_scale=MosScale(1.0, 5.0),
                split="test" if (i // 2) % 3 == 0 else "train",
            )
        )
    pairs = []
    for i in range(n):
        for j in rng.choice(n, 3, replace=False):
            if i != j:
                a, b = points[i], points[int(j)]
                pairs.append((a[0], b[0], a[1], b[1], PairJudgment.from_points(a[2], b[2])))
    store = folder / "judgments.sqlite"
    with JudgmentStore(store) as s:
        s.put_points(points, TEACHER, PROMPT)
        s.put_pairs(pairs, TEACHER, PROMPT)
    manifest = write_manifest(
        Manifest(rows, folder, {"builder": "test", "proxy_mos": PROXY_NOTE}), folder / "manifest.csv"
    )
    return LeafData(store, manifest, [p[1] for p in points])


def make_distill_run(out: Path, data: LeafData) -> Path:
    from iqalens.leaf.distill import DistillConfig, distill
    from iqalens.leaf.student import StudentConfig

    config = DistillConfig(
        student=StudentConfig(backbone="tiny", image_size=16, resize_shorter=20, dropout=0.1),
        max_steps=12,
        point_batch=8,
        pair_batch=8,
        lr=1e-2,
        backbone_lr=1e-2,
        warmup_steps=2,
        eval_every=4,
        checkpoint_every=12,
        patience=100,
        val_fraction=0.25,
        progress=False,
    )
    distill(data.store, TEACHER, PROMPT, out, config)
    return out


def make_calibrate_and_evaluate_runs(student: Path, data: LeafData, folder: Path) -> tuple[Path, Path]:
    from iqalens.leaf.calibration.workflow import calibrate_run
    from iqalens.leaf.evaluate import evaluate_run

    calibrated = folder / "calibrate"
    calibrate_run(student, data.manifest, 6, calibrated, method="linear", split="train", progress=False)
    evaluated = folder / "evaluate"
    evaluate_run(calibrated, data.manifest, evaluated, split="test", n_boot=30, progress=False)
    return calibrated, evaluated


def make_budget_run(out: Path, manifest: Path, store: Path) -> Path:
    """The label-budget protocol on synthetic features (the real protocol and writers, tiny heads)."""
    from iqalens.leaf.head import HeadConfig
    from iqalens.leaf.label_budget import (
        BudgetConfig,
        BudgetData,
        run_protocol,
        split_by_group,
        write_results,
    )

    rng = np.random.default_rng(1)
    n_groups, per_group, dim = 16, 6, 8
    n = n_groups * per_group
    x = rng.normal(size=(n, dim))
    q = x @ (rng.normal(size=dim) / math.sqrt(dim))
    mos = 1.0 + 4.0 / (1.0 + np.exp(-q))
    e = 1.0 / (1.0 + np.exp(-(q + 0.3 * rng.normal(size=n))))
    centres = np.array([1.0, 0.75, 0.5, 0.25, 0.0])
    probs = np.exp(-((e[:, None] - centres[None]) ** 2) / 0.02)
    probs /= probs.sum(axis=1, keepdims=True)
    groups = np.repeat([f"ref{g:02d}" for g in range(n_groups)], per_group)
    split = split_by_group(groups, 0.25, seed=0)
    a = rng.integers(0, n, size=2 * n)
    b = (a + rng.integers(1, n, size=2 * n)) % n
    same = split[a] == split[b]
    a, b = a[same], b[same]
    data = BudgetData(
        features=x,
        mos=mos,
        groups=groups,
        split=split,
        mos_range=(1.0, 5.0),
        teacher_probs=probs,
        teacher_expected=probs @ centres,
        teacher_reliability=np.ones(n),
        pairs=np.stack([a, b], axis=1),
        pair_p=1.0 / (1.0 + np.exp(-(e[a] - e[b]) * 8.0)),
        pair_reliability=np.ones(a.size),
    )
    config = BudgetConfig(
        budgets=("0%", "5%", "20%", "100%"),
        seeds=(0, 1),
        head=HeadConfig(distill_steps=60, label_steps=60, finetune_steps=20, lr=3e-3),
    )
    start_run(
        out,
        "label-budget",
        {
            "manifest": str(manifest),
            "store": str(store),
            "teacher_id": TEACHER,
            "prompt_version": PROMPT,
            "protocol": config.to_dict(),
            "student_backbone": {"backbone": "efficientnet-lite0"},
        },
        seed=0,
    )
    write_results(out, run_protocol(data, config, progress=False), config)
    return out


def make_score_files(folder: Path, paths: Sequence[Path]) -> tuple[Path, Path]:
    """A CSV and a JSON score file as ``iqalens score`` writes them (scores follow the file order)."""
    from iqalens.leaf.scoring import ScoreResult, write_results

    results = [ScoreResult(str(p), 1.0 + 4.0 * i / len(paths), i / len(paths)) for i, p in enumerate(paths)]
    results.append(ScoreResult(str(folder / "broken.png"), None, None, "cannot identify image file"))
    model = {
        "name": "student",
        "runtime": "torch",
        "calibration": {"kind": "linear"},
        "scale": {"low": 1.0, "high": 5.0, "name": "KADID-10k proxy MOS"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in ("csv", "json"):
        buf = io.StringIO()
        write_results(results, buf, fmt, model)
        file = folder / f"scores.{fmt}"
        file.write_text(buf.getvalue())
        files.append(file)
    return files[0], files[1]


def make_everything(root: Path) -> Path:
    """A demo folder (as ``iqalens demo`` lays it out) with one run of every kind, one to three levels
    deep. The perceive, distill, calibrate, evaluate and label-budget runs carry typed results (their
    writers are the library's); the align run and the demo folder itself are written by hand in the
    layout from before typed results, so they go through the report's legacy detector."""
    work = root / "work"
    bench = write_perception_bench(work / "bench")
    align = make_align_run(root / "runs" / "perception" / "align", bench, work / "cache_a")
    shutil.copytree(align / "before", root / "runs" / "perception" / "perceive")  # a perceive run of its own
    data = make_leaf_data(root / "runs" / "leaf" / "teach")
    student = make_distill_run(root / "runs" / "leaf" / "distill", data)
    make_calibrate_and_evaluate_runs(student, data, root / "runs" / "leaf")
    make_budget_run(root / "runs" / "leaf" / "budget", data.manifest, data.store)
    make_score_files(root / "runs" / "leaf" / "score", data.paths[:10])
    # the folder itself is an end-to-end demo run: a container whose stages are the runs above
    start_run(root / "runs", "demo", {"levels": [1, 3, 5]}, seed=0)
    write_json(root / "runs" / "metrics.json", {"headline": {}, "stage_seconds": {"bench": 1.0}})
    return root / "runs"


_BUILT: dict[str, Path] = {}


def shared_runs(base: Path) -> Path:
    """:func:`make_everything` once per test session (the report tests and the browser test share it)."""
    key = str(base)
    if key not in _BUILT:
        _BUILT[key] = make_everything(base / "report-runs")
    return _BUILT[key]
