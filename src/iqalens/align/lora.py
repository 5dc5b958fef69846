"""LoRA adapters (peft) on one component, and merging them back into plain weights.

``iqalens align --lora COMPONENTS`` trains low-rank adapters instead of a component's full weights.
The adapters are injected into the component module in place (``peft.inject_adapter_in_model``),
so the model code that calls the component does not change; on save they are merged into the base
weights and the LoRA layers are replaced by their base layers again, so the checkpoint is a plain
one that every command loads without peft.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iqalens.errors import InvalidInputError

ADAPTER = "align"


def default_lora_targets(module: nn.Module) -> list[str]:
    """Names of the submodules peft can adapt and merge: linear layers and ungrouped 1x1 convolutions.

    Exact types only: subclasses (e.g. convolutions with built-in padding) may not survive peft's
    re-construction of the layer; a model family that wants them adapted converts them first
    (``lora_targets`` of its :class:`~iqalens.align.base.AlignableModel`).
    """
    out = []
    for name, sub in module.named_modules():
        if type(sub) is nn.Linear or (
            type(sub) is nn.Conv2d and sub.groups == 1 and sub.kernel_size == (1, 1)
        ):
            out.append(name)
    return out


def add_lora(
    module: nn.Module, targets: Sequence[str], rank: int, alpha: float, seed: int
) -> list[nn.Parameter]:
    """Inject LoRA adapters (rank ``rank``, scale ``alpha / rank``) into ``targets`` of ``module``.

    The adapters' A matrices are drawn from a generator seeded with ``seed`` (B starts at zero, so the
    model's outputs are unchanged until training moves B). Returns the adapter parameters, the only
    ones of ``module`` left trainable.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        raise InvalidInputError(f"{type(module).__name__} has no layer LoRA can adapt")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    devices = {p.device for p in module.parameters()}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    finally:
        torch.random.set_rng_state(state)
    if len(devices) == 1:
        module.to(next(iter(devices)))
    params = []
    for name, p in module.named_parameters():
        is_adapter = ".lora_" in f".{name}"
        p.requires_grad_(is_adapter)
        if is_adapter:
            params.append(p)
    return params


def lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The LoRA-wrapped layers of ``module`` (name, layer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def lora_deltas(module: nn.Module) -> list[torch.Tensor]:
    """Differentiable weight changes ``scale * B @ A`` of every LoRA layer (for the weight constraint)."""
    return [layer.get_delta_weight(ADAPTER) for _, layer in lora_layers(module)]


def merge_lora(module: nn.Module) -> int:
    """Merge every adapter into its base weights and put the base layers back; returns how many."""
    layers = lora_layers(module)
    for name, layer in layers:
        layer.merge(adapter_names=[ADAPTER])
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return len(layers)
