"""``save_mini_at_resolution``: the pre-aligned mini model saved to read images at another scale and crop
(what the p1 benchmark's ``--resize-shorter`` / ``--image-size`` build), reused only when it matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from align_bench import SMALL_MINI
from iqalens.align import mini as align_mini
from iqalens.errors import InvalidInputError
from iqalens.models import mini as models_mini
from iqalens.models.mini import MiniConfig, MiniVLM


@pytest.fixture
def small_default(monkeypatch: pytest.MonkeyPatch) -> MiniVLM:
    """A small randomly initialised model stands in for the pre-aligned default (no pre-alignment)."""
    torch.manual_seed(0)
    model = MiniVLM(SMALL_MINI, model_id="mini-small")
    monkeypatch.setattr(models_mini, "load_default_mini", lambda: model)
    return model


def test_crop_and_scale_are_saved_and_named(small_default: MiniVLM, tmp_path: Path) -> None:
    folder = align_mini.save_mini_at_resolution(tmp_path / "m", 96, 80)
    saved = json.loads((folder / "mini.json").read_text())
    assert (saved["config"]["resize_shorter"], saved["config"]["image_size"]) == (96, 80)
    assert saved["model_id"] == "mini-small@96c80"
    loaded = MiniVLM.load(folder)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert tuple(loaded.preprocess([image]).shape[-2:]) == (80, 80)
    # same weights: only the reading of the image changed
    for key, value in small_default.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_default_crop_keeps_the_plain_name(small_default: MiniVLM, tmp_path: Path) -> None:
    folder = align_mini.save_mini_at_resolution(tmp_path / "m", 384)
    saved = json.loads((folder / "mini.json").read_text())
    assert saved["model_id"] == "mini-small@384"
    assert saved["config"]["image_size"] == MiniConfig().image_size


def test_existing_folder_is_reused_only_when_it_reads_images_the_same_way(
    small_default: MiniVLM, tmp_path: Path
) -> None:
    folder = align_mini.save_mini_at_resolution(tmp_path / "m", 96, 80)
    stamp = (folder / "mini.json").stat().st_mtime_ns
    assert align_mini.save_mini_at_resolution(tmp_path / "m", 96, 80) == folder
    assert (folder / "mini.json").stat().st_mtime_ns == stamp
    with pytest.raises(InvalidInputError, match="crop 80"):
        align_mini.save_mini_at_resolution(tmp_path / "m", 96, 64)


def test_crop_larger_than_the_resized_image_is_refused(small_default: MiniVLM, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        align_mini.save_mini_at_resolution(tmp_path / "m", 96, 128)
