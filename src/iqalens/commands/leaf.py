"""The LEAF commands: ``teach``, ``distill``, ``score``, ``export``, ``calibrate`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iqalens.commands import add_pooling_argument, student_feature_settings
from iqalens.commands._hf import add_hf_arguments, hf_options
from iqalens.commands._shared import CliError
from iqalens.leaf.exporters import EXPORTERS, exporters_help
from iqalens.leaf.names import TAIL_HEADS
from iqalens.leaf.runtimes import RUNTIMES
from iqalens.leaf.scorers import scorers_help
from iqalens.leaf.teachers.registry import teachers_help

#: What an interrupted run leaves behind.
INTERRUPTED = {
    "teach": "committed judgments are kept; re-running the same command resumes",
}


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
    build = make_teacher if args.engine == "local" else _ray_teacher_builder(args)
    teacher = build(
        args.teacher,
        workers=args.workers,
        device=args.device,
        batch_size=args.batch_size,
        max_concurrency=args.concurrency,
        max_deferred_rounds=args.retry_rounds,
        manifests=[s for s in args.images if str(s).lower().endswith(".csv")],
        references=args.references,
        pair_mode=args.fr_pairs,
        **hf_options(args),
    )

    def warn(path: Path, reason: str) -> None:
        print(f"iqalens teach: skipped {path}: {reason}", file=sys.stderr)

    def warn_unanswered(item: str, problem: str) -> None:
        print(f"iqalens teach: unanswered {item}: {problem}", file=sys.stderr)

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
                on_unanswered=warn_unanswered,
            )
    finally:
        # Stop worker processes explicitly: a pool left to interpreter exit can fail noisily there.
        close = getattr(teacher, "close", None)
        if close is not None:
            close()
    rate = report.images_judged / report.seconds_images if report.seconds_images else 0.0
    print(f"{teacher.teacher_id} / {teacher.prompt_version} -> {args.output}")
    unanswered = f", {report.images_unanswered} unanswered" if report.images_unanswered else ""
    print(
        f"images: {report.images} unique, {report.images_judged} judged now ({rate:.1f}/s), "
        f"{report.images_existing} already in the store{unanswered}"
    )
    if args.pairs_per_image:
        kind = "derived from point judgments" if report.pairs_derived else "asked in both orders"
        pair_rate = report.pairs_judged / report.seconds_pairs if report.seconds_pairs else 0.0
        unanswered = f", {report.pairs_unanswered} unanswered" if report.pairs_unanswered else ""
        print(
            f"pairs: {report.pairs} sampled ({args.strategy}), {report.pairs_judged} judged now "
            f"({pair_rate:.1f}/s, {kind}), {report.pairs_existing} already in the store{unanswered}"
        )
    if report.deferred_items:
        later = report.deferred_items - len(report.unanswered)
        print(
            f"retried later: {report.deferred_items} item(s) failed the first pass and went to "
            f"{report.deferred_rounds} deferred round(s); {later} of them were answered there"
        )
    if report.unreadable:
        print(f"{len(report.unreadable)} unreadable file(s) skipped (listed above)", file=sys.stderr)
    if report.unanswered:
        print(
            f"{report.images_unanswered} image(s) and {report.pairs_unanswered} pair(s) unanswered after "
            f"{report.deferred_rounds} deferred retry round(s) (listed above; not stored); re-run the same "
            "command to ask them again",
            file=sys.stderr,
        )
    return 1 if report.unreadable or report.unanswered else 0


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
        student = StudentConfig(backbone="hf", hf_path=args.backbone[3:], **student_feature_settings(args))
    else:
        student = StudentConfig(backbone=args.backbone, **student_feature_settings(args))
    ridge = args.solver == "ridge"  # closed form on stored features: frozen backbone, no augmentation
    config = DistillConfig(
        student=student,
        seed=args.seed,
        max_steps=args.steps,
        freeze_backbone=args.freeze_backbone or ridge,
        augment=not ridge,
        solver=args.solver,
        l2=args.l2,
        tail_steps=args.tail_steps,
        tail_head=args.tail_head,
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


def _ray_teacher_builder(args: argparse.Namespace) -> Callable[..., Any]:
    """``teach --engine ray``: a builder with make_teacher's signature that starts the actors."""
    import functools

    from iqalens.leaf.ray_teach import RayTeacher

    return functools.partial(
        RayTeacher, address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor
    )


