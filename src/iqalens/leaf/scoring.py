"""Score image files with a trained student: what ``iqalens score PATHS... [--model RUN]`` does.

**A model is a run folder** (``RUN``)::

    RUN/
      student.json, student.safetensors   the student (iqalens.leaf.student.save_student)
      calibration.json                    optional: raw student score -> MOS scale
                                          (iqalens.leaf.calibration.save_calibrator)

Without ``calibration.json`` the reported score is the raw student score (the teacher's expected-score
scale, [0, 1], higher = better). ``--model`` may also name an exported ``.onnx`` file
(:mod:`iqalens.leaf.onnx_export`), which carries its own preprocessing and calibration. With no model
the default student shipped with the package is used (:mod:`iqalens.leaf.default_model`).

**Inputs** (:func:`collect_inputs`): files, folders (recursive, image extensions only, sorted), glob
patterns (``**`` allowed) and manifests (``.csv``, read with :func:`iqalens.datasets.manifest.read_manifest`,
paths relative to the manifest). The same file named twice is scored once, at its first position.

**Guarantees** (:func:`score_paths`): results come back in input order, one per path; a file that
cannot be read gets ``score=None`` and the reason, and every other file is still scored. Scores do not
depend on which other files are in a batch: preprocessing is per image and the network runs in eval
mode (BatchNorm uses stored statistics); across *batch sizes* they agree to float32 rounding (< 1e-5),
because a different batch shape may take a different CPU kernel.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from iqalens.images import ImageLoadError, iter_image_files, load_rgb

#: Optional calibration file of a run folder.
CALIBRATION_FILE = "calibration.json"
#: Output formats of :func:`write_results` / :func:`run_score`.
FORMATS: tuple[str, ...] = ("csv", "json")

_GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """An input argument names nothing scoreable (an empty folder, a glob without matches, a bad manifest)."""


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


# -- the torch scorer ---------------------------------------------------------------------------


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
        raw = np.asarray(raw, dtype=np.float64)
        return raw.copy() if self.calibrator is None else np.asarray(self.calibrator(raw), dtype=np.float64)

    def score_arrays(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Calibrated scores of RGB uint8 images in memory."""
        return self.score_prepared([self.prepare(im) for im in images], batch_size)[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runtime": "torch",
            "student": self.student.config.to_dict(),
            "calibration": None if self.calibrator is None else self.calibrator.to_dict(),
            **self.info,
        }


def load_scorer(model: str | os.PathLike[str] | None = None) -> ImageScorer:
    """The scorer for ``--model``: a run folder, an exported ``.onnx`` file, or None for the default.

    Errors name the path and what is missing.
    """
    if model is None:
        from iqalens.leaf.default_model import load_default_scorer

        return load_default_scorer()
    path = Path(model)
    if path.is_file() and path.suffix.lower() == ".onnx":
        from iqalens.leaf.onnx_export import OnnxScorer

        return OnnxScorer(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model {path} is neither a run folder nor an .onnx file")
    from iqalens.leaf.calibration import load_calibrator
    from iqalens.leaf.student import load_student

    student = load_student(path)
    cal_file = path / CALIBRATION_FILE
    calibrator = load_calibrator(cal_file) if cal_file.is_file() else None
    return StudentScorer(student, calibrator, name=str(path))


# -- inputs -------------------------------------------------------------------------------------


def collect_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursive), globs and ``.csv`` manifests into image paths, in order.

    A plain path that does not exist is kept, so that scoring reports it ("file not found") next to
    the other results; a folder without images, a glob without matches or a malformed manifest raise
    :class:`InputError` before any work is done. Duplicates (same resolved path) are dropped.
    """
    from iqalens.datasets.manifest import ManifestError, read_manifest

    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = iter_image_files(p)
            if not found:
                raise InputError(f"no image files found in folder {p}")
            for f in found:
                add(f)
        elif p.is_file() and p.suffix.lower() == ".csv":
            try:
                manifest, _ = read_manifest(p, check_files=False)
            except ManifestError as exc:
                raise InputError(str(exc)) from exc
            if not manifest.rows:
                raise InputError(f"manifest {p} has no rows")
            for row in manifest.rows:
                add(manifest.resolve(row))
        elif not p.exists() and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            files: list[Path] = []
            for m in matches:
                mp = Path(m)
                files += iter_image_files(mp) if mp.is_dir() else [mp]
            if not files:
                raise InputError(f"pattern {text!r} matches no files")
            for f in files:
                add(f)
        else:
            add(p)  # a file (any extension: the loader decides), or a missing path reported later
    return out


# -- scoring ------------------------------------------------------------------------------------


def score_paths(
    model: ImageScorer,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 16,
    progress: bool = False,
    on_error: Callable[[str, str], None] | None = None,
) -> list[ScoreResult]:
    """Score ``paths`` with ``model``; one :class:`ScoreResult` per path, in input order.

    Images are loaded and preprocessed ``batch_size`` at a time (so memory stays bounded for large
    photos); an unreadable file becomes an error result (``on_error(path, reason)`` is called too) and
    never stops the others.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm import tqdm

    results: list[ScoreResult | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="score", unit="img", disable=not progress)
    try:
        for start in range(0, len(paths), batch_size):
            good_idx: list[int] = []
            prepared: list[np.ndarray] = []
            for i in range(start, min(start + batch_size, len(paths))):
                path = os.fspath(paths[i])
                try:
                    prepared.append(model.prepare(load_rgb(path)))
                    good_idx.append(i)
                except ImageLoadError as exc:
                    results[i] = _failed(path, exc.reason, on_error)
                except (ValueError, MemoryError) as exc:  # e.g. a preprocessing step refusing the image
                    results[i] = _failed(path, f"cannot preprocess ({exc})", on_error)
            if prepared:
                scores, raws = model.score_prepared(prepared, batch_size)
                for i, s, r in zip(good_idx, scores, raws, strict=True):
                    results[i] = ScoreResult(os.fspath(paths[i]), float(s), float(r))
            bar.update(min(start + batch_size, len(paths)) - start)
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _failed(path: str, reason: str, on_error: Callable[[str, str], None] | None) -> ScoreResult:
    if on_error is not None:
        on_error(path, reason)
    return ScoreResult(path, None, None, reason)


