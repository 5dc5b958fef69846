"""Semantic pre-alignment of the mini model (:func:`prealign`): the analogue of an MLLM's
vision-language alignment stage, which trains only the projector.

EfficientNet-Lite0 labels each training view with its own ImageNet prediction (soft: its
probabilities over the candidate classes), and the projector is trained so that the image sentence
embedding is closest to the MiniLM sentence embedding of the predicted class names (an InfoNCE-style
soft cross-entropy; :mod:`iqalens.models.mini` describes the model). Nothing here uses a distortion
label: the alignment is purely semantic, which is what the perception paper blames for washing out
low-level information. Split from :mod:`iqalens.models.mini` to keep the model and its training apart.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from iqalens.errors import InvalidInputError
from iqalens.models.preprocess import crop_boxes


class Prealignable(Protocol):
    """What :func:`prealign` needs of the model (:class:`iqalens.models.mini.MiniVLM` has it); a
    protocol rather than an import, because ``mini`` imports this module."""

    prealign_info: dict[str, Any]

    @property
    def projector(self) -> nn.Module: ...

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor: ...
    def encode_cells(
        self, x: torch.Tensor, site: int = 0
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]: ...
    def imagenet_logits(self, head: torch.Tensor) -> torch.Tensor: ...
    def text_sentence_embedding(self, texts: Sequence[str]) -> torch.Tensor: ...
    def image_sentence_embedding(self, hidden_last: torch.Tensor) -> torch.Tensor: ...
    def language_model(self, tokens: torch.Tensor) -> list[torch.Tensor]: ...
    def eval(self) -> Any: ...


__all__ = [
    "PREALIGN_VERSION",
    "PrealignResult",
    "Prealignable",
    "augmented_views",
    "imagenet_class_names",
    "prealign",
]

#: Bumped when the default pre-alignment recipe changes, so a stale cached checkpoint is not reused.
PREALIGN_VERSION = 1


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the classifier's index order (shipped with iqalens)."""
    text = (resources.files("iqalens") / "data" / "imagenet_classes.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    names = [r["name"] for r in rows]
    if len(names) != 1000 or [int(r["index"]) for r in rows] != list(range(1000)):
        raise RuntimeError("data/imagenet_classes.csv is damaged: expected indices 0..999")
    return names


@dataclass
class PrealignResult:
    """What :func:`prealign` did: losses before/after on all views, per-step losses, agreement."""

    loss_before: float
    loss_after: float
    top1_agreement_before: float  # share of views whose nearest class text is EfficientNet's top-1
    top1_agreement_after: float
    n_views: int
    candidates: list[str]
    step_losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("step_losses")
        d["n_candidates"] = len(d.pop("candidates"))
        return d


def augmented_views(images: Sequence[np.ndarray], crop_fraction: float = 0.75) -> list[np.ndarray]:
    """Each image, its horizontal flip, and its four corner crops (``crop_fraction`` of the shorter
    side) with their flips: 10 views per image, deterministic."""
    views: list[np.ndarray] = []
    for im in images:
        arr = np.asarray(im, dtype=np.uint8)
        h, w = arr.shape[:2]
        side = max(1, int(round(min(h, w) * crop_fraction)))
        crops = [arr] + [arr[t : t + side, left : left + side] for t, left in crop_boxes(h, w, side, grid=2)]
        for c in crops:
            views += [np.ascontiguousarray(c), np.ascontiguousarray(c[:, ::-1])]
    return views


def _soft_ce(img: torch.Tensor, text: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = img @ text.T / temperature
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def prealign(
    model: Prealignable,
    images: Sequence[np.ndarray] | None = None,
    *,
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 16,
    temperature: float = 0.05,
    top_k: int = 5,
    seed: int = 0,
    augment: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> PrealignResult:
    """Train the projector so images align with the text of their (self-predicted) ImageNet classes.

    ``images``: RGB uint8 arrays (default: the bundled sample photos); with ``augment`` each becomes
    10 views (:func:`augmented_views`). The encoder and MiniLM stay frozen, so their outputs per view
    are computed once. ``progress(step, loss)`` is called after each step. Seeded: the same inputs
    and settings give the same projector.
    """
    if images is None:
        from iqalens.images import load_rgb
        from iqalens.samples import sample_paths

        images = [load_rgb(p) for p in sample_paths()]
    views = augmented_views(images) if augment else list(images)
    if not views:
        raise InvalidInputError("prealign needs at least one image")
    names = imagenet_class_names()
    with torch.no_grad():
        cells, probs = [], []
        for i in range(0, len(views), 32):
            _, head, view_cells = model.encode_cells(model.preprocess(views[i : i + 32]))
            cells.append(view_cells)
            probs.append(model.imagenet_logits(head).softmax(dim=-1))
        cells_all, prob_all = torch.cat(cells), torch.cat(probs)
        cand = sorted(set(prob_all.topk(top_k, dim=-1).indices.flatten().tolist()))
        target = prob_all[:, cand]
        target = target / target.sum(dim=-1, keepdim=True)
        text = model.text_sentence_embedding([names[c] for c in cand])
        top1 = target.argmax(dim=-1)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            img = model.image_sentence_embedding(model.language_model(model.projector(cells_all))[-1])
            loss = _soft_ce(img, text, target, temperature).item()
            agree = ((img @ text.T).argmax(dim=-1) == top1).float().mean().item()
        return loss, agree

    loss0, agree0 = evaluate()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.projector.parameters(), lr=lr, weight_decay=1e-4)
    step_losses: list[float] = []
    model.projector.train()
    for step in range(steps):
        idx = torch.randperm(len(views), generator=gen)[:batch_size]
        img = model.image_sentence_embedding(model.language_model(model.projector(cells_all[idx]))[-1])
        loss = _soft_ce(img, text, target[idx], temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, step_losses[-1])
    model.eval()
    loss1, agree1 = evaluate()
    result = PrealignResult(
        loss_before=loss0,
        loss_after=loss1,
        top1_agreement_before=agree0,
        top1_agreement_after=agree1,
        n_views=len(views),
        candidates=[names[c] for c in cand],
        step_losses=step_losses,
    )
    model.prealign_info = {
        "version": PREALIGN_VERSION,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "augment": augment,
        **result.to_dict(),
    }
    return result
