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

import contextlib
import csv
import glob
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.images import ImageLoadError, iter_image_files, load_rgb
from iqalens.leaf.scorers import CALIBRATION_FILE as CALIBRATION_FILE  # re-exported: the old home
from iqalens.leaf.scorers import RAW_SCALE, ImageScorer, ScoreResult, load_scorer
from iqalens.leaf.scorers import StudentScorer as StudentScorer

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


def collect_inputs(items: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursive), globs and ``.csv`` manifests into image paths, in order.

    A plain path that does not exist is kept, so that scoring reports it ("file not found") next to
    the other results; a folder without images, a glob without matches, a malformed manifest or a file
    name iqalens refuses (:func:`iqalens.files.check_file_name`: control characters, undecodable
    bytes) raise :class:`InputError` before any work is done. Duplicates (same resolved path) are
    dropped. Other names come back verbatim in the results; a name that starts with ``-`` must be
    given on the command line after ``--`` or as ``./-x.png``.
    """
    from iqalens.datasets.manifest import ManifestError, read_manifest
    from iqalens.files import FileNameError, check_file_name

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
    for p in out:
        try:
            check_file_name(p)
        except FileNameError as exc:
            raise InputError(str(exc)) from None
    return out


# -- scoring ------------------------------------------------------------------------------------


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Decoding threads for :func:`score_paths`: one per usable core, at most 4.

    Pillow releases the GIL while it decodes and resizes, so threads decode in parallel with each other
    and with the network; more threads than cores only add contention.
    """
    return max(1, min(4, usable_cores()))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with at most ``n`` intra-op threads inside the block (None: unchanged), then restore.

    Does nothing when torch was never imported (an ONNX Runtime scorer has its own thread pool).
    """
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _shorter_side(model: ImageScorer) -> int | None:
    """The shorter side the model resizes to (None when the scorer does not say)."""
    for holder in (getattr(model, "config", None), getattr(getattr(model, "student", None), "config", None)):
        value = getattr(holder, "resize_shorter", None)
        if isinstance(value, int):
            return value
    return None


def load_reduced(path: str | os.PathLike[str], shorter: int) -> np.ndarray:
    """Like :func:`iqalens.images.load_rgb`, but a large image is decoded or shrunk to about twice
    ``shorter`` first (JPEG: DCT-domain scaling via ``Image.draft``; other formats: ``Image.reduce``
    by an integer factor), which makes camera photos many times cheaper to decode.

    The pixels differ slightly from a full decode followed by the model's resize (the reduction is a
    box filter at most ``shorter_side / (2 * shorter)``-fold), so scores differ slightly too: this is
    the ``fast_decode`` option of :func:`score_paths`, off by default. Any problem falls back to
    :func:`load_rgb`, which raises the usual :class:`ImageLoadError`.
    """
    from PIL import Image, ImageOps

    from iqalens.images import to_rgb_array

    target = 2 * shorter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # as load_rgb: large is fine
            with Image.open(path) as im:
                w, h = im.size
                if im.format == "JPEG" and min(w, h) >= 2 * target:
                    scale = target / min(w, h)
                    im.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                im.load()
                factor = min(im.size) // target
                if factor >= 2:
                    im = im.reduce(factor)
                return to_rgb_array(ImageOps.exif_transpose(im) or im)
    except Exception:  # noqa: BLE001 - the exact loader below reports the reason
        return load_rgb(path)


_Loaded = tuple[np.ndarray | None, str | None]


def _load_prepared(model: ImageScorer, path: str, shorter: int | None) -> _Loaded:
    """Decode + preprocess one file; ``(prepared, None)`` or ``(None, reason)``. Runs in worker threads."""
    try:
        image = load_reduced(path, shorter) if shorter is not None else load_rgb(path)
        return model.prepare(image), None
    except ImageLoadError as exc:
        return None, exc.reason
    except (ValueError, MemoryError) as exc:  # e.g. a preprocessing step refusing the image
        return None, f"cannot preprocess ({exc})"


def score_paths(
    model: ImageScorer,
    paths: Sequence[str | os.PathLike[str]],
    batch_size: int = 16,
    progress: bool = False,
    on_error: Callable[[str, str], None] | None = None,
    workers: int | None = None,
    fast_decode: bool = False,
    network_threads: int | None = None,
) -> list[ScoreResult]:
    """Score ``paths`` with ``model``; one :class:`ScoreResult` per path, in input order.

    Images are decoded and preprocessed by ``workers`` threads (default :func:`default_workers`; 0 =
    in the calling thread), one batch ahead of the network: while batch k is scored, batch k + 1 is
    being decoded, and at most two batches of prepared images are held, so memory stays bounded for
    any number of large photos. Preprocessing does not depend on ``workers`` (each image is prepared
    on its own); only the torch thread cap below may change a score's last float32 bits (another
    kernel partition: measured at most 1.1e-7 relative on the default student). ``fast_decode``
    decodes large images at reduced size (:func:`load_reduced`; slightly different scores, much faster
    on camera photos). An unreadable file becomes an error result (``on_error(path, reason)`` is called
    too) and never stops the others.

    ``network_threads`` caps torch's intra-op threads while scoring (default: unchanged). On an idle
    2-core machine, with 2 decoding threads, the default student scored 33.9 images/s with torch's 2
    threads against 24.4 capped to 1 (benchmarks/SCORING.md); on a machine loaded by other jobs it
    was the opposite (5.3 vs 18.7: PyTorch's threads wait for each other at every layer, so one
    preempted by another process stalls them all), so cap it to 1 on shared machines. ONNX Runtime
    scorers are not affected by this setting.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    n_workers = default_workers() if workers is None else int(workers)
    if n_workers < 0:
        raise InvalidInputError(f"workers must be >= 0, got {workers}")
    from tqdm import tqdm

    shorter = _shorter_side(model) if fast_decode else None
    names = [os.fspath(p) for p in paths]
    starts = list(range(0, len(names), batch_size))
    results: list[ScoreResult | None] = [None] * len(names)
    bar = tqdm(total=len(names), desc="score", unit="img", disable=not progress)
    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="iqalens-decode") if n_workers else None

    def submit(start: int) -> list[tuple[int, Future[_Loaded] | None]]:
        """Start decoding one batch (without a pool: decoded later, when collected)."""
        idx = range(start, min(start + batch_size, len(names)))
        return [
            (i, None if pool is None else pool.submit(_load_prepared, model, names[i], shorter)) for i in idx
        ]

    try:
        with torch_threads(network_threads):
            upcoming = submit(starts[0]) if starts else []
            for b in range(len(starts)):
                batch = upcoming
                if b + 1 < len(starts):
                    upcoming = submit(starts[b + 1])  # decoded while this batch is scored
                good_idx: list[int] = []
                prepared: list[np.ndarray] = []
                for i, future in batch:
                    array, reason = (
                        _load_prepared(model, names[i], shorter) if future is None else future.result()
                    )
                    if array is None:
                        results[i] = _failed(names[i], reason or "unknown error", on_error)
                    else:
                        good_idx.append(i)
                        prepared.append(array)
                if prepared:
                    scores, raws = model.score_prepared(prepared, batch_size)
                    for i, s, r in zip(good_idx, scores, raws, strict=True):
                        results[i] = ScoreResult(names[i], float(s), float(r))
                bar.update(len(batch))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [r for r in results if r is not None]


