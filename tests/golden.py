"""Access to the KADID-10k golden outputs in ../shared/data/kadid-golden (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqalens.distortions.golden import GoldenCase, read_manifest
from iqalens.evaluation.fidelity import psnr as _psnr
from iqalens.images import load_rgb as _load_rgb

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kadid-golden"

__all__ = [
    "GOLDEN_DIR",
    "GoldenCase",
    "golden_available",
    "golden_cases",
    "load_rgb",
    "psnr",
    "requires_golden",
]


def golden_available() -> bool:
    return (GOLDEN_DIR / "manifest.csv").is_file()


requires_golden = pytest.mark.skipif(
    not golden_available(), reason=f"KADID golden data not found at {GOLDEN_DIR} (needs ../shared)"
)


def golden_cases(type_id: int | None = None) -> list[GoldenCase]:
    if not golden_available():
        return []
    return [c for c in read_manifest(GOLDEN_DIR) if type_id is None or c.type_id == type_id]


def load_rgb(path: Path) -> np.ndarray:
    return _load_rgb(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return _psnr(a, b)