# -- outputs ------------------------------------------------------------------------------------


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_csv(results: Sequence[ScoreResult], out: TextIO) -> None:
    """CSV with columns ``path,score,raw,error`` (empty cells for a failed image's numbers)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "score", "raw", "error"])
    for r in results:
        writer.writerow(
            [
                r.path,
                "" if r.score is None else f"{r.score:.6f}",
                "" if r.raw is None else f"{r.raw:.6f}",
                r.error or "",
            ]
        )


def results_json(results: Sequence[ScoreResult], model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document: the model description, counts and one object per path."""
    return {
        "model": model,
        "n_images": len(results),
        "n_failed": sum(not r.ok for r in results),
        "results": [
            {"path": r.path, "score": _num(r.score), "raw": _num(r.raw), "error": r.error} for r in results
        ],
    }


def write_json(results: Sequence[ScoreResult], out: TextIO, model: dict[str, Any] | None = None) -> None:
    """Write :func:`results_json` (indented) to ``out``."""
    json.dump(results_json(results, model), out, indent=2)
    out.write("\n")


def write_results(
    results: Sequence[ScoreResult], out: TextIO, fmt: str = "csv", model: dict[str, Any] | None = None
) -> None:
    """Write ``results`` as ``csv`` or ``json``."""
    if fmt == "csv":
        write_csv(results, out)
    elif fmt == "json":
        write_json(results, out, model)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


# -- the CLI entry point ------------------------------------------------------------------------


def run_score(
    inputs: Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | None = None,
    fmt: str = "csv",
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    err: TextIO | None = None,
) -> int:
    """Everything ``iqalens score`` does; returns the exit code.

    0: every image scored; 1: some images were unreadable (each named on ``err``, all others scored
    and written); 2: bad arguments (no inputs, unknown format, a model or input that cannot be used).
    Results go to ``out`` (written atomically) or to stdout.
    """
    err = err or sys.stderr
    if fmt not in FORMATS:
        print(f"error: --format must be one of {', '.join(FORMATS)}, got {fmt!r}", file=err)
        return 2
    try:
        paths = collect_inputs(inputs)
        if not paths:
            raise InputError("no input paths given")
        scorer = load_scorer(model)
    except (InputError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=err)
        return 2

    def report(path: str, reason: str) -> None:
        print(f"warning: skipped {path}: {reason}", file=err)

    results = score_paths(scorer, paths, batch_size=batch_size, progress=progress, on_error=report)
    if out is None:
        write_results(results, sys.stdout, fmt, scorer.describe())
    else:
        from iqalens.files import atomic_write_text

        buffer = io.StringIO()
        write_results(results, buffer, fmt, scorer.describe())
        atomic_write_text(out, buffer.getvalue())
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"{failed} of {len(results)} image(s) could not be scored", file=err)
    return 1 if failed else 0
