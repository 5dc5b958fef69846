"""The main job on embedded defaults: ``iqalens demo`` (what ``make demo`` runs).

Everything iqalens does, end to end, on a fresh install with no user data and no downloads:

1. **bench**: a small distortion-perception benchmark from the bundled photos (all 25 KADID-10k
   types at a few levels, 8 perception classes, proxy MOS, content-disjoint splits);
2. **perception**: the diagnostics of the pre-aligned mini model (read at the benchmark's native
   scale) before and after an alignment-constrained fine-tuning of its vision path (``iqalens
   align``: projector + the encoder after its first 5 sites, on cached maps; see
   docs/p1_reproduction.md for why);
3. **LEAF**: the offline full-reference teacher (each image against its clean reference) judges the
   benchmark (points and pairs), a student is distilled from it (the shipped default's recipe: a
   closed-form head on frozen EfficientNet-Lite0 features of a 224 crop at the native height, plus
   quality statistics), calibrated with a few proxy-MOS labels and evaluated on the test split, next
   to the same student trained on those labels alone (that draw and 4 others: 2 test photos make one
   draw's number noisy);
4. **score**: the calibrated student scores the bundled photos;
5. **report**: one self-contained HTML page of all of the above.

Why the stages are this small: the demo must finish in under 10 minutes on 2 CPU cores, so it shows
the *workflow* and its provenance, not research-grade numbers (8 photos, few training steps, proxy
labels). Every stage writes an ordinary run folder under the demo folder, so any of them can be
re-run or inspected with the stage's own command.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

from iqalens.errors import InvalidInputError
from iqalens.results import write_result
from iqalens.runs import start_run

DEFAULT_LEVELS = (1, 3, 5)

#: The stages in order, with the line printed when each starts.
STAGES: tuple[tuple[str, str], ...] = (
    ("bench", "building the perception benchmark from the bundled photos"),
    ("align", "perception diagnostics before/after fine-tuning the mini model's vision path"),
    (
        "teach",
        "LEAF teacher (full-reference: each image against its clean reference) judging images and pairs",
    ),
    ("distill", "LEAF student distilled from the teacher"),
    ("calibrate", "calibrating the student with a few proxy-MOS labels"),
    ("evaluate", "evaluating the calibrated student on the test split"),
    ("baseline", "the same student trained on the calibration's labels alone (no teacher)"),
    ("score", "scoring the bundled photos"),
    ("report", "writing the HTML report"),
)


@dataclass
class DemoConfig:
    """Sizes of each stage; the defaults fit the 10-minute budget on 2 CPU cores."""

    levels: tuple[int, ...] = DEFAULT_LEVELS
    max_photos: int | None = None  # None: all bundled photos
    seed: int = 0
    workers: int = 2
    align_steps: int = 100
    align_train_images: int = 0  # 0 = every training image of the demo benchmark
    align_resize_shorter: int = 384  # the benchmark's native height: noise is not shrunk away
    align_frozen_sites: int = 5  # stem + stages 1-4 frozen, their maps cached (docs/p1_reproduction.md)
    # The student as the shipped default is built (docs/leaf_fr_teacher.md, "Update"): head in closed
    # form (ridge) on the frozen backbone's features of a 224 crop of the native-height image, with the
    # quality statistics appended. "adamw" trains the head for distill_steps instead.
    distill_solver: str = "ridge"
    distill_steps: int = 600  # adamw only: head-only on stored backbone features
    # ridge only: the backbone's last stage trained this many steps towards the teacher before the head
    # is refitted (iqalens.leaf.tail_tune; 0 = frozen backbone)
    distill_tail_steps: int = 0
    student_resize_shorter: int = 384
    student_quality_stats: bool = True
    baseline_draws: int = 5  # label draws of the labels-only comparison (the first is the calibration's)
    pairs_per_image: int = 2
    label_budget: str = "10%"
    progress: bool = True

    def __post_init__(self) -> None:
        self.levels = tuple(int(v) for v in self.levels)
        if not self.levels or any(not 1 <= v <= 5 for v in self.levels):
            raise InvalidInputError(f"levels must be among 1..5, got {self.levels}")
        if self.max_photos is not None and self.max_photos < 3:
            raise InvalidInputError("the demo needs at least 3 photos (train, val and test contents)")
        for name in (
            "workers",
            "align_steps",
            "align_resize_shorter",
            "distill_steps",
            "student_resize_shorter",
            "baseline_draws",
        ):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.distill_solver not in ("ridge", "adamw"):  # checked before minutes of earlier stages
            raise InvalidInputError(f"distill_solver must be ridge or adamw, got {self.distill_solver!r}")
        if self.distill_tail_steps < 0:
            raise InvalidInputError(f"distill_tail_steps must be >= 0, got {self.distill_tail_steps}")
        if self.distill_tail_steps and self.distill_solver != "ridge":  # said now, not after the benchmark
            raise InvalidInputError(
                "distill_tail_steps trains from the ridge head: it needs distill_solver ridge"
            )


@dataclass
class DemoResult:
    """Where everything went, how long each stage took, and the headline numbers."""

    run_dir: Path
    report: Path
    seconds: dict[str, float] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class DemoSummary:
    """The typed result of the demo folder (its ``metrics.json``, kind ``demo``): the headline numbers
    and stage times. The stages' own results are the run folders inside it."""

    KIND: ClassVar[str] = "demo"
    VERSION: ClassVar[int] = 1

    headline: dict[str, Any]
    stage_seconds: dict[str, float]
    seconds: float


