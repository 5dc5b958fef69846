"""The Hugging Face loading options shared by ``perceive``, ``align`` and ``teach`` (one definition).

They reach :func:`iqalens.models.hf_loading.open_vlm` through the model-family and teacher
registries (their ``options``), so each command only adds the group and passes
:func:`hf_options` on. Importing this module imports no torch (help texts stay fast).
"""

from __future__ import annotations

import argparse
from typing import Any

from iqalens.models.hf_options import DTYPES, QUANTIZATIONS

__all__ = ["add_hf_arguments", "hf_options"]


def add_hf_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``hf:`` model loading options (all off unless given)."""
    group = parser.add_argument_group(
        "Hugging Face models (hf:PATH_OR_ID)",
        "Real-size loading and models outside the tested families; see docs/recipes/.",
    )
    group.add_argument("--dtype", choices=DTYPES, default=None, help="weights' precision (default float32)")
    group.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help="let accelerate place and shard the model: auto, balanced, sequential, cpu (several GPUs)",
    )
    group.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=None,
        help="load the weights in 8 or 4 bits (needs the bitsandbytes package and a CUDA GPU)",
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="image budget of dynamic-resolution families (Qwen2-VL/2.5-VL, InternVL, Idefics3/SmolVLM): "
        "about N pixels per image, fewer visual tokens",
    )
    group.add_argument(
        "--components",
        default=None,
        metavar="MAP",
        help="module paths of a model outside the known families: vision=PATH,projector=PATH,lm=PATH "
        "('+' joins several paths; optional image_token_id=N, image_input=NAME)",
    )
    group.add_argument(
        "--prompt-template",
        default=None,
        metavar="TEXT",
        help="prompt template for models without a chat template, {prompt} standing for the user turn "
        "(e.g. 'USER: {prompt} ASSISTANT:')",
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a checkpoint's own model code to run (mPLUG-Owl2, Q-Align, ...); it executes "
        "Python code from the checkpoint: read it first",
    )


def hf_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the user set, as keyword arguments of the loaders (unset ones are left out)."""
    values = {
        "dtype": args.dtype,
        "device_map": args.device_map,
        "quantization": args.quantization,
        "max_pixels": args.max_pixels,
        "components": args.components,
        "prompt_template": args.prompt_template,
        "trust_remote_code": True if args.trust_remote_code else None,
    }
    return {k: v for k, v in values.items() if v is not None}
