"""Throughput of ``iqalens bench build``: images per second with 1 and 2 worker processes.

Builds the full benchmark (all 25 types x 5 levels + 1 clean image per reference, 512x384) from a
folder of reference photos, once per worker count, into fresh temporary folders, and records the
wall time and images/s with the machine description in a markdown file. A third run with the
largest worker count over the finished folder measures the resume path (verify and skip).

Usage: ``python benchmarks/bench_build.py --refs ../shared/data/pristine/cbsd68 --output benchmarks/BUILD.md``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from iqalens.datasets.benchmark import build_benchmark
from iqalens.datasets.manifest import read_manifest
from iqalens.runs import machine_description, package_versions


def timed_build(out: Path, refs: Path, workers: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    path = build_benchmark(out, refs=[refs], workers=workers, progress=False)
    seconds = time.perf_counter() - start
    manifest, _ = read_manifest(path)
    return seconds, len(manifest), int(manifest.provenance["images_written"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--refs", type=Path, default=Path("../shared/data/pristine/cbsd68"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not args.refs.is_dir():
        raise SystemExit(f"reference folder {args.refs} not found")
    n_refs = sum(1 for p in args.refs.iterdir() if p.suffix.lower() in {".png", ".jpg", ".tif", ".bmp"})
    machine = machine_description()
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="iqalens-build-bench-"))
    try:
        for workers in args.workers:
            out = scratch / f"w{workers}"
            seconds, n_images, written = timed_build(out, args.refs, workers)
            rows.append((f"build, {workers} worker(s)", seconds, n_images, written))
            print(rows[-1], flush=True)
        seconds, n_images, written = timed_build(out, args.refs, max(args.workers))
        rows.append(
            (f"resume of a finished build, {max(args.workers)} worker(s)", seconds, n_images, written)
        )
        print(rows[-1], flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = [
        "# Benchmark build throughput",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/bench_build.py`: "
        f"`build_benchmark` on {n_refs} reference photos from `{args.refs.name}` (all 25 types x 5 levels "
        "+ 1 clean image each, resized/cropped to 512x384, PNG), into a fresh folder per run.",
        "",
        f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} logical CPUs.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in package_versions().items())}.",
        "",
        "| run | wall time (s) | images in manifest | images written | images/s |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, n_images, written in rows:
        lines.append(f"| {name} | {seconds:.1f} | {n_images} | {written} | {n_images / seconds:.1f} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
