"""Contextual semantic distance: visual tokens vs the class word *as the language model reads it*.

The plain semantic distance (:mod:`iqalens.perception.semantic`) compares the projector output with
the class words' rows of the input embedding table: context-free, and only at the language
model's input. Inside the language model a word's representation is contextual and changes layer by
layer, and so does the representation of the visual tokens (the ``lm.l`` sites). This variant
compares them layer by layer: at each layer l, the hidden state of the class word in the answer
template (the answer prefix followed by the word, "The distortion is blur"; sub-word pieces
averaged) against the image's ``lm.l`` feature (the layer's hidden states at the visual-token
positions, averaged), by cosine, with the same per-class statistics (similarity to the true word,
margin over the best wrong word, rank).

**Which layers are reported, and why.** All of them, as a curve (``curve``, ``contextual_curve.csv``
and ``contextual_curve.png``): where in the language model the image's tokens come closest to the
word for its distortion is itself a finding, and no single layer is right for every model. The
headline (``per_class`` / ``overall``, comparable before and after fine-tuning with
:func:`iqalens.perception.semantic.compare`) is the **last layer**, because that is the state from
which the model's answer is read out (the next-token prediction after the answer prefix comes
from it), so agreement there is what matters for naming the distortion. The layer with the largest
mean margin is given as ``best_site`` for orientation only (chosen on the evaluation rows, so it is
optimistic).

Models expose the word states through the optional method ``contextual_word_embeddings(words)``
([M, C, D], one row per ``lm.l`` site). Dual encoders have no language model reading the image (no
``lm`` sites) and skip the variant with a note. The word states depend only on the model and the
class words, so they are cached next to the features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.perception.features import FeatureSet, atomic_npy
from iqalens.perception.semantic import semantic_distance

__all__ = ["ContextualWordModel", "cached_contextual_words", "contextual_distance", "lm_site_names"]


@runtime_checkable
class ContextualWordModel(Protocol):
    """A model that can give each LM layer's state of a class word in its answer template."""

    def contextual_word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """[M, len(words), D_lm], row l aligned with the ``lm.l`` site."""
        ...


def lm_site_names(fs: FeatureSet) -> list[str]:
    """The ``lm.l`` sites of a feature set, in layer order."""
    return [name for name in fs.site_names if name.startswith("lm.")]


def cached_contextual_words(model: ContextualWordModel, fs: FeatureSet, template: str = "") -> np.ndarray:
    """The model's contextual class-word states, from the feature cache when present.

    ``template`` names the text the words were read in (part of the cache file's name, so another
    template is another file).
    """
    words = fs.class_words
    sites = lm_site_names(fs)
    name = f"contextual-{hashlib.sha256(template.encode()).hexdigest()[:12]}.npy"
    path = fs.cache_dir / name if fs.cache_dir is not None else None
    if path is not None and path.is_file():
        states = np.load(path)
    else:
        states = np.asarray(model.contextual_word_embeddings(words), dtype=np.float32)
        if path is not None:
            atomic_npy(path, states)
    width = fs.site(sites[0]).shape[1] if sites else None
    if states.ndim != 3 or states.shape[:2] != (len(sites), len(words)) or states.shape[2] != width:
        raise InvalidInputError(
            f"{fs.model_id}: contextual word states have shape {states.shape}, expected "
            f"[{len(sites)} lm sites, {len(words)} words, {width}]"
        )
    return states


def contextual_distance(
    fs: FeatureSet, mask: np.ndarray, states: np.ndarray, template: str = ""
) -> dict[str, Any]:
    """Per-layer curve and last-layer per-class statistics (see module doc) on the rows in ``mask``."""
    sites = lm_site_names(fs)
    if not sites:
        raise InvalidInputError(f"{fs.model_id} has no language-model sites")
    labels = fs.labels[mask]
    curve: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for layer, site in enumerate(sites):
        sem = semantic_distance(fs.site(site)[mask], states[layer], labels)
        curve.append({"site": site, **sem["overall"]})
        last = sem
    best = max(range(len(curve)), key=lambda i: curve[i]["mean_margin"])
    last = dict(last)
    similarities = last.pop("similarities")
    return {
        "template": template,
        "layer": sites[-1],
        "sites": sites,
        "curve": curve,
        "best_site": curve[best]["site"],
        **last,
        "similarities": similarities,
    }
