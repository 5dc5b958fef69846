"""The formats a student can be exported to: what ``iqalens export --format NAME`` dispatches on.

Every format is an entry of :data:`EXPORTERS` (a :class:`~iqalens.registry.Registry`): :func:`export_model`,
the command's format choices and help texts (:func:`exporters_help`) and :func:`list_exporters` are
generated from it. Built in: ``onnx`` (:func:`iqalens.leaf.onnx_export.export_onnx`).

**Adding a format** is one module plus one register call::

    EXPORTERS.register_lazy("mine", "my_package.my_export:export_mine", "MINE (read by X)", suffix=".mine")

The registered object is called as ``obj(model, path)``, where ``model`` is what
:func:`~iqalens.leaf.scorers.load_scorer` accepts (None for the default student, a run folder) or a
loaded scorer, writes ``path`` and returns it. ``suffix`` is the file suffix it writes (help texts).
This module imports no exporter (help texts read it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from iqalens.registry import Registry

__all__ = ["EXPORTERS", "ExporterInfo", "export_model", "exporters_help", "list_exporters"]

#: The export formats (see the module doc).
EXPORTERS: Registry[Any] = Registry("export format")

EXPORTERS.register_lazy(
    "onnx", "iqalens.leaf.onnx_export:export_onnx", "ONNX (scored with onnxruntime)", suffix=".onnx"
)


class ExporterInfo(NamedTuple):
    """What :func:`list_exporters` reports of one format."""

    name: str
    summary: str
    suffix: str


def list_exporters() -> list[ExporterInfo]:
    """Every registered export format (nothing is imported)."""
    return [ExporterInfo(e.name, e.summary, e.extra.get("suffix", "")) for e in EXPORTERS]


def exporters_help() -> tuple[str, str]:
    """``(what, files)`` for help texts: ``ONNX (scored with onnxruntime)`` and ``.onnx``, each list
    joined with " or "."""
    suffixes = [e.extra.get("suffix", "") for e in EXPORTERS]
    return " or ".join(e.summary for e in EXPORTERS), " or ".join(s for s in suffixes if s)


def export_model(model: Any, path: str | os.PathLike[str], fmt: str = "onnx") -> Path:
    """Write ``model`` (None = the default student, a run folder, or a scorer) to ``path`` as ``fmt``.

    An unknown format raises :class:`~iqalens.errors.UnknownNameError` listing the known ones.
    """
    return Path(EXPORTERS.get(fmt)(model, path))