def _cmd_score(args: argparse.Namespace) -> int:
    """0: every image scored; 1: some were unreadable (each named on stderr, the others scored and
    written); 2 (raised, printed by the CLI): no inputs, or an input or model that cannot be used."""
    from iqalens.leaf.scoring import score_inputs

    def skipped(path: str, reason: str) -> None:
        print(f"iqalens score: skipped {path}: {reason}", file=sys.stderr)

    if args.engine == "ray":
        return _score_on_ray(args, skipped)
    if args.format == "parquet":
        raise CliError("--format parquet is written by --engine ray; the local engine writes csv or json")
    try:  # results stream to the file or stdout as they come: memory stays flat for any number
        run = score_inputs(
            args.paths,
            args.model,
            args.format,
            args.output or sys.stdout,
            args.batch_size,
            progress=not args.quiet,
            on_error=skipped,
            runtime=args.runtime,
            keep_results=False,
        )
    except ModuleNotFoundError as exc:  # a runtime the model needs is not installed (onnxruntime)
        raise CliError(f"cannot load the model: {exc}") from exc
    if not args.quiet:  # the provenance: which model, on which runtime, and why that one
        m = run.model
        how = f"{m.get('runtime')}" + (f" ({m['provider']})" if m.get("provider") else "")
        print(f"iqalens score: {run.count} image(s), model {m.get('name')}, runtime {how}", file=sys.stderr)
        if m.get("runtime_choice"):
            print(f"iqalens score: runtime chosen: {m['runtime_choice']}", file=sys.stderr)
    if run.failures:
        print(
            f"iqalens score: {len(run.failures)} of {run.count} image(s) could not be scored",
            file=sys.stderr,
        )
        return 1
    return 0


