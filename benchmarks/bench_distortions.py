"""Speed of the KADID-10k generator at 512x384 on one core, against imagecorruptions in the same run.

What is timed: ``iqalens.distortions.distort`` for every type and level on a bundled 512x384
photo (the full call: min-max mapping, kernel, uint8 conversion), and the closest types of the
``imagecorruptions`` package (the maintained ``imagecorruptions-imaug`` fork, same API) at their
severities 1-5 on the same image. Each (type, level) is timed ``--repeats`` times; the median
is kept. The process is pinned to one core and BLAS/OpenMP threads are limited to one.

Usage: ``python benchmarks/bench_distortions.py --output benchmarks/RESULTS.md``
(``make bench`` installs the peer and runs this).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from iqalens.distortions import all_types, distort  # noqa: E402
from iqalens.images import load_rgb  # noqa: E402
from iqalens.runs import machine_description, package_versions  # noqa: E402
from iqalens.samples import sample_paths  # noqa: E402

#: our type id -> imagecorruptions corruption name (same or closest distortion)
PEERS: dict[int, str] = {
    1: "gaussian_blur",
    2: "defocus_blur",
    3: "motion_blur",
    8: "saturate",
    10: "jpeg_compression",
    11: "gaussian_noise",
    13: "impulse_noise",
    16: "brightness",
    21: "pixelate",
    25: "contrast",
}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_ours(image: np.ndarray, repeats: int) -> dict[int, list[float]]:
    return {
        t.id: [
            median_seconds(lambda t=t, lv=lv: distort(image, t.id, lv, seed=0), repeats) for lv in range(1, 6)
        ]
        for t in all_types()
    }


def bench_peer(image: np.ndarray, repeats: int) -> dict[int, list[float]] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from imagecorruptions import corrupt
    except ImportError:
        return None
    out: dict[int, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tid, name in PEERS.items():
            out[tid] = [
                median_seconds(lambda n=name, s=s: corrupt(image, corruption_name=n, severity=s), repeats)
                for s in range(1, 6)
            ]
    return out


def jpeg_at_peer_qualities(image: np.ndarray, repeats: int) -> list[float]:
    """Our type 10 (full call) at the peer's qualities 25, 18, 15, 10, 7: the same-settings comparison."""
    from dataclasses import replace

    from iqalens.distortions import get_type
    from iqalens.distortions._registry import apply

    same = replace(get_type(10), levels=(25, 18, 15, 10, 7))
    rng = np.random.default_rng(0)
    return [median_seconds(lambda lv=lv: apply(same, image, lv, rng), repeats) for lv in range(1, 6)]


def jpeg_codec_floor(image: np.ndarray, repeats: int) -> list[float]:
    """Bare Pillow JPEG encode + decode at KADID's five qualities: the floor under type 10."""
    import io

    from PIL import Image

    def round_trip(q: int) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=q, subsampling=2)
        buf.seek(0)
        return np.asarray(Image.open(buf))

    return [median_seconds(lambda q=int(q): round_trip(q), repeats) for q in (43, 36, 24, 7, 4)]


def all_variants_seconds(image: np.ndarray, repeats: int) -> float:
    def run_all() -> None:
        for t in all_types():
            for lv in range(1, 6):
                distort(image, t.id, lv, seed=0)

    return median_seconds(run_all, repeats)


def render(
    image_name: str,
    shape: tuple[int, ...],
    ours: dict[int, list[float]],
    peer: dict[int, list[float]] | None,
    total: float,
    repeats: int,
    jpeg_floor: list[float],
    jpeg_same: list[float],
) -> str:
    versions = package_versions()
    machine = machine_description()
    try:
        from importlib.metadata import version

        peer_version = version("imagecorruptions-imaug")
    except Exception:  # noqa: BLE001 - peer absent: reported as such
        peer_version = "not installed"
    lines = [
        "# Distortion generator speed",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/bench_distortions.py` "
        f"(median of {repeats} runs per call, one core: affinity pinned, BLAS/OpenMP threads = 1).",
        "",
        f"- Image: bundled `{image_name}`, {shape[1]}x{shape[0]} RGB uint8.",
        f"- Machine: {machine['platform']}, {machine['processor']}, {machine['cpu_count']} logical CPUs.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}; peer imagecorruptions-imaug "
        f"{peer_version}.",
        "",
        f"**All 125 variants (25 types x 5 levels), one image: {total:.2f} s** (target < 3 s).",
        "",
        "Per type: milliseconds per call, levels 1..5, and their mean; peer = the closest "
        "`imagecorruptions` corruption at severities 1..5 on the same image.",
        "",
        "| id | type | L1 | L2 | L3 | L4 | L5 | mean | peer corruption | peer mean | ours / peer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in all_types():
        ms = [1000 * s for s in ours[t.id]]
        mean = statistics.fmean(ms)
        cells = " | ".join(f"{v:.1f}" for v in ms)
        if peer is not None and t.id in peer:
            peer_mean = 1000 * statistics.fmean(peer[t.id])
            extra = f"{PEERS[t.id]} | {peer_mean:.1f} | {mean / peer_mean:.2f}"
        else:
            extra = " | | "
        lines.append(f"| {t.id} | {t.name} | {cells} | {mean:.1f} | {extra} |")
    floor_ms = 1000 * statistics.fmean(jpeg_floor)
    lines += [
        "",
        f"Codec floor: a bare Pillow JPEG encode + decode of this image at KADID's qualities (43, 36, 24, "
        f"7, 4) takes {floor_ms:.1f} ms on average; the peer's jpeg_compression uses qualities 25..7. "
        f"Our type 10 at the peer's qualities (25, 18, 15, 10, 7): "
        f"{1000 * statistics.fmean(jpeg_same):.1f} ms on average"
        + (
            f" vs the peer's {1000 * statistics.fmean(peer[10]):.1f} ms."
            if peer is not None and 10 in peer
            else "."
        ),
        "",
        "Pairs are 'closest', not identical: the peer's gaussian_noise/impulse_noise/brightness/contrast/"
        "saturate/pixelate/jpeg use other parameters and colour spaces than KADID-10k's, so the ratio "
        "compares the cost of comparable operations, not of the same output.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="markdown file for the results")
    parser.add_argument("--image", default="coffee.png", help="bundled sample photo to use (512x384)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    path = next(p for p in sample_paths() if p.name == args.image)
    image = load_rgb(path)
    ours = bench_ours(image, args.repeats)
    peer = bench_peer(image, args.repeats)
    total = all_variants_seconds(image, max(3, args.repeats // 2))
    floor = jpeg_codec_floor(image, args.repeats)
    same = jpeg_at_peer_qualities(image, args.repeats)
    text = render(path.name, image.shape, ours, peer, total, args.repeats, floor, same)
    print(text)
    if args.output is not None:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
