"""Access to the KADID-10k golden outputs in ../shared/data/kadid-golden (skip when absent)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kadid-golden"


@dataclass(frozen=True)
class GoldenCase:
    reference: Path
    output: Path
    type_id: int
    level: int
    parameter: float
    stochastic: bool


def golden_available() -> bool:
    return (GOLDEN_DIR / "manifest.csv").is_file()


requires_golden = pytest.mark.skipif(
    not golden_available(), reason=f"KADID golden data not found at {GOLDEN_DIR} (needs ../shared)"
)


def golden_cases(type_id: int | None = None) -> list[GoldenCase]:
    if not golden_available():
        return []
    with open(GOLDEN_DIR / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cases = [
        GoldenCase(
            reference=GOLDEN_DIR / r["reference"],
            output=GOLDEN_DIR / r["file"],
            type_id=int(r["type_id"]),
            level=int(r["level"]),
            parameter=float(r["parameter_value"]),
            stochastic=r["stochastic"] == "1",
        )
        for r in rows
    ]
    return [c for c in cases if type_id is None or c.type_id == type_id]


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
