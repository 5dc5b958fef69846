"""Report kinds: one registry entry per kind of result the report can show.

A kind's name is the ``kind`` its command saves in the run's typed result (:mod:`iqalens.results`);
:func:`iqalens.report.collect.collect` looks the kind of every run folder up here and hands the
decoded result to the entry's loader, and :func:`iqalens.report.build.build_report` draws every
record with its entry's renderers, in the section the entry names. A judgments store and a score
file are kinds too (``store``, ``score``): files, not run folders, recognised by their format.

**A new report section is one new module plus one register call**: the module defines a result
dataclass (or reuses one), a loader from that result to a record (:class:`~iqalens.report.records.Run`
or a subclass), a headline and an article renderer, and a :class:`ReportKind` tying them together;
``REPORT_KINDS.register("mine", MY_KIND)`` (or ``register_lazy`` with ``"module:attribute"``) makes
``iqalens report`` find and draw such folders. ``tests/test_report.py::
test_a_new_report_kind_is_one_module_and_one_register_call`` does exactly that with a throwaway kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqalens.errors import InvalidInputError
from iqalens.registry import Registry
from iqalens.report.records import Run

__all__ = ["REPORT_KINDS", "ReportKind", "Section"]


@dataclass(frozen=True)
class Section:
    """A top-level section of the page (``<h2>``): its anchor, heading and introduction.

    ``extra`` returns HTML shown after the introduction (e.g. the perception class table).
    """

    key: str
    heading: str
    intro: str
    extra: Callable[[], str] | None = None


@dataclass(frozen=True)
class ReportKind:
    """How the report reads and draws one kind of result.

    ``load(path, name, result)`` returns the record: ``result`` is the run folder's typed result
    decoded as ``result_type`` (None for kinds read from files: ``result_type`` None). ``headline``
    gives the summary row's numbers, ``article(record, anchor)`` the block in ``section``. A
    ``container`` kind (the end-to-end demo) is a folder of other runs: it is searched, not drawn.
    """

    label: str
    section: Section | None = None
    load: Callable[[Path, str, Any], Run] | None = None
    headline: Callable[[Any], list[str]] | None = None
    article: Callable[[Any, str], str] | None = None
    result_type: type | None = None
    container: bool = False

    def __post_init__(self) -> None:
        drawn = (self.section, self.load, self.headline, self.article)
        if not self.container and any(part is None for part in drawn):
            raise InvalidInputError(f"report kind {self.label!r}: give section, load, headline and article")


#: Every kind ``iqalens report`` can show, in the order its sections and blocks appear.
REPORT_KINDS: Registry[ReportKind] = Registry("report kind")

for _name, _target, _summary in (
    ("perceive", "iqalens.report.perception_kinds:PERCEIVE", "perception diagnostics (iqalens perceive)"),
    ("align", "iqalens.report.perception_kinds:ALIGN", "fine-tuning, before vs after (iqalens align)"),
    (
        "align_grid",
        "iqalens.report.perception_grid:ALIGN_GRID",
        "a grid of align runs: forced choice per cell, probe curves before/after",
    ),
    ("store", "iqalens.report.leaf_kinds:STORE", "a judgments store (iqalens teach)"),
    ("distill", "iqalens.report.leaf_kinds:DISTILL", "student distillation (iqalens distill)"),
    ("calibrate", "iqalens.report.leaf_kinds:CALIBRATE", "calibration (iqalens calibrate)"),
    ("budget", "iqalens.report.leaf_kinds:BUDGET", "the label-budget protocol (iqalens budget)"),
    ("evaluate", "iqalens.report.leaf_kinds:EVALUATE", "evaluation against MOS (iqalens evaluate)"),
    ("score", "iqalens.report.leaf_kinds:SCORE", "a score file (iqalens score)"),
    ("demo", "iqalens.report.kinds:DEMO", "the end-to-end demo: a folder of the runs above"),
):
    REPORT_KINDS.register_lazy(_name, _target, _summary)

#: ``iqalens demo``: its stages are ordinary run folders inside it.
DEMO = ReportKind("end-to-end demo", container=True)
