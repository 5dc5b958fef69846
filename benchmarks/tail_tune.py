"""Label-budget protocol with the student's last stage trained from the teacher (iqalens.leaf.tail_tune).

For each seed: a fresh EfficientNet-Lite0 student (384 crop at native scale, multiscale pooling,
quality statistics: row 4 of docs/leaf_fr_teacher.md) has its last resolution stage trained on the
teacher's judgments of the train photos (20% of them held out to choose the step; no label read),
then the label-budget protocol (ridge heads, budgets 0% and ``--budget``, default 10%) runs on the
tuned features and, in the same run, on the frozen features: a paired comparison on the same seeds,
splits and labels.

Beyond the protocol's ridge refits, two arms keep the head trained together with the stage:
``head_as_trained`` (0%: no label read) and ``head_as_trained+labels`` (the budget: that head mapped onto
the labels' scale and moved towards the labels by a ridge centred on it, its penalty chosen by
grouped cross-validation on the labels alone). With ``--labels-only-tail`` a second fresh student has
its last stage trained on the budget's labels alone (same schedule, its step chosen on held-out labelled
photos): the labels-only peer that is also given the step beyond a frozen backbone. With
``--joint-tail`` a third one learns both signals at once (LEAF's student): the teacher's scores of
every train image, put on the labels' scale by a line fitted on the labelled images, with the budget's
labels in place of the teacher's score where they exist (``--label-weight`` times the teacher's mean
reliability), its step chosen by the labelled images of the held-out photos (a first run that chose
it by the mixed targets kept step 0 on seed 0). With ``--teacher-then-labels`` the teacher-trained
stage itself goes on training on the budget's labels alone (LEAF in two steps, the weak-supervision
recipe of KADIS-700k / DeepFL-IQA: pre-train on the teacher, fine-tune on the labels; same schedule,
its step chosen on held-out labelled photos, step 0 being the teacher-trained stage with a ridge head
on the labels). ``--skip-teacher-tail`` leaves out the teacher-only stage (to add an arm to a run).

    python benchmarks/tail_tune.py --manifest BENCH/manifest.csv --store judgments.sqlite \
        --trunk-dir WORK/trunk --out docs/leaf_tail_tune.json

The trunk cache (maps before the last stage, about 130 kB per 384-px image) is computed once.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from iqalens.datasets.manifest import read_manifest
from iqalens.evaluation.metrics import srcc
from iqalens.files import content_hash
from iqalens.leaf.head import head_scores
from iqalens.leaf.label_budget import BudgetConfig, BudgetData, HeadConfig, run_protocol
from iqalens.leaf.label_budget.config import RIDGE_L2_CANDIDATES
from iqalens.leaf.label_budget.run import budget_indices
from iqalens.leaf.ridge_head import choose_l2_by_labels, ridge_finetune, ridge_labels
from iqalens.leaf.student import Student, StudentConfig
from iqalens.leaf.tail_tune import (
    LR_SCHEDULES,
    StudentTail,
    TailTuneConfig,
    TrunkCache,
    TunedHead,
    cache_trunk,
    tail_features,
    tune_tail,
)
from iqalens.leaf.targets import teacher_arrays


def _summary(rows: list[dict], arm: str, budget: str) -> tuple[float, float, int]:
    vals = [r["srcc"] for r in rows if r["arm"] == arm and r["budget"] == budget and math.isfinite(r["srcc"])]
    if not vals:
        return math.nan, math.nan, 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--teacher", default="fr:gmsd+vsi+vif")
    ap.add_argument("--prompt-version", default="fr-map-v1")
    ap.add_argument("--trunk-dir", required=True)
    ap.add_argument("--out", required=True, help="JSON file of every row, curve and the summary")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="the first seed run (then first-seed + 1, ...)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--schedule", choices=LR_SCHEDULES, default="constant")
    ap.add_argument("--l2", type=float, default=1.0, help="ridge penalty of the head the tuning starts from")
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--resize-shorter", type=int, default=384)
    ap.add_argument(
        "--budget", default="10%", help="label budget of the labelled arms (a count or P%%; default 10%%)"
    )
    ap.add_argument(
        "--labels-only-tail", action="store_true", help="also train a stage on the budget's labels alone"
    )
    ap.add_argument(
        "--joint-tail",
        action="store_true",
        help="also train a stage on the teacher's scores of every train image and the budget's labels",
    )
    ap.add_argument(
        "--label-weight",
        type=float,
        default=5.0,
        help="--joint-tail: weight of a labelled image relative to the teacher's mean reliability",
    )
    ap.add_argument(
        "--teacher-then-labels",
        action="store_true",
        help="also continue the teacher-trained stage on the budget's labels (pre-train, then fine-tune)",
    )
    ap.add_argument(
        "--skip-teacher-tail",
        action="store_true",
        help="skip the teacher-trained stage and its protocol rows (to add an arm to an earlier run)",
    )
    args = ap.parse_args()
    if args.teacher_then_labels and args.skip_teacher_tail:
        ap.error("--teacher-then-labels continues the teacher-trained stage: drop --skip-teacher-tail")

    manifest, _ = read_manifest(args.manifest)
    rows = [r for r in manifest.rows if r.split in ("train", "test") and math.isfinite(r.mos)]
    paths = [manifest.resolve(r) for r in rows]
    hashes = [content_hash(p) for p in paths]
    scfg = StudentConfig(image_size=args.image_size, resize_shorter=args.resize_shorter, quality_stats=True)
    trunk = cache_trunk(Student(scfg).eval(), paths, hashes, args.trunk_dir)
    probs, expected, rel, pairs, pp, pr = teacher_arrays(
        args.store, args.teacher, args.prompt_version, hashes
    )
    split = np.array([r.split for r in rows])
    groups = np.array([r.reference or r.path for r in rows])
    train = np.flatnonzero(split == "train")

    def budget_data(features: np.ndarray) -> BudgetData:
        return BudgetData(
            features=features, mos=mos, groups=groups, split=split,
            mos_range=(1.0, 5.0), teacher_probs=probs, teacher_expected=expected,
            teacher_reliability=rel, pairs=pairs, pair_p=pp, pair_reliability=pr,
        )  # fmt: skip

    head = HeadConfig(solver="ridge", l2=1.0, l2_candidates=RIDGE_L2_CANDIDATES)
    results: list[dict] = []
    tunes: list[dict] = []
    summary: dict = {}
    started = time.time()
    frozen = trunk.features(tail_features(StudentTail(Student(scfg).eval()), trunk.maps))
    mos = np.array([r.mos for r in rows])
    test = split == "test"
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        lab = budget_indices(budget_data(frozen), args.budget, seed)  # the protocol's draw of this seed
        tune: dict = {"seed": seed}
        feature_sets = [("frozen", frozen)]
        if not args.skip_teacher_tail:
            student, tuned, part = _teacher_tail(
                args, scfg, trunk, train, expected, rel, lab, mos, groups, test, seed
            )
            tune |= part
            feature_sets.append(("tuned", tuned))
            if args.teacher_then_labels:  # goes on from the teacher-trained stage (``tuned`` is kept)
                tune["teacher_then_labels_tail"] = _other_tail(
                    args, scfg, trunk, train, _label_target(lab, mos), np.ones(len(mos)), lab, mos,
                    groups, test, seed, student=student,
                )  # fmt: skip
        if args.labels_only_tail:
            tune["labels_only_tail"] = _other_tail(
                args, scfg, trunk, train, _label_target(lab, mos), np.ones(len(mos)), lab, mos,
                groups, test, seed,
            )  # fmt: skip
        if args.joint_tail:
            target, weight = _joint_targets(expected, rel, lab, mos, args.label_weight)
            # the step is chosen by the held-out photos' labels, not the teacher
            tune["joint_tail"] = _other_tail(
                args, scfg, trunk, train, target, weight, lab, mos, groups, test, seed,
                check=_label_target(lab, mos),
            )  # fmt: skip
        tunes.append(tune)
        print(json.dumps({k: v for k, v in tune.items() if k != "config"}, default=float), flush=True)
        protocol = BudgetConfig(budgets=("0%", args.budget), seeds=(seed,), head=head)
        for name, feats in feature_sets:
            out = run_protocol(budget_data(feats), protocol, progress=False)
            results += [{**r, "features": name} for r in out["rows"]]
        summary = _write_record(args, started, tunes, results)  # every seed: a stopped run keeps its seeds
    for key, (m, s, n) in summary.items():
        print(f"{key:32s} {m:.3f} +- {s:.3f} (n={n})")


def _write_record(args: argparse.Namespace, started: float, tunes: list[dict], results: list[dict]) -> dict:
    """Summarise the seeds done so far and (re)write ``--out``; returns the summary."""
    summary = {}
    for name in ("frozen", "tuned"):
        part = [r for r in results if r["features"] == name]
        for arm, budget in (("leaf", "0%"), ("leaf_ft", args.budget), ("labels_only", args.budget)):
            summary[f"{name}/{arm}/{budget}"] = _summary(part, arm, budget)
    for key, arm in (
        ("tuned/head_as_trained/0%", "test_srcc_head_as_trained"),
        (f"tuned/head_as_trained+labels/{args.budget}", "test_srcc_head_as_trained+labels"),
    ):
        if any(arm in t for t in tunes):
            summary[key] = _spread([t[arm] for t in tunes if arm in t])
    for stage in ("labels_only_tail", "joint_tail", "teacher_then_labels_tail"):
        done = [t[stage] for t in tunes if stage in t]
        if done:
            for arm in ("head_as_trained", "ridge_labels"):
                summary[f"{stage}/{arm}/{args.budget}"] = _spread([t[f"test_srcc_{arm}"] for t in done])
    record = {
        "command": "benchmarks/tail_tune.py",
        "args": vars(args),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
        "seconds": round(time.time() - started, 1),
        "tune": tunes,
        "summary (mean, std, n) of test SRCC vs proxy MOS": summary,
        "rows": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=1, default=float))
    return summary


def _spread(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of per-seed values."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def _labels_on_trained_head(
    head: TunedHead,
    features: np.ndarray,
    lab: np.ndarray,
    mos: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
) -> dict:
    """The labelled arm that starts from the head trained with the stage: a ridge centred on it (mapped
    onto the labels' scale), its penalty by grouped cross-validation on the labelled images alone."""
    z = head.standardised(features)
    prior = head.as_feature_head()
    l2, _ = choose_l2_by_labels(z, lab, mos, groups, prior=prior)
    fitted = ridge_finetune(prior, z, lab, mos, l2 if l2 is not None else 1.0)
    predicted = head_scores(fitted, torch.as_tensor(z[test]).float())
    return {
        "test_srcc_head_as_trained+labels": srcc(predicted, mos[test]),
        "head_as_trained+labels_l2": l2,
    }  # fmt: skip


def _teacher_tail(
    args: argparse.Namespace,
    scfg: StudentConfig,
    trunk: TrunkCache,
    train: np.ndarray,
    expected: np.ndarray,
    rel: np.ndarray,
    lab: np.ndarray,
    mos: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
    seed: int,
) -> tuple[Student, np.ndarray, dict]:
    """A fresh student's last stage trained towards the teacher alone (no label read): the student,
    its features, the tuning record, and the two arms that keep the head trained with it (0% and the
    budget)."""
    student = Student(scfg).eval()
    tune = tune_tail(
        student, _subset(trunk, train), expected[train], rel[train], groups[train], args.l2,
        _tail_config(args, seed), progress=True,
    )  # fmt: skip
    tuned = trunk.features(tail_features(StudentTail(student), trunk.maps))
    trained_head = tune.pop("head")
    tune["test_srcc_head_as_trained"] = srcc(trained_head.scores(tuned[test]), mos[test])
    return student, tuned, tune | _labels_on_trained_head(trained_head, tuned, lab, mos, groups, test)


def _label_target(lab: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """The budget's labels where drawn, NaN (not fitted, not checked) everywhere else."""
    target = np.full(len(mos), np.nan)
    target[lab] = mos[lab]
    return target


def _joint_targets(
    expected: np.ndarray, rel: np.ndarray, lab: np.ndarray, mos: np.ndarray, label_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """LEAF's two signals in one regression: the teacher's expected score mapped onto the labels'
    scale (least squares on the labelled images, slope >= 0) for every image, replaced by the label
    where there is one; labelled images weigh ``label_weight`` times the teacher's mean reliability."""
    seen = lab[np.isfinite(expected[lab])]
    e, y = expected[seen], mos[seen]
    slope = max(float(np.cov(e, y, bias=True)[0, 1] / np.var(e)), 0.0) if np.ptp(e) > 0 else 0.0
    target = slope * expected + float(np.mean(y) - slope * np.mean(e))
    target[lab] = mos[lab]
    weight = np.clip(np.nan_to_num(rel, nan=0.0), 0.0, None)
    weight[lab] = label_weight * float(np.mean(weight[np.isfinite(expected)]))
    return target, weight


def _other_tail(
    args: argparse.Namespace,
    scfg: StudentConfig,
    trunk: TrunkCache,
    train: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    lab: np.ndarray,
    mos: np.ndarray,
    groups: np.ndarray,
    test: np.ndarray,
    seed: int,
    check: np.ndarray | None = None,
    student: Student | None = None,
) -> dict:
    """A last stage trained towards ``target`` (NaN: not fitted), the step chosen on held-out photos by
    ``check`` (default the same target), scored by the head trained with it and by a ridge on the
    budget's labels refitted on its features. ``student``: the one to go on training (in place);
    default a fresh one."""
    student = Student(scfg).eval() if student is None else student
    tune = tune_tail(
        student, _subset(trunk, train), target[train], weight[train], groups[train], args.l2,
        _tail_config(args, seed), progress=True, check=None if check is None else check[train],
    )  # fmt: skip
    head = tune.pop("head")
    features = trunk.features(tail_features(StudentTail(student), trunk.maps))
    z = head.standardised(features)
    l2, _ = choose_l2_by_labels(z, lab, mos, groups)
    refit = ridge_labels(z, lab, mos, l2 if l2 is not None else 1.0)
    return {
        **{k: tune[k] for k in ("chosen_step", "curve", "seconds", "fit_images", "held_out_images")},
        "test_srcc_head_as_trained": srcc(head.scores(features[test]), mos[test]),
        "test_srcc_ridge_labels": srcc(head_scores(refit, torch.as_tensor(z[test]).float()), mos[test]),
        "ridge_labels_l2": l2,
    }  # fmt: skip


def _tail_config(args: argparse.Namespace, seed: int) -> TailTuneConfig:
    return TailTuneConfig(
        steps=args.steps, lr=args.lr, schedule=args.schedule, eval_every=args.eval_every, seed=seed
    )


def _subset(trunk: TrunkCache, rows: np.ndarray) -> TrunkCache:
    return TrunkCache(trunk.prefix[rows], trunk.maps[rows], trunk.suffix[rows])


if __name__ == "__main__":
    main()
