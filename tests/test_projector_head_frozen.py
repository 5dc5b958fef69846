"""``iqalens align --projector-head-frozen``: the projector's weights on the head's inputs stay bit for
bit as they were (gradient, clipping and weight decay included) while its tap columns train, the
run's metrics prove it, and the option refuses the settings where it means nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from align_bench import SMALL_MINI, build_align_bench, projector_tap_run
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.train import align
from iqalens.cli import main
from iqalens.errors import InvalidInputError
from iqalens.models.mini import MiniVLM


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_align_bench(tmp_path_factory.mktemp("head_frozen") / "bench")


@pytest.fixture(scope="module")
def template() -> MiniVLM:
    return MiniVLM(SMALL_MINI, model_id="mini-head-frozen")


def _tapped(template: MiniVLM) -> MiniVLM:
    model = copy.deepcopy(template)
    model.add_projector_taps((4,), "stats")
    return model


def _train(template: MiniVLM, bench: Path, out: Path, frozen: bool) -> tuple[MiniVLM, torch.Tensor, dict]:
    """Three projector steps with a stats tap of site 4; weight decay on, so it would move the head."""
    model = _tapped(template)
    before = model.projector[0].weight.detach().clone()
    cfg = projector_tap_run(3, projector_tap_pool="stats", projector_head_frozen=frozen, weight_decay=0.5)
    metrics = align(MiniAlignable(model), bench, out, cfg)
    return model, before, metrics


def test_head_columns_stay_exact_while_the_taps_train(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    model, before, metrics = _train(template, bench, tmp_path / "frozen", frozen=True)
    head = model.site_channels(model.vision_sites - 1)
    after = model.projector[0].weight.detach()
    assert torch.equal(after[:, :head], before[:, :head])
    assert not torch.equal(after[:, head:], before[:, head:])  # the tap's columns learnt
    assert not torch.equal(model.projector[2].weight, _tapped(template).projector[2].weight)
    assert metrics["frozen_unchanged"]["projector (head columns)"] is True


def test_after_the_run_the_head_columns_get_gradients_again(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    # the freezing belongs to the run: the same model object trained later learns on every column
    model, _, _ = _train(template, bench, tmp_path / "then_free", frozen=True)
    weight = model.projector[0].weight
    weight.requires_grad_(True)
    model.projector(torch.randn(2, weight.shape[1])).square().sum().backward()
    head = model.site_channels(model.vision_sites - 1)
    assert weight.grad is not None and weight.grad[:, :head].abs().sum() > 0


def test_without_the_option_the_same_run_moves_the_head_columns(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model, before, metrics = _train(template, bench, tmp_path / "free", frozen=False)
    head = model.site_channels(model.vision_sites - 1)
    assert not torch.equal(model.projector[0].weight.detach()[:, :head], before[:, :head])
    assert "projector (head columns)" not in metrics["frozen_unchanged"]


def test_the_option_needs_taps_and_full_weights() -> None:
    with pytest.raises(InvalidInputError, match="projector taps"):
        AlignConfig(train=("projector",), projector_head_frozen=True)
    with pytest.raises(InvalidInputError, match="not LoRA"):
        AlignConfig(
            train=("projector",), lora=("projector",), projector_taps=(4,), projector_head_frozen=True
        )


def test_the_cli_passes_the_flag_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # without taps the flag is refused: a one-line error, exit 2, before any model loads
    args = ["align", "--bench", str(tmp_path), "--train", "P", "--projector-head-frozen", "-o", str(tmp_path)]
    assert main(args) == 2
    assert "projector taps" in capsys.readouterr().err
