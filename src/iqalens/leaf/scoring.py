"""Score image files with a trained student: what ``iqalens score PATHS... [--model RUN]`` does
(:func:`score_inputs`; the command prints and chooses the exit status).

**A model** is resolved by :func:`iqalens.leaf.scorers.load_scorer` (re-exported here with the
scorer interface, :class:`StudentScorer` and :class:`ScoreResult`); most often a run folder (``RUN``)::

    RUN/
      student.json, student.safetensors   the student (iqalens.leaf.student.save_student)
      calibration.json                    optional: raw student score -> MOS scale
                                          (iqalens.leaf.calibration.save_calibrator)

Without ``calibration.json`` the reported score is the raw student score (the teacher's expected-score
scale, [0, 1], higher = better; :data:`RAW_SCALE`). A model may also be an exported ``.onnx`` file
(:mod:`iqalens.leaf.onnx_export`), which carries its own preprocessing and calibration. With no model
the default student shipped with the package is used (:mod:`iqalens.leaf.default_model`). Other kinds
are registered in :data:`iqalens.leaf.scorers.SCORERS`.

**Inputs** (:func:`collect_inputs`): files, folders (recursive, image extensions only, sorted), glob
patterns (``**`` allowed) and manifests (``.csv``, read with :func:`iqalens.datasets.manifest.read_manifest`,
paths relative to the manifest). The same file named twice is scored once, at its first position.

**Guarantees** (:func:`score_paths`): results come back in input order, one per path; a file that
cannot be read gets ``score=None`` and the reason, and every other file is still scored. Scores do not
depend on which other files are in a batch: preprocessing is per image and the network runs in eval
mode (BatchNorm uses stored statistics); across *batch sizes* and torch thread counts they agree to
float32 rounding (< 1e-5), because a different batch shape or thread count may take a different CPU
kernel. Files are decoded by a thread pool one batch ahead of the network (:func:`score_paths`).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from iqalens.errors import InvalidInputError
from iqalens.images import IMAGE_EXTENSIONS, iter_image_files

# re-exported: the pipeline's parts lived here before iqalens.leaf.pipeline
from iqalens.leaf.pipeline import DEFAULT_PREFETCH, iter_scores
from iqalens.leaf.pipeline import default_workers as default_workers
from iqalens.leaf.pipeline import load_reduced as load_reduced
from iqalens.leaf.pipeline import torch_threads as torch_threads
from iqalens.leaf.pipeline import usable_cores as usable_cores
from iqalens.leaf.scorers import CALIBRATION_FILE as CALIBRATION_FILE  # re-exported: the old home
from iqalens.leaf.scorers import RAW_SCALE, ImageScorer, ScoreResult
from iqalens.leaf.scorers import StudentScorer as StudentScorer
from iqalens.leaf.scorers import load_scorer as load_scorer

#: Output formats of :func:`write_results` / :func:`score_inputs`.
FORMATS: tuple[str, ...] = ("csv", "json")
#: Columns of the CSV output: one row per image, the scale columns repeat what its score means (the
#: ``scale`` of the model's describe(), see :func:`score_scale`) so that the CSV alone is readable.
CSV_COLUMNS: tuple[str, ...] = (
    "path",
    "score",
    "raw",
    "error",
    "scale",
    "scale_low",
    "scale_high",
    "higher_is_better",
)

_GLOB_CHARS = frozenset("*?[")


class InputError(InvalidInputError):
    """An input argument names nothing scoreable (an empty folder, a glob without matches, a bad manifest).

    An :class:`~iqalens.errors.InvalidInputError`, hence still a ``ValueError``."""


def score_scale(model: dict[str, Any] | None) -> dict[str, Any]:
    """What the ``score`` of a model's output means, from its describe(): ``name``, ``low``, ``high``,
    ``higher_is_better`` (None where unknown).

    The model's ``scale`` when it has one (the default model, and any run calibrated on a manifest that
    names its MOS scale); the raw scale for an uncalibrated model; for a calibration that recorded no
    scale (older runs, or a manifest without ``mos_scale``), the calibration's clip range if it has one
    and a name saying that the scale was not recorded.
    """
    unknown: dict[str, Any] = {"name": None, "low": None, "high": None, "higher_is_better": None}
    if not model:
        return unknown
    scale = model.get("scale")
    if isinstance(scale, dict):
        return {**unknown, **{k: scale.get(k) for k in unknown}}
    calibration = model.get("calibration")
    if calibration is None:
        return dict(RAW_SCALE)
    clip = calibration.get("clip") if isinstance(calibration, dict) else None
    low, high = clip if isinstance(clip, list | tuple) and len(clip) == 2 else (None, None)
    name = "calibrated score; its scale was not recorded (see the model's calibration.json)"
    return {**unknown, "name": name, "low": low, "high": high}


# -- inputs -------------------------------------------------------------------------------------


def _walk_images(folder: Path) -> Iterator[Path]:
    """The image files under ``folder`` in the order of :func:`iqalens.images.iter_image_files`
    (sorted paths; hidden files skipped; symlinked folders not entered), found lazily: one folder's
    names are listed at a time, never the whole tree.

    A depth-first walk visiting each folder's entries in name order yields exactly the sorted order of
    the paths, because paths compare part by part."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk_images(Path(entry.path))
            elif (
                entry.is_file()
                and not entry.name.startswith(".")
                and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            ):
                yield Path(entry.path)
        except OSError:  # vanished or unreadable entry: as rglob, skip it
            continue


