"""How the mini model's projector reads earlier vision sites (``iqalens align --projector-taps``).

Why a separate module: the tap summaries are a choice with its own evidence, kept apart from the
model's wiring in :mod:`iqalens.models.mini`.

Two ways to summarise a tapped map, :data:`TAP_POOLS`:

- ``cells``: the map average-pooled to the projector's ``grid x grid`` cells, each cell's channel means
  appended to the matching head cell. Spatially aligned with the head, but means only, and nine
  times as many inputs per image to learn from.
- ``stats``: the image-wide mean *and standard deviation* of every channel, the same vector appended
  to every head cell. A channel's spread over the image is what contrast, brightness and noise
  changes move, and a cell mean averages it away. Measured on the untrained mini model's vision
  sites 3 and 4 (2696-image p1 benchmark, 534 test images of 17 unseen photos; one-off check, see
  docs/p1_reproduction.md): a small MLP on image-wide mean + std reads 0.70-0.73 of the eight
  classes, on the image-wide means of site 4 alone 0.66-0.68, on site 4's 3 x 3 cell means + stds
  0.63-0.69 (a logistic probe on its cell means alone: 0.59-0.62).
  Trained (projector only, 3 seeds), the statistics of sites 3 and 4 score above a cell-mean tap of
  site 4 with 4 images per photo and class (forced choice 0.680 ± 0.019 vs 0.660 ± 0.003) and tie
  with it at 8 (0.695 vs 0.693).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iqalens.errors import InvalidInputError

#: Vision sites a projector tap may read: the stem (0) and the seven MBConv stages (1..7); the head
#: (site 8) is what the projector always reads.
TAPPABLE_SITES = range(8)

#: How a tapped map is summarised for the projector (module docstring).
TAP_POOLS = ("cells", "stats")

#: Added to a channel's variance before the square root: keeps the gradient finite where a channel
#: is constant over the image (the encoder may train through a tap).
_VAR_EPS = 1e-6


def check_projector_taps(taps: Sequence[int]) -> None:
    """Distinct sites among :data:`TAPPABLE_SITES`, or an InvalidInputError that says which are not."""
    bad = [t for t in taps if t not in TAPPABLE_SITES]
    if bad or len(set(taps)) != len(taps):
        raise InvalidInputError(
            "projector taps must be distinct vision sites 0..7 (0 = stem, 1..7 = MBConv stages), "
            f"got {list(taps)}"
        )


def check_tap_pool(pool: str) -> None:
    """One of :data:`TAP_POOLS`, or an InvalidInputError that lists them."""
    if pool not in TAP_POOLS:
        raise InvalidInputError(f"projector tap pool must be one of {list(TAP_POOLS)}, got {pool!r}")


def tap_width(channels: int, pool: str) -> int:
    """Projector inputs one tapped site of ``channels`` channels adds per cell."""
    check_tap_pool(pool)
    return channels if pool == "cells" else 2 * channels


def grid_pool(feature_map: torch.Tensor, grid: int) -> torch.Tensor:
    """[N, grid**2, C]: a [N, C, H, W] map average-pooled to grid x grid cells, in row-major order."""
    return nn.functional.adaptive_avg_pool2d(feature_map, grid).flatten(2).transpose(1, 2)


def tap_summary(feature_map: torch.Tensor, grid: int, pool: str) -> torch.Tensor:
    """[N, grid**2, tap_width(C, pool)]: what the projector reads of one tapped site, per head cell."""
    check_tap_pool(pool)
    if pool == "cells":
        return grid_pool(feature_map, grid)
    var, mean = torch.var_mean(feature_map, dim=(2, 3), correction=0)
    stats = torch.cat([mean, (var + _VAR_EPS).sqrt()], dim=1)
    return stats.unsqueeze(1).expand(-1, grid * grid, -1)


def taps_name(taps: Sequence[int], pool: str = "cells") -> str:
    """How projector taps show in an aligned model's id and cache keys: ``+tap4``, ``+tap2-4``,
    ``+tapstats3-4`` (nothing without taps)."""
    if not taps:
        return ""
    return "+tap" + ("" if pool == "cells" else pool) + "-".join(str(t) for t in taps)
