"""Train the default student shipped in ``src/iqalens/data/default_student/`` (iqalens.leaf.default_model).

Steps: build a benchmark from the training photos (default: every photo of ../shared/data/pristine) ->
label it with the teacher (default ``fr``, the full-reference teacher; ``--teacher classical`` for
NIQE + BRISQUE) through run_teach into a JudgmentStore -> cache frozen EfficientNet-Lite0 features ->
fit only the linear head on the teacher's point judgments (closed-form ridge) -> calibrate to the KADID
proxy MOS (logistic4, clipped to [1, 5]) -> measure SRCC on a content-disjoint benchmark (default: the 8
bundled photos, which the student never sees) -> write the head, the config (with this training
record) and the calibration.

    .venv/bin/python scripts/train_default_student.py --work /tmp/fr

Re-running reuses the built benchmarks, the judgments store and the feature cache in ``--work`` (the
label-budget protocol's work folder of ``benchmarks/label_budget.py --refs 86`` has the same layout).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.datasets.manifest import read_manifest
from iqalens.evaluation.metrics import plcc, rmse, srcc
from iqalens.files import content_hash
from iqalens.images import iter_image_files
from iqalens.leaf.calibration import fit, save_calibrator
from iqalens.leaf.default_model import DEFAULT_NAME, HEAD_FILE, TAIL_FILE, load_default_scorer
from iqalens.leaf.features import cache_features
from iqalens.leaf.label_budget import RIDGE_L2_CANDIDATES
from iqalens.leaf.names import TAIL_HEADS
from iqalens.leaf.ridge_head import fold_standardisation, ridge_distill, ridge_distill_path, standardise
from iqalens.leaf.scoring import CALIBRATION_FILE, StudentScorer, score_paths
from iqalens.leaf.store import JudgmentStore
from iqalens.leaf.student import CONFIG_FILE, FORMAT_VERSION, Student, StudentConfig
from iqalens.leaf.tail_tune import (
    LR_SCHEDULES,
    StudentTail,
    TailTuneConfig,
    TunedHead,
    cache_trunk,
    tail_features,
    tune_tail,
)
from iqalens.leaf.targets import TeacherTargets
from iqalens.leaf.teach import run_teach
from iqalens.leaf.teachers.classical import ClassicalTeacher
from iqalens.leaf.teachers.fullref import FRTeacher
from iqalens.runs import machine_description, package_versions, write_json
from iqalens.samples import sample_paths

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/iqalens_default_student"))
    p.add_argument("--out", type=Path, default=REPO / "src/iqalens/data/default_student")
    p.add_argument("--train-refs", type=Path, default=REPO.parent / "shared/data/pristine")
    p.add_argument("--teacher", choices=["fr", "classical"], default="fr")
    p.add_argument("--size", default="512x384", help="benchmark image size WxH")
    p.add_argument(
        "--pooling", choices=["last", "multiscale"], default="multiscale", help="backbone feature pooling"
    )
    p.add_argument(
        "--quality-stats",
        action="store_true",
        help="append the quality statistics (StudentConfig.quality_stats)",
    )
    p.add_argument("--resize-shorter", type=int, default=224, help="shorter side before the crop")
    p.add_argument("--image-size", type=int, default=224, help="side of the centre crop")
    p.add_argument(
        "--tail-steps",
        type=int,
        default=0,
        help="train the backbone's last stage this many steps towards the teacher before the head "
        "(iqalens.leaf.tail_tune; 0 = frozen backbone)",
    )
    p.add_argument("--tail-lr", type=float, default=3e-4, help="Adam learning rate of the last stage")
    p.add_argument(
        "--tail-schedule",
        choices=LR_SCHEDULES,
        default="cosine",
        help="learning-rate schedule of the last stage (cosine: decays to 0 at the last step)",
    )
    p.add_argument(
        "--tail-head",
        choices=TAIL_HEADS,
        default="refit",
        help="with --tail-steps: the score keeps the closed-form refit of step 4 (refit, what the shipped "
        "default was trained with) or the linear head trained with the stage (trained); the other one is "
        "scored on the evaluation photos too",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def teacher_labels(
    manifest_path: Path, teacher_name: str, workers: int, store_path: Path
) -> tuple[list[Path], np.ndarray, dict]:
    """Judge the benchmark with the teacher; rows' paths, proxy MOS and judgments by hash."""
    manifest, _ = read_manifest(manifest_path)
    paths = [manifest.resolve(r) for r in manifest.rows]
    mos = np.array([r.mos for r in manifest.rows])
    teacher: ClassicalTeacher | FRTeacher = (
        FRTeacher(manifests=[manifest_path], workers=workers)
        if teacher_name == "fr"
        else ClassicalTeacher(workers=workers)
    )
    try:
        with JudgmentStore(store_path) as store:
            report = run_teach(teacher, paths, store, progress=True, batch_size=64)
            judged = {
                rec.hash: rec.judgment for rec in store.points(teacher.teacher_id, teacher.prompt_version)
            }
    finally:
        teacher.close()
    print(f"  teacher: {report.images_judged} judged, {report.images_existing} already in the store")
    return paths, mos, {"judged": judged, "teacher": teacher, "manifest": manifest}


