"""The typed result of ``iqalens perceive``: what its run folder's ``metrics.json`` holds.

Saved by :func:`iqalens.perception.run.perceive` with :func:`iqalens.results.write_result` (kind
``perceive``, version 1) and read back by ``iqalens report``. The sections are the dicts that
:mod:`iqalens.perception`'s diagnostics return (see docs/perception.md for their keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["PerceptionResult"]


@dataclass(kw_only=True)
class PerceptionResult:
    """Every number of one ``perceive`` run (fields in the order of ``metrics.json``)."""

    KIND: ClassVar[str] = "perceive"
    VERSION: ClassVar[int] = 1

    model_id: str = "?"
    checkpoint_id: str | None = None
    manifest: str | None = None
    manifest_hash: str | None = None
    feature_cache: str | None = None
    n_images: int | None = None
    skipped_rows: int = 0
    eval_split: str | None = None
    class_words: list[str] = field(default_factory=list)
    #: accuracy, balanced accuracy, chance, confusion, per-class recall and support
    forced_choice: dict[str, Any]
    #: one linear probe per site: the curve, chance, the split it used
    probes: dict[str, Any]
    #: similarity of the projected visual tokens to the class words
    semantic: dict[str, Any]
    #: the same per language-model layer, or a note saying why the model has none
    contextual: dict[str, Any] = field(default_factory=dict)
    #: answer consistency under sampling, or a note
    consistency: dict[str, Any] = field(default_factory=dict)
    #: free-generation accuracy (opt-in), or a note
    free_generation: dict[str, Any] = field(default_factory=dict)
    #: the PNG files written next to it
    plots: dict[str, Any] = field(default_factory=dict)
