"""Real-size loading options on tiny models: device maps, precision, 8/4-bit pass-through, image budgets.

No GPU and no bitsandbytes here: the quantization configs are checked where they are built and
handed to ``from_pretrained`` (a spy stops the load there), and the missing package gives one clear
error, also through the command line. ``device_map`` runs for real through accelerate on the CPU;
multi-GPU sharding is the same pass-through and is untested here (docs/recipes/gpu_check.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.cli import main
from iqalens.errors import ConfigError
from iqalens.leaf import prompts
from iqalens.models import hf_options
from iqalens.models.hf_options import model_loading_kwargs, quantization_kwargs
from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION, HFVLMAdapter
from iqalens.models.loading import load_model
from tiny_vlms import build_tiny_vlm
from tolerances import TINY_TRANSFORMER_DEPTH, float32_atol

TEXTS = [
    DEFAULT_QUESTION,
    DEFAULT_ANSWER_PREFIX,
    prompts.ANSWER_PREFIX,
    prompts.POINT_QUESTION,
    prompts.PAIR_ANSWER_PREFIX,
    *prompts.LEVEL_WORDS,
    *prompts.PAIR_CHOICES,
]
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    return {f: build_tiny_vlm(f, root / f, TEXTS) for f in ("llava", "qwen2_vl", "internvl")}


@pytest.fixture()
def fake_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the package look installed (the configs are plain transformers objects)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return object() if name == "bitsandbytes" else real(name, *args)

    monkeypatch.setattr(hf_options.importlib.util, "find_spec", find_spec)


@pytest.mark.skipif(HAS_BNB, reason="bitsandbytes is installed here")
def test_quantization_without_bitsandbytes_is_one_clear_error(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="8bit loading needs the bitsandbytes package"):
        quantization_kwargs("8bit")
    with pytest.raises(ConfigError, match="4bit loading needs the bitsandbytes package"):
        HFVLMAdapter(folders["llava"], quantization="4bit")
    args = [
        "perceive",
        "--model",
        f"hf:{folders['llava']}",
        "--bench",
        str(tmp_path),
        "-o",
        str(tmp_path / "r"),
    ]
    assert main([*args, "--quantization", "8bit"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bitsandbytes" in err and len(err.splitlines()) == 1


def test_quantization_configs_are_built_only_when_asked(fake_bitsandbytes: None) -> None:
    assert quantization_kwargs(None) == {} and model_loading_kwargs() == {}
    eight = quantization_kwargs("8bit")["quantization_config"]
    assert eight.load_in_8bit and not eight.load_in_4bit
    four = quantization_kwargs("4bit", "float16")["quantization_config"]
    assert (
        four.load_in_4bit
        and four.bnb_4bit_quant_type == "nf4"
        and four.bnb_4bit_compute_dtype == torch.float16
    )
    assert quantization_kwargs("4bit")["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown quantization '2bit'"):
        quantization_kwargs("2bit")
    # bitsandbytes places quantized weights itself: a device map is implied unless one is given.
    assert model_loading_kwargs(quantization="8bit")["device_map"] == "auto"
    assert model_loading_kwargs(device_map="balanced", quantization="8bit")["device_map"] == "balanced"


def test_quantization_reaches_from_pretrained(
    folders: dict[str, Path], fake_bitsandbytes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def spy(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", spy)
    with pytest.raises(Stop):
        HFVLMAdapter(folders["llava"], quantization="8bit", dtype="bfloat16")
    assert seen["quantization_config"].load_in_8bit and seen["device_map"] == "auto"
    assert seen["dtype"] == torch.bfloat16


@pytest.mark.parametrize("device_map", ["cpu", "auto"])
def test_a_device_map_loads_through_accelerate(folders: dict[str, Path], device_map: str) -> None:
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (40, 52, 3), dtype=np.uint8),
        rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),
    ]
    plain = HFVLMAdapter(folders["llava"])
    mapped = HFVLMAdapter(folders["llava"], device_map=device_map)
    # One device (the CPU here): accelerate loads the weights in place, without dispatch hooks; a map
    # over several GPUs adds the hooks and is untested here.
    assert mapped.device == torch.device("cpu") and {p.device.type for p in mapped.model.parameters()} == {
        "cpu"
    }
    for a, b in zip(plain.extract(images).sites(), mapped.extract(images).sites(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=float32_atol(TINY_TRANSFORMER_DEPTH, a))


def test_bfloat16_weights(folders: dict[str, Path]) -> None:
    adapter = HFVLMAdapter(folders["qwen2_vl"], dtype="bfloat16")
    assert adapter.model.dtype == torch.bfloat16
    feats = adapter.extract([np.full((56, 56, 3), 100, np.uint8)])
    assert all(np.isfinite(s).all() and s.dtype == np.float32 for s in feats.sites())


def test_max_pixels_bounds_the_visual_tokens(folders: dict[str, Path]) -> None:
    image = np.full((112, 112, 3), 128, np.uint8)
    qwen_default = HFVLMAdapter(folders["qwen2_vl"])
    qwen_small = HFVLMAdapter(folders["qwen2_vl"], max_pixels=4 * 28 * 28)
    assert qwen_default.prepare([image])["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert qwen_small.prepare([image])["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert qwen_small.extraction_settings["max_pixels"] == 4 * 28 * 28
    wide = np.full((28, 56, 3), 128, np.uint8)  # InternVL: 2 tiles + thumbnail at most 2 tiles
    tiles_default = HFVLMAdapter(folders["internvl"]).prepare([wide])["pixel_values"].shape[0]
    tiles_small = (
        HFVLMAdapter(folders["internvl"], max_pixels=28 * 28).prepare([wide])["pixel_values"].shape[0]
    )
    assert tiles_small < tiles_default and tiles_small == 1
    with pytest.raises(ConfigError, match="applies to qwen2_vl.*this model is 'llava'"):
        HFVLMAdapter(folders["llava"], max_pixels=10_000)
    with pytest.raises(ConfigError, match="at least 784"):
        HFVLMAdapter(folders["qwen2_vl"], max_pixels=100)


def test_families_refuse_options_they_do_not_take() -> None:
    with pytest.raises(ConfigError, match="the mini model family takes no option components"):
        load_model("mini", components="vision=a,projector=b,lm=c")


def test_the_teacher_takes_the_same_options(folders: dict[str, Path], tmp_path: Path) -> None:
    from iqalens.leaf.teach import make_teacher

    path = tmp_path / "im.png"
    Image.fromarray(np.full((112, 112, 3), 90, np.uint8)).save(path)
    small = make_teacher(f"hf:{folders['qwen2_vl']}", max_pixels=4 * 28 * 28, device_map="cpu")
    assert small.processor.image_processor.size["longest_edge"] == 4 * 28 * 28  # type: ignore[attr-defined]
    assert small.device == torch.device("cpu")  # type: ignore[attr-defined]
    judgment = small.judge_images([path])[0]
    assert abs(sum(judgment.probs) - 1) < 1e-9