def tune_last_stage(
    student: Student,
    paths: list[Path],
    hashes: list[str],
    expected: np.ndarray,
    rel: np.ndarray,
    refs: np.ndarray,
    args: argparse.Namespace,
    name: str,
) -> tuple[np.ndarray, dict[str, Any], TunedHead]:
    """Train ``student``'s last stage towards the teacher (in place); its features afterwards, a
    record and the linear head trained with the stage.

    The step is chosen on 20% of the training photos held out from the tuning (teacher agreement, no
    label read); the tuning starts from the ridge head at penalty 1, the label-budget protocol's.
    """
    print(f"  training the last backbone stage {args.tail_steps} steps (trunk outputs cached once)")
    trunk = cache_trunk(student, paths, hashes, args.work / name / "trunk")
    tail_config = TailTuneConfig(
        steps=args.tail_steps, lr=args.tail_lr, schedule=args.tail_schedule, eval_every=100, seed=args.seed
    )
    record = tune_tail(student, trunk, expected, rel, refs, l2=1.0, config=tail_config, progress=True)
    trained_head = record.pop("head")
    curve = ", ".join(f"{c['step']}: {c['held_out_srcc_vs_teacher']:.3f}" for c in record["curve"])
    print(f"  held-out agreement with the teacher by step: {curve}; kept step {record['chosen_step']}")
    tail = StudentTail(student)
    with torch.no_grad():  # shipped in float16: measure what is shipped
        for tensor in tail.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    features = trunk.features(tail_features(tail, trunk.maps)).astype(np.float32)
    return features, record, trained_head


