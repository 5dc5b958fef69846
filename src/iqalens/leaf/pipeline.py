"""The scoring pipeline: decoding and preprocessing overlap the network, in bounded memory.

:func:`iter_scores` is what :func:`iqalens.leaf.scoring.score_paths` and ``iqalens score`` run. Paths
are read from an *iterator* (a folder walk, a manifest), cut into batches, and every image of the next
``prefetch`` batches is decoded and preprocessed by a pool of worker threads while the calling thread
runs the network on the current batch; results come out in input order, one batch at a time.

**Why threads, and why this shape.** Pillow decodes and resizes without holding the GIL, and ONNX
Runtime and torch release it while they compute, so threads run the two stages at once on all cores
with no copies between processes. Measured on 2 cores (benchmarks/SCORING.md, 512x384 PNGs), the
decoding of one image costs about as much core time as the ONNX network for it, so the end-to-end
rate can at best reach ``1 / (decode_s + network_s)`` with both stages measured on all cores; a pool
of one thread per core feeding the network keeps both cores busy. Worker *processes* were tried in
a scratch comparison on the same (loaded) 2 cores and were slower (31.6-33.6 vs 34.8-37.0 images/s):
every prepared image is pickled back, and the pool competes with the network for the same cores.

**Bounded memory.** At most ``prefetch`` batches are queued (decoded or being decoded) besides the
one being scored, whatever the number of inputs: ``(prefetch + 1) * batch_size`` prepared images
(the default: 5 x 16 images of 224 x 299 x 3 bytes, about 16 MB), plus one full-size decoded image
per worker. Paths are pulled from the iterator only as batches are queued, so a walk over a folder of
100k files is never listed up front, and results are yielded, so a caller that writes them as they
come (``iqalens score -o``) holds none of them.

**Same scores.** Each image is decoded and prepared on its own, exactly as in a sequential loop; the
threads change *when* an image is decoded, never how, so scores equal the sequential ones
(``workers=0``) bit for bit (tests/test_pipeline.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.images import ImageLoadError, load_rgb
from iqalens.leaf.scorers import ImageScorer, ScoreResult

#: Batches decoded ahead of the network by default (see the module doc for the memory this bounds).
DEFAULT_PREFETCH = 4
#: The EXIF orientation tag (1 = as stored).
ORIENTATION_TAG = 0x0112

__all__ = [
    "DEFAULT_PREFETCH",
    "default_workers",
    "iter_scores",
    "load_reduced",
    "pipeline_workers",
    "prepare_file",
    "prepare_pil",
    "torch_threads",
    "usable_cores",
]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Decoding threads that leave room for a torch network (``leaf.features``): one per usable core,
    at most 4.

    Pillow releases the GIL while it decodes and resizes, so threads decode in parallel with each other
    and with the network; more threads than cores only add contention.
    """
    return max(1, min(4, usable_cores()))


def pipeline_workers() -> int:
    """Decoding threads of :func:`iter_scores` by default: one per usable core, at most 8. More than
    :func:`default_workers` allows, because on a many-core machine (or with the network on a GPU)
    decoding is what bounds scoring; past ~8 threads the GIL-held parts of decoding stop the gain."""
    return max(1, min(8, usable_cores()))


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


