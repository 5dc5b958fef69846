"""Label-budget protocol on a pristine-photo benchmark: LEAF vs labels-only; writes docs/label_budget.md.

Steps (offline; the shared photos are read, never copied):

1. Draw ``--refs`` reference photos (seeded) from ``../shared/data/pristine/`` and build the synthetic
   benchmark (all 25 KADID types x 5 levels + the clean image each, ``--size``) with a content-disjoint
   train/test split by reference (75% / 0% / 25%). Labels: the KADID-10k **proxy MOS**.
2. Label every image with the ``--teacher`` (``classical``: NIQE + BRISQUE; ``fr``: the full-reference
   teacher, which compares each image with its clean reference) via ``run_teach``
   into a judgments store, with ``--pairs`` derived pairs per image (stratified sampling).
3. Run :func:`iqalens.leaf.label_budget.run_label_budget` (cached frozen EfficientNet-Lite0 features, head
   training only, head l2 chosen per seed without labels) for budgets 0, 1, 5, 10, 30, 100% and
   ``--seeds`` seeds; write the report and its curve (``docs/label_budget.png``).

``--pooling multiscale`` uses the student's multi-scale backbone feature (mean and std of earlier
stages added, ``StudentConfig.pooling``) instead of the last map's mean. Each pooling has its own run
folder and feature cache in ``--work`` (``run`` for ``last``, ``run-multiscale``) and its own default
report (``docs/label_budget.md``, ``docs/label_budget_multiscale.md``), so the settings never
overwrite each other; the benchmark images and the teacher's store are shared.

The same protocol is one CLI command on any manifest and store:
``iqalens budget --store STORE --manifest MANIFEST -o RUN``.

Everything is resumable: the build, the store and the feature cache are reused by a re-run into the same
``--work`` folder. Usage:
``python benchmarks/label_budget.py [--refs 24] [--seeds 3] [--work DIR] [--pooling multiscale]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.datasets.manifest import read_manifest, write_manifest
from iqalens.images import iter_image_files
from iqalens.leaf.head import HeadConfig
from iqalens.leaf.label_budget import (
    ARM_TITLES,
    DEFAULT_L2_CANDIDATES,
    RIDGE_L2_CANDIDATES,
    BudgetConfig,
    run_label_budget,
    table_markdown,
)
from iqalens.leaf.label_budget.plot import save_budget_curve
from iqalens.leaf.quality_stats import statistic_names
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.student import POOLINGS, StudentConfig
from iqalens.leaf.teach import TeachReport, run_teach
from iqalens.leaf.teachers.classical import ClassicalTeacher
from iqalens.leaf.teachers.fullref import FRTeacher
from iqalens.runs import machine_description, package_versions

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def pristine_refs(n: int, seed: int) -> list[Path]:
    """``n`` photos drawn with ``seed`` from the pristine folders (sorted file list, no replacement)."""
    files = sorted(iter_image_files(SHARED / "pristine"))
    rng = np.random.default_rng(seed)
    return sorted(files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False))


def _references(manifest_path: Path) -> list[str]:
    return list(dict.fromkeys(r.reference for r in read_manifest(manifest_path)[0].rows))


def first_photos(manifest_path: Path, n: int) -> Path:
    """A manifest of the first ``n`` reference photos' rows (same splits), next to the full one."""
    manifest, _ = read_manifest(manifest_path)
    keep = set(_references(manifest_path)[:n])
    subset = manifest.with_rows(r for r in manifest.rows if r.reference in keep)
    return write_manifest(subset, manifest_path.with_name(f"manifest-first{n}.csv"))


def run_folder(
    work: Path,
    pooling: str,
    teacher: str = "classical",
    image_size: int = 224,
    resize_shorter: int | None = None,
    quality_stats: bool = False,
    solver: str = "adamw",
    test_grid: int = 1,
) -> Path:
    """The protocol's run folder (and, inside it, the feature cache) of one setting.

    ``last`` with the classical teacher at 224 and the AdamW head keeps the original ``run`` so that
    existing work folders are reused as they are.
    """
    name = "run" if pooling == "last" else f"run-{pooling}"
    if teacher != "classical":
        name += f"-{teacher}"
    if image_size != 224:
        name += f"-{image_size}px"
    if resize_shorter not in (None, image_size):
        name += f"-from{resize_shorter}"
    if test_grid != 1:
        name += f"-grid{test_grid}"
    if quality_stats:
        name += "-qs"
    if solver != "adamw":
        name += f"-{solver}"
    return work / name


