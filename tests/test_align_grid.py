"""The reduced alignment grid: benchmarks/align_grid.py's run_grid and table on two cells, tiny steps.

The full grid (8 cells on 8 CBSD68 photos) is a benchmark, not a test; this checks that the script's
machinery (one run per cell, shared feature cache, the constraint only where the encoder trains, the
table) works, so that the command in docs/alignment.md keeps running.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from align_bench import SMALL_MINI, build_align_bench
from iqalens.align.grid_result import AlignGridResult
from iqalens.models.mini import MiniVLM
from iqalens.results import read_result

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "align_grid.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("align_grid", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reduced_grid_runs_each_cell_and_writes_the_table(tmp_path: Path) -> None:
    grid = _load_script()
    bench = build_align_bench(tmp_path / "bench")
    ckpt = tmp_path / "mini"
    MiniVLM(SMALL_MINI, model_id="mini-t").save(ckpt)
    cells = (("P", False), ("V", True))
    rows = grid.run_grid(
        bench,
        tmp_path / "grid",
        cells,
        model=f"mini:{ckpt}",
        steps=2,
        w_constraint=5.0,
        progress=False,
        overrides={"batch_size": 4, "max_val_images": 4, "eval_every": 1},
    )
    assert [r["cell"] for r in rows] == ["P", "V+c"]
    p, vc = rows
    assert p["constraint"] == 0.0 and vc["constraint"] == 5.0
    for r in rows:
        assert r["steps"] == 2 and r["train_seconds"] > 0
        for key in ("fc_before", "fc_after", "bal_before", "bal_after", "sim_before", "sim_after"):
            assert 0.0 <= r[key] <= 1.0 if key[:2] != "si" else -1.0 <= r[key] <= 1.0, key
    # both cells start from the same model: the same "before", extracted once into the shared cache
    assert p["fc_before"] == vc["fc_before"] and p["sim_before"] == vc["sim_before"]
    # the projector alone leaves the encoder as it was; training the encoder moves it
    # (features of an unchanged encoder, perhaps batched otherwise: a relative rounding difference d
    # moves the float64 cosine by <= d**2 / 2, ~1e-8 for EfficientNet-Lite0's bound in tests/tolerances.py)
    assert p["imagenet_agreement"] == 1.0 and p["feature_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert vc["feature_cosine"] < 1.0
    assert [(r["seed"], r["run"]) for r in rows] == [(0, "P"), (0, "V+c")]
    # the grid folder's typed result: the same rows, the chance of the 8 classes, complete
    result = read_result(tmp_path / "grid", AlignGridResult)
    assert result.complete and result.chance == pytest.approx(1 / 8) and result.model_id == "mini-t"
    assert [c["cell"] for c in result.cells] == ["P", "V+c"]
    assert result.cells[1]["fc_after"] == vc["fc_after"] and "total_seconds" not in result.cells[1]
    assert result.benchmark_hash and "steps" in result.protocol
    config = json.loads((tmp_path / "grid" / "V+c" / "metrics.json").read_text())
    assert config["objectives"]["constraint"] == 5.0 and config["train"] == ["vision_encoder"]
    table = grid.markdown(rows, "header")
    lines = table.splitlines()
    assert lines[0] == "header" and len(lines) == 2 + 2 + len(rows)
    assert lines[-2].startswith("| P | off |") and lines[-1].startswith("| V | 5.0 |")