def _peeked(first: Path, rest: Iterator[Path]) -> Iterator[Path]:
    yield first
    yield from rest


def _open_item(text: str) -> Iterator[Path]:
    """The paths one input argument names, checked up front (an empty folder, a glob without matches
    or a bad manifest raise :class:`InputError` here) and produced lazily."""
    from iqalens.datasets.manifest import ManifestError, read_manifest

    p = Path(text)
    if p.is_dir():
        found = _walk_images(p)
        first = next(found, None)
        if first is None:
            raise InputError(f"no image files found in folder {p}")
        return _peeked(first, found)
    if p.is_file() and p.suffix.lower() == ".csv":
        try:
            manifest, _ = read_manifest(p, check_files=False)
        except ManifestError as exc:
            raise InputError(str(exc)) from exc
        if not manifest.rows:
            raise InputError(f"manifest {p} has no rows")
        return (manifest.resolve(row) for row in manifest.rows)
    if not p.exists() and _GLOB_CHARS & set(text):
        files: list[Path] = []
        for m in sorted(glob.glob(text, recursive=True)):
            mp = Path(m)
            files += iter_image_files(mp) if mp.is_dir() else [mp]
        if not files:
            raise InputError(f"pattern {text!r} matches no files")
        return iter(files)
    return iter([p])  # a file (any extension: the loader decides), or a missing path reported later


