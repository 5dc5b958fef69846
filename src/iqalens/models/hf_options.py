"""Loading options of real-size Hugging Face models: sharding, precision, quantization, image budget.

These are the settings a 7-8B checkpoint on one or several GPUs needs and the tiny test models do
not: they are passed through to transformers, and built only when asked for.

- ``device_map`` (``"auto"``, ``"balanced"``, ``"cpu"``, ...): accelerate places (and shards) the
  model; inputs then go where its input embeddings are. Multi-GPU sharding is plain pass-through.
- ``dtype``: ``float32`` (default), ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's).
- ``quantization``: ``8bit`` or ``4bit`` builds a ``BitsAndBytesConfig`` (4-bit: NF4 with the
  compute dtype of ``dtype``, bfloat16 when that is float32/auto); it needs the ``bitsandbytes``
  package and a CUDA GPU, and a clear :class:`~iqalens.errors.ConfigError` says so when it is missing.
- ``max_pixels``: the image budget of dynamic-resolution families, translated to each family's
  image-processor setting (:func:`apply_max_pixels`): Qwen2-VL / Qwen2.5-VL's pixel budget,
  InternVL's tile count, Idefics3 / SmolVLM's longest edge. It bounds the number of visual tokens,
  hence memory and time per image.

This module imports no torch at import time (help texts read :data:`QUANTIZATIONS` and
:data:`DTYPES`).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from iqalens.errors import ConfigError

__all__ = [
    "DTYPES",
    "MAX_PIXELS_FAMILIES",
    "QUANTIZATIONS",
    "apply_max_pixels",
    "model_loading_kwargs",
    "quantization_kwargs",
]

QUANTIZATIONS: tuple[str, ...] = ("8bit", "4bit")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "auto")
#: The model types whose image budget ``max_pixels`` sets (see :func:`apply_max_pixels`).
MAX_PIXELS_FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "internvl", "idefics3", "smolvlm")


def quantization_kwargs(mode: str | None, dtype: str = "float32") -> dict[str, Any]:
    """``{"quantization_config": BitsAndBytesConfig(...)}`` for ``8bit`` / ``4bit``; ``{}`` for None."""
    if not mode:
        return {}
    if mode not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {mode!r}; use {' or '.join(QUANTIZATIONS)}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"{mode} loading needs the bitsandbytes package, which is not installed "
            "(pip install bitsandbytes; it runs on CUDA GPUs)"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    compute = getattr(torch, dtype, None) if dtype not in ("float32", "auto") else torch.bfloat16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    }


def model_loading_kwargs(
    device_map: str | None = None, quantization: str | None = None, dtype: str = "float32"
) -> dict[str, Any]:
    """The ``from_pretrained`` keyword arguments of the options that were set (nothing else)."""
    kwargs: dict[str, Any] = {}
    if device_map:
        kwargs["device_map"] = device_map
    kwargs |= quantization_kwargs(quantization, dtype)
    if "quantization_config" in kwargs and "device_map" not in kwargs:
        kwargs["device_map"] = "auto"  # bitsandbytes places the quantized weights itself
    return kwargs


def apply_max_pixels(processor: Any, model_type: str, max_pixels: int | None) -> None:
    """Set the image budget of ``processor``'s image processor to about ``max_pixels`` per image."""
    if max_pixels is None:
        return
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
    ip = getattr(processor, "image_processor", None)
    if model_type not in MAX_PIXELS_FAMILIES or ip is None:
        raise ConfigError(
            f"an image budget (max_pixels) applies to {', '.join(MAX_PIXELS_FAMILIES)}; "
            f"this model is {model_type!r}"
        )
    if model_type.startswith("qwen"):
        unit = 28 * 28  # one merged visual token: 2 x 2 patches of 14 px
        if max_pixels < unit:
            raise ConfigError(f"max_pixels must be at least {unit} (one visual token) for {model_type}")
        low = min(int(ip.size.get("shortest_edge", unit)), max_pixels)
        ip.size = {"shortest_edge": low, "longest_edge": max_pixels}
        for name, value in (("min_pixels", low), ("max_pixels", max_pixels)):
            if hasattr(ip, name):
                setattr(ip, name, value)
    elif model_type == "internvl":
        tile = int(ip.size["height"]) * int(ip.size["width"])
        ip.max_patches = max(1, max_pixels // tile)
        ip.min_patches = min(int(getattr(ip, "min_patches", 1)), ip.max_patches)
    else:  # idefics3 / smolvlm: the longest edge, a multiple of the tile size
        tile = int(ip.max_image_size["longest_edge"])
        ip.size = {"longest_edge": max(tile, int(math.isqrt(max_pixels)) // tile * tile)}
