"""``iqalens report``: one self-contained HTML page for any set of run folders.

:func:`collect` finds and loads runs (:mod:`iqalens.report.collect`), :func:`build_report` turns them
into a page (:mod:`iqalens.report.build`), :func:`write_report` does both and writes the file. The
page needs no network: styles are inline and figures are embedded SVG (:mod:`iqalens.report.plots`).
What the report can show is the registry :data:`REPORT_KINDS` (:mod:`iqalens.report.kinds`): one
entry per kind of typed result, with its loader and renderers.
"""

from iqalens.report.build import DEFAULT_TITLE, build_report, write_report
from iqalens.report.collect import collect
from iqalens.report.kinds import REPORT_KINDS, ReportKind, Section
from iqalens.report.records import Collection

__all__ = [
    "DEFAULT_TITLE",
    "REPORT_KINDS",
    "Collection",
    "ReportKind",
    "Section",
    "build_report",
    "collect",
    "write_report",
]
