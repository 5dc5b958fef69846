"""benchmarks/p1_reproduction.py: the class-balanced subset, the recipe config, the summary table, and
one tiny end-to-end invocation (two cells, a few steps) that writes the grid the report reads."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from align_bench import SMALL_MINI
from iqalens.align.grid_result import AlignGridResult
from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
from iqalens.datasets.manifest import read_manifest
from iqalens.models.mini import MiniVLM
from iqalens.results import read_result
from iqalens.samples import sample_paths

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "p1_reproduction.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("p1_reproduction", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("p1") / "bench"
    spec = BenchmarkSpec(
        types=(1, 2, 11, 16, 21), levels=(1, 3, 5), size=(96, 72), split_fractions=(0.5, 0.25, 0.25)
    )
    build_benchmark(folder, refs=[str(p) for p in sample_paths()[:4]], spec=spec, progress=False)
    return folder


def test_balanced_subset_caps_each_photo_and_class(bench: Path, tmp_path: Path) -> None:
    p1 = _script()
    sub = p1.balanced_manifest(bench / "manifest.csv", bench / "sub.csv", 2, 0)
    full, _ = read_manifest(bench / "manifest.csv")
    rows, _ = read_manifest(sub)
    counts = Counter((r.reference, r.perception_class) for r in rows.rows)
    assert max(counts.values()) == 2  # blur has 6 images per photo here (2 types x 3 levels): capped
    full_counts = Counter((r.reference, r.perception_class) for r in full.rows)
    assert all(counts[k] == min(2, n) for k, n in full_counts.items())
    assert all(r.split for r in rows.rows) and {r.split for r in rows.rows} == {r.split for r in full.rows}
    again = p1.balanced_manifest(bench / "manifest.csv", tmp_path / "again.csv", 2, 0)
    again_rows = read_manifest(again)[0]
    assert [again_rows.resolve(r) for r in again_rows.rows] == [rows.resolve(r) for r in rows.rows]  # seeded


def test_recipe_config_gives_the_papers_cells() -> None:
    p1 = _script()
    model, options, seeds, cells, settings = p1.load_config(ROOT / "docs" / "recipes" / "p1_mplug_owl2.json")
    assert model.startswith("hf:") and options.get("trust_remote_code") is True
    assert seeds == [0, 1] and settings == {"device": "cuda", "precision": "bf16"}
    by = {c.name: c for c in cells}
    assert by["V+P+c"].w_constraint == 10.0 and by["V+P"].w_constraint == 0.0
    assert by["L"].overrides["lora"] == "L" and by["V"].overrides["max_steps"] == 300


def test_every_default_cell_is_a_valid_config_under_the_grid_defaults() -> None:
    """A cell's overrides must fit the grid's settings (a tap inside the cached trunk is refused):
    found here, not an hour into a full run."""
    from iqalens.errors import InvalidInputError

    script = _script()
    settings = script.grid_settings(script.build_parser().parse_args([]))
    for cell in script.DEFAULT_CELLS:
        if cell.train == "-":
            continue
        config = script.cell_config(cell, 3, settings)
        assert config.seed == 3 and config.w_constraint == cell.w_constraint
        for key, value in cell.overrides.items():
            assert getattr(config, key) == value, (cell.name, key)
    # the target cell trains the encoder after site 4 so that tap 3 is the cached map; the grid's
    # default (after site 5) would cache past it
    target = next(c for c in script.DEFAULT_CELLS if c.name == "V+P+c+stats3-4+fh+std")
    assert target.name in script.MAIN_CELLS
    config = script.cell_config(target, 0, settings)
    assert config.encoder_frozen_sites == 4 and "vision_encoder" in config.train
    bad = script.Cell("bad", "V+P", overrides={**target.overrides, "encoder_frozen_sites": 5})
    with pytest.raises(InvalidInputError, match="tap 3"):
        script.cell_config(bad, 0, settings)


def test_summary_table_gives_mean_and_spread_over_seeds() -> None:
    p1 = _script()
    rows = [
        {
            "cell": "V+P",
            "train": "V+P",
            "constraint": 0.0,
            "fc_after": v,
            "bal_after": v,
            "sim_after": 0.1,
            "imagenet_agreement": 0.5,
            "feature_cosine": 0.9,
            "best_step": 10,
            "steps": 20,
            "train_seconds": 5.0,
        }
        for v in (0.6, 0.7)
    ]
    table = p1.markdown(rows, "header")
    line = next(ln for ln in table.splitlines() if ln.startswith("| V+P "))
    assert "| 2 |" in line and "0.650 ± 0.050" in line and "10/10 / 20" in line


@pytest.mark.slow
def test_two_tiny_cells_end_to_end_write_the_grid_result(bench: Path, tmp_path: Path) -> None:
    p1 = _script()
    out = tmp_path / "p1"
    # a small mini model (64 px crops, random projector) keeps the test fast; the script's default
    # base model is the pre-aligned one read at 384 px
    tiny = MiniVLM(SMALL_MINI).save(tmp_path / "m")
    args = [
        "--bench",
        str(bench),
        "-o",
        str(out),
        "--per-class",
        "2",
        "--cells",
        "untrained",
        "V+P+c",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--eval-every",
        "1",
        "--model",
        str(tiny),
        "--markdown",
        str(tmp_path / "p1.md"),
    ]
    assert p1.main(args) == 0
    rows = json.loads((out / "grid.json").read_text())
    assert [r["cell"] for r in rows] == ["untrained", "V+P+c"]
    untrained, constrained = rows
    assert untrained["fc_after"] == untrained["fc_before"] == constrained["fc_before"]
    assert constrained["imagenet_agreement"] is not None and constrained["constraint"] == 10.0
    cfg = json.loads((out / "cells" / "V+P+c-s0" / "config.json").read_text())
    assert cfg["config"]["align"]["encoder_frozen_sites"] == 5  # the encoder trained on cached trunks
    result = read_result(out, AlignGridResult)
    assert isinstance(result, AlignGridResult) and len(result.cells) == 2
    assert (out / "p1_summary.png").stat().st_size > 10_000
    assert "| V+P+c | V+P | 10.0 | 1 |" in (tmp_path / "p1.md").read_text()
    # a rerun trains nothing: finished cells are read back
    assert p1.main([*args, "--summary-only"]) == 0
    assert json.loads((out / "grid.json").read_text()) == rows


def test_common_test_scores_compare_runs_on_the_same_images(tmp_path: Path) -> None:
    """Runs on different subsets are scored on one manifest's test images (paths resolved on both sides)."""
    p1 = _script()
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "common.csv").write_text(
        "path,split\nimages/a.png,test\nimages/b.png,test\nimages/c.png,test\nimages/d.png,train\n"
    )
    run = tmp_path / "run"
    (run / "after").mkdir(parents=True)
    (run / "after" / "images.csv").write_text(
        "path,split,class,answer\n"
        "./images/a.png,test,noise,noise\n"  # counted: same file, another spelling
        "images/b.png,test,noise,blur\n"
        "images/c.png,test,clean,clean\n"
        "images/d.png,test,noise,noise\n"  # a train image of the common manifest: not counted
        "images/e.png,test,clean,blur\n"  # not in the common test split: not counted
    )
    paths = p1.paths_of_test_split(bench / "common.csv")
    got = p1.common_test_scores(run, "after", bench, paths)
    assert got["n_common"] == 3
    assert got["fc_common"] == pytest.approx(2 / 3)
    assert got["bal_common"] == pytest.approx((0.5 + 1.0) / 2)  # noise 1 of 2, clean 1 of 1
    assert p1.common_test_scores(run, "before", bench, paths) == {}  # no answers on that side
    rows = [{"cell": "P", "run": "run", "train": "P", "constraint": 0.0, "fc_after": 0.7, "bal_after": 0.6,
             "sim_after": 0.1, "imagenet_agreement": 1.0, "feature_cosine": 1.0, "best_step": 1, "steps": 2,
             "train_seconds": 1.0}]  # fmt: skip
    p1.add_common_scores(rows, tmp_path, bench / "common.csv", bench / "common.csv")
    line = next(ln for ln in p1.markdown(rows, "h").splitlines() if ln.startswith("| P "))
    assert line.endswith("0.667 / 0.750 (3) |")


def test_a_missing_common_test_manifest_is_one_clear_error(tmp_path: Path, capsys) -> None:
    p1 = _script()
    with pytest.raises(SystemExit):
        p1.main(["-o", str(tmp_path / "o"), "--summary-only", "--common-test", str(tmp_path / "nope.csv")])
    assert "--common-test: no manifest at" in capsys.readouterr().err
