"""What scores images, and how a model argument names it: the scorer interface and its registry.

:class:`ImageScorer` is what :func:`iqalens.leaf.scoring.score_paths` needs; :class:`StudentScorer` is
the torch one (a student plus an optional calibrator). Every way of naming a model is an entry of
:data:`SCORERS` (a :class:`~iqalens.registry.Registry`): :func:`load_scorer`, the ``--model`` help text
of ``iqalens score`` (:func:`scorers_help`), the error for an unusable model and :func:`list_scorers`
are all generated from it. Built in:

- ``default``: no model given, the student shipped with the package (:mod:`iqalens.leaf.default_model`);
- ``run``: a student run folder (``RUN/student.json`` + weights, and ``RUN/calibration.json`` when it
  was calibrated); without a calibration the score is the raw student score (:data:`RAW_SCALE`);
- ``onnx``: an exported ``.onnx`` file (:mod:`iqalens.leaf.onnx_export`), which carries its own
  preprocessing and calibration.

**Adding a scorer** is one module (a class implementing :class:`ImageScorer`) plus one register call::

    SCORERS.register_lazy("mine", "my_package.my_scorer:MyScorer", "what it is", match="file",
                          suffix=".mine", usage=".mine file")

The registered object is called with the model's :class:`~pathlib.Path` (``obj()`` for the default)
and returns an :class:`ImageScorer`. The entry's string options (``extra``):

- ``match``: ``default`` (used when no model is given; the first such entry), ``file`` (an existing
  file whose suffix is one of ``suffix``) or ``folder`` (an existing folder holding every file named
  in ``marker``); files are matched in registration order, folders too but entries with a
  ``marker`` before those without (``run`` has none: its loader names what a folder lacks);
- ``suffix``: space-separated file suffixes, lower case (``.onnx``);
- ``marker``: space-separated file names a matching folder holds (``mine.json``);
- ``usage``: how help texts and errors name it (``.onnx file``).

This module imports neither torch nor numpy at import time (help texts read it) and none of the
modules it registers: they import it, not the other way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from iqalens.errors import InvalidInputError
from iqalens.registry import Entry, Registry

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

__all__ = [
    "CALIBRATION_FILE",
    "RAW_SCALE",
    "SCORERS",
    "ImageScorer",
    "ModelPathError",
    "ScoreResult",
    "ScorerInfo",
    "StudentScorer",
    "list_scorers",
    "load_run_scorer",
    "load_scorer",
    "scorer_kind",
    "scorers_help",
]

#: Optional calibration file of a run folder.
CALIBRATION_FILE = "calibration.json"
#: What an uncalibrated student's score is: the ``scale`` of its :meth:`StudentScorer.describe`. The head
#: is linear and trained towards the teacher's expected score, so its output is nominally in [0, 1]
#: but not clipped to it.
RAW_SCALE: dict[str, Any] = {
    "low": 0.0,
    "high": 1.0,
    "higher_is_better": True,
    "name": "raw student score (the teacher's expected-score scale; nominally 0-1; not clipped)",
}

#: How a model argument is resolved to a scorer (see the module doc for the entries' options).
SCORERS: Registry[Any] = Registry("scorer")

SCORERS.register_lazy(
    "default",
    "iqalens.leaf.default_model:load_default_scorer",
    "the student shipped with iqalens (EfficientNet-Lite0, calibrated to the KADID proxy-MOS scale 1-5)",
    match="default",
    usage="the bundled student",
)
SCORERS.register_lazy(
    "run",
    "iqalens.leaf.scorers:load_run_scorer",
    "a student run folder (distill, calibrate), calibrated when it holds calibration.json",
    match="folder",
    usage="student run folder",
)
SCORERS.register_lazy(
    "onnx",
    "iqalens.leaf.onnx_export:OnnxScorer",
    "a student exported by 'iqalens export', scored with ONNX Runtime",
    match="file",
    suffix=".onnx",
    usage=".onnx file",
)


class ModelPathError(InvalidInputError, FileNotFoundError):
    """A model path that names no usable model (missing, or of no registered kind)."""


class ImageScorer(Protocol):
    """What :func:`score_paths` needs: per-image preprocessing plus a batched scorer of prepared images."""

    name: str

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Per-image preprocessing done right after loading (keeps only a small array in memory)."""
        ...

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(score, raw)`` arrays for prepared images: calibrated score and raw student score."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for output headers and run folders."""
        ...


