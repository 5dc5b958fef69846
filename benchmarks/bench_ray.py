"""The Ray engine on one machine against the local engine, same files, interleaved; writes benchmarks/RAY.md.

    nice .venv/bin/python benchmarks/bench_ray.py [--n 512] [--repeats 3] [--cpus 2]

A local Ray cluster with ``--cpus`` CPUs (started once, not timed) scores ``--n`` distinct 512x384
PNGs with the default student into CSV: ``iqalens score --engine ray`` (Ray Data, one ONNX actor per
CPU, Parquet shards merged at the end; each run starts its actors, which is timed: it is what a run
costs) against ``iqalens score`` (the local pipeline). On one machine Ray cannot be faster than the
local pipeline (the same work plus actors, the object store and shards); what this measures is its
overhead, i.e. what a cluster has to win back. See docs/scale.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402
from bench_scoring import make_images  # noqa: E402
from timing import load_note  # noqa: E402

from iqalens.leaf.ray_engine import score_with_ray, shards_dir  # noqa: E402
from iqalens.leaf.scoring import score_inputs  # noqa: E402

OUT = Path(__file__).resolve().parent / "RAY.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        paths, _ = make_images(Path(tmp) / "imgs", args.n)
        inputs = [str(p) for p in paths]
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        times: dict[str, list[float]] = {
            "local engine (`iqalens score`)": [],
            "Ray engine (`--engine ray`)": [],
        }
        texts = {}
        for _ in range(args.repeats):
            out = Path(tmp) / "local.csv"
            t = time.perf_counter()
            score_inputs(inputs, None, "csv", out, progress=False, keep_results=False)
            times["local engine (`iqalens score`)"].append(time.perf_counter() - t)
            texts["local"] = out.read_text()
            out = Path(tmp) / "ray.csv"
            shutil.rmtree(shards_dir(out), ignore_errors=True)
            t = time.perf_counter()
            score_with_ray(inputs, out, shard_size=128)
            times["Ray engine (`--engine ray`)"].append(time.perf_counter() - t)
            texts["ray"] = out.read_text()
        ray.shutdown()
    load_after = os.getloadavg()
    rate = {k: args.n / statistics.median(v) for k, v in times.items()}
    lines = [
        "# The Ray engine on one machine",
        "",
        f"Produced by `nice .venv/bin/python benchmarks/bench_ray.py` ({args.n} distinct 512x384 PNGs, "
        f"the default student, CSV; median of {args.repeats} interleaved runs; a local Ray cluster with "
        f"{args.cpus} CPUs, started once in {init_s:.1f} s, not counted; each Ray run starts its actors).",
        "",
        f"- Machine: {platform.platform()}, {os.cpu_count()} logical CPUs. "
        + load_note(load_before[0], load_after[0], args.cpus),
        f"- Same output: {'yes, byte-identical CSV' if texts['local'] == texts['ray'] else 'NO'}.",
        "",
        "| engine | images/s |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in rate.items()],
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