def default_doc(pooling: str) -> Path:
    """Where the report of one pooling setting goes unless ``--doc`` says otherwise."""
    return ROOT / "docs" / ("label_budget.md" if pooling == "last" else f"label_budget_{pooling}.md")


def feature_description(pooling: str, dim: int) -> str:
    """The report's words for the cached feature of one pooling setting."""
    if pooling == "last":
        return f"global-average-pooled {dim}-d feature"
    return (
        f"{dim}-d multi-scale feature (spatial mean and standard deviation of the ends of the 112, 56, "
        "28 and 14 pixel stages, plus the mean of the 1280-channel last map; `StudentConfig.pooling = "
        "'multiscale'`)"
    )


TEACHER_WORDS = {
    "classical": "The teacher is the weak classical NIQE + BRISQUE teacher, not a vision-language model.",
    "fr": "The teacher is the full-reference teacher (MS-SSIM, GMSD, VSI, VIF, CIEDE2000 against each "
    "image's clean reference): a reference-aware stand-in that exists only where references exist, not a "
    "vision-language model.",
}
TEACHER_NOTES = {
    "classical": "It is weak on this data (SRCC about 0.44 against the proxy MOS, blind to colour/brightness/"
    "contrast types; see `docs/classical_teacher.md`), so the LEAF arms here measure what a weak teacher "
    "is worth. ",
    "fr": "It sees every type, since it compares with the reference (see `docs/fr_teacher.md`); the student "
    "does not: it scores the image alone. ",
}


