"""Fit and measure the full-reference (FR) teacher; writes docs/fr_teacher.md.

Steps (all offline; the shared data is read from ../shared/data and never copied):

1. ``fit``: build the benchmark of the 8 *bundled* sample photos (25 KADID types x 5 levels + the
   clean image each, 512x384), compute the FR measures of every image against its clean reference,
   and fit :func:`iqalens.leaf.teachers.fullref.fit_fr_mapping` to the KADID proxy MOS. Prints the
   constants to paste into ``FITTED_MAPPING``.
2. ``measure``: on the benchmark of *all* usable pristine photos (``../shared/data/pristine``, none of
   them a bundled photo): each measure's SRCC and the teacher's against the proxy MOS (all images and
   the label-budget protocol's test split, with a bootstrap 95% interval over references), per
   distortion type, and the teacher's throughput through ``run_teach`` with 2 worker processes.

Usage: ``python benchmarks/fr_teacher.py [fit|measure|all] [--work DIR]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classical_teacher import bootstrap_srcc, per_type_table, srcc  # noqa: E402
from label_budget import pristine_refs  # noqa: E402

from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark  # noqa: E402
from iqalens.datasets.manifest import read_manifest  # noqa: E402
from iqalens.datasets.references import ReferenceIndex  # noqa: E402
from iqalens.evaluation.fullref import direction  # noqa: E402
from iqalens.leaf.judgments import PointJudgment  # noqa: E402
from iqalens.leaf.store import JudgmentStore  # noqa: E402
from iqalens.leaf.teach import run_teach  # noqa: E402
from iqalens.leaf.teachers import fullref  # noqa: E402
from iqalens.runs import machine_description, package_versions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fr_teacher.md"
VERSION = "fr-map-v1"


def _job(job: tuple[str, str, tuple[str, ...]]) -> list[float]:
    return fullref.pair_metrics(job[0], job[1], job[2])


def metric_table(manifest_path: Path, metrics: tuple[str, ...], cache: Path, workers: int = 2) -> dict:
    """Paths, proxy MOS, references, splits and the n x k measure values (cached in ``cache``)."""
    manifest, _ = read_manifest(manifest_path)
    paths = [manifest.resolve(r) for r in manifest.rows]
    out = {
        "paths": paths,
        "mos": np.array([r.mos for r in manifest.rows]),
        "refs": [r.reference for r in manifest.rows],
        "split": [r.split for r in manifest.rows],
    }
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        cached = [str(m) for m in saved["metrics"]]
        if set(metrics) <= set(cached) and list(saved["paths"]) == [str(p) for p in paths]:
            out["values"] = saved["values"][:, [cached.index(m) for m in metrics]]
            out["seconds"] = float(saved["seconds"])
            return out
    index = ReferenceIndex.from_manifests([manifest_path])
    jobs = [(str(p), str(index.reference_of(p)), metrics) for p in paths]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        values = list(tqdm(pool.map(_job, jobs, chunksize=16), total=len(jobs), desc="FR measures"))
    seconds = time.perf_counter() - start
    out["values"], out["seconds"] = np.array(values), seconds
    np.savez(
        cache,
        metrics=np.array(metrics),
        paths=np.array([str(p) for p in paths]),
        values=out["values"],
        seconds=seconds,
    )
    return out


def expected(values: np.ndarray, mapping: fullref.FRMapping) -> np.ndarray:
    weights = np.linspace(1.0, 0.0, 5)  # expected score on [0, 1], LEVELS order (excellent .. bad)
    return np.array([mapping.probs(v) @ weights for v in values])


def mapping_code(m: fullref.FRMapping) -> str:
    def lg(x: object) -> str:
        return ", ".join(f"{k}={getattr(x, k):.6g}" for k in ("lo", "hi", "mid", "width"))

    maps = "".join(f"        LogisticMap({lg(x)}),  # {n}\n" for n, x in zip(m.metrics, m.maps, strict=True))
    return (
        "FITTED_MAPPING: FRMapping | None = FRMapping(\n"
        f"    metrics={m.metrics!r},\n"
        f"    maps=(\n{maps}    ),\n"
        f"    weights=({', '.join(f'{w:.6g}' for w in m.weights)}),\n"
        f"    sigma0={m.sigma0:.6g},\n"
        f'    version="{m.version}",\n'
        ")"
    )


def run_fit(work: Path, metrics: tuple[str, ...]) -> tuple[fullref.FRMapping, dict]:
    manifest = build_benchmark(work / "fit-bench", None, BenchmarkSpec(seed=0), workers=2)
    data = metric_table(manifest, metrics, work / "fit-values.npz")
    fitted = fit_fr_mapping_from(data, metrics)
    summary = {"images": len(data["paths"]), "srcc_fit": srcc(expected(data["values"], fitted), data["mos"])}
    for i, m in enumerate(metrics):
        sign = 1.0 if direction(m) == "higher" else -1.0
        summary[f"srcc_{m}"] = srcc(sign * data["values"][:, i], data["mos"])
    print(mapping_code(fitted))
    print(summary)
    return fitted, summary


def fit_fr_mapping_from(data: dict, metrics: tuple[str, ...]) -> fullref.FRMapping:
    return fullref.fit_fr_mapping(data["values"], data["mos"], metrics, VERSION)


def run_measure(work: Path, metrics: tuple[str, ...], fit: tuple[fullref.FRMapping, dict] | None) -> None:
    mapping = fullref.FITTED_MAPPING
    if mapping is None:
        raise SystemExit("paste the fitted mapping into fullref.FITTED_MAPPING first (run `fit`)")
    refs = pristine_refs(1000, seed=0)
    spec = BenchmarkSpec(size=(512, 384), split_fractions=(0.75, 0.0, 0.25), seed=0)
    manifest = build_benchmark(work / "bench", refs, spec, workers=2)
    data, throughput = teach_all(work, manifest)
    mapping = mapping.subset(data["metrics"])
    values, mos, ref_ids = data["values"], data["mos"], data["refs"]
    exp = expected(values, mapping)
    test = np.array([s == "test" for s in data["split"]])
    rel = np.array([PointJudgment.from_probs(mapping.probs(v)).reliability for v in values])
    lines_metric = ["| predictor | SRCC, all images | SRCC, test split |", "|---|---|---|"]
    for i, m in enumerate(mapping.metrics):
        sign = 1.0 if direction(m) == "higher" else -1.0
        lines_metric.append(
            f"| {m} ({direction(m)} = better) | {srcc(sign * values[:, i], mos):.3f} | "
            f"{srcc(sign * values[test, i], mos[test]):.3f} |"
        )
    ci_all = bootstrap_srcc(exp, mos, ref_ids)
    ci_test = bootstrap_srcc(exp[test], mos[test], [r for r, t in zip(ref_ids, test, strict=True) if t])
    lines_metric.append(
        f"| **teacher expected score** | **{srcc(exp, mos):.3f}** "
        f"(95% CI {ci_all[0]:.3f} .. {ci_all[1]:.3f}) | "
        f"**{srcc(exp[test], mos[test]):.3f}** (95% CI {ci_test[0]:.3f} .. {ci_test[1]:.3f}) |"
    )
    n_cbsd = sum("cbsd68" in str(r) for r in refs)
    lines = [
        "# The full-reference teacher: SRCC against the proxy MOS, per type, throughput",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python benchmarks/fr_teacher.py all`.",
        "",
        "**What this teacher is.** A reference-aware stand-in: it judges an image by comparing it with its "
        "pristine reference, so it exists only where references exist (synthetic benchmarks, the FR "
        "databases). It does not replace a vision-language teacher on authentic photos, which have none. "
        "Its targets here are the KADID-10k **proxy MOS** (mean DMOS of the image's (type, level) cell over "
        "KADID's 81 references), not ratings of these images.",
        "",
        f"- Teacher: `{'fr:' + '+'.join(mapping.metrics)}`, mapping `{mapping.version}` (fitted on the "
        "bundled sample photos only, see below).",
        f"- Machine: {machine_description()['platform']}, {machine_description()['cpu_count']} logical CPUs.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".",
        "",
        "## SRCC against the proxy MOS",
        "",
        f"Data: all {len(refs)} photos of `../shared/data/pristine/` ({n_cbsd} cbsd68, {len(refs) - n_cbsd} "
        "mcmaster), none a bundled sample photo, built with `build_benchmark` at 512x384 (all 25 KADID types "
        f"x 5 levels + the clean image each): {len(mos)} images; the test split ({int(test.sum())} images of "
        f"{len({r for r, t in zip(ref_ids, test, strict=True) if t})} photos, seed 0, by reference) is the "
        "label-budget protocol's. 95% intervals resample whole references (1000 bootstrap draws).",
        "",
        *lines_metric,
        "",
        f"Reliability (1 - H/ln 5): mean {rel.mean():.3f}, range {rel.min():.3f} .. {rel.max():.3f}.",
        "",
        "Per distortion type (SRCC of the expected score against the level within the type: does the "
        "teacher order the 5 levels of one type; the proxy MOS is constant per cell):",
        "",
        *per_type_table(data["paths"], exp, mos),
        "",
        "## Throughput",
        "",
        throughput,
        "",
    ]
    if fit is not None:
        fitted, summary = fit
        per = ", ".join(f"{m} {summary[f'srcc_{m}']:.3f}" for m in fitted.metrics)
        lines += [
            "## The fitted mapping",
            "",
            f"`python benchmarks/fr_teacher.py fit`: the {summary['images']}-image benchmark of the 8 "
            "bundled "
            f"sample photos (512x384, all 25 types x 5 levels + clean). SRCC on that fitting set: {per}; the "
            f"fit {summary['srcc_fit']:.3f}. Per measure a decreasing logistic of the oriented value (higher-"
            "is-better measures negated), least squares; weights on the simplex by least squares; s0 = "
            "residual std. The fresh fit:",
            "",
            "```python",
            mapping_code(fitted),
            "```",
            "",
        ]
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))


def teach_all(work: Path, manifest: Path) -> tuple[dict, str]:
    """Judge the whole benchmark with the default FR teacher into the protocol's store (points and 4
    stratified derived pairs per image, as ``benchmarks/label_budget.py --teacher fr`` asks), timed;
    returns the measure table (cached in ``work``) and the throughput sentence."""
    rows, _ = read_manifest(manifest)
    paths = [rows.resolve(r) for r in rows.rows]
    teacher = fullref.FRTeacher(manifests=[manifest], workers=2)
    cache = work / f"bench-values-{'+'.join(teacher.mapping.metrics)}.npz"
    load = os.getloadavg()[0]
    try:
        with JudgmentStore(work / "judgments.sqlite") as store:
            report = run_teach(teacher, paths, store, 4, "stratified", 0, batch_size=64)
        if cache.is_file() and list(np.load(cache)["paths"]) == [str(p) for p in paths]:
            values = np.load(cache)["values"]
        else:
            values = np.array(teacher.metric_values(paths))  # judged now: cached in the teacher
            np.savez(cache, paths=np.array([str(p) for p in paths]), values=values)
    finally:
        teacher.close()
    data = {
        "metrics": teacher.mapping.metrics,
        "paths": paths,
        "values": values,
        "mos": np.array([r.mos for r in rows.rows]),
        "refs": [r.reference for r in rows.rows],
        "split": [r.split for r in rows.rows],
    }
    if not report.images_judged:
        return data, "(throughput: every image was already in the store; measure in a fresh work folder)"
    rate = report.images_judged / report.seconds_images
    return data, (
        f"`run_teach` with `FRTeacher(workers=2)` ({', '.join(teacher.mapping.metrics)}) judged "
        f"{report.images_judged} benchmark PNGs (512x384; both images decoded, content hashing and the store "
        f"included) in {report.seconds_images:.0f} s: **{rate:.1f} images/s** on 2 cores (load average "
        f"{load:.1f} before; other jobs shared the machine), i.e. about {1000 / rate / 60:.1f} minutes per "
        f"thousand images; the {report.pairs_judged} derived pairs took {report.seconds_pairs:.1f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["fit", "measure", "all"], nargs="?", default="all")
    parser.add_argument("--work", default="/tmp/fr", help="work folder (resumable)")
    parser.add_argument("--metrics", default=",".join(fullref.DEFAULT_METRICS))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    metrics = tuple(m for m in args.metrics.split(",") if m)
    fit = run_fit(work, metrics) if args.step in ("fit", "all") else None
    if args.step in ("measure", "all"):
        run_measure(work, metrics, fit)


if __name__ == "__main__":
    main()