def iter_inputs(items: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """The image paths that files, folders (recursive), globs and ``.csv`` manifests name, in order,
    produced lazily: a folder of 100k images is walked as it is scored, never listed first.

    Every argument is checked when this is called (an empty folder, a glob without matches, a
    malformed manifest raise :class:`InputError` before any path is produced); a file name iqalens
    refuses (:func:`iqalens.files.check_file_name`) raises :class:`InputError` when it is reached.
    A plain path that does not exist is kept, so that scoring reports it ("file not found") next to
    the other results. Duplicates (same resolved path) are dropped: the one set this keeps holds a
    string per path produced, the only memory that grows with the number of files.
    """
    opened = [_open_item(os.fspath(item)) for item in items]

    def produce() -> Iterator[Path]:
        from iqalens.files import FileNameError, check_file_name

        seen: set[str] = set()
        for paths in opened:
            for p in paths:
                key = str(p.resolve())
                if key in seen:
                    continue
                seen.add(key)
                try:
                    check_file_name(p)
                except FileNameError as exc:
                    raise InputError(str(exc)) from None
                yield p

    return produce()


def collect_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursive), globs and ``.csv`` manifests into image paths, in order
    (:func:`iter_inputs`, as a list).

    A plain path that does not exist is kept, so that scoring reports it ("file not found") next to
    the other results; a folder without images, a glob without matches, a malformed manifest or a file
    name iqalens refuses (:func:`iqalens.files.check_file_name`: control characters, undecodable
    bytes) raise :class:`InputError` before any work is done. Duplicates (same resolved path) are
    dropped. Other names come back verbatim in the results; a name that starts with ``-`` must be
    given on the command line after ``--`` or as ``./-x.png``.
    """
    return list(iter_inputs(items))


# -- scoring ------------------------------------------------------------------------------------


def score_paths(
    model: ImageScorer,
    paths: Iterable[str | os.PathLike[str]],
    batch_size: int = 16,
    progress: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    workers: int | None = None,
    fast_decode: bool = False,
    network_threads: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> list[ScoreResult]:
    """Score ``paths`` with ``model``; one :class:`ScoreResult` per path, in input order
    (:func:`iqalens.leaf.pipeline.iter_scores`, collected).

    Images are decoded and preprocessed by ``workers`` threads (default
    :func:`~iqalens.leaf.pipeline.pipeline_workers`: one per core, at most 8; 0 =
    in the calling thread), ``prefetch`` batches ahead of the network, so memory stays bounded for any
    number of large photos. Preprocessing does not depend on ``workers`` (each image is prepared on its
    own); only the torch thread cap below may change a score's last float32 bits (another kernel
    partition: measured at most 1.1e-7 relative on the default student). ``fast_decode`` decodes large
    images at reduced size (:func:`load_reduced`; slightly different scores, much faster on camera
    photos). An unreadable file becomes an error result (``on_error(path, reason)`` is called too) and
    never stops the others.

    ``network_threads`` caps torch's intra-op threads while scoring (default: unchanged). On an idle
    2-core machine, with 2 decoding threads, the default student scored 33.9 images/s with torch's 2
    threads against 24.4 capped to 1 (benchmarks/SCORING.md); on a machine loaded by other jobs it
    was the opposite (5.3 vs 18.7: PyTorch's threads wait for each other at every layer, so one
    preempted by another process stalls them all), so cap it to 1 on shared machines. ONNX Runtime
    scorers are not affected by this setting.
    """
    from tqdm import tqdm

    total = len(paths) if isinstance(paths, Sized) else None
    with tqdm(total=total, desc="score", unit="img", disable=not progress) as bar:
        return list(
            iter_scores(
                model,
                paths,
                batch_size,
                workers=workers,
                prefetch=prefetch,
                fast_decode=fast_decode,
                network_threads=network_threads,
                on_error=on_error,
                on_batch=_updater(bar),
            )
        )


def _updater(bar: Any) -> Callable[[int], None]:
    """``on_batch`` for :func:`iter_scores` that advances a tqdm bar."""

    def update(n: int) -> None:
        bar.update(n)

    return update


# -- outputs ------------------------------------------------------------------------------------


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(float(value))
    return str(value)


def _result_json(r: ScoreResult) -> dict[str, Any]:
    return {"path": r.path, "score": _num(r.score), "raw": _num(r.raw), "error": r.error}


class ResultWriter:
    """Writes results to ``out`` as they come, in ``csv`` or ``json``: the same text as
    :func:`write_results` of all of them, in memory that does not grow with their number.

    CSV rows go out at once (a pipe sees them as images are scored). The JSON document states its
    counts before its results, so those are spooled to a temporary file and copied after the header
    on :meth:`close`.
    """

    def __init__(self, out: TextIO, fmt: str = "csv", model: dict[str, Any] | None = None) -> None:
        if fmt not in FORMATS:
            raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.out, self.fmt, self.model = out, fmt, model
        self.n_images = self.n_failed = 0
        if fmt == "csv":
            scale = score_scale(model)
            self._tail = [_cell(scale[k]) for k in ("name", "low", "high", "higher_is_better")]
            self._csv = csv.writer(out, lineterminator="\n")
            self._csv.writerow(CSV_COLUMNS)
        else:
            self._spool: Any = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, r: ScoreResult) -> None:
        """Write one result."""
        self.n_images += 1
        self.n_failed += not r.ok
        if self.fmt == "csv":
            score = "" if r.score is None else f"{r.score:.6f}"
            raw = "" if r.raw is None else f"{r.raw:.6f}"
            self._csv.writerow([r.path, score, raw, r.error or "", *self._tail])
            return
        item = json.dumps(_result_json(r), indent=2).replace("\n", "\n    ")
        self._spool.write(("" if self.n_images == 1 else ",\n") + "    " + item)

    def close(self) -> None:
        """Finish the document (JSON: header, spooled results, footer); ``out`` stays open."""
        if self.fmt == "csv":
            return
        head: dict[str, Any] = {
            "model": self.model,
            "n_images": self.n_images,
            "n_failed": self.n_failed,
            "results": [],
        }
        text = json.dumps(head, indent=2)
        if self.n_images == 0:
            self.out.write(text + "\n")
        else:
            self.out.write(text[: -len("[]\n}")] + "[\n")
            self._spool.seek(0)
            while chunk := self._spool.read(1 << 20):
                self.out.write(chunk)
            self.out.write("\n  ]\n}\n")
        self._spool.close()


def write_csv(results: Sequence[ScoreResult], out: TextIO, model: dict[str, Any] | None = None) -> None:
    """CSV with the :data:`CSV_COLUMNS`: ``path,score,raw,error`` first (empty cells for a failed
    image's numbers), then what ``score`` means, the same on every row: ``scale`` (its name),
    ``scale_low``, ``scale_high``, ``higher_is_better`` (``true``/``false``) from :func:`score_scale`
    of ``model`` (a scorer's describe()); empty where unknown. ``raw`` is always the raw student score."""
    writer = ResultWriter(out, "csv", model)
    for r in results:
        writer.add(r)


def results_json(results: Sequence[ScoreResult], model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document: the model description, counts and one object per path."""
    return {
        "model": model,
        "n_images": len(results),
        "n_failed": sum(not r.ok for r in results),
        "results": [_result_json(r) for r in results],
    }


def write_json(results: Sequence[ScoreResult], out: TextIO, model: dict[str, Any] | None = None) -> None:
    """Write :func:`results_json` (indented) to ``out``."""
    json.dump(results_json(results, model), out, indent=2)
    out.write("\n")


def write_results(
    results: Sequence[ScoreResult], out: TextIO, fmt: str = "csv", model: dict[str, Any] | None = None
) -> None:
    """Write ``results`` as ``csv`` or ``json``; both say what the scores mean (from ``model``)."""
    if fmt == "csv":
        write_csv(results, out, model)
    elif fmt == "json":
        write_json(results, out, model)
    else:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


# -- scoring inputs into a file -----------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRun:
    """What :func:`score_inputs` did: one result per image, in input order, and the model that scored them.

    With ``keep_results=False`` :attr:`results` is empty (the results went to the output as they
    came) and :attr:`n_images` and :attr:`failures` still say how it went."""

    results: list[ScoreResult]
    model: dict[str, Any]  # the scorer's describe(): its name, runtime, calibration and scale
    output: Path | None = None  # the file written, if any
    n_images: int | None = None  # images scored or failed (None: len(results))
    failed: list[ScoreResult] | None = field(default=None, repr=False)  # set when results are not kept

    @property
    def count(self) -> int:
        """How many images were scored or failed."""
        return len(self.results) if self.n_images is None else self.n_images

    @property
    def failures(self) -> list[ScoreResult]:
        """The images that could not be scored (each with its reason)."""
        return [r for r in self.results if not r.ok] if self.failed is None else list(self.failed)

    def write(self, out: TextIO, fmt: str = "csv") -> None:
        """Write the results as ``csv`` or ``json`` (see :func:`write_results`)."""
        write_results(self.results, out, fmt, self.model)


def score_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | ImageScorer | None = None,
    fmt: str = "csv",
    out: str | os.PathLike[str] | TextIO | None = None,
    batch_size: int = 16,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    runtime: str = "auto",
    keep_results: bool = True,
) -> ScoreRun:
    """Score files, folders, globs and manifests (:func:`iter_inputs`) with ``model`` (a model path,
    None for the default, or a loaded scorer) on ``runtime``
    (:func:`iqalens.leaf.runtimes.load_runtime_scorer`: ``auto`` = ONNX Runtime when installed); what
    ``iqalens score`` does, without printing.

    Inputs are walked, scored (:func:`iqalens.leaf.pipeline.iter_scores`) and written as they come:
    to ``out`` as ``fmt`` when it is given, a path (written atomically: a temporary sibling renamed at
    the end) or an open text stream; otherwise the caller writes them (:meth:`ScoreRun.write`).
    ``keep_results=False`` keeps only the failures in memory (for very many images; then ``out``
    should be given). Unreadable images do not stop the others: they are results with an error
    (``on_error(path, reason)`` is called for each) and are listed in :attr:`ScoreRun.failures`.
    Raises :class:`InvalidInputError` (:class:`InputError`, :class:`~iqalens.leaf.scorers.ModelPathError`)
    before any scoring for an unknown format, no inputs, inputs that name nothing scoreable or a model
    that cannot be used; a refused file name is only met when the walk reaches it (a path ``out`` is
    then not written).
    """
    from iqalens.leaf.runtimes import load_runtime_scorer

    if fmt not in FORMATS:
        raise InvalidInputError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not inputs:
        raise InputError("no input paths given")
    paths = iter_inputs(inputs)
    if hasattr(model, "score_prepared"):  # a loaded scorer
        scorer = cast(ImageScorer, model)
    else:
        scorer = load_runtime_scorer(model, runtime)
    collect = _Collector(scorer.describe(), fmt, keep_results)

    def run(stream: TextIO | None) -> None:
        collect.run(
            iter_scores(scorer, paths, batch_size, on_error=on_error, on_batch=collect.bar(progress)), stream
        )

    target = None
    if out is None or hasattr(out, "write"):
        run(cast("TextIO | None", out))
    else:
        from iqalens.files import atomic_replace

        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                run(f)

        atomic_replace(target, write)
    if keep_results:
        return ScoreRun(collect.kept, collect.model, target)
    return ScoreRun([], collect.model, target, n_images=collect.count, failed=collect.failed)


class _Collector:
    """Takes the results of one :func:`score_inputs` run: writes each, counts them, keeps all of them
    or only the failures."""

    def __init__(self, model: dict[str, Any], fmt: str, keep: bool) -> None:
        self.model, self.fmt, self.keep = model, fmt, keep
        self.kept: list[ScoreResult] = []
        self.failed: list[ScoreResult] = []
        self.count = 0
        self._bar: Any = None

    def bar(self, progress: bool) -> Callable[[int], None]:
        """The progress callback (a tqdm bar, closed when :meth:`run` ends)."""
        from tqdm import tqdm

        self._bar = tqdm(desc="score", unit="img", disable=not progress)
        return _updater(self._bar)

    def run(self, results: Iterable[ScoreResult], stream: TextIO | None) -> None:
        writer = None if stream is None else ResultWriter(stream, self.fmt, self.model)
        try:
            for r in results:
                self.count += 1
                if self.keep:
                    self.kept.append(r)
                elif not r.ok:
                    self.failed.append(r)
                if writer is not None:
                    writer.add(r)
            if writer is not None:
                writer.close()
        finally:
            if self._bar is not None:
                self._bar.close()