def _stage_runner(
    seconds: dict[str, float], out: TextIO, progress: bool
) -> Callable[[str, Callable[[], Any]], Any]:
    numbered = {name: (i + 1, text) for i, (name, text) in enumerate(STAGES)}

    def run(name: str, work: Callable[[], Any]) -> Any:
        index, text = numbered[name]
        if progress:
            print(f"[{index}/{len(STAGES)}] {text} ...", file=out, flush=True)
        started = time.perf_counter()
        result = work()
        seconds[name] = round(time.perf_counter() - started, 2)
        if progress:
            print(f"      done in {seconds[name]:.1f} s", file=out, flush=True)
        return result

    return run


def run_demo(
    run_dir: str | Path,
    config: DemoConfig | None = None,
    *,
    overwrite: bool = False,
    out: TextIO | None = None,
) -> DemoResult:
    """Run every stage into ``run_dir``; returns the stage times, headline numbers and report path."""
    cfg = config or DemoConfig()
    out = out or sys.stderr
    folder = Path(run_dir)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass --overwrite to replace an earlier demo")
        if not (folder / "config.json").is_file():
            raise FileExistsError(f"{folder} is not a demo run folder; refusing to delete it")
        shutil.rmtree(folder)
    start_run(folder, "demo", asdict(cfg), cfg.seed)
    seconds: dict[str, float] = {}
    stage = _stage_runner(seconds, out, cfg.progress)
    started = time.perf_counter()

    manifest = stage("bench", lambda: _bench(folder / "bench", cfg))
    align = stage("align", lambda: _align(manifest, folder / "perception", cfg))
    store = stage("teach", lambda: _teach(manifest, folder / "leaf" / "judgments.sqlite", cfg))
    stage("distill", lambda: _distill(store, manifest, folder / "leaf" / "student", cfg))
    calibrated = folder / "leaf" / "calibrated"
    stage("calibrate", lambda: _calibrate(folder / "leaf" / "student", manifest, calibrated, cfg))
    evaluation = stage(
        "evaluate", lambda: _evaluate(calibrated, manifest, folder / "leaf" / "evaluation", cfg)
    )
    baseline = stage("baseline", lambda: _baseline(manifest, calibrated, folder / "leaf", cfg))
    scores = stage("score", lambda: _score(calibrated, folder / "scores.json"))

    headline = {
        "benchmark_images": _count_rows(manifest),
        "perception": {
            "model": align.get("base_model_id") or align.get("base_model"),
            "trained": align.get("train"),
            "before": align.get("before"),
            "after": align.get("after"),
            "drift": align.get("drift"),
        },
        "leaf": {
            "teacher": _teacher_id(store),
            "labels_used": evaluation["labels_used"],
            "test_images": evaluation["images"],
            "srcc": evaluation["metrics"].get("srcc"),
            "srcc_ci95": evaluation.get("ci", {}).get("srcc"),
            "resampling": evaluation.get("resampling"),
            # why there is no interval (2 test photos are too few to resample), or None
            "ci_unavailable": evaluation.get("ci_unavailable"),
            "plcc": evaluation["metrics"].get("plcc"),
            "teacher_srcc": _teacher_srcc(store, manifest),
            # the same student (frozen backbone + linear head) trained on the same labels, no teacher
            "labels_only_srcc": baseline.get("srcc"),
            # over baseline_draws draws of as many labels (the first is the calibration's own)
            "labels_only_srcc_draws": (baseline.get("draws") or {}).get("srcc"),
            "labels_only_srcc_mean": (baseline.get("draws") or {}).get("srcc_mean"),
            "labels_only_srcc_std": (baseline.get("draws") or {}).get("srcc_std"),
            "mos": "proxy MOS of the KADID-10k (type, level) table, not human ratings",
        },
        "scored_photos": scores,
    }
    write_result(
        folder,
        DemoSummary(
            headline=headline, stage_seconds=seconds, seconds=round(time.perf_counter() - started, 2)
        ),
    )
    report = stage("report", lambda: _report(folder))
    seconds["total"] = round(time.perf_counter() - started, 2)
    write_result(folder, DemoSummary(headline=headline, stage_seconds=seconds, seconds=seconds["total"]))
    return DemoResult(folder, report, seconds, headline)


