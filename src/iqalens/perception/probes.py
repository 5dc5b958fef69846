"""Per-component linear probes: where in the model does distortion information survive?

A linear probe per site (every vision-encoder layer, the projector output, every language-model
layer at the visual-token positions) is trained on the benchmark's train split and scored on its
test split. The splits are content-disjoint (by reference), so a probe cannot score by recognising
the photo; it has to read the distortion. Accuracy per site, in site order, is the curve through
the model: a drop between two sites is where the information is lost.

The probe is multinomial logistic regression with an L2 penalty on standardised features (so one
penalty means the same at every site, whatever its scale), fitted by L-BFGS in float64. The loss
is convex, so the fit hardly depends on the seeded initialisation; the seed is there to make
runs bit-for-bit repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from iqalens.datasets.manifest import ManifestRow
from iqalens.datasets.splits import assign_splits
from iqalens.errors import InvalidInputError
from iqalens.taxonomy import CLASSES


@dataclass
class LinearProbe:
    """A fitted probe: standardisation (train mean, std) and the weights of the class logits."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # [D, C]
    bias: np.ndarray  # [C]

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


def fit_probe(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, seed: int = 0, max_iter: int = 300
) -> LinearProbe:
    """Fit multinomial logistic regression: mean cross-entropy + ``l2`` * ||W||^2 / 2 (bias free).

    Features are standardised with the training mean and std; constant features (std 0) are left
    centred instead of divided by zero.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.int64)
    if xa.ndim != 2 or len(xa) != len(ya) or len(xa) == 0:
        raise InvalidInputError(f"need [N, D] features with N labels, got {xa.shape} and {ya.shape}")
    mean = xa.mean(axis=0)
    std = xa.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    z = torch.from_numpy((xa - mean) / std)
    target = torch.from_numpy(ya)
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(xa.shape[1], n_classes, generator=gen, dtype=torch.float64) * 1e-3).requires_grad_()
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w + b, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(mean, std, w.detach().numpy().copy(), b.detach().numpy().copy())


def probe_splits(
    references: Sequence[str], splits: Sequence[str], seed: int = 0, test_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, str]:
    """Boolean train and test masks, and where they came from (``manifest`` or ``assigned``).

    The manifest's own train/test splits are used when it has both; a manifest without any split
    gets a content-disjoint split by reference (seeded). A manifest whose train and test share a
    reference is refused: its probe accuracy would measure recognition of the photo.
    """
    sp = list(splits)
    if not any(sp):
        rows = [ManifestRow(path=str(i), reference=r, source="") for i, r in enumerate(references)]
        sp = [r.split for r in assign_splits(rows, (1.0 - test_fraction, 0.0, test_fraction), seed)]
        origin = "assigned"
    else:
        origin = "manifest"
    train = np.array([s == "train" for s in sp])
    test = np.array([s == "test" for s in sp])
    if not train.any() or not test.any():
        raise InvalidInputError(
            f"probes need train and test rows; the splits hold {sorted(set(sp))} "
            "(rebuild the benchmark with splits, or clear the split column to have one assigned)"
        )
    shared = {r for r, t in zip(references, train, strict=True) if t} & {
        r for r, t in zip(references, test, strict=True) if t
    }
    if shared:
        raise InvalidInputError(
            f"train and test share {len(shared)} reference(s) (e.g. {sorted(shared)[0]!r}); "
            "probes need content-disjoint splits"
        )
    return train, test, origin


def probe_sites(
    sites: Sequence[np.ndarray],
    site_names: Sequence[str],
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    class_names: Sequence[str] = CLASSES,
    l2: float = 1e-3,
    seed: int = 0,
    max_iter: int = 300,
) -> dict[str, Any]:
    """Train and score one probe per site; returns the accuracy curve in site order and chance levels.

    ``chance`` is the honest baseline: the accuracy on the test split of always answering the
    train split's most frequent class. ``chance_uniform`` is 1 / (classes present in train).
    """
    y = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    ytr, yte = y[train], y[test]
    majority = int(np.bincount(ytr, minlength=c).argmax())
    curve = []
    for name, feats in zip(site_names, sites, strict=True):
        probe = fit_probe(feats[train], ytr, c, l2=l2, seed=seed, max_iter=max_iter)
        pred_te = probe.predict(feats[test])
        per_class = {
            class_names[k]: float((pred_te[yte == k] == k).mean()) for k in range(c) if (yte == k).any()
        }
        curve.append(
            {
                "site": name,
                "dim": int(feats.shape[1]),
                "train_accuracy": float((probe.predict(feats[train]) == ytr).mean()),
                "test_accuracy": float((pred_te == yte).mean()),
                "test_balanced_accuracy": float(np.mean(list(per_class.values()))),
            }
        )
    return {
        "sites": [p["site"] for p in curve],
        "accuracy": [p["test_accuracy"] for p in curve],
        "curve": curve,
        "chance": float((yte == majority).mean()),
        "chance_uniform": 1.0 / len(np.unique(ytr)),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "l2": l2,
        "seed": seed,
    }