def _failed(path: str, reason: str, on_error: Callable[[str, str], None] | None) -> ScoreResult:
    if on_error is not None:
        on_error(path, reason)
    return ScoreResult(path, None, None, reason)


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


def write_csv(results: Sequence[ScoreResult], out: TextIO, model: dict[str, Any] | None = None) -> None:
    """CSV with the :data:`CSV_COLUMNS`: ``path,score,raw,error`` first (empty cells for a failed
    image's numbers), then what ``score`` means, the same on every row: ``scale`` (its name),
    ``scale_low``, ``scale_high``, ``higher_is_better`` (``true``/``false``) from :func:`score_scale`
    of ``model`` (a scorer's describe()); empty where unknown. ``raw`` is always the raw student score."""
    scale = score_scale(model)
    tail = [_cell(scale[k]) for k in ("name", "low", "high", "higher_is_better")]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow(
            [
                r.path,
                "" if r.score is None else f"{r.score:.6f}",
                "" if r.raw is None else f"{r.raw:.6f}",
                r.error or "",
                *tail,
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
    """What :func:`score_inputs` did: one result per image, in input order, and the model that scored them."""

    results: list[ScoreResult]
    model: dict[str, Any]  # the scorer's describe(): its name, runtime, calibration and scale
    output: Path | None = None  # the file written, if any

    @property
    def failures(self) -> list[ScoreResult]:
        """The images that could not be scored (each with its reason)."""
        return [r for r in self.results if not r.ok]

    def write(self, out: TextIO, fmt: str = "csv") -> None:
        """Write the results as ``csv`` or ``json`` (see :func:`write_results`)."""
        write_results(self.results, out, fmt, self.model)


def score_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | ImageScorer | None = None,
    fmt: str = "csv",
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> ScoreRun:
    """Score files, folders, globs and manifests (:func:`collect_inputs`) with ``model`` (a model path,
    None for the default, or a loaded scorer); what ``iqalens score`` does, without printing.

    Results are written to ``out`` as ``fmt`` (atomically) when it is given; otherwise the caller writes
    them (:meth:`ScoreRun.write`). Unreadable images do not stop the others: they are results with an
    error (``on_error(path, reason)`` is called for each) and are listed in :attr:`ScoreRun.failures`.
    Raises :class:`InvalidInputError` (:class:`InputError`, :class:`~iqalens.leaf.scorers.ModelPathError`)
    before any scoring for an unknown format, no inputs, inputs that name nothing scoreable or a model
    that cannot be used.
    """
    if fmt not in FORMATS:
        raise InvalidInputError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    paths = collect_inputs(inputs)
    if not paths:
        raise InputError("no input paths given")
    scorer = model if hasattr(model, "score_prepared") else load_scorer(model)  # type: ignore[arg-type]
    results = score_paths(scorer, paths, batch_size=batch_size, progress=progress, on_error=on_error)
    run = ScoreRun(results, scorer.describe(), None if out is None else Path(out))
    if out is not None:
        from iqalens.files import atomic_write_text

        buffer = io.StringIO()
        run.write(buffer, fmt)
        atomic_write_text(out, buffer.getvalue())
    return run
