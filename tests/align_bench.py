"""The tiny benchmark the align tests train on: 4 distortion types x 2 levels of 6 bundled photos at
96x72, half of the photos for training, a quarter each for validation and test; the small mini
model they train (:data:`SMALL_MINI`); and the few-step projector-tap run the tap tests train on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqalens.align.config import AlignConfig
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.models.mini import MiniConfig
from iqalens.samples import sample_paths

#: The mini model's architecture at test size (64-px crops, 2x2 visual tokens, a 64-unit projector):
#: the real encoder and language model, small enough to train a few steps in a test.
SMALL_MINI = MiniConfig(image_size=64, resize_shorter=64, grid=2, projector_hidden=64)

ALIGN_BENCH_SPEC = BenchmarkSpec(
    types=(1, 11, 16, 21), levels=(2, 5), size=(96, 72), split_fractions=(0.5, 0.25, 0.25)
)


def build_align_bench(folder: Path) -> Path:
    """Build (or reuse) the tiny align benchmark in ``folder``; returns its manifest."""
    build_benchmark(folder, refs=[str(p) for p in sample_paths()[:6]], spec=ALIGN_BENCH_SPEC, progress=False)
    return folder / "manifest.csv"


def projector_tap_run(steps: int, **overrides: Any) -> AlignConfig:
    """A few projector-only steps with projector taps on the tiny benchmark (``overrides`` on top)."""
    fields: dict[str, Any] = {
        "train": ("projector",),
        "projector_taps": (4,),
        "max_steps": steps,
        "batch_size": 4,
        "eval_every": 2,
        "checkpoint_every": 2,
        "lr": 3e-3,
        "max_val_images": 4,
        "progress": False,
    }
    return AlignConfig(**(fields | overrides))
