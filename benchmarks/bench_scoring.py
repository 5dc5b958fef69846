"""Scoring throughput on 2 CPU cores: the default student (torch and ONNX Runtime) vs the classical teacher
(NIQE + BRISQUE), images/s, all in one run; writes benchmarks/SCORING.md.

    nice .venv/bin/python benchmarks/bench_scoring.py [--n 64] [--repeats 5]

One command, about 3-6 minutes. Images: the 8 bundled photos fitted to 512 x 384 (the KADID-10k /
benchmark default size), with 4 distortions each, saved as PNG, so every method reads the same files.

Rows: *end to end* = from the file (decode + preprocessing + network), through
:func:`iqalens.leaf.scoring.score_paths` (decoding threads one batch ahead of the network) and, for
comparison, the same with ``workers=0`` (decode in the calling thread: the pipeline before the threads
were added); *decode + resize only* = what any scorer of these files must do, with 2 threads, no
network: the ceiling of end-to-end throughput; *network only* = the forward pass on ready tensors.
Every method gets 2 cores: torch.set_num_threads, ONNX Runtime intra-op threads, the teacher 2 worker
processes (BLAS/OpenMP pools pinned to 1 thread per process). Methods are timed **interleaved** (one
pass of each per repetition, the median over repetitions reported), so load from other processes hits
all of them alike; the machine's load average is recorded. A camera-size section times
``fast_decode`` (:func:`iqalens.leaf.scoring.load_reduced`) on large JPEGs and reports how far its
scores move.
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
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from timing import interleaved, load_note  # noqa: E402

from iqalens.datasets.benchmark import DEFAULT_SIZE, fit_to_size  # noqa: E402
from iqalens.distortions import distort  # noqa: E402
from iqalens.images import load_rgb, save_rgb  # noqa: E402
from iqalens.leaf.default_model import load_default_scorer  # noqa: E402
from iqalens.leaf.onnx_export import OnnxScorer, export_onnx  # noqa: E402
from iqalens.leaf.scoring import load_reduced, score_paths  # noqa: E402
from iqalens.leaf.teachers.classical import ClassicalTeacher  # noqa: E402
from iqalens.samples import sample_paths  # noqa: E402

CORES = 2
OUT = Path(__file__).resolve().parent / "SCORING.md"
CAMERA_SIZE = (3000, 2000)


def make_images(folder: Path, n: int) -> list[Path]:
    cells = [(1, 3), (9, 3), (10, 3), (16, 2)]  # gaussian blur, white noise, JPEG, brightness
    paths = []
    for i, ref in enumerate(sample_paths()):
        base = fit_to_size(load_rgb(ref), DEFAULT_SIZE)
        for t, lv in cells:
            paths.append(save_rgb(distort(base, t, lv, seed=i), folder / f"{ref.stem}_{t}_{lv}.png"))
    return [paths[i % len(paths)] for i in range(n)]


def make_camera_jpegs(folder: Path) -> list[Path]:
    """The bundled photos upscaled to a 6-megapixel camera size, saved as JPEG quality 90."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ref in sample_paths():
        path = folder / f"{ref.stem}.jpg"
        Image.fromarray(load_rgb(ref)).resize(CAMERA_SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
        out.append(path)
    return out


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64, help="images per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > CORES:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    torch.set_num_threads(CORES)
    load_before = os.getloadavg()
    started = time.perf_counter()
    bs = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp) / "imgs", args.n)
        scorer = load_default_scorer()
        onnx_path = export_onnx(scorer, Path(tmp) / "default.onnx")
        onnx_scorer = OnnxScorer(onnx_path, threads=CORES)
        teacher = ClassicalTeacher(workers=CORES)

        def decode_only() -> object:
            with ThreadPoolExecutor(CORES) as pool:
                return list(pool.map(lambda p: scorer.prepare(load_rgb(p)), paths))

        s = scorer.student.config.image_size
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((bs, 3, s, s)).astype(np.float32))
        xn = x.numpy()
        n_batches = -(-args.n // bs)  # network-only calls run as many images as the end-to-end ones

        def torch_forward() -> object:
            with torch.no_grad():
                return [scorer.student(x) for _ in range(n_batches)]

        def onnx_forward() -> object:
            return [onnx_scorer.session.run(["raw"], {"pixels": xn}) for _ in range(n_batches)]

        methods: dict[str, Callable[[], object]] = {
            "student, torch (end to end, decode threads, 2 torch threads: the default)": (
                lambda: score_paths(scorer, paths, bs)
            ),
            "student, torch (end to end, decode threads, torch capped to 1 thread)": lambda: score_paths(
                scorer, paths, bs, network_threads=1
            ),
            "student, torch (end to end, sequential decode, 2 torch threads)": lambda: score_paths(
                scorer, paths, bs, workers=0
            ),
            "student, ONNX Runtime (end to end, decode threads)": lambda: score_paths(onnx_scorer, paths, bs),
            "student, ONNX Runtime (end to end, sequential decode)": lambda: score_paths(
                onnx_scorer, paths, bs, workers=0
            ),
            "classical teacher NIQE+BRISQUE (end to end)": lambda: teacher.judge_images(paths),
            f"decode + resize only ({CORES} threads, no network)": decode_only,
            f"student, torch (network only, batch {bs})": torch_forward,
            f"student, ONNX Runtime (network only, batch {bs})": onnx_forward,
        }
        runs = interleaved(methods, args.repeats)
        threaded = np.array([r.score for r in score_paths(scorer, paths, bs)])
        sequential = np.array([r.score for r in score_paths(scorer, paths, bs, workers=0)])
        onnx_scores = np.array([r.score for r in score_paths(onnx_scorer, paths, bs)])

        camera = make_camera_jpegs(Path(tmp) / "camera")
        camera_runs = interleaved(
            {
                "exact decode": lambda: score_paths(onnx_scorer, camera, bs),
                "fast_decode": lambda: score_paths(onnx_scorer, camera, bs, fast_decode=True),
            },
            args.repeats,
        )
        exact = np.array([r.score for r in score_paths(onnx_scorer, camera, bs)])
        fast = np.array([r.score for r in score_paths(onnx_scorer, camera, bs, fast_decode=True)])
        reduced_side = min(load_reduced(camera[0], scorer.student.config.resize_shorter).shape[:2])
    load_after = os.getloadavg()
    total_s = time.perf_counter() - started
    gap_threads = np.max(np.abs(threaded - sequential))
    gap_onnx = np.max(np.abs(threaded - onnx_scores))
    fast_max, fast_mean = np.max(np.abs(fast - exact)), np.mean(np.abs(fast - exact))
    cam = {k: len(camera) / statistics.median(v) for k, v in camera_runs.items()}
    fast_x = cam["fast_decode"] / cam["exact decode"]
    per_call = {name: (n_batches * bs if "network only" in name else args.n) for name in runs}
    rate = {name: per_call[name] / statistics.median(secs) for name, secs in runs.items()}
    names = list(rate)
    torch_e2e, torch_1t, torch_seq, onnx_e2e, onnx_seq, teacher_e2e, decode = (rate[k] for k in names[:7])
    torch_net, onnx_net = rate[names[7]], rate[names[8]]
    best_student = max(torch_e2e, torch_1t, onnx_e2e)
    lines = [
        "# Scoring throughput (2 CPU cores)",
        "",
        f"Produced by `nice .venv/bin/python benchmarks/bench_scoring.py` (one command, {total_s:.0f} s "
        f"here): n={args.n} images per pass, methods interleaved, median of {args.repeats} repetitions after "
        "a warm-up; every row in the same interleaved rounds.",
        "",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs visible, {CORES} used (affinity + thread settings below). "
        + load_note(load_before[0], load_after[0], CORES),
        f"- Versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"onnx {version('onnx')}, onnxruntime {version('onnxruntime')}, numpy {np.__version__}, "
        f"pillow {version('pillow')}.",
        f"- Model: the default student (frozen EfficientNet-Lite0, {scorer.student.config.pooling} pooling, "
        "linear head, proxy-MOS calibration), "
        f"default preprocessing: shorter side {scorer.student.config.resize_shorter} (bicubic), centre crop "
        f"{s}x{s}, one crop; batch size {bs}. ONNX: opset 17 export of the same student, intra-op threads "
        f"{CORES}; torch: as the row says. Decode threads: "
        f"`score_paths`' default ({CORES} here, one per usable core). Teacher: "
        f"`ClassicalTeacher(workers={CORES})`.",
        f"- Images: {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} PNG (the benchmark default size), the 8 bundled "
        "photos x 4 distortions, read from disk by every method.",
        "- Same scores whatever the pipeline: largest |threaded - sequential| torch score "
        f"{gap_threads:.1e}, largest |torch - ONNX| {gap_onnx:.1e} "
        "(calibrated 1-5 scale). The threads change when an image is decoded, never how.",
        "",
        "| method | images/s |",
        "|---|---:|",
        *[f"| {name} | {r:.1f} |" for name, r in rate.items()],
        "",
        "## Against the issue's targets",
        "",
        f"- Student vs teacher, end to end: torch **{torch_e2e / teacher_e2e:.2f}x** (1 torch thread: "
        f"{torch_1t / teacher_e2e:.2f}x), ONNX Runtime **{onnx_e2e / teacher_e2e:.2f}x** "
        f"(target >= 20x: **{'met' if best_student >= 20 * teacher_e2e else 'not met'}**).",
        f"- ONNX Runtime vs torch, end to end: **{onnx_e2e / torch_e2e:.2f}x** "
        f"(target >= 1x: **{'met' if onnx_e2e >= torch_e2e else 'not met'}**).",
        f"- Decoding threads vs sequential decoding: torch {torch_e2e / torch_seq:.2f}x (default pipeline "
        f"vs the pipeline before this change), ONNX Runtime {onnx_e2e / onnx_seq:.2f}x. With decoding "
        f"threads, capping torch to the core they leave (1 thread): {torch_1t / torch_e2e:.2f}x the default. "
        "An earlier run on a loaded machine measured the opposite (capped 18.7 vs 5.3 images/s uncapped: "
        "PyTorch's threads wait for each other at every layer, so one preempted by another process stalls "
        "all); on an idle machine the second core is worth more, so torch keeps its threads by default and "
        "`score_paths(..., network_threads=1)` is the option for shared machines.",
        "",
        "## Where the time goes, and why 20x is out of reach here",
        "",
        f"- Decoding and resizing these PNGs alone, on both cores, runs at {decode:.0f} images/s: "
        f"**{decode / teacher_e2e:.1f}x the teacher**. No scorer that reads these files can go faster on "
        "this machine, whatever its network; 20x the teacher would need the decoding alone to be "
        f"{20 * teacher_e2e / decode:.1f}x faster.",
        f"- The network alone: ONNX Runtime {onnx_net:.0f} images/s, torch {torch_net:.0f} images/s "
        f"({onnx_net / torch_net:.1f}x; a torch profile of one batch showed 60% of the time in the "
        "convolutions and 25% in separate BatchNorm, ReLU6 and padding passes, which ONNX Runtime fuses into "
        "the convolutions). Per image, "
        f"ONNX Runtime needs {1000 / onnx_net:.1f} ms of the 2 cores for the network and "
        f"{1000 / decode:.1f} ms for decoding: the two add up to a ceiling of about "
        f"{1000 / (1000 / onnx_net + 1000 / decode):.0f} images/s end to end.",
        "- The teacher (NIQE + BRISQUE) is itself a cheap handcrafted model: on 2 cores it reaches "
        f"{teacher_e2e:.0f} images/s including its own decoding. Against a VLM teacher (the LEAF paper's "
        "setting: seconds per image on a CPU) the same student would be thousands of times faster (an "
        "estimate: no VLM teacher runs offline here, so it is not measured); against this "
        "teacher the 20x target cannot be met on 2 cores at the default resolution.",
        "",
        f"## Camera-size JPEGs: `fast_decode` ({CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}, quality 90, ONNX Runtime)",
        "",
        "| decoding | images/s |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in cam.items()],
        "",
        "`score_paths(..., fast_decode=True)` decodes a JPEG at reduced DCT scale (here to a shorter side "
        f"of {reduced_side} instead of {CAMERA_SIZE[1]}) before the same bicubic resize to "
        f"{scorer.student.config.resize_shorter}: **{fast_x:.1f}x faster**, at the price of slightly "
        f"different pixels: largest score change {fast_max:.3f}, mean {fast_mean:.3f} on the 1-5 scale over "
        f"these {len(camera)} photos. It is off by "
        "default (scores are then exactly those of the reference preprocessing); images smaller than 4x the "
        "model's resize target, like the 512x384 PNGs above, are decoded exactly either way.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