def shorter_side(model: ImageScorer) -> int | None:
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
    the ``fast_decode`` option of :func:`iter_scores`, off by default. Any problem falls back to
    :func:`load_rgb`, which raises the usual :class:`ImageLoadError`.
    """
    from PIL import Image, ImageOps

    from iqalens.images import to_rgb_array

    target = 2 * shorter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # as load_rgb: large is fine
            with Image.open(path) as opened:
                w, h = opened.size
                if opened.format == "JPEG" and min(w, h) >= 2 * target:
                    scale = target / min(w, h)
                    opened.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                opened.load()
                factor = min(opened.size) // target
                im: Image.Image = opened.reduce(factor) if factor >= 2 else opened
                return to_rgb_array(ImageOps.exif_transpose(im) or im)
    except Exception:  # noqa: BLE001 - the exact loader below reports the reason
        return load_rgb(path)


Prepared = tuple[np.ndarray | None, str | None]


def prepare_pil(model: ImageScorer, path: str | os.PathLike[str]) -> np.ndarray | None:
    """``model.prepare`` of the decoded Pillow image of an 8-bit RGB file (EXIF orientation applied),
    or None for anything else (another mode, a file that fails to decode or prepare): then
    :func:`iqalens.images.load_rgb` decodes it and reports the problem.

    For a scorer that prepares Pillow images itself (``accepts_pil = True``, e.g. the ONNX scorer, whose
    resize is Pillow's), this skips the copies that ``load_rgb`` and the resize make on the way into
    and out of a numpy array (and the copy ``exif_transpose`` makes of an image it does not turn): the
    same pixels, about 1 ms less per 512x384 image, 10% of its decoding (tests/test_pipeline.py).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # as load_rgb
            with Image.open(path) as opened:
                if opened.mode != "RGB":
                    return None
                opened.load()
                turned = opened.getexif().get(ORIENTATION_TAG, 1) not in (None, 1)
                image = (ImageOps.exif_transpose(opened) or opened) if turned else opened
                return model.prepare(image)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - load_rgb decodes again and says what is wrong
        return None


def prepare_file(model: ImageScorer, path: str, shorter: int | None = None) -> Prepared:
    """Decode + preprocess one file: ``(prepared, None)`` or ``(None, reason)``; never raises for a bad
    file. ``shorter`` set: decode large images reduced (:func:`load_reduced`). Runs in worker threads."""
    try:
        if shorter is None and getattr(model, "accepts_pil", False):
            prepared = prepare_pil(model, path)
            if prepared is not None:
                return prepared, None
        image = load_reduced(path, shorter) if shorter is not None else load_rgb(path)
        return model.prepare(image), None
    except ImageLoadError as exc:
        return None, exc.reason
    except (ValueError, MemoryError) as exc:  # e.g. a preprocessing step refusing the image
        return None, f"cannot preprocess ({exc})"


def _batches(paths: Iterable[str | os.PathLike[str]], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for p in paths:
        batch.append(os.fspath(p))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_Pending = tuple[list[str], list[Future[Prepared]] | None]


def iter_scores(
    model: ImageScorer,
    paths: Iterable[str | os.PathLike[str]],
    batch_size: int = 16,
    workers: int | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    fast_decode: bool = False,
    network_threads: int | None = None,
    on_error: Callable[[str, str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[ScoreResult]:
    """Score ``paths`` with ``model``, yielding one :class:`ScoreResult` per path, in input order.

    ``workers`` decoding threads (default :func:`pipeline_workers`; 0 = decode in the calling thread,
    nothing ahead) prepare the next ``prefetch`` batches while the network scores the current one
    (see the module doc). ``fast_decode`` decodes large images reduced (:func:`load_reduced`: slightly
    different scores, much faster on camera photos). An unreadable file becomes an error result
    (``on_error(path, reason)`` is called too) and never stops the others. ``network_threads`` caps
    torch's intra-op threads while scoring (ONNX Runtime scorers have their own setting).
    ``on_batch(n)`` is called after each batch of ``n`` results (a progress bar).

    Closing the generator early (``break``) cancels the queued decoding and joins the threads.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if prefetch < 1:
        raise InvalidInputError(f"prefetch must be >= 1, got {prefetch}")
    n_workers = pipeline_workers() if workers is None else int(workers)
    if n_workers < 0:
        raise InvalidInputError(f"workers must be >= 0, got {workers}")
    shorter = shorter_side(model) if fast_decode else None
    batches = _batches(paths, batch_size)
    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="iqalens-decode") if n_workers else None
    queue: deque[_Pending] = deque()

    def submit() -> bool:
        """Queue the next batch (without a pool: decoded when it is scored); False when none is left."""
        names = next(batches, None)
        if names is None:
            return False
        futures = None if pool is None else [pool.submit(prepare_file, model, n, shorter) for n in names]
        queue.append((names, futures))
        return True

    try:
        with torch_threads(network_threads):
            while len(queue) < (prefetch if pool is not None else 1) and submit():
                pass
            while queue:
                names, futures = queue.popleft()
                submit()  # keeps ``prefetch`` batches decoding while this one is scored
                loaded = (
                    [prepare_file(model, n, shorter) for n in names]
                    if futures is None
                    else [f.result() for f in futures]
                )
                yield from _score_batch(model, names, loaded, batch_size, on_error)
                del loaded
                if on_batch is not None:
                    on_batch(len(names))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _score_batch(
    model: ImageScorer,
    names: list[str],
    loaded: list[Prepared],
    batch_size: int,
    on_error: Callable[[str, str], None] | None,
) -> list[ScoreResult]:
    """The results of one batch, in order: the network on the images that loaded, errors for the rest."""
    results: list[ScoreResult | None] = [None] * len(names)
    good: list[int] = []
    arrays: list[Any] = []
    for i, (array, reason) in enumerate(loaded):
        if array is None:
            why = reason or "unknown error"
            if on_error is not None:
                on_error(names[i], why)
            results[i] = ScoreResult(names[i], None, None, why)
        else:
            good.append(i)
            arrays.append(array)
    if arrays:
        scores, raws = model.score_prepared(arrays, batch_size)
        for i, s, r in zip(good, scores, raws, strict=True):
            results[i] = ScoreResult(names[i], float(s), float(r))
    return [r for r in results if r is not None]