def _fmt_srcc(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _fmt_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=24, help="pristine references to draw (seeded)")
    parser.add_argument(
        "--first-photos",
        type=int,
        default=0,
        help="run the protocol on the first N photos of the built benchmark only (manifest order; their "
        "splits unchanged), e.g. when the features of the rest are not computed yet",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeded repetitions of every budget")
    parser.add_argument("--size", default="512x384", help="benchmark image size WxH")
    parser.add_argument("--pairs", type=int, default=4, help="teacher pairs per image")
    parser.add_argument("--work", default="/tmp/iqalens-label-budget", help="work folder (resumable)")
    parser.add_argument(
        "--doc", default=None, help="report path (default docs/label_budget.md, or label_budget_POOLING.md)"
    )
    parser.add_argument(
        "--pooling", choices=POOLINGS, default="last", help="backbone feature of the student (default last)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--teacher", choices=("classical", "fr"), default="classical", help="teacher (default classical)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="student input: shorter side resized to this, centre crop of this side (default 224)",
    )
    parser.add_argument(
        "--resize-shorter",
        type=int,
        default=None,
        help="shorter side before the crop (default: --image-size; 384 keeps the 512x384 benchmark at its "
        "native scale)",
    )
    parser.add_argument(
        "--test-grid",
        type=int,
        default=1,
        help="average the feature over a g x g grid of crops covering the image (default 1: the centre "
        "crop only; 2 covers a 512x384 image with four 224 crops)",
    )
    parser.add_argument(
        "--quality-stats",
        action="store_true",
        help="append the quality statistics to the backbone feature (StudentConfig.quality_stats)",
    )
    parser.add_argument(
        "--solver",
        choices=("ridge", "adamw"),
        default="ridge",
        help="head fits: closed-form ridge (default) or the step-wise AdamW head of the earlier runs",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    work = Path(args.work)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    refs = pristine_refs(args.refs, seed=0)
    t0 = time.perf_counter()
    spec = BenchmarkSpec(size=_fmt_size(args.size), split_fractions=(0.75, 0.0, 0.25), seed=0)
    manifest_path = build_benchmark(work / "bench", refs, spec, workers=args.workers)
    if args.first_photos:
        manifest_path = first_photos(manifest_path, args.first_photos)
        refs = [r for r in refs if any(r.stem == ref for ref in _references(manifest_path))]
    timings["build_s"] = time.perf_counter() - t0
    manifest, _ = read_manifest(manifest_path)

    t0 = time.perf_counter()
    teacher: ClassicalTeacher | FRTeacher = (
        FRTeacher(manifests=[manifest_path], workers=args.workers)
        if args.teacher == "fr"
        else ClassicalTeacher(workers=args.workers)
    )
    with JudgmentStore(work / "judgments.sqlite") as store:
        report = run_teach(
            teacher,
            [manifest.resolve(r) for r in manifest.rows],
            store,
            pairs_per_image=args.pairs,
            strategy="stratified",
            seed=0,
            batch_size=64,
        )
    timings["teach_s"] = time.perf_counter() - t0

    head = (
        HeadConfig(solver="ridge", l2=1.0, l2_candidates=RIDGE_L2_CANDIDATES)
        if args.solver == "ridge"
        else HeadConfig(l2_candidates=DEFAULT_L2_CANDIDATES)
    )
    config = BudgetConfig(seeds=tuple(range(args.seeds)), head=head)
    resize = args.resize_shorter or args.image_size
    teacher.close()
    run = run_folder(
        work,
        args.pooling,
        args.teacher,
        args.image_size,
        resize,
        args.quality_stats,
        args.solver,
        args.test_grid,
    )
    feature_dir = run / "features"
    cached_before = len(list(feature_dir.glob("*.npy"))) if feature_dir.is_dir() else 0
    result = run_label_budget(
        manifest_path,
        work / "judgments.sqlite",
        teacher.teacher_id,
        teacher.prompt_version,
        run,
        config,
        student_config=StudentConfig(
            pooling=args.pooling,
            image_size=args.image_size,
            resize_shorter=resize,
            quality_stats=args.quality_stats,
            test_grid=args.test_grid,
        ),
    )
    result["features_reused"] = cached_before
    result["features_computed"] = len(list(feature_dir.glob("*.npy"))) - cached_before
    timings["features_s"] = result["timing"]["features_s"]
    timings["protocol_s"] = result["timing"]["protocol_s"]
    timings["total_s"] = time.perf_counter() - started
    doc = Path(args.doc) if args.doc else default_doc(args.pooling)
    if args.teacher != "classical" and not args.doc:
        doc = doc.with_name(f"{doc.stem}_{args.teacher}.md")
    save_budget_curve(
        result["summary"],
        doc.parent,
        title=f"SRCC vs label budget, {args.pooling} pooling\n"
        f"(proxy MOS, {args.teacher} teacher, {args.image_size}px; mean ± std over {args.seeds} seeds)",
        stem=doc.stem,
        formats=("png",),
    )
    write_doc(doc, args, refs, manifest_path, report, teacher, result, config, timings, run)
    print(table_markdown(result["summary"]))
    print(json.dumps({k: round(v, 1) for k, v in timings.items()}))
    return 0


def _ridge_protocol(h: HeadConfig, config: BudgetConfig, l2_choice: str) -> list[str]:
    """The protocol's head bullets for the closed-form ridge solver (``iqalens.leaf.ridge_head``)."""
    grid = ", ".join(f"{v:g}" for v in h.l2_candidates)
    return [
        "- Head (all arms): `Linear(d, 6)` (score + 5 level logits, the `Student` head layout) fitted in "
        "**closed form** (`HeadConfig(solver='ridge')`, `iqalens.leaf.ridge_head`): weighted ridge "
        f"regression, mean loss + `l2 * |W|^2`, bias unpenalised. Chosen: {l2_choice}. No step, "
        "learning rate or batch: the distilled head does not depend on the seed (its spread is 0); seeds "
        "change the labelled subsets.",
        f"- {ARM_TITLES['leaf']}: the score regresses the teacher's expected score and the logits its "
        "centred log level probabilities on the unlabelled train images, weighted by its reliability; "
        f"**l2 chosen without labels** among [{grid}] (4 photo folds of the train pool, held-out "
        "agreement with the teacher, `label_budget.select_l2`); then "
        f"`calibration.fit(..., '{config.calibration}')` on the budget's labels (a monotone map: the "
        "ranking, hence SRCC, is the label-free one).",
        f"- {ARM_TITLES['leaf_ft']} (calibration mode (b)): the distilled score mapped linearly onto the "
        "labels' scale (least squares on the labels, slope >= 0), then a ridge **centred on that prior** "
        "(`ridge_finetune`): few labels leave the teacher's head nearly intact, many override it.",
        f"- {ARM_TITLES['labels_only']}: ridge regression of `(MOS - 1) / 4` on the labelled images alone.",
        "- Both label arms choose their penalty the same way: grouped 4-fold cross-validation **on the "
        "budget's labels only** (folds by photo, SRCC of the pooled out-of-fold predictions, "
        "`ridge_head.choose_l2_by_labels`); below 10 labels or 3 photos they keep the label-free choice.",
    ]


def _adamw_protocol(h: HeadConfig, config: BudgetConfig, d: dict, l2_choice: str) -> list[str]:
    """The protocol's head bullets for the step-wise AdamW head (the earlier protocol)."""
    return [
        f"- Head (all arms): dropout {h.dropout} + `Linear({d['feature_dim']}, 6)` (score + 5 level "
        f"logits, the `Student` head layout), AdamW lr {h.lr}, weight decay {h.weight_decay}, plus an "
        "explicit penalty `l2 * sum(W^2)` in every training loss. **l2 is chosen per seed without labels** "
        f"(`label_budget.select_l2`) among {list(h.l2_candidates)}: the train photos are dealt into 4 folds, "
        "a head is distilled on 3 with each candidate, and the candidate whose scores rank the held-out "
        "fold's images most like the teacher's expected score (mean SRCC over the folds) wins; every arm "
        "of that seed (labels-only included: a shared hyperparameter) then trains with it. "
        f"Chosen: {l2_choice}.",
        f"- {ARM_TITLES['leaf']}: {h.distill_steps} steps of the joint loss (KL w {h.loss.w_kl}, score "
        f"regression w {h.loss.w_reg}, {h.loss.pair_loss} pair loss w {h.loss.w_pair}, tau "
        f"{h.loss.pair_temperature}, reliability-weighted) on the teacher's judgments of the unlabelled "
        f"train images (batches of {h.point_batch} points + {h.pair_batch} pairs), then "
        f"`calibration.fit(..., '{config.calibration}')` on the budget's labels (linear when fewer than its "
        "minimum, or when the fitted logistic is a near-step that ties most of the pool's scores); "
        "budget 0: `label_free` (teacher scale [0, 1] mapped linearly onto 1..5). A monotone map "
        "cannot change the ranking, so its SRCC changes with the budget only where the fitted logistic "
        "saturates and creates ties.",
        f"- {ARM_TITLES['leaf_ft']} (calibration mode (b)): the distilled head fine-tuned {h.finetune_steps} "
        f"steps (lr {h.finetune_lr}) on `(s - (MOS - 1) / 4)^2` of the labelled images plus "
        f"{h.finetune_lambda} x the distillation loss on the teacher's judgments (KL w "
        f"{h.finetune_reg.w_kl}, score regression w {h.finetune_reg.w_reg}, pairs w "
        f"{h.finetune_reg.w_pair}) as a regulariser; prediction `1 + 4 s`. Budget 0: identical to the "
        "label-free row of (a).",
        f"- {ARM_TITLES['labels_only']}: the same head from the same initialisation, {h.label_steps} "
        f"steps of `(s - (MOS - 1) / 4)^2` on the labelled images alone (batches of up to {h.label_batch}); "
        "prediction `1 + 4 s`. Hyperparameters are shared with the LEAF arms, not tuned per arm.",
    ]


def write_doc(
    path: Path,
    args: argparse.Namespace,
    refs: list[Path],
    manifest_path: Path,
    report: TeachReport,
    teacher: ClassicalTeacher | FRTeacher,
    result: dict,
    config: BudgetConfig,
    timings: dict[str, float],
    run: Path,
) -> None:
    """The report: table, protocol, data, teacher, machine, timings and the command."""
    d = result["data"]
    prov = read_manifest(manifest_path)[0].provenance
    h = config.head
    origin: dict[str, int] = {}
    for r in refs:
        origin[r.parent.name] = origin.get(r.parent.name, 0) + 1
    versions = package_versions()
    machine = machine_description()
    budgets = ", ".join(str(b) for b in config.budgets)
    sel = result.get("l2_selection", {})
    l2_choice = ", ".join(f"seed {k}: {v['l2']:g}" for k, v in sel.items()) or "none (fixed l2)"
    cmd = "python benchmarks/label_budget.py" + ("" if sys.argv[1:] == [] else " " + " ".join(sys.argv[1:]))
    lines = [
        "# Label-budget protocol: LEAF vs labels-only (proxy MOS, CPU protocol"
        + ("" if args.pooling == "last" else f", {args.pooling} pooling")
        + ")",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC by `{cmd}` "
        "(library entry point `iqalens.leaf.label_budget.run_label_budget`); "
        f"total {timings['total_s']:.0f} s.",
        "",
        "**Labels are the KADID-10k proxy MOS** (mean DMOS of the image's (type, level) cell over KADID's 81 "
        "references, on the 1..5 scale), not human ratings of these images. "
        + TEACHER_WORDS[args.teacher]
        + " Both arms train only a linear head "
        "on *frozen* EfficientNet-Lite0 features: a CPU-budget protocol, not the LEAF paper's full "
        "fine-tuning of the student.",
        "",
        f"## Results (test split, mean ± std over {len(config.seeds)} seeds)",
        "",
        "SRCC, PLCC and RMSE (proxy-MOS units) of the predicted MOS on the test split, raw (no further "
        "fitting). `undefined`: labels-only is not trained below 2 labels (budget 0 gives none).",
        "",
        table_markdown(result["summary"], ("srcc", "plcc", "rmse")),
        f"![SRCC against the label budget, mean ± std over seeds per arm]({path.stem}.png)",
        "",
        "Per-seed rows: `rows.csv`, summary: `summary.csv`, `results.json` and the curve "
        f"(`budget_curve.png`/`.svg`) in the run folder (`{run}`). The same protocol from the "
        "command line: `iqalens budget --store STORE --manifest MANIFEST -o RUN`.",
        "",
        "## Protocol",
        "",
        f"- Budgets {budgets} of the train split's images, drawn per seed by "
        "`calibration.draw_budget(n_train, budget, seed)` (uniform, not stratified); the same labelled "
        "subset serves every arm of that (budget, seed).",
        f"- Seeds {list(config.seeds)}: each seed sets the head initialisation (shared by the arms), the "
        "batch order, dropout masks and the labelled subset.",
        f"- Features: EfficientNet-Lite0 (ImageNet weights, frozen) "
        f"{feature_description(args.pooling, d['feature_dim'])} of the student's "
        + (
            "centre crop"
            if args.test_grid == 1
            else f"{args.test_grid}x{args.test_grid} grid of crops (averaged)"
        )
        + f" (shorter side resized to {args.resize_shorter or args.image_size}, "
        f"{args.image_size} crop, TF-Lite normalisation)"
        + (
            f", **plus the {len(statistic_names())} quality statistics** of the same crop "
            "(`StudentConfig.quality_stats`, `iqalens.leaf.quality_stats`: tone, colour, MSCN moments, "
            "local contrast, gradients, blockiness and their squares)"
            if args.quality_stats
            else ""
        )
        + ", computed once per image and cached as "
        "`features/<sha256>.npy`; standardised with the train split's mean/std (no labels involved).",
        *(
            _ridge_protocol(h, config, l2_choice)
            if h.solver == "ridge"
            else _adamw_protocol(h, config, d, l2_choice)
        ),
        "",
        "## Data",
        "",
        f"- {len(refs)} reference photos drawn with seed 0 from `../shared/data/pristine/` ("
        + ", ".join(f"{v} from {k}" for k, v in sorted(origin.items()))
        + f"); benchmark built by `build_benchmark` at {args.size} (all 25 KADID types x 5 levels + the "
        f"clean image each): `{manifest_path}`.",
        f"- Content-disjoint split by reference (seed 0): train {d['train_images']} images of "
        f"{d['train_groups']} photos, test {d['test_images']} images of {d['test_groups']} photos; no val "
        "split. Nothing was subsampled: every image of every drawn reference is used.",
        f"- Teacher judgments on the train split: {d['teacher_points_train']} points, "
        f"{d['teacher_pairs_train']} pairs (the teacher judges test images too, but they are never used "
        "for training).",
        "",
        "## Teacher",
        "",
        f"`{type(teacher).__name__}` (`{teacher.teacher_id}`, mapping `{teacher.prompt_version}`), run with "
        f"`run_teach(..., pairs_per_image={args.pairs}, strategy='stratified', seed=0)`; its pairs are "
        "derived from the two point judgments (Thurstone). "
        + TEACHER_NOTES[args.teacher]
        + f"Its own expected score reaches SRCC {_fmt_srcc(d.get('teacher_srcc_test'))} against the proxy "
        f"MOS on this test split ({d.get('teacher_judged_test')} judged images): what a student that "
        "reproduced its ranking exactly would reach without labels.",
        "",
        "## Machine and time",
        "",
        f"- {machine['platform']}, {machine['cpu_count']} logical CPUs; torch threads "
        f"{torch.get_num_threads()}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"- Wall time: build {timings['build_s']:.0f} s, teacher {timings['teach_s']:.0f} s, features "
        f"{timings['features_s']:.0f} s, protocol (all trainings and evaluations) "
        f"{timings['protocol_s']:.0f} s; total {timings['total_s']:.0f} s. This invocation wrote "
        f"{prov.get('images_written')} and reused {prov.get('images_reused')} benchmark images, judged "
        f"{report.images_judged} images (found {report.images_existing} already in the store) and computed "
        f"{result['features_computed']} features ({result['features_reused']} cached): a re-run reuses the "
        "build, the store and the feature cache, so only a fresh work folder times every stage.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
