"""Label-budget protocol with the student's last stage trained from the teacher (iqalens.leaf.tail_tune).

For each seed: a fresh EfficientNet-Lite0 student (384 crop at native scale, multiscale pooling,
quality statistics: row 4 of docs/leaf_fr_teacher.md) has its last resolution stage trained on the
teacher's judgments of the train photos (20% of them held out to choose the step; no label read),
then the label-budget protocol (ridge heads, budgets 0% and 10%) runs on the tuned features and, in
the same run, on the frozen features: a paired comparison on the same seeds, splits and labels.

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

from iqalens.datasets.manifest import read_manifest
from iqalens.evaluation.metrics import srcc
from iqalens.files import content_hash
from iqalens.leaf.label_budget import BudgetConfig, BudgetData, HeadConfig, run_protocol
from iqalens.leaf.label_budget.config import RIDGE_L2_CANDIDATES
from iqalens.leaf.student import Student, StudentConfig
from iqalens.leaf.tail_tune import (
    LR_SCHEDULES,
    StudentTail,
    TailTuneConfig,
    TrunkCache,
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
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--schedule", choices=LR_SCHEDULES, default="constant")
    ap.add_argument("--l2", type=float, default=1.0, help="ridge penalty of the head the tuning starts from")
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--resize-shorter", type=int, default=384)
    args = ap.parse_args()

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
            features=features, mos=np.array([r.mos for r in rows]), groups=groups, split=split,
            mos_range=(1.0, 5.0), teacher_probs=probs, teacher_expected=expected,
            teacher_reliability=rel, pairs=pairs, pair_p=pp, pair_reliability=pr,
        )  # fmt: skip

    head = HeadConfig(solver="ridge", l2=1.0, l2_candidates=RIDGE_L2_CANDIDATES)
    results: list[dict] = []
    tunes: list[dict] = []
    summary: dict = {}
    started = time.time()
    frozen = trunk.features(tail_features(StudentTail(Student(scfg).eval()), trunk.maps))
    for seed in range(args.seeds):
        student = Student(scfg).eval()
        tail = StudentTail(student)
        sub = _subset(trunk, train)
        tune = tune_tail(
            student, sub, expected[train], rel[train], groups[train], args.l2,
            TailTuneConfig(
                steps=args.steps, lr=args.lr, schedule=args.schedule, eval_every=args.eval_every, seed=seed
            ),
            progress=True,
        )  # fmt: skip
        tuned = trunk.features(tail_features(tail, trunk.maps))
        trained_head = tune.pop("head")  # the head trained with the tail, scored label-free next to the refit
        test = split == "test"
        mos = np.array([r.mos for r in rows])
        tune["test_srcc_head_as_trained"] = srcc(trained_head.scores(tuned[test]), mos[test])
        tunes.append({"seed": seed, **tune})
        print(
            json.dumps(
                {k: tune[k] for k in ("chosen_step", "curve", "test_srcc_head_as_trained")} | {"seed": seed}
            ),
            flush=True,
        )
        protocol = BudgetConfig(budgets=("0%", "10%"), seeds=(seed,), head=head)
        for name, feats in (("frozen", frozen), ("tuned", tuned)):
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
        for arm, budget in (("leaf", "0%"), ("leaf_ft", "10%"), ("labels_only", "10%")):
            summary[f"{name}/{arm}/{budget}"] = _summary(part, arm, budget)
    trained = [t["test_srcc_head_as_trained"] for t in tunes]
    summary["tuned/head_as_trained/0%"] = (
        float(np.mean(trained)), float(np.std(trained, ddof=1)) if len(trained) > 1 else 0.0, len(trained)
    )  # fmt: skip
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


def _subset(trunk: TrunkCache, rows: np.ndarray) -> TrunkCache:
    return TrunkCache(trunk.prefix[rows], trunk.maps[rows], trunk.suffix[rows])


if __name__ == "__main__":
    main()
