"""Projector taps: the mini model's projector also reading a mid-encoder site (``iqalens align
--projector-taps``): unchanged outputs until trained, the same cells from pixels and from a cached
trunk, checkpoints that round-trip, and a projector-only run that learns to use the tap."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from align_bench import SMALL_MINI, build_align_bench, projector_tap_run
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.run import add_projector_taps, run_align
from iqalens.align.train import align
from iqalens.cli import main
from iqalens.images import load_rgb
from iqalens.models.loading import load_model
from iqalens.models.mini import MiniConfig, MiniVLM
from iqalens.samples import sample_paths
from iqalens.taxonomy import CLASSES


@pytest.fixture(scope="module")
def template() -> MiniVLM:
    return MiniVLM(SMALL_MINI, model_id="mini-taps")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_align_bench(tmp_path_factory.mktemp("taps") / "bench")


def _images(n: int = 3) -> list[np.ndarray]:
    return [load_rgb(p) for p in sample_paths()[:n]]


def test_a_new_tap_changes_nothing_until_its_weights_move(template: MiniVLM) -> None:
    model = copy.deepcopy(template)
    images = _images()
    before = model.class_log_scores(images, list(CLASSES))
    feats_before = model.extract(images)
    model.add_projector_taps([4])
    assert model.config.projector_taps == (4,)
    assert model.projector[0].in_features == 1280 + model.site_channels(4) == 1280 + 80
    np.testing.assert_allclose(model.class_log_scores(images, list(CLASSES)), before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.extract(images).projector, feats_before.projector, rtol=0, atol=1e-6)
    # the tap is read: once its columns are non-zero the answers move
    with torch.no_grad():
        model.projector[0].weight[:, 1280:] = 0.05
    assert not np.allclose(model.class_log_scores(images, list(CLASSES)), before, atol=1e-4)
    model.add_projector_taps([4])  # already there: nothing changes
    assert model.projector[0].in_features == 1360


def test_adding_a_tap_leaves_the_callers_config_alone() -> None:
    """The model keeps its own copy of the config: one config shared by several models (the tests'
    SMALL_MINI, a user's) must not gain the taps one of them adds."""
    shared = replace(SMALL_MINI)
    model = MiniVLM(shared, model_id="mini-taps")
    model.add_projector_taps([4], "stats")
    assert model.config.projector_taps == (4,) and model.config.projector_tap_pool == "stats"
    assert shared.projector_taps == () and shared.projector_tap_pool == "cells"
    assert MiniVLM(shared).projector[0].in_features == 1280


def test_cells_from_a_cached_trunk_equal_the_pixel_path(template: MiniVLM) -> None:
    model = copy.deepcopy(template)
    model.add_projector_taps([4, 6])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, head, cells = model.encode_cells(x)
        assert cells.shape == (2, 4, 1280 + model.site_channels(4) + model.site_channels(6))
        torch.testing.assert_close(cells[..., :1280], model.grid_cells(head))
        for sites in (2, 5):  # trunk ends at site 1 (tap 4 computed after it) or at site 4 (the tap itself)
            _, head2, cells2 = model.encode_cells(model.encode_trunk(x, sites), sites)
            torch.testing.assert_close(cells2, cells, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="cache at most 5 sites"):
            model.encode_cells(model.encode_trunk(x, 6), 6)
        with pytest.raises(ValueError, match="encode_cells"):
            model.visual_tokens(head)  # the head alone is not the projector's whole input any more


def test_tapped_checkpoint_round_trips(template: MiniVLM, tmp_path: Path) -> None:
    model = copy.deepcopy(template)
    model.add_projector_taps([3])
    with torch.no_grad():
        model.projector[0].weight[:, 1280:].normal_(0, 0.05)
    model.save(tmp_path / "m")
    loaded = MiniVLM.load(tmp_path / "m")
    assert loaded.config.projector_taps == (3,)
    images = _images(2)
    np.testing.assert_allclose(
        loaded.class_log_scores(images, list(CLASSES)),
        model.class_log_scores(images, list(CLASSES)),
        rtol=0,
        atol=1e-6,
    )


def test_bad_taps_are_clear_errors(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct vision sites 0..7"):
        MiniConfig(projector_taps=(8,))
    with pytest.raises(ValueError, match="train the projector"):
        AlignConfig(train=("vision_encoder",), projector_taps=(4,))
    with pytest.raises(ValueError, match="inside the cached trunk"):
        AlignConfig(train=("vision_encoder", "projector"), encoder_frozen_sites=6, projector_taps=(4,))
    cfg = AlignConfig(train=("projector",), projector_taps=(4,), max_steps=1, progress=False)
    with pytest.raises(ValueError, match="widen it first"):
        align(MiniAlignable(copy.deepcopy(template)), bench, tmp_path / "r", cfg)
    with pytest.raises(ValueError, match="mini model only"):
        add_projector_taps(object(), (4,), "x")
    assert add_projector_taps(object(), (), "x") == "x"


def test_cli_rejects_a_tap_that_is_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "align",
        "--bench",
        str(tmp_path),
        "--train",
        "P",
        "--projector-taps",
        "4,mid",
        "-o",
        str(tmp_path),
    ]
    assert main(args) == 2
    assert "--projector-taps takes comma-separated site numbers" in capsys.readouterr().err


def test_projector_run_with_a_tap_learns_it_and_keeps_the_encoder(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    template.save(base)
    cfg = projector_tap_run(4)
    metrics = run_align(
        f"mini:{base}", bench, tmp_path / "run", cfg, cache_dir=tmp_path / "cache", report=False
    )
    assert metrics["data"]["inputs"] == "encoded" and "align-inputs" in metrics["data"]["inputs_file"]
    assert metrics["frozen_unchanged"] == {"vision_encoder": True, "language_model": True}
    loaded, _ = load_model(str(tmp_path / "run"))
    assert loaded.config.projector_taps == (4,) and loaded.model_id == "mini-taps+align[P+tap4]"
    assert loaded.projector[0].weight[:, 1280:].abs().sum() > 0  # the tap's weights were trained
    for name, p in template.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[name], p), name
    # cached inputs of the untapped model are not reused for the tapped one (their cells differ)
    plain = AlignConfig(**{**cfg.to_dict(), "projector_taps": ()})
    run_align(f"mini:{base}", bench, tmp_path / "plain", plain, cache_dir=tmp_path / "cache", report=False)
    files = sorted((tmp_path / "cache" / "align-inputs").glob("*.pt"))
    assert len(files) == 2
