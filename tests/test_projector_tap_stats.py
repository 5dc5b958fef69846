"""Projector taps summarised as image-wide channel statistics (``--projector-tap-pool stats``): what
the summary holds (and what cell means lose), unchanged outputs until trained, the cached-trunk path,
checkpoints, clear errors, and an align run whose model id and cached inputs name the pool."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from align_bench import SMALL_MINI, build_align_bench, projector_tap_run
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.run import add_projector_taps, run_align
from iqalens.align.train import align
from iqalens.images import load_rgb
from iqalens.models.loading import load_model
from iqalens.models.mini import MiniConfig, MiniVLM
from iqalens.models.mini_taps import tap_summary, tap_width, taps_name
from iqalens.samples import sample_paths
from iqalens.taxonomy import CLASSES


@pytest.fixture(scope="module")
def template() -> MiniVLM:
    return MiniVLM(SMALL_MINI, model_id="mini-stats")


def test_stats_are_the_image_wide_mean_and_std_on_every_cell() -> None:
    fmap = torch.randn(2, 5, 8, 8)
    stats = tap_summary(fmap, 3, "stats")
    assert stats.shape == (2, 9, 10) and tap_width(5, "stats") == 10 and tap_width(5, "cells") == 5
    flat = fmap.flatten(2)
    want = torch.cat([flat.mean(-1), flat.std(-1, correction=0)], dim=1)
    for cell in range(9):
        torch.testing.assert_close(stats[:, cell], want, rtol=0, atol=1e-3)
    assert tap_summary(fmap, 3, "cells").shape == (2, 9, 5)


def test_stats_see_a_spread_that_cell_means_average_away() -> None:
    # a flat map and a checkerboard with the same mean in every 2x2 cell: contrast-like change
    flat = torch.zeros(1, 1, 4, 4)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2).view(1, 1, 4, 4)
    torch.testing.assert_close(tap_summary(flat, 2, "cells"), tap_summary(checker, 2, "cells"))
    s_flat, s_checker = tap_summary(flat, 2, "stats"), tap_summary(checker, 2, "stats")
    assert s_flat[0, 0, 1] < 0.01 and s_checker[0, 0, 1] == pytest.approx(1.0, abs=1e-3)


def test_std_keeps_a_finite_gradient_on_a_constant_map() -> None:
    fmap = torch.ones(1, 3, 4, 4, requires_grad=True)
    tap_summary(fmap, 2, "stats").sum().backward()
    assert fmap.grad is not None and torch.isfinite(fmap.grad).all()


def test_a_stats_tap_changes_nothing_until_trained_and_round_trips(template: MiniVLM, tmp_path: Path) -> None:
    model = copy.deepcopy(template)
    images = [load_rgb(p) for p in sample_paths()[:2]]
    before = model.class_log_scores(images, list(CLASSES))
    model.add_projector_taps([3, 4], pool="stats")
    assert model.config.projector_tap_pool == "stats"
    assert model.projector[0].in_features == 1280 + 2 * (model.site_channels(3) + model.site_channels(4))
    np.testing.assert_allclose(model.class_log_scores(images, list(CLASSES)), before, rtol=0, atol=1e-6)
    with torch.no_grad():
        model.projector[0].weight[:, 1280:].normal_(0, 0.05)
    moved = model.class_log_scores(images, list(CLASSES))
    assert not np.allclose(moved, before, atol=1e-4)
    model.save(tmp_path / "m")
    loaded = MiniVLM.load(tmp_path / "m")
    assert loaded.config.projector_taps == (3, 4) and loaded.config.projector_tap_pool == "stats"
    np.testing.assert_allclose(loaded.class_log_scores(images, list(CLASSES)), moved, rtol=0, atol=1e-6)
    # the cached-trunk path (trunk ends at the tap) gives the pixel path's cells
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, _, cells = model.encode_cells(x)
        _, _, cells2 = model.encode_cells(model.encode_trunk(x, 4), 4)
    torch.testing.assert_close(cells2, cells, rtol=0, atol=1e-5)


def test_pool_errors_are_clear(template: MiniVLM, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tap pool must be one of"):
        MiniConfig(projector_tap_pool="max")
    with pytest.raises(ValueError, match="projector_tap_pool must be one of"):
        AlignConfig(train=("projector",), projector_taps=(4,), projector_tap_pool="max")
    with pytest.raises(ValueError, match="projector_tap_pool must be one of"):
        AlignConfig(train=("projector",), projector_tap_pool="max")  # said even before any tap is set
    model = copy.deepcopy(template)
    model.add_projector_taps([4])
    with pytest.raises(ValueError, match="one model summarises all its taps one way"):
        model.add_projector_taps([3], pool="stats")
    bench = build_align_bench(tmp_path / "bench")
    cfg = AlignConfig(
        train=("projector",), projector_taps=(4,), projector_tap_pool="stats", max_steps=1, progress=False
    )
    with pytest.raises(ValueError, match="summarises its taps as 'cells'"):
        align(MiniAlignable(model), bench, tmp_path / "r", cfg)


def test_a_stats_run_names_its_pool_and_keys_its_cache_by_it(template: MiniVLM, tmp_path: Path) -> None:
    assert taps_name((3, 4), "stats") == "+tapstats3-4" and taps_name((4,)) == "+tap4"
    assert add_projector_taps(copy.deepcopy(template), (4,), "ck", "stats") == "ck+tapstats4"
    base = tmp_path / "base"
    template.save(base)
    bench = build_align_bench(tmp_path / "bench")
    cfg = projector_tap_run(2, projector_tap_pool="stats")
    cache = tmp_path / "cache"
    run_align(f"mini:{base}", bench, tmp_path / "stats", cfg, cache_dir=cache, report=False)
    loaded, _ = load_model(str(tmp_path / "stats"))
    assert loaded.model_id == "mini-stats+align[P+tapstats4]"
    assert loaded.config.projector_tap_pool == "stats"
    assert loaded.projector[0].weight[:, 1280:].abs().sum() > 0
    cells = AlignConfig(**{**cfg.to_dict(), "projector_tap_pool": "cells"})
    run_align(f"mini:{base}", bench, tmp_path / "cells", cells, cache_dir=cache, report=False)
    assert len(sorted((cache / "align-inputs").glob("*.pt"))) == 2  # the two pools' inputs differ
