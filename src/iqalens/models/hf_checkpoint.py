"""Reading an aligned Hugging Face checkpoint (``hf_aligned.json`` + ``hf_aligned.safetensors``).

``iqalens align`` on a Hugging Face multimodal LLM saves only what it trained
(:meth:`iqalens.align.hf.HFAlignable.save_checkpoint`): ``hf_aligned.safetensors`` holds the
parameters of the trained components under their names in the full model (LoRA deltas merged), and
``hf_aligned.json`` names the base checkpoint, the adapter's prompt and dtype, the components stored
and the run's ``info``. :func:`load_hf_aligned` rebuilds the :class:`~iqalens.models.hf_vlm.HFVLMAdapter`
from the base checkpoint and overlays the saved weights, so ``perceive`` and ``--model FOLDER`` read
the aligned model without importing the training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from iqalens.errors import InvalidInputError
from iqalens.models.hf_vlm import HFVLMAdapter

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "WEIGHTS_FILE", "is_hf_aligned", "load_hf_aligned"]

WEIGHTS_FILE = "hf_aligned.safetensors"
CONFIG_FILE = "hf_aligned.json"
#: Bumped when the saved format changes incompatibly (the writer stamps it in both files).
FORMAT_VERSION = 1


def is_hf_aligned(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a checkpoint written by :meth:`iqalens.align.hf.HFAlignable.save_checkpoint`."""
    return (Path(folder) / CONFIG_FILE).is_file()


def load_hf_aligned(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu", **adapter_kwargs: Any
) -> HFVLMAdapter:
    """The adapter of an aligned checkpoint: its base model with the saved weights overlaid.

    ``adapter_kwargs`` override the saved adapter options (e.g. ``batch_size``, ``dtype``,
    ``device_map``); options set to None are left at the saved ones.
    """
    from safetensors.torch import load_file

    src = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} is not an aligned HF checkpoint: {name} is missing")
    config = json.loads((src / CONFIG_FILE).read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(f"{src / CONFIG_FILE}: unsupported format {config.get('format_version')!r}")
    options = dict(config.get("adapter") or {})
    kwargs: dict[str, Any] = {
        "dtype": options.get("dtype", "float32"),
        "question": options.get("question"),
        "answer_prefix": options.get("answer_prefix"),
        "local_files_only": bool(options.get("local_files_only", False)),
        "trust_remote_code": bool(options.get("trust_remote_code", False)),
        "processor_kwargs": options.get("processor_kwargs") or None,
        # how the base was read: its component map, prompt template and image budget (if set)
        "components": options.get("components"),
        "prompt_template": options.get("prompt_template"),
        "max_pixels": options.get("max_pixels"),
        "model_id": config.get("model_id"),
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs |= {k: v for k, v in adapter_kwargs.items() if v is not None}
    adapter = HFVLMAdapter(config["base_model"], device=device, **kwargs)
    state = load_file(str(src / WEIGHTS_FILE))
    known = adapter.model.state_dict()
    unknown = sorted(set(state) - set(known))
    if unknown:
        raise InvalidInputError(
            f"{src}: {len(unknown)} saved tensors do not exist in the base model, e.g. {unknown[:3]}"
        )
    adapter.model.load_state_dict(state, strict=False)
    return adapter