def _score_on_ray(args: argparse.Namespace, skipped: Callable[[str, str], None]) -> int:
    """``score --engine ray``: shards next to the output, resumable, merged at the end."""
    from iqalens.leaf.ray_engine import score_with_ray

    if args.output is None:
        raise CliError("--engine ray writes shards next to its output: give --output/-o")
    run = score_with_ray(
        args.paths,
        args.output,
        args.model,
        args.format,
        address=args.address,
        runtime=args.runtime,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        on_error=skipped,
    )
    if not args.quiet:
        m = run.model
        print(
            f"iqalens score: {run.n_images} image(s) on Ray ({run.shards_written} shard(s) written, "
            f"{run.shards_skipped} already done), model {m.get('name')}, runtime {m.get('runtime')} -> "
            f"{run.output}",
            file=sys.stderr,
        )
    if run.failures:
        print(
            f"iqalens score: {len(run.failures)} of {run.n_images} image(s) could not be scored",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from iqalens.leaf.exporters import export_model

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it")
    path = export_model(args.model, out, args.format)
    print(f"wrote {path} ({'default student' if args.model is None else args.model})")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    if args.method == "head-finetune":
        return _calibrate_finetune(args)
    if args.store or args.last_block:
        raise CliError("--store and --last-block belong to --method head-finetune")
    from iqalens.leaf.calibration.workflow import calibrate_run

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
    from iqalens.leaf.calibration.finetune import FinetuneSettings, finetune_run
    from iqalens.leaf.targets import TeacherChoiceError

    if not args.store:
        raise CliError("--method head-finetune needs --store (the teacher's judgments, the regulariser)")
    settings = FinetuneSettings(
        steps=args.steps, lr=args.lr, reg_weight=args.reg_weight, last_block=args.last_block
    )
    try:
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
    except TeacherChoiceError as exc:
        raise TeacherChoiceError(f"{exc} (choose with --teacher-id/--prompt-version)") from None
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
    from iqalens.evaluation.metrics import ci_unavailable
    from iqalens.leaf.evaluate import evaluate_run

    metrics = evaluate_run(
        args.model,
        args.manifest,
        args.output,
        split=args.split or None,
        n_boot=args.bootstrap,
        seed=args.seed,
        progress=not args.quiet,
    )
    m, unavailable = metrics["metrics"], ci_unavailable(metrics)
    ci = {} if unavailable else metrics.get("ci") or {}

    def fmt(key: str) -> str:
        lo_hi = ci.get(key)
        band = f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else ""
        value = m.get(key)
        return f"{key} {value:.3f}{band}" if isinstance(value, float) else f"{key} n/a"

    print(f"{metrics['images']} images -> {args.output}/metrics.json")
    print("  " + ", ".join(fmt(k) for k in ("srcc", "plcc", "plcc_fitted", "krcc", "rmse")))
    if unavailable:
        print(f"  CI unavailable: {unavailable}")
    else:
        level = metrics.get("ci_level", 0.95)
        print(f"  [low, high]: {level:.0%} bootstrap intervals resampling {metrics.get('resampling', '?')}")
    print(f"  MOS: {metrics['mos_note']}")
    worst = list((metrics.get("per_distortion") or {}).items())[:3]
    if worst:
        print(
            "  worst distortion types (RMSE after the fitted map; all in metrics.json): "
            + "; ".join(f"{name} {d['rmse']:.2f} (mean error {d['mean_error']:+.2f})" for name, d in worst)
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the LEAF commands, in the order ``--help`` lists them."""
    p = sub.add_parser(
        "teach",
        help="LEAF teacher: judge images and pairs into a judgments store",
        description="Run a teacher over images (folders, manifests or files) and store point-wise "
        "judgments and pair-wise preferences in a SQLite store; re-running resumes. TEACHER: "
        f"{teachers_help()}.",
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
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: the teacher runs in Ray actors (classical/fr: one per CPU; hf: --gpus-per-actor 1), "
        "judgments stored here as they come; pip install 'iqalens[ray]'",
    )
    p.add_argument("--address", help="--engine ray: the Ray cluster to join (default: a local one)")
    p.add_argument(
        "--actors", type=int, default=None, help="--engine ray: teacher actors (default: per CPU/GPU)"
    )
    p.add_argument(
        "--gpus-per-actor", type=float, default=0.0, help="--engine ray: GPUs per actor (hf teacher)"
    )
    p.add_argument(
        "--references",
        metavar="DIR",
        default=None,
        help="folder of reference images named after the manifest's reference ids (fr teacher; "
        "default: each reference's clean row in the manifest)",
    )
    p.add_argument(
        "--fr-pairs",
        choices=["derived", "direct"],
        default=None,
        help="fr teacher pairs: derived from the point judgments (default) or compared measure by measure",
    )
    p.add_argument(
        "--retry-rounds",
        type=int,
        default=None,
        help="deferred rounds re-asking failed items at the end of a run (openai teacher, default 3)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    add_hf_arguments(p)
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
    p.add_argument(
        "--solver",
        choices=("adamw", "ridge"),
        default="adamw",
        help="adamw: the training loop (default); ridge: the head in closed form on stored features of "
        "the frozen backbone (implies --freeze-backbone, no augmentation; seconds, and it ranked better "
        "than the AdamW head on the label-budget protocol, docs/leaf_fr_teacher.md)",
    )
    p.add_argument(
        "--l2",
        type=float,
        default=None,
        help="ridge penalty (default: chosen by grouped cross-validation over the train + val photos, by "
        "agreement with the teacher; give --manifest so that the folds are by photo)",
    )
    p.add_argument(
        "--tail-steps",
        type=int,
        default=0,
        help="with --solver ridge and efficientnet-lite0: then train the backbone's last resolution stage "
        "this many steps towards the teacher on cached activations, choosing the step on held-out photos, "
        "(minutes on a CPU; docs/leaf_fr_teacher.md measures it; see --tail-head; 0 = frozen backbone)",
    )
    p.add_argument(
        "--tail-head",
        choices=TAIL_HEADS,
        default=TAIL_HEADS[0],
        help="with --tail-steps: the score keeps the linear head trained with the stage (trained, the "
        "default: ranked unseen photos best in docs/leaf_fr_teacher.md) or a closed-form refit (refit)",
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
        "Unreadable files are reported and skipped; the exit status is then 1. A file whose name starts "
        "with '-' goes after '--' (iqalens score -- -x.png) or as ./-x.png.",
    )
    p.add_argument("paths", nargs="+", help="files, folders, globs or manifests (.csv)")
    p.add_argument("--model", help=scorers_help())
    p.add_argument(
        "--format", choices=["csv", "json", "parquet"], default="csv", help="parquet: --engine ray"
    )
    p.add_argument("--output", "-o", help="output file (default: standard output)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (this machine: decoding threads feeding the network) or ray (Ray Data on a cluster; "
        "needs -o, writes resumable shards next to it and merges them; pip install 'iqalens[ray]')",
    )
    p.add_argument("--address", help="--engine ray: the Ray cluster to join (default: a local one)")
    p.add_argument(
        "--shard-size", type=int, default=4096, help="--engine ray: images per shard (the unit of resumption)"
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs a student: auto (ONNX Runtime when installed, else torch; same scores to float32 "
        "rounding), onnxruntime or torch (default: auto)",
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_score)

    formats, suffixes = exporters_help()
    p = sub.add_parser("export", help=f"export a student as {formats}")
    p.add_argument("--format", choices=EXPORTERS.names(), default=EXPORTERS.names()[0])
    p.add_argument("--model", help="student run folder (default: the bundled student)")
    p.add_argument("--output", "-o", required=True, help=f"the {suffixes} file to write")
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
        help="monotone map (mode a; default auto: linear or logistic4, whichever has the "
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
    p.add_argument("--model", help=scorers_help())
    p.add_argument("--manifest", required=True, help="manifest with MOS")
    p.add_argument("--split", default="test", help="split to evaluate (default test; '' = all)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws (0 = no intervals)")
    p.add_argument("--output", "-o", required=True, help="run folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_evaluate)
