"""Scoring throughput on 2 CPU cores: default student (torch) vs the same student (ONNX Runtime) vs the
classical teacher (NIQE + BRISQUE), images/s, in one run; writes benchmarks/SCORING.md.

    .venv/bin/python benchmarks/bench_scoring.py [--n 64] [--repeats 3]

Images: the 8 bundled photos fitted to 512 x 384 (the KADID-10k / benchmark default size), with 4
distortions each, saved as PNG, so every method reads the same files. End to end = from the file
(decode + preprocessing + model); "network only" = the student's forward pass on ready tensors.
Every method gets 2 cores: torch.set_num_threads(2), ONNX Runtime intra-op threads 2, the teacher
2 worker processes (BLAS/OpenMP pools pinned to 1 thread per process so nothing oversubscribes).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # numpy/scipy single-threaded per process; torch and ORT set below

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iqalens.datasets.benchmark import DEFAULT_SIZE, fit_to_size  # noqa: E402
from iqalens.distortions import distort  # noqa: E402
from iqalens.images import load_rgb, save_rgb  # noqa: E402
from iqalens.leaf.default_model import load_default_scorer  # noqa: E402
from iqalens.leaf.onnx_export import OnnxScorer, export_onnx  # noqa: E402
from iqalens.leaf.scoring import score_paths  # noqa: E402
from iqalens.leaf.teachers.classical import ClassicalTeacher  # noqa: E402
from iqalens.samples import sample_paths  # noqa: E402

CORES = 2
OUT = Path(__file__).resolve().parent / "SCORING.md"


def make_images(folder: Path, n: int) -> list[Path]:
    cells = [(1, 3), (9, 3), (10, 3), (16, 2)]  # gaussian blur, white noise, JPEG, brightness
    paths = []
    for i, ref in enumerate(sample_paths()):
        base = fit_to_size(load_rgb(ref), DEFAULT_SIZE)
        for t, lv in cells:
            paths.append(save_rgb(distort(base, t, lv, seed=i), folder / f"{ref.stem}_{t}_{lv}.png"))
    return [paths[i % len(paths)] for i in range(n)]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up (thread pools, first-call allocation, worker start-up for the teacher is inside fn)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="images per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > CORES:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    torch.set_num_threads(CORES)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp) / "imgs", args.n)
        scorer = load_default_scorer()
        onnx_path = export_onnx(scorer, Path(tmp) / "default.onnx")
        onnx_scorer = OnnxScorer(onnx_path, threads=CORES)
        teacher = ClassicalTeacher(workers=CORES)
        bs = args.batch_size
        runs: dict[str, list[float]] = {
            "student, torch (end to end)": timed(lambda: score_paths(scorer, paths, bs), args.repeats),
            "student, ONNX Runtime (end to end)": timed(
                lambda: score_paths(onnx_scorer, paths, bs), args.repeats
            ),
            "classical teacher NIQE+BRISQUE (end to end)": timed(
                lambda: teacher.judge_images(paths), args.repeats
            ),
        }
        s = scorer.student.config.image_size
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((bs, 3, s, s)).astype(np.float32))
        with torch.no_grad():
            runs[f"student, torch (network only, batch {bs})"] = timed(
                lambda: scorer.student(x), args.repeats * 4
            )
        xn = x.numpy()
        runs[f"student, ONNX Runtime (network only, batch {bs})"] = timed(
            lambda: onnx_scorer.session.run(["raw"], {"pixels": xn}), args.repeats * 4
        )
        agree = np.max(
            np.abs(
                np.array([r.score for r in score_paths(scorer, paths[:16], bs)])
                - np.array([r.score for r in score_paths(onnx_scorer, paths[:16], bs)])
            )
        )
    rate = {}
    for name, secs in runs.items():
        n = bs if "network only" in name else args.n
        rate[name] = n / statistics.median(secs)
    torch_e2e, onnx_e2e, teacher_e2e = (rate[k] for k in list(runs)[:3])
    lines = [
        "# Scoring throughput (2 CPU cores)",
        "",
        "Produced by `.venv/bin/python benchmarks/bench_scoring.py` "
        f"(n={args.n} images per pass, median of {args.repeats} passes after a warm-up; "
        f"network-only rows: median of {args.repeats * 4}).",
        "",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs visible, {CORES} used (affinity + thread settings below).",
        f"- Versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"onnx {version('onnx')}, onnxruntime {version('onnxruntime')}, numpy {np.__version__}, "
        f"pillow {version('pillow')}.",
        "- Model: the default student (frozen EfficientNet-Lite0 + linear head, proxy-MOS calibration), "
        f"default preprocessing: shorter side {scorer.student.config.resize_shorter}, centre crop "
        f"{s}x{s}, one crop; batch size {bs}. ONNX: opset 17 export of the same student, "
        f"intra-op threads {CORES}. Teacher: `ClassicalTeacher(workers={CORES})`.",
        f"- Images: {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} PNG (the benchmark default size), the 8 bundled "
        "photos x 4 distortions, read from disk by every method.",
        f"- Largest |torch - ONNX| calibrated score on 16 of them: {agree:.2e}.",
        "",
        "| method | images/s |",
        "|---|---:|",
        *[f"| {name} | {r:.1f} |" for name, r in rate.items()],
        "",
        "## Against the issue's targets",
        "",
        f"- Student (torch) vs teacher: **{torch_e2e / teacher_e2e:.2f}x** "
        f"(target >= 20x: **{'met' if torch_e2e >= 20 * teacher_e2e else 'not met'}**).",
        f"- Student (ONNX Runtime) vs teacher: **{onnx_e2e / teacher_e2e:.2f}x**.",
        f"- ONNX Runtime vs torch, end to end: **{onnx_e2e / torch_e2e:.2f}x** "
        f"(target >= 1x: **{'met' if onnx_e2e >= torch_e2e else 'not met'}**).",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
