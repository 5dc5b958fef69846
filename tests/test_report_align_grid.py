"""``iqalens report`` on a grid folder (kind ``align_grid``): the per-cell table and the probe figure.

The grid is fabricated from typed results written with ``write_result`` (no model, no training):
each cell's align run holds ``before/`` and ``after/`` perceive results with a known probe curve, and
the grid folder's ``metrics.json`` is an :class:`~iqalens.align.grid_result.AlignGridResult` whose rows
carry the forced-choice numbers the table must average.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from iqalens.align.grid_result import CELL_KEYS, AlignGridResult, write_grid_result
from iqalens.align.result import AlignResult
from iqalens.cli import main
from iqalens.perception.result import PerceptionResult
from iqalens.report import build_report, collect
from iqalens.results import write_result
from iqalens.runs import start_run

SITES = ["vision.0", "vision.1", "projector", "lm.0", "lm.1"]
CLASSES = ["blur", "noise", "brightness", "compression", "contrast", "colorfulness", "jitter", "clean"]
BEFORE_CURVE = [0.3, 0.55, 0.2, 0.18, 0.15]
EMBEDDED_SVG = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def perceive_result(model_id: str, fc: float, curve: list[float]) -> PerceptionResult:
    """A perceive result with the fields the report reads (forced choice, probe curve, semantics)."""
    return PerceptionResult(
        model_id=model_id,
        manifest="bench/manifest.csv",
        manifest_hash="f" * 64,
        n_images=64,
        eval_split="test",
        forced_choice={"accuracy": fc, "balanced_accuracy": fc, "chance": 0.125, "classes": CLASSES, "n": 32},
        probes={
            "curve": [{"site": s, "test_accuracy": a} for s, a in zip(SITES, curve, strict=True)],
            "chance": 0.125,
            "l2": 1.0,
            "n_train": 32,
            "n_test": 32,
        },
        semantic={"overall": {"mean_similarity_true": 0.1}, "per_class": {}},
    )


def make_cell_run(folder: Path, train: list[str], fc_after: float, after_curve: list[float]) -> None:
    """A finished align run: config, before/after perceive results, its align result."""
    start_run(folder, "align", {"model": "mini", "train": train}, seed=0)
    write_result(folder / "before", perceive_result("mini", 0.1, BEFORE_CURVE))
    write_result(folder / "after", perceive_result("mini+align", fc_after, after_curve))
    write_result(
        folder,
        AlignResult(
            model_id="mini+align",
            base_model="mini",
            train=train,
            steps_run=3,
            before={"forced_choice_accuracy": 0.1},
            after={"forced_choice_accuracy": fc_after},
            report=True,
            complete=True,
        ),
    )


def row(
    cell: str, train: str, seed: int, run: str | None, fc_after: float | None, **more: Any
) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(CELL_KEYS)
    base.update(cell=cell, train=train, constraint=0.0, seed=seed, run=run, fc_before=0.1, fc_after=fc_after)
    base.update(more)
    return base


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """Untrained (no run), P (1 seed), V+P (2 seeds), V+P+c (its run folder missing)."""
    folder = tmp_path / "grid"
    make_cell_run(folder / "P" / "seed0", ["projector"], 0.3, [0.3, 0.55, 0.35, 0.3, 0.25])
    make_cell_run(folder / "V+P" / "seed0", ["vision_encoder", "projector"], 0.6, [0.3, 0.6, 0.5, 0.45, 0.4])
    make_cell_run(folder / "V+P" / "seed1", ["vision_encoder", "projector"], 0.7, [0.3, 0.6, 0.6, 0.55, 0.5])
    cells = [
        row("untrained", "-", 0, None, 0.1),
        row("P", "P", 0, "P/seed0", 0.3, imagenet_agreement=1.0, feature_cosine=1.0),
        row("V+P", "V+P", 0, "V+P/seed0", 0.6, bal_after=0.55, imagenet_agreement=0.9, feature_cosine=0.8),
        row("V+P", "V+P", 1, "V+P/seed1", 0.7, bal_after=0.65, imagenet_agreement=1.0, feature_cosine=0.9),
        row("V+P+c", "V+P", 0, "V+P+c/seed0", None, constraint=10.0),
    ]
    write_grid_result(
        folder,
        AlignGridResult(
            model_id="mini",
            benchmark="bench/manifest.csv",
            benchmark_hash="f" * 64,
            protocol="8 photos, splits by photo, 3 steps, forced choice on the test split",
            chance=0.125,
            cells=cells,
            notes=["fabricated for a test"],
            complete=False,
        ),
    )
    return folder


def _cell_row(page: str, cell: str) -> str:
    """The <tr> of the per-cell table whose first cell is ``cell``."""
    match = re.search(rf"<tr><td><strong>{re.escape(cell)}</strong>.*?</tr>", page)
    assert match, cell
    return match.group(0)


def test_the_grid_is_one_block_with_the_per_cell_table(grid: Path) -> None:
    found = collect([grid])
    # the cells' align runs are read by the grid, not drawn again as blocks of their own
    assert [r.kind for r in found.runs] == ["align_grid"] and not found.skipped
    page = build_report(found, "grid", [str(grid)])
    assert page.count("<article") == 1 and "which component to fine-tune" in page
    vp = _cell_row(page, "V+P")
    assert "65.0% ± 5.0%" in vp and "60.0% ± 5.0%" in vp  # forced choice and balanced accuracy
    assert "95.0% ± 5.0%" in vp and "0.850 ± 0.050" in vp  # ImageNet agreement, feature cosine
    assert "10.0%" in vp and "+55.0 pt" in vp and ">2</td>" in vp
    p = _cell_row(page, "P")
    assert "30.0% ± 0.0%" in p and "⚠" not in p
    assert "no training" in _cell_row(page, "untrained")
    assert "chance 12.5%" in page and "The grid is not complete" in page
    assert "best cell V+P: forced choice 10.0% → 65.0% ± 5.0% (2 seed(s)); chance 12.5%" in page


def test_a_missing_cell_run_is_marked_and_the_rest_drawn(grid: Path) -> None:
    page = build_report(collect([grid]), "grid", [str(grid)])
    missing = _cell_row(page, "V+P+c")
    assert "⚠" in missing and "seed 0: run missing (V+P+c/seed0)" in missing
    assert ">0 of 1</td>" in missing and "10.0" in missing  # no after number; constraint weight shown
    assert "4 cells, 5 runs (1 missing or unfinished); grid not complete" in page


def test_the_probe_figure_has_before_and_each_trained_cell(grid: Path) -> None:
    page = build_report(collect([grid]), "grid", [str(grid)])
    figures = {alt: base64.b64decode(data).decode() for data, alt in EMBEDDED_SVG.findall(page)}
    (svg,) = [svg for alt, svg in figures.items() if alt.startswith("Linear-probe accuracy at each site")]
    # matplotlib keeps each text's string as a comment beside its glyph paths
    for label in ("before (untrained)", "P after", "V+P after (mean of 2 seeds)", "chance (majority class)"):
        assert f"<!-- {label} -->" in svg, label
    assert "V+P+c after" not in svg  # no run, no curve
    for site in SITES:
        assert f"<!-- {site} -->" in svg


def test_the_mean_curve_averages_the_seeds(grid: Path) -> None:
    from iqalens.report.perception_grid import _mean_curve

    (run,) = collect([grid]).runs
    afters = [run.runs[k].after for k in (2, 3)]
    assert _mean_curve(afters, SITES) == pytest.approx([0.3, 0.6, 0.55, 0.5, 0.45])


def test_iqalens_report_writes_the_grid_page(grid: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.html"
    assert main(["report", str(grid), "-o", str(out)]) == 0
    text = out.read_text()
    assert "fine-tuning grid (per cell)" in text and "65.0% ± 5.0%" in text