def _other_head_srcc(
    student: Student,
    score_head: tuple[torch.Tensor, float],
    train_features: np.ndarray,
    mos: np.ndarray,
    e_paths: list[Path],
    e_mos: np.ndarray,
) -> float:
    """SRCC against the proxy MOS of the evaluation photos of ``student`` with another score head
    (calibrated like the kept one, on the training benchmark), for the record; ``student`` is left
    as it was."""
    import copy

    other = copy.deepcopy(student)
    with torch.no_grad():
        other.head.weight[0], other.head.bias[0] = score_head
        raw = other.head(torch.from_numpy(train_features))[:, 0].double().numpy()
    from dataclasses import replace

    calibrator = replace(fit(raw, mos, "logistic4"), clip=(1.0, 5.0))  # as the kept head's
    scores = [r.score for r in score_paths(StudentScorer(other, calibrator), e_paths, batch_size=32)]
    return srcc(np.array(scores), e_mos)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    started = time.perf_counter()

    print("1/6 building the training benchmark from the training photos")
    train_refs = sorted(iter_image_files(args.train_refs))
    # The label-budget protocol's benchmark (same spec and seed), so its work folder is reused.
    spec = BenchmarkSpec(size=(w, h), split_fractions=(0.75, 0.0, 0.25), seed=args.seed)
    train_manifest = build_benchmark(args.work / "bench", train_refs, spec, workers=args.workers)
    print(f"2/6 labelling it with the {args.teacher} teacher")
    paths, mos, extra = teacher_labels(
        train_manifest, args.teacher, args.workers, args.work / "judgments.sqlite"
    )
    hashes = [content_hash(p) for p in paths]
    keep = [i for i, k in enumerate(hashes) if k in extra["judged"]]
    paths, mos, hashes = [paths[i] for i in keep], mos[keep], [hashes[i] for i in keep]
    judgments = [extra["judged"][k] for k in hashes]
    probs = np.array([j.probs for j in judgments])
    expected = np.array([j.expected for j in judgments])
    rel = np.array([j.reliability for j in judgments])

    print("3/6 caching frozen backbone features")
    # efficientnet-lite0, shorter side 224, centre crop 224, one crop; multiscale pooling by default
    config = StudentConfig(
        pooling=args.pooling,
        quality_stats=args.quality_stats,
        resize_shorter=args.resize_shorter,
        image_size=args.image_size,
    )
    student = Student(config).eval()
    name = "run" if config.pooling == "last" else f"run-{config.pooling}"
    name += "-qs" if config.quality_stats else ""
    name += (
        ""
        if (args.resize_shorter, args.image_size) == (224, 224)
        else f"-{args.resize_shorter}-{args.image_size}"
    )
    feature_dir = args.work / name / "features"
    refs_train = np.array([extra["manifest"].rows[i].reference for i in keep])
    tail_record: dict[str, Any] | None = None
    trained_head: TunedHead | None = None
    if args.tail_steps:
        f_plain, tail_record, trained_head = tune_last_stage(
            student, paths, hashes, expected, rel, refs_train, args, name
        )
    else:
        f_plain = cache_features(paths, feature_dir, config, hashes=hashes).astype(np.float32)

    print("4/6 fitting the head (ridge penalty chosen by 4-fold by-photo agreement with the teacher)")
    photos = np.unique(refs_train)
    folds = [photos[k::4] for k in range(4)]
    z, mu, sd = standardise(f_plain)

    def points_of(rows: np.ndarray) -> TeacherTargets:  # point judgments only: no pairs are fitted
        return TeacherTargets.restricted(
            rows, probs, expected, rel, np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0)
        )

    everything = points_of(np.arange(len(keep)))
    selection: dict[str, Any] = {}
    fold_paths = []
    for fold in folds:
        te = np.isin(refs_train, fold)
        fold_paths.append((te, ridge_distill_path(z, points_of(np.flatnonzero(~te)))))
    for l2 in RIDGE_L2_CANDIDATES:
        vs_t, vs_m = [], []
        for te, path in fold_paths:
            coef, bias = path.solve(l2)
            pred = z[te] @ coef[:, 0] + bias[0]
            vs_t.append(srcc(pred, expected[te]))
            vs_m.append(srcc(pred, mos[te]))
        selection[f"{l2:g}"] = {
            "srcc_vs_teacher": float(np.mean(vs_t)),
            "srcc_vs_proxy_mos": float(np.mean(vs_m)),
        }
        print(
            f"  l2={l2:g}: mean held-out-fold SRCC vs teacher {np.mean(vs_t):.3f}, "
            f"vs proxy MOS {np.mean(vs_m):.3f}"
        )
    best_l2 = float(max(selection, key=lambda k: selection[k]["srcc_vs_teacher"]))
    head = fold_standardisation(ridge_distill(z, everything, best_l2), mu, sd)
    heads = {"refit": (head.head.weight[0].detach().clone(), float(head.head.bias[0]))}
    if trained_head is not None:  # the score head trained with the stage (level logits: the refit's)
        weight, bias = trained_head.on_raw_features()
        heads["trained"] = (torch.as_tensor(weight, dtype=torch.float32), bias)
        print(f"  the score keeps the {args.tail_head} head (the other is scored in 6/6 too)")
        with torch.no_grad():
            head.head.weight[0], head.head.bias[0] = heads[args.tail_head]
    student.head.load_state_dict(head.head.state_dict())  # type: ignore[union-attr]
    with torch.no_grad():
        raw = student.head(torch.from_numpy(f_plain))[:, 0].double().numpy()

    print("5/6 calibrating to the KADID proxy MOS (logistic4, clipped to [1, 5])")
    from dataclasses import replace

    calibrator = replace(
        fit(raw, mos, "logistic4"),
        clip=(1.0, 5.0),
        note="raw default-student score -> KADID-10k proxy MOS (1-5), fitted on the training "
        f"benchmark built from the {len(train_refs)} training photos",
    )
    train_fit = {
        "srcc_raw_vs_proxy_mos": srcc(raw, mos),
        "plcc_calibrated_vs_proxy_mos": plcc(calibrator(raw), mos),
        "srcc_raw_vs_teacher": srcc(raw, expected),
    }
    print(f"  training fit: {train_fit}")

    print("6/6 content-disjoint evaluation on the bundled photos (never seen by the student)")
    eval_manifest = build_benchmark(
        args.work / "fit-bench", sample_paths(), BenchmarkSpec(seed=0), workers=args.workers
    )
    e_paths, e_mos, e_extra = teacher_labels(
        eval_manifest, args.teacher, args.workers, args.work / "judgments_eval.sqlite"
    )
    e_teacher = np.array([e_extra["judged"][content_hash(p)].expected for p in e_paths])
    previous = load_default_scorer()  # the shipped default before this run overwrites it
    prev_score = np.array([r.score for r in score_paths(previous, e_paths, batch_size=32)])
    scorer = StudentScorer(student, calibrator, name=DEFAULT_NAME)
    results = score_paths(scorer, e_paths, batch_size=32)
    e_score = np.array([r.score for r in results])
    e_raw = np.array([r.raw for r in results])
    eval_disjoint = {
        "references": "the 8 bundled sample photos (iqalens.samples)",
        "n_images": len(e_paths),
        "size": [512, 384],
        "srcc_student_vs_proxy_mos": srcc(e_score, e_mos),
        "plcc_student_vs_proxy_mos": plcc(e_score, e_mos),
        "rmse_student_vs_proxy_mos": rmse(e_score, e_mos),
        "srcc_student_vs_teacher": srcc(e_raw, e_teacher),
        "srcc_teacher_vs_proxy_mos": srcc(e_teacher, e_mos),
        "srcc_previous_default_vs_proxy_mos": srcc(prev_score, e_mos),
        "note": "the FR teacher's mapping was fitted on these photos' benchmark (the student never saw them)"
        if args.teacher == "fr"
        else "",
    }
    if trained_head is not None:  # the score head not kept, on the same photos (its own calibration)
        other = "refit" if args.tail_head == "trained" else "trained"
        eval_disjoint[f"srcc_{other}_head_vs_proxy_mos"] = _other_head_srcc(
            student, heads[other], f_plain, mos, e_paths, e_mos
        )
    print(f"  {eval_disjoint}")

    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().contiguous().clone() for k, v in student.head.state_dict().items()},
        str(args.out / HEAD_FILE),
        metadata={"format_version": str(FORMAT_VERSION)},
    )
    save_calibrator(calibrator, args.out / CALIBRATION_FILE)
    if tail_record is not None:
        tail_state = StudentTail(student).state_dict()
        save_file(
            {k: v.detach().half().contiguous().clone() for k, v in tail_state.items()},
            str(args.out / TAIL_FILE),
            metadata={"format_version": str(FORMAT_VERSION)},
        )
    else:  # a frozen-backbone default must not keep an earlier run's trained stage
        (args.out / TAIL_FILE).unlink(missing_ok=True)
    teacher_words = "full-reference (GMSD+VSI+VIF)" if args.teacher == "fr" else "classical NIQE+BRISQUE"
    training = {
        "note": "demo-grade default: frozen ImageNet EfficientNet-Lite0 + a linear head trained from the "
        f"{teacher_words} teacher on a synthetic benchmark of {len(train_refs)} pristine photos, calibrated "
        "to the KADID-10k proxy MOS (a proxy, not human opinion scores); not a state-of-the-art IQA model",
        "scale": {"low": 1.0, "high": 5.0, "higher_is_better": True, "name": "KADID-10k proxy MOS"},
        "command": "python scripts/train_default_student.py",
        "benchmark": {
            "references": f"{args.train_refs} ({len(train_refs)} photos)",
            "size": [w, h],
            "types": "1-25",
            "levels": "1-5",
            "n_images": len(paths),
            "seed": args.seed,
        },
        "teacher": {"id": extra["teacher"].teacher_id, "prompt_version": extra["teacher"].prompt_version},
        "head_training": {
            "features": "backbone in eval mode, centre crop; "
            + ("last stage trained towards the teacher (tail_training)" if tail_record else "frozen"),
            "fit": "closed-form reliability-weighted ridge on standardised features (folded into the "
            "head): score -> teacher expected score, logits -> centred log teacher probs",
            "l2": best_l2,
            "l2_units": "mean-loss ridge penalty on standardised features (iqalens.leaf.ridge_head)",
            "l2_selection_4_fold_by_photo": selection,
        },
        "tail_training": tail_record,
        "calibration": {
            "method": "logistic4",
            "clip": [1.0, 5.0],
            "fitted_on": "training benchmark proxy MOS",
        },
        "train_fit": train_fit,
        "eval_disjoint": eval_disjoint,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": package_versions(),
        "machine": machine_description(),
    }
    write_json(
        args.out / CONFIG_FILE,
        {"format_version": FORMAT_VERSION, "student": config.to_dict(), "training": training},
    )
    print(f"wrote {args.out} in {training['seconds']} s")


if __name__ == "__main__":
    main()
