"""LEGACY: reading run folders written before typed results existed (no ``kind`` in ``metrics.json``).

Kept only so that old run folders still load; new code must not add rules here. A command that
writes a run folder saves a typed result (:mod:`iqalens.results`), and the report dispatches on its
kind. For a folder without one, :func:`legacy_kind` recognises the kind the way the report used to:
by the ``command`` in ``config.json`` and, where that is missing, by the files and JSON keys only that
kind of run wrote. :func:`legacy_result` then turns the old ``metrics.json`` into the current typed
result, upgrading what changed since (so loaders see one layout). An ``align`` run interrupted after
training (its interim ``metrics.json`` has no kind) goes through here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from iqalens.errors import InvalidInputError
from iqalens.report.reading import json_or_empty, read_json, run_config
from iqalens.results import RESULT_FILE, decode_result, peek_result

R = TypeVar("R")

#: ``command`` of ``config.json`` -> kind (the label-budget protocol ran as both names).
_BY_COMMAND = {
    "perceive": "perceive",
    "align": "align",
    "distill": "distill",
    "calibrate": "calibrate",
    "evaluate": "evaluate",
    "label-budget": "budget",
    "budget": "budget",
    "demo": "demo",
}
#: Kinds whose loader copes without ``metrics.json`` (an align run holds before/after runs).
_METRICS_OPTIONAL = frozenset({"align"})
#: Kinds whose old ``metrics.json`` was never read: the label budget's tables are its CSV and JSON files.
_METRICS_UNUSED = frozenset({"budget"})


def legacy_kind(folder: Path) -> str | None:
    """LEGACY: the kind of run a folder without a typed result holds, or None (not a run)."""
    command = run_config(folder).get("command")
    if command in _BY_COMMAND:
        return _BY_COMMAND[str(command)]
    if (
        (folder / "before").is_dir()
        and (folder / "after").is_dir()
        and (folder / "comparison.json").is_file()
    ):
        return "align"
    if (folder / "summary.csv").is_file() and (folder / "results.json").is_file():
        return "budget"
    metrics = folder / RESULT_FILE
    if not metrics.is_file():
        return None
    keys = set(json_or_empty(metrics))
    if {"forced_choice", "probes", "semantic"} <= keys:
        return "perceive"
    if (folder / "predictions.csv").is_file() and "metrics" in keys:
        return "evaluate"
    if (folder / "calibration.json").is_file() and "calibration" in keys:
        return "calibrate"
    if (folder / "student.json").is_file() and "history" in keys:
        return "distill"
    return None


def _upgrade(kind: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """What changed in a kind's ``metrics.json`` before it was typed, brought up to the current layout."""
    if kind == "evaluate" and "ci_unavailable" not in metrics:
        # Files from before the rule: say why their intervals are unusable (too few groups, no draws).
        from iqalens.evaluation.metrics import ci_unavailable

        metrics = {**metrics, "ci_unavailable": ci_unavailable(metrics)}
    return metrics


def legacy_result(folder: Path, kind: str, result_type: type[R]) -> R | None:
    """LEGACY: the old ``metrics.json`` of a ``kind`` run as ``result_type``; None when the kind copes
    without the file and it is missing. ``ValueError`` (naming the file) when it cannot be read."""
    path = folder / RESULT_FILE
    if kind in _METRICS_UNUSED:
        return None
    if not path.is_file():
        if kind in _METRICS_OPTIONAL:
            return None
        raise InvalidInputError(f"no {RESULT_FILE} in {folder} (an interrupted run?)")
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        raise InvalidInputError(f"{path} is not a JSON object")
    return decode_result(result_type, _upgrade(kind, metrics), str(path))


def typed_or_legacy(folder: Path, kind: str, result_type: type[R]) -> R | None:
    """The typed result of ``folder`` as ``result_type``, or (a folder without one) its legacy result."""
    stored = peek_result(folder)
    if stored is not None:
        return stored.decode(result_type)
    return legacy_result(folder, kind, result_type)
