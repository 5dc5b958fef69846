"""``iqalens report RUN... -o report.html``: one self-contained HTML report of any set of runs."""

from __future__ import annotations

import argparse

#: ``iqalens.report.DEFAULT_TITLE``, spelt out so that building the parser does not import the report
#: package (matplotlib); a test checks they are equal.
DEFAULT_TITLE = "iqalens report"


def _cmd_report(args: argparse.Namespace) -> int:
    """Write the report and print its path; nothing reportable or an existing output: exit 2 (one line)."""
    from iqalens.report import write_report

    print(write_report(args.runs, args.output, title=args.title, overwrite=args.overwrite))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``iqalens report``."""
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of run folders, judgments stores and score files",
        description="Write one HTML file (no network needed to view it) for any runs: perceive, align, "
        "distill, calibrate, evaluate, label-budget and demo run folders, grids of align runs "
        "(benchmarks/align_grid.py: forced choice per cell, probe curves before/after), judgments stores "
        "written by 'iqalens teach' and score files of 'iqalens score'. A folder of runs (e.g. runs/demo) "
        "is searched a few levels deep. The page has a summary table, the perception and LEAF sections "
        "with embedded figures, and the provenance (model, data, protocol, labels, seed, versions) of "
        "every number.",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders, folders of runs, stores or score files"
    )
    p.add_argument("--output", "-o", required=True, help="the .html file to write")
    p.add_argument("--title", default=DEFAULT_TITLE, help=f"page title (default: {DEFAULT_TITLE!r})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_report)
