"""``iqalens align --ema-decay``: validation, early stopping and the saved model use the moving average
of the trained weights, and an interrupted run resumes to the same average."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align_bench import SMALL_MINI, build_align_bench
from iqalens.align.config import AlignConfig
from iqalens.align.mini import MiniAlignable
from iqalens.align.train import align
from iqalens.errors import InvalidInputError
from iqalens.models.mini import MiniVLM


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_align_bench(tmp_path_factory.mktemp("ema") / "bench")


@pytest.fixture(scope="module")
def template() -> MiniVLM:
    return MiniVLM(SMALL_MINI, model_id="mini-test")


def _config(**kw: object) -> AlignConfig:
    base: dict[str, object] = {
        "train": ("projector",),
        "max_steps": 5,
        "batch_size": 4,
        "eval_every": 5,  # one validation, at the end: the kept weights are the last step's average
        "checkpoint_every": 5,
        "lr": 3e-2,
        "progress": False,
        "max_val_images": 4,
        "ema_decay": 0.5,
    }
    return AlignConfig(**(base | kw))  # type: ignore[arg-type]


def _projector(model: MiniAlignable) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.projector.state_dict().items()}


def test_saved_model_is_the_moving_average_of_the_steps(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model = MiniAlignable(copy.deepcopy(template))
    start = _projector(model)
    seen: list[dict[str, torch.Tensor]] = []
    cfg = _config()
    align(model, bench, tmp_path / "run", cfg, on_step=lambda step, terms: seen.append(_projector(model)))
    assert len(seen) == cfg.max_steps
    expected = dict(start)
    for k, weights in enumerate(seen, start=1):
        decay = min(cfg.ema_decay, (1 + k) / (10 + k))
        expected = {n: decay * expected[n] + (1 - decay) * weights[n] for n in expected}
    saved = load_file(tmp_path / "run" / "model" / "mini.safetensors")
    for name, value in expected.items():
        key = f"projector.{name}"
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6)
        assert not torch.equal(saved[key], seen[-1][name]), "kept the last step's weights, not the average"


def test_without_decay_the_run_keeps_the_weights_of_its_best_step(
    template: MiniVLM, bench: Path, tmp_path: Path
) -> None:
    model = MiniAlignable(copy.deepcopy(template))
    seen: list[dict[str, torch.Tensor]] = []
    align(
        model,
        bench,
        tmp_path / "run",
        _config(ema_decay=0.0),
        on_step=lambda s, t: seen.append(_projector(model)),
    )
    saved = load_file(tmp_path / "run" / "model" / "mini.safetensors")
    for name, value in seen[-1].items():
        assert torch.equal(saved[f"projector.{name}"], value)


def test_interrupted_run_resumes_to_the_same_average(template: MiniVLM, bench: Path, tmp_path: Path) -> None:
    cfg = _config(max_steps=4, eval_every=2, checkpoint_every=2)
    align(MiniAlignable(copy.deepcopy(template)), bench, tmp_path / "straight", cfg)

    class Crash(RuntimeError):
        pass

    def crash_at_3(step: int, terms: dict[str, float]) -> None:
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        align(MiniAlignable(copy.deepcopy(template)), bench, tmp_path / "resumed", cfg, on_step=crash_at_3)
    state = torch.load(tmp_path / "resumed" / "state" / "state.pt", weights_only=False)
    assert state["progress"]["step"] == 2 and state["ema"] is not None
    align(MiniAlignable(copy.deepcopy(template)), bench, tmp_path / "resumed", cfg)
    a = load_file(tmp_path / "straight" / "model" / "mini.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "mini.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_decay_outside_zero_to_one_is_refused(decay: float) -> None:
    with pytest.raises(InvalidInputError, match="ema_decay"):
        AlignConfig(ema_decay=decay)
