"""The typed result of an align grid (``iqalens.align.grid_result``): round trip and per-cell summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from iqalens.align.grid_result import (
    CELL_KEYS,
    AlignGridResult,
    mean_std,
    summarise_cells,
    write_grid_result,
)
from iqalens.results import peek_result, read_result


def row(cell: str, seed: int, fc_after: float | None, **more: Any) -> dict[str, Any]:
    """A grid row with every key of :data:`CELL_KEYS` (what the grid scripts write)."""
    base: dict[str, Any] = dict.fromkeys(CELL_KEYS)
    base.update(cell=cell, train=cell.removesuffix("+c"), constraint=0.0, seed=seed, run=f"{cell}/seed{seed}")
    base.update(fc_before=0.1, fc_after=fc_after, **more)
    return base


def test_round_trip_through_write_and_read_result(tmp_path: Path) -> None:
    result = AlignGridResult(
        model_id="mini",
        benchmark="bench/manifest.csv",
        benchmark_hash="abc123",
        protocol="30 photos, splits by photo, 300 steps, forced choice on test",
        chance=0.125,
        cells=[row("V+P", 0, 0.5, imagenet_agreement=0.97), row("-", 0, None) | {"run": None}],
        notes=["a note"],
        complete=True,
    )
    path = write_grid_result(tmp_path, result)
    assert path == tmp_path / "metrics.json"
    stored = json.loads(path.read_text())
    assert list(stored)[:2] == ["kind", "version"]
    assert stored["kind"] == "align_grid" and stored["version"] == 1
    assert peek_result(tmp_path).kind == "align_grid"  # type: ignore[union-attr]
    assert read_result(tmp_path, AlignGridResult) == result


def test_an_older_file_without_new_fields_reads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "align_grid", "version": 1, "cells": []}))
    result = read_result(tmp_path, AlignGridResult)
    assert result.cells == [] and result.chance is None and result.complete is False


def test_summary_of_one_seed_has_zero_std() -> None:
    (s,) = summarise_cells([row("V", 0, 0.4, bal_after=0.35, imagenet_agreement=1.0, feature_cosine=0.9)])
    assert s["cell"] == "V" and s["n_seeds"] == 1 and s["n_after"] == 1
    assert s["fc_after_mean"] == 0.4 and s["fc_after_std"] == 0.0
    assert s["bal_after_mean"] == 0.35 and s["imagenet_agreement_mean"] == 1.0
    assert s["feature_cosine_std"] == 0.0 and s["fc_before_mean"] == 0.1
    assert s["seeds"] == [0] and s["runs"] == ["V/seed0"]


def test_summary_of_two_seeds_is_mean_and_population_std_in_first_seen_order() -> None:
    rows = [
        row("V+P", 0, 0.6, feature_cosine=0.8),
        row("P", 0, 0.3),
        row("V+P", 1, 0.7, feature_cosine=0.9),
    ]
    vp, p = summarise_cells(rows)
    assert [vp["cell"], p["cell"]] == ["V+P", "P"]
    assert vp["n_seeds"] == 2 and vp["seeds"] == [0, 1]
    assert vp["fc_after_mean"] == pytest.approx(0.65)
    assert vp["fc_after_std"] == pytest.approx(0.05)  # population std: |0.6 - 0.7| / 2
    assert vp["feature_cosine_mean"] == pytest.approx(0.85)
    assert p["n_seeds"] == 1 and p["fc_after_std"] == 0.0


def test_missing_values_are_left_out_and_none_when_all_missing() -> None:
    rows = [row("L", 0, 0.2), row("L", 1, None), row("L", 2, math.nan)]
    (s,) = summarise_cells(rows)
    assert s["n_seeds"] == 3 and s["n_after"] == 1
    assert s["fc_after_mean"] == 0.2 and s["fc_after_std"] == 0.0
    assert s["imagenet_agreement_mean"] is None and s["imagenet_agreement_std"] is None
    assert mean_std([None, True, "0.5"]) == (None, None)  # bools and strings are not numbers
