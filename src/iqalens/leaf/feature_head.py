"""The student's head on cached pooled features, shared by the step-wise and closed-form trainings.

A module of its own so that :mod:`iqalens.leaf.head` (AdamW trainings) and
:mod:`iqalens.leaf.ridge_head` (closed-form fits) both build it without importing each other.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureHead"]


class FeatureHead(nn.Module):
    """The student's head on cached features: dropout, then ``Linear(d, 6)`` -> (score, level logits)."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.dropout(x))
        return out[:, 0], out[:, 1:]