@dataclass(frozen=True)
class ScoreResult:
    """The outcome for one path: ``score``/``raw`` are None exactly when ``error`` says why."""

    path: str
    score: float | None
    raw: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class StudentScorer:
    """A student plus an optional calibrator; scores are ``calibrator(raw)`` (or ``raw`` without one)."""

    def __init__(
        self,
        student: Any,
        calibrator: Any | None = None,
        name: str = "student",
        info: dict[str, Any] | None = None,
    ) -> None:
        self.student = student.eval()
        self.calibrator = calibrator
        self.name = name
        self.info = dict(info or {})

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return self.student.prepare(image)

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        raw = self.student.predict(list(images), batch_size=batch_size)["score"]
        return self.calibrate(raw), raw

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Map raw student scores onto the model's output scale."""
        import numpy as np

        raw = np.asarray(raw, dtype=np.float64)
        return raw.copy() if self.calibrator is None else np.asarray(self.calibrator(raw), dtype=np.float64)

    def score_arrays(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Calibrated scores of RGB uint8 images in memory."""
        return self.score_prepared([self.prepare(im) for im in images], batch_size)[0]

    def describe(self) -> dict[str, Any]:
        described = {
            "name": self.name,
            "runtime": "torch",
            "student": self.student.config.to_dict(),
            "calibration": None if self.calibrator is None else self.calibrator.to_dict(),
            **self.info,
        }
        if "scale" not in described and self.calibrator is not None and "scale" in self.calibrator.extra:
            described["scale"] = self.calibrator.extra["scale"]  # set by calibrate_run
        if "scale" not in described and self.calibrator is None:
            described["scale"] = dict(RAW_SCALE)
        return described


def load_run_scorer(path: Path) -> StudentScorer:
    """The scorer of a student run folder: its student, calibrated when it holds :data:`CALIBRATION_FILE`."""
    from iqalens.leaf.calibration import load_calibrator
    from iqalens.leaf.student import load_student

    student = load_student(path)
    cal_file = path / CALIBRATION_FILE
    calibrator = load_calibrator(cal_file) if cal_file.is_file() else None
    return StudentScorer(student, calibrator, name=str(path))


def load_scorer(model: str | os.PathLike[str] | None = None) -> ImageScorer:
    """The scorer for a model argument: None for the default, or a path one :data:`SCORERS` entry matches.

    A path no entry matches raises :class:`ModelPathError` naming it and what would have been accepted.
    """
    if model is None:
        defaults = [e for e in SCORERS if e.extra.get("match") == "default"]
        if not defaults:
            raise InvalidInputError(f"no default model is registered; use a {_usages()}")
        return defaults[0].load()()
    path = Path(model)
    entry = _match(path)
    if entry is None:
        what = "is not a" if path.exists() else "does not exist; use a"
        raise ModelPathError(f"model {path} {what} {_usages()}")
    return entry.load()(path)


def scorer_kind(model: str | os.PathLike[str] | None) -> str | None:
    """The name of the :data:`SCORERS` entry a model argument selects (``default`` for None), without
    loading anything; None when no entry matches."""
    if model is None:
        return next((e.name for e in SCORERS if e.extra.get("match") == "default"), None)
    entry = _match(Path(model))
    return None if entry is None else entry.name


class ScorerInfo(NamedTuple):
    """What :func:`list_scorers` reports of one entry."""

    name: str
    summary: str
    match: str  # "default", "file" or "folder"
    usage: str  # how help texts name it


def list_scorers() -> list[ScorerInfo]:
    """Every registered scorer (nothing is imported)."""
    return [ScorerInfo(e.name, e.summary, e.extra.get("match", ""), _usage(e)) for e in SCORERS]


def scorers_help() -> str:
    """The accepted models, for the ``--model`` help text: ``student run folder or .onnx file (default:
    the bundled student)``."""
    default = [_usage(e) for e in SCORERS if e.extra.get("match") == "default"]
    return _usages() + (f" (default: {default[0]})" if default else "")


def _match(path: Path) -> Entry[Any] | None:
    if path.is_file():
        suffix = path.suffix.lower()
        files = [e for e in SCORERS if e.extra.get("match") == "file"]
        return next((e for e in files if suffix in e.extra.get("suffix", "").split()), None)
    if path.is_dir():
        folders = [e for e in SCORERS if e.extra.get("match") == "folder"]
        folders.sort(key=lambda e: not e.extra.get("marker"))  # stable: registration order otherwise
        markers = [(e, e.extra.get("marker", "").split()) for e in folders]
        return next((e for e, names in markers if all((path / n).exists() for n in names)), None)
    return None


def _usage(entry: Entry[Any]) -> str:
    return entry.extra.get("usage", entry.name)


def _usages() -> str:
    """``A, B or C``: what a model path may be (the file and folder entries)."""
    forms = [_usage(e) for e in SCORERS if e.extra.get("match") in ("file", "folder")]
    return " or ".join([", ".join(forms[:-1]), forms[-1]]) if len(forms) > 1 else "".join(forms)