# -- stages -----------------------------------------------------------------------------------------


def _bench(out: Path, cfg: DemoConfig) -> Path:
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.samples import sample_paths

    photos = sample_paths()[: cfg.max_photos]
    spec = BenchmarkSpec(levels=cfg.levels, seed=cfg.seed)
    return build_benchmark(
        out, refs=[str(p) for p in photos], spec=spec, workers=cfg.workers, progress=cfg.progress
    )


def _align(manifest: Path, out: Path, cfg: DemoConfig) -> dict[str, Any]:
    from iqalens.align.config import AlignConfig
    from iqalens.align.mini import save_mini_at_resolution
    from iqalens.align.run import run_align

    align_cfg = AlignConfig(
        # The vision path (encoder + projector) under the drift constraint, as the perception paper
        # repairs it; weight 10 as in the grid of docs/alignment.md, where weight 1 let the encoder
        # lose its ImageNet predictions. What the full-scale experiment (docs/p1_reproduction.md)
        # taught: read the images at their native scale (noise stays visible) and train the encoder
        # after its first 5 sites on cached trunk maps, so the demo's minute buys many more steps.
        train=("vision_encoder", "projector"),
        w_constraint=10.0,
        encoder_frozen_sites=cfg.align_frozen_sites,
        max_steps=cfg.align_steps,
        batch_size=16,
        eval_every=max(1, cfg.align_steps // 5),
        checkpoint_every=max(1, cfg.align_steps // 5),
        max_train_images=cfg.align_train_images,
        seed=cfg.seed,
        device="cpu",
        progress=cfg.progress,
    )
    base = save_mini_at_resolution(out.parent / "base_model", cfg.align_resize_shorter)
    return run_align(str(base), manifest, out, align_cfg, cache_dir=out.parent / "features")


def _teach(manifest: Path, store_path: Path, cfg: DemoConfig) -> Path:
    from iqalens.leaf.store import JudgmentStore
    from iqalens.leaf.teach import collect_images, make_teacher, run_teach

    teacher = make_teacher("fr", workers=cfg.workers, manifests=[manifest])
    store_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with JudgmentStore(store_path) as store:
            run_teach(
                teacher,
                collect_images([manifest]),
                store,
                cfg.pairs_per_image,
                "stratified",
                cfg.seed,
                progress=cfg.progress,
            )
    finally:
        teacher.close()
    return store_path


def _student_config(cfg: DemoConfig) -> Any:
    from iqalens.leaf.student import StudentConfig

    return StudentConfig(
        resize_shorter=cfg.student_resize_shorter, image_size=224, quality_stats=cfg.student_quality_stats
    )


def _distill(store: Path, manifest: Path, out: Path, cfg: DemoConfig) -> dict[str, Any]:
    from iqalens.leaf.distill import DistillConfig, distill
    from iqalens.leaf.store import JudgmentStore

    with JudgmentStore(store, create=False) as js:
        group = js.status()["teachers"][0]
    config = DistillConfig(
        student=_student_config(cfg),
        seed=cfg.seed,
        solver=cfg.distill_solver,
        max_steps=cfg.distill_steps,
        tail_steps=cfg.distill_tail_steps,
        # Head-only without augmentation: each image's backbone features are computed once (and
        # shared with the labels-only baseline), so the head costs seconds on 2 cores.
        freeze_backbone=True,
        augment=False,
        feature_dir=str(out.parent / "features"),
        warmup_steps=max(1, cfg.distill_steps // 10),
        eval_every=max(1, cfg.distill_steps // 4),
        checkpoint_every=cfg.distill_steps,
        manifest=str(manifest),
        progress=cfg.progress,
        device="cpu",
    )
    return distill(store, group["teacher_id"], group["prompt_version"], out, config)


def _calibrate(student: Path, manifest: Path, out: Path, cfg: DemoConfig) -> dict[str, Any]:
    from iqalens.leaf.calibration.workflow import calibrate_run

    return calibrate_run(
        student, manifest, cfg.label_budget, out, split="train", seed=cfg.seed, progress=cfg.progress
    )


def _evaluate(model: Path, manifest: Path, out: Path, cfg: DemoConfig) -> dict[str, Any]:
    import json

    from iqalens.leaf.evaluate import evaluate_run

    metrics = evaluate_run(
        model, manifest, out, split="test", n_boot=200, seed=cfg.seed, progress=cfg.progress
    )
    calibration = json.loads((model / "metrics.json").read_text())
    return {**metrics, "labels_used": calibration.get("labels_used")}


def _baseline(manifest: Path, calibrated: Path, leaf: Path, cfg: DemoConfig) -> dict[str, Any]:
    """The same student on the calibration's labels alone, and on :attr:`DemoConfig.baseline_draws`
    other draws of as many labels from the same pool: with 2 test photos one draw's number is noise
    (measured: 0.25-0.50 over 5 draws), so the headline gives the spread too."""
    import json

    import numpy as np

    from iqalens.datasets.manifest import read_manifest
    from iqalens.leaf.baseline import labels_only_baseline
    from iqalens.leaf.calibration.budgets import draw_budget
    from iqalens.leaf.evaluate import rows_with_mos
    from iqalens.leaf.head import HeadConfig

    used = json.loads((calibrated / "metrics.json").read_text())["used_paths"]
    if len(used) < 2:
        return {}
    # The same student features and the same kind of head as the LEAF student (ridge: its penalty by
    # grouped cross-validation on these labels), so the only difference is the teacher.
    head = HeadConfig(solver="ridge", l2=1.0) if cfg.distill_solver == "ridge" else None

    def arm(paths: list[str]) -> dict[str, Any]:
        return labels_only_baseline(
            manifest,
            paths,
            leaf / "features",
            student_config=_student_config(cfg),
            head=head,
            seed=cfg.seed,
            progress=cfg.progress,
        )

    result = arm(used)
    table, _ = read_manifest(manifest)
    pool = [r.path for r in rows_with_mos(table, "train").rows]
    draws = [result["srcc"]]
    for extra in range(1, cfg.baseline_draws):
        picked = draw_budget(len(pool), cfg.label_budget, seed=cfg.seed + extra)
        draws.append(arm([pool[i] for i in picked])["srcc"])
    finite = np.array([d for d in draws if d is not None and np.isfinite(d)])
    result["draws"] = {
        "seeds": [cfg.seed + i for i in range(cfg.baseline_draws)],
        # undefined (constant predictions) as None: JSON has no NaN
        "srcc": [float(d) if d is not None and np.isfinite(d) else None for d in draws],
        "srcc_mean": float(finite.mean()) if finite.size else None,
        "srcc_std": float(finite.std(ddof=1)) if finite.size > 1 else None,
    }
    return result


def _teacher_id(store: Path) -> str:
    from iqalens.leaf.store import JudgmentStore

    with JudgmentStore(store, create=False) as js:
        return str(js.status()["teachers"][0]["teacher_id"])


def _teacher_srcc(store: Path, manifest: Path) -> float | None:
    """SRCC of the teacher's expected score against the MOS on the test split: the reference the
    student's number should be read against (a student distilled from it rarely ranks better)."""
    from iqalens.datasets.manifest import read_manifest
    from iqalens.evaluation.metrics import srcc
    from iqalens.leaf.store import JudgmentStore

    bench, _ = read_manifest(manifest)
    mos = {
        str(bench.resolve(r)): r.mos
        for r in bench.rows
        if r.split == "test" and r.mos is not None and math.isfinite(r.mos)
    }
    with JudgmentStore(store, create=False) as js:
        group = js.status()["teachers"][0]
        points = js.points(group["teacher_id"], group["prompt_version"])
    pairs = [
        (p.judgment.expected, mos[key])
        for p in points
        if p.path is not None and (key := str(Path(p.path).resolve())) in mos
    ]
    if len(pairs) < 3:
        return None
    x, y = zip(*pairs, strict=True)
    return srcc(x, y)  # the same SRCC as the student's evaluation


def _ci(interval: list[float] | None, resampling: str | None, unavailable: str | None = None) -> str:
    if unavailable:  # too few test photos to resample: say so rather than print numbers
        return f" (95% CI unavailable: {unavailable})"
    if not interval or any(v is None for v in interval):  # undefined (e.g. constant predictions)
        return ""
    over = f", bootstrap resampling {resampling}" if resampling else ""
    return f" (95% CI {interval[0]:.2f} .. {interval[1]:.2f}{over})"


def _score(model: Path, out: Path) -> dict[str, float]:
    """Score the bundled photos into ``out`` (JSON, which names the model and its scale)."""
    import json

    from iqalens.leaf.scoring import score_inputs
    from iqalens.samples import sample_paths

    run = score_inputs([str(p) for p in sample_paths()], model, "json", out, progress=False)
    if run.failures:
        failed = "; ".join(f"{r.path}: {r.error}" for r in run.failures)
        raise RuntimeError(f"scoring the bundled photos failed: {failed}")
    results = json.loads(out.read_text())["results"]
    return {Path(r["path"]).name: round(float(r["score"]), 3) for r in results}


def _report(folder: Path) -> Path:
    from iqalens.report.build import write_report

    return write_report([folder], folder / "report.html", title="iqalens demo", overwrite=True)


def _count_rows(manifest: Path) -> int:
    from iqalens.datasets.manifest import read_manifest

    table, _ = read_manifest(manifest)
    return len(table.rows)


# -- summary ----------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _draws(leaf: dict[str, Any]) -> str:
    draws = leaf.get("labels_only_srcc_draws") or []
    if len(draws) < 2 or leaf.get("labels_only_srcc_std") is None:
        return ""
    return (
        f" (over {len(draws)} draws of {leaf['labels_used']} labels: "
        f"{_num(leaf.get('labels_only_srcc_mean'))} +- {_num(leaf.get('labels_only_srcc_std'))})"
    )


def format_summary(result: DemoResult) -> str:
    """The lines printed at the end: where the report is, and the headline numbers with their provenance."""
    h = result.headline
    p, leaf = h["perception"], h["leaf"]
    before, after = p.get("before") or {}, p.get("after") or {}
    drift = p.get("drift") or {}
    lines = [
        f"Demo finished in {result.seconds.get('total', 0.0):.0f} s -> {result.run_dir}",
        f"Report: {result.report}",
        f"Benchmark: {h['benchmark_images']} images of the bundled photos (25 KADID-10k types, 8 classes).",
        f"Perception ({p['model']} model, vision path fine-tuned: {', '.join(p.get('trained') or [])}), "
        "test split:",
        f"  forced-choice accuracy {_num(before.get('forced_choice_accuracy'))} -> "
        f"{_num(after.get('forced_choice_accuracy'))} (chance 0.125); "
        f"similarity to the true class word {_num(before.get('mean_similarity_true'))} -> "
        f"{_num(after.get('mean_similarity_true'))}",
    ]
    if drift:
        lines.append(
            "  what the constraint preserved: ImageNet top-1 agreement on clean photos "
            f"{_num(drift.get('imagenet_top1_agreement'))}"
        )
    lines += [
        f"LEAF ({leaf['teacher']} teacher -> EfficientNet-Lite0 student, {leaf['labels_used']} labels), "
        f"{leaf['test_images']} test images:",
        f"  SRCC {_num(leaf['srcc'])}"
        f"{_ci(leaf.get('srcc_ci95'), leaf.get('resampling'), leaf.get('ci_unavailable'))}, "
        f"PLCC {_num(leaf['plcc'])} against {leaf['mos']}; the teacher itself on the same images: "
        f"SRCC {_num(leaf.get('teacher_srcc'))}; the same student trained on the "
        f"{leaf['labels_used']} labels alone: SRCC {_num(leaf.get('labels_only_srcc'))}" + _draws(leaf),
        "Scores of the bundled photos (proxy-MOS scale 1-5): "
        + ", ".join(f"{k} {v:.2f}" for k, v in h["scored_photos"].items()),
    ]
    return "\n".join(lines)
