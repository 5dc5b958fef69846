"""The moving average of trained weights behind ``iqalens align --ema-decay``.

Why a module of its own: the average is a separate concern from the trainer's loop (it only reads
the trainable parameters after each step and lends its weights to validation), and it keeps
:mod:`iqalens.align.train` below the package's size limit.

Why an average at all: on a small validation split (the p1 benchmark's 282 images of 9 photos) the
projector's validation accuracy jumps by several points between evaluations, so the best single
step is a noisy choice; an average of recent steps is a smoother candidate. Measured there it did
not help (docs/p1_reproduction.md, session 16), so it is off by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from iqalens.align.trainable import Trainable


class WeightAverage:
    """Exponential moving average of a :class:`Trainable`'s parameters, kept on their device.

    The decay ramps up as ``(1 + k) / (10 + k)`` at step k, capped by ``decay``, so that the
    starting weights (zero-initialised taps, or the pretrained projector) do not dominate the first
    hundred steps.
    """

    def __init__(self, trainable: Trainable, decay: float) -> None:
        self.trainable, self.decay = trainable, decay
        self.weights = {n: p.detach().clone() for n, p in trainable.params.items()}

    def update(self, step: int) -> None:
        """Fold the weights after optimizer step ``step`` (1-based) into the average."""
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, p in self.trainable.params.items():
                self.weights[name].mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged weights on the CPU (the form :meth:`Trainable.load` and the state file take)."""
        return {n: t.detach().cpu().clone() for n, t in self.weights.items()}

    def load(self, state: dict[str, torch.Tensor], device: torch.device) -> None:
        """Resume: the average saved with an interrupted run."""
        self.weights = {n: t.to(device) for n, t in state.items()}

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model while inside, the trained ones back afterwards."""
        current = self.trainable.state()
        self.trainable.load(self.state())
        try:
            yield
        finally:
            self.trainable.load(current)
