"""Train the projector's tap columns on standardised inputs (``AlignConfig.projector_tap_standardise``).

Why: the tap statistics the mini model appends to each head cell (:mod:`iqalens.models.mini_taps`)
are far from zero-mean, unit-scale: on the p1 benchmark the channel means of vision sites 3 and 4
lie up to 9 from zero with spreads of 0.6-5.5. The projector's first layer sees them raw, so the
large constant offsets dominate its hidden units early in training and the optimizer conditions
badly. A small MLP on the same statistics read 0.72-0.73 of the eight classes standardised and
0.69-0.71 raw (docs/p1_reproduction.md, session 19); trained through the projector with the head's
columns frozen, eight seeds went from 0.684 ± 0.019 to 0.700 ± 0.005 (534 class-balanced test images
of 17 unseen photos).

How, without a new checkpoint format: the first layer is linear, so standardising its tap inputs is
a reparameterisation of the same function. :meth:`TapStandardiser.install` rewrites the tap
columns into the standardised parameterisation (the model answers exactly as before) and adds a
forward pre-hook that standardises the tap inputs; training then moves the weights in that
parameterisation; :meth:`TapStandardiser.fold` removes the hook and folds the statistics back into
the weights and bias, so the saved projector reads raw inputs like any other and loads anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from iqalens.errors import InvalidInputError

#: Added to a tap input's standard deviation: keeps a constant input (a channel that never varies
#: over the training images) from being divided by zero.
_STD_FLOOR = 1e-3


class _Bank(Protocol):
    def batch(self, keys: Sequence[str]) -> dict[str, torch.Tensor]: ...


def tap_statistics(
    model: Any, bank: _Bank, keys: Sequence[str], batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (+ a floor) of every tap input over ``keys``' images, all cells.

    ``model`` must have ``projector_first_layer`` and ``projector_inputs`` (the mini model's
    alignable wrapper has both)."""
    if not hasattr(model, "projector_first_layer") or not hasattr(model, "projector_inputs"):
        raise InvalidInputError(
            f"{getattr(model, 'model_id', model)}: projector_tap_standardise is for the mini model only"
        )
    if not keys:
        raise InvalidInputError("projector_tap_standardise needs training images to measure the taps on")
    layer, head = model.projector_first_layer()
    if layer.in_features <= head:
        raise InvalidInputError("projector_tap_standardise: the projector reads no taps")
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    count = 0
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            cells = model.projector_inputs(bank.batch(keys[start : start + batch_size]))
            taps = cells[..., head:].reshape(-1, cells.shape[-1] - head).double()
            total = taps.sum(0) if total is None else total + taps.sum(0)
            squares = (taps**2).sum(0) if squares is None else squares + (taps**2).sum(0)
            count += len(taps)
    assert total is not None and squares is not None
    mean = total / count
    var = (squares / count - mean**2).clamp_min(0) * count / max(count - 1, 1)
    dtype = layer.weight.dtype
    return mean.to(dtype), (var.sqrt() + _STD_FLOOR).to(dtype)


class TapStandardiser:
    """Standardised tap inputs while training (:meth:`install`), raw-input weights after (:meth:`fold`)."""

    def __init__(self, layer: nn.Linear, head: int, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != (layer.in_features - head,) or std.shape != mean.shape:
            raise InvalidInputError(
                f"tap statistics for {tuple(mean.shape)} inputs, the layer has "
                f"{layer.in_features - head} tap columns"
            )
        self.layer, self.head = layer, head
        self.mean = mean.to(layer.weight.device)
        self.std = std.to(layer.weight.device)
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    @property
    def installed(self) -> bool:
        return self._hook is not None

    def _standardise(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        taps = (x[..., self.head :] - self.mean.to(x)) / self.std.to(x)
        return (torch.cat([x[..., : self.head], taps], dim=-1), *args[1:])

    def install(self) -> None:
        """Same function, standardised parameterisation: W_t <- W_t * std, b <- b + W_t @ mean."""
        if self.installed:
            return
        w, b = self.layer.weight, self.layer.bias
        with torch.no_grad():
            if b is not None:
                b.add_(w[:, self.head :] @ self.mean)
            w[:, self.head :].mul_(self.std)
        self._hook = self.layer.register_forward_pre_hook(self._standardise)

    def fold(self) -> None:
        """Back to raw inputs: W_t <- W_t / std, b <- b - W_t_raw @ mean; the hook goes."""
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        w, b = self.layer.weight, self.layer.bias
        with torch.no_grad():
            w[:, self.head :].div_(self.std)
            if b is not None:
                b.sub_(w[:, self.head :] @ self.mean)
