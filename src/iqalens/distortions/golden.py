"""Reading reference outputs of the original KADID-10k MATLAB generator (the "golden" set).

The golden folder (``manifest.csv`` + PNGs, see ``../shared/data/kadid-golden`` in development)
holds the original code's outputs for a few inputs. This module loads it and measures how
closely this port agrees: PSNR for deterministic types, and for stochastic types (whose random
streams cannot be reproduced) the ratio of the standard deviation of the change, ours vs theirs.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqalens.distortions import distort
from iqalens.evaluation.fidelity import psnr
from iqalens.images import load_rgb


@dataclass(frozen=True)
class GoldenCase:
    """One golden output: which reference, type and level produced it."""

    reference: Path
    output: Path
    type_id: int
    level: int
    parameter: float
    stochastic: bool


def read_manifest(folder: str | os.PathLike[str]) -> list[GoldenCase]:
    """Parse ``manifest.csv`` (columns file, reference, type_id, level, parameter_value, stochastic)."""
    base = Path(folder)
    with open(base / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        GoldenCase(
            reference=base / r["reference"],
            output=base / r["file"],
            type_id=int(r["type_id"]),
            level=int(r["level"]),
            parameter=float(r["parameter_value"]),
            stochastic=r["stochastic"] == "1",
        )
        for r in rows
    ]


def change_std(reference: np.ndarray, output: np.ndarray) -> float:
    """Standard deviation of (output - reference) in [0, 1] units: the strength of a random change."""
    return float(np.std(output.astype(np.float64) / 255.0 - reference.astype(np.float64) / 255.0))


@dataclass(frozen=True)
class Agreement:
    """Agreement of this port with one golden output."""

    case: GoldenCase
    psnr_db: float  # ours vs golden (meaningful for deterministic types)
    std_ours: float  # change strength, mean over seeds
    std_golden: float


def measure(case: GoldenCase, seeds: tuple[int, ...] = tuple(range(8))) -> Agreement:
    """Compare our output for ``case`` with the golden one."""
    ref = load_rgb(case.reference)
    golden = load_rgb(case.output)
    outs = [distort(ref, case.type_id, case.level, seed=s) for s in (seeds if case.stochastic else seeds[:1])]
    return Agreement(
        case=case,
        psnr_db=psnr(golden, outs[0]),
        std_ours=float(np.mean([change_std(ref, o) for o in outs])),
        std_golden=change_std(ref, golden),
    )
