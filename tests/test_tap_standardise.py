"""``iqalens align --projector-tap-standardise``: the projector's tap columns train on standardised
inputs, installing and folding the standardisation never changes what the model answers, the saved
projector reads raw inputs, an interrupted run resumes exactly, and the option refuses the settings
where it means nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from align_bench import SMALL_MINI, build_align_bench, projector_tap_run
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.tap_standardise import TapStandardiser, tap_statistics
from iqalens.align.train import align
from iqalens.cli import main
from iqalens.errors import InvalidInputError
from iqalens.models.mini import MiniVLM

HEAD, TAPS = 6, 4


def _layer(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(HEAD + TAPS, 5)


def _inputs(n: int = 64) -> torch.Tensor:
    """Head inputs near zero, tap inputs far from zero-mean, unit scale (as the mini model's are)."""
    g = torch.Generator().manual_seed(7)
    head = torch.randn(n, 3, HEAD, generator=g)
    taps = 8.0 + 3.0 * torch.randn(n, 1, TAPS, generator=g).expand(n, 3, TAPS)
    return torch.cat([head, taps], dim=-1)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    taps = x[..., HEAD:].reshape(-1, TAPS)
    return taps.mean(0), taps.std(0) + 1e-3


def test_installing_keeps_the_function_and_standardises_what_the_layer_reads() -> None:
    layer, x = _layer(0), _inputs()
    before = layer(x)
    seen: list[torch.Tensor] = []
    standardiser = TapStandardiser(layer, HEAD, *_stats(x))
    standardiser.install()
    layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    assert torch.allclose(layer(x), before, atol=1e-5)
    taps = seen[0][..., HEAD:].reshape(-1, TAPS)
    assert torch.allclose(taps.mean(0), torch.zeros(TAPS), atol=1e-4)
    assert torch.allclose(taps.std(0), torch.ones(TAPS), atol=1e-2)
    assert torch.equal(seen[0][..., :HEAD], x[..., :HEAD])  # the head's inputs pass untouched


def test_folding_turns_the_trained_weights_into_a_raw_input_layer() -> None:
    layer, x = _layer(1), _inputs()
    standardiser = TapStandardiser(layer, HEAD, *_stats(x))
    standardiser.install()
    with torch.no_grad():  # "training" in the standardised parameterisation
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
        layer.bias.add_(0.1)
    trained = layer(x)
    standardiser.fold()
    assert not layer._forward_pre_hooks
    assert torch.allclose(layer(x), trained, atol=1e-4)
    standardiser.fold()  # a second fold is a no-op
    assert torch.allclose(layer(x), trained, atol=1e-4)


def test_statistics_cover_every_cell_of_the_given_images() -> None:
    x, layer = _inputs(10), _layer(2)
    bank = {f"img{i}": x[i] for i in range(10)}

    class Model:
        def projector_first_layer(self) -> tuple[nn.Linear, int]:
            return layer, HEAD

        def projector_inputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            return inputs["cells"]

    class Bank:
        def batch(self, keys: list[str]) -> dict[str, torch.Tensor]:
            return {"cells": torch.stack([bank[k] for k in keys])}

    keys = [f"img{i}" for i in range(6)]
    mean, std = tap_statistics(Model(), Bank(), keys, batch_size=4)  # two batches
    want_mean, want_std = _stats(x[:6])
    assert torch.allclose(mean, want_mean, atol=1e-5) and torch.allclose(std, want_std, atol=1e-4)
    with pytest.raises(InvalidInputError, match="mini model only"):
        tap_statistics(object(), Bank(), keys)
    layer = nn.Linear(HEAD, 5)  # a projector without tap columns
    with pytest.raises(InvalidInputError, match="reads no taps"):
        tap_statistics(Model(), Bank(), keys)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_align_bench(tmp_path_factory.mktemp("tap_standardise") / "bench")


def _tapped() -> MiniAlignable:
    """A fresh tiny mini model whose projector also reads site 4's statistics."""
    model = MiniVLM(SMALL_MINI, model_id="mini-tap-standardise")
    model.add_projector_taps((4,), "stats")
    return MiniAlignable(model)


def _train(bench: Path, out: Path, standardise: bool) -> MiniVLM:
    alignable = _tapped()
    cfg = projector_tap_run(4, projector_tap_pool="stats", projector_tap_standardise=standardise)
    align(alignable, bench, out, cfg)
    return alignable.model


def test_a_run_trains_standardised_and_saves_a_raw_input_projector(bench: Path, tmp_path: Path) -> None:
    model = _train(bench, tmp_path / "std", standardise=True)
    plain = _train(bench, tmp_path / "plain", standardise=False)
    first = model.projector[0]
    assert not first._forward_pre_hooks  # folded: nothing left between the taps and the layer
    head = model.site_channels(model.vision_sites - 1)
    assert not torch.allclose(first.weight[:, head:], plain.projector[0].weight[:, head:], atol=1e-6)
    saved = MiniVLM.load(tmp_path / "std" / "model")
    for mine, theirs in zip(model.projector.parameters(), saved.projector.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_an_interrupted_standardised_run_resumes_to_the_same_projector(bench: Path, tmp_path: Path) -> None:
    # the saved state holds weights in the standardised parameterisation; a resumed run measures the
    # same statistics again, so it must end exactly where an uninterrupted one does (EMA on too)
    cfg = projector_tap_run(4, projector_tap_pool="stats", projector_tap_standardise=True, ema_decay=0.5)

    class Crash(RuntimeError):
        pass

    def crash_at_3(step: int, _terms: dict[str, float]) -> None:
        if step == 3:
            raise Crash

    straight = _tapped()
    align(straight, bench, tmp_path / "straight", cfg)
    with pytest.raises(Crash):
        align(_tapped(), bench, tmp_path / "resumed", cfg, on_step=crash_at_3)
    resumed = _tapped()
    assert align(resumed, bench, tmp_path / "resumed", cfg)["steps_run"] == 4
    pairs = zip(straight.model.projector.parameters(), resumed.model.projector.parameters(), strict=True)
    for a, b in pairs:
        assert torch.equal(a, b)


def test_the_option_needs_taps_and_a_full_weight_projector() -> None:
    with pytest.raises(InvalidInputError, match="projector taps"):
        AlignConfig(train=("projector",), projector_tap_standardise=True)
    with pytest.raises(InvalidInputError, match="no LoRA"):
        AlignConfig(
            train=("projector",), lora=("projector",), projector_taps=(4,), projector_tap_standardise=True
        )


def test_the_cli_passes_the_flag_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flag = "--projector-tap-standardise"  # without taps: a one-line error, exit 2, before any model loads
    assert main(["align", "--bench", str(tmp_path), "--train", "P", flag, "-o", str(tmp_path)]) == 2
    assert "projector taps" in capsys.readouterr().err
