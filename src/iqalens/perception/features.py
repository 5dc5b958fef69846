"""Per-site features and forced-choice scores of a benchmark, extracted once and cached on disk.

Running a model over a benchmark is the expensive part of every diagnostic (minutes for the mini
model, hours for an MLLM); probes with other settings, semantic distance and before/after reports
only need the stored numbers. So extraction is keyed by (model id, checkpoint id, benchmark
manifest hash, class words, the adapter's extraction settings such as its prompt) and written batch
by batch, each batch atomically, so a crash or Ctrl-C loses at most the batch in flight and the
next call resumes where it stopped. A changed manifest
(or its provenance sidecar, which a rebuild rewrites) hashes differently and is never served
features of the old one.

Only rows whose ``perception_class`` is one of the 8 classes are extracted: ``excluded`` rows (and
rows without a class) have no answer to score and no label to probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.files import sibling_tempfile
from iqalens.images import load_rgb
from iqalens.models.base import ComponentModel
from iqalens.runs import write_json
from iqalens.taxonomy import CLASSES

#: Bump when the layout of the cache folder changes, so old folders are not misread.
CACHE_VERSION = 1
META_FILE = "meta.json"
FINAL_FILE = "features.npz"
WORDS_FILE = "words.npy"


@dataclass
class FeatureSet:
    """Everything the diagnostics need from one model on one benchmark, row-aligned (N labelled rows).

    ``labels`` are indices into ``class_words`` (the canonical class order); ``sites`` follow
    ``site_names`` (vision layers, projector, language-model layers); ``class_scores`` is the
    model's [N, C] forced-choice scores; ``word_embeddings`` the [C, D_lm] class-word embeddings.
    """

    model_id: str
    checkpoint_id: str
    manifest_hash: str
    paths: list[str]
    references: list[str]
    splits: list[str]
    labels: np.ndarray
    class_words: list[str]
    site_names: list[str]
    sites: list[np.ndarray]
    class_scores: np.ndarray
    word_embeddings: np.ndarray
    cache_dir: Path | None = None
    skipped_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def site(self, name: str) -> np.ndarray:
        """Feature matrix of one site by name (``vision.3``, ``projector``, ``lm.0`` ...)."""
        return self.sites[self.site_names.index(name)]

    @property
    def projector(self) -> np.ndarray:
        return self.site("projector")


def manifest_hash(manifest_path: str | os.PathLike[str]) -> str:
    """SHA-256 over the manifest CSV and its provenance sidecar (if any).

    The sidecar is included because a rebuild that re-renders images into the same paths rewrites
    it (with a new creation time) even when the CSV bytes come out identical.
    """
    path = Path(manifest_path)
    h = hashlib.sha256()
    h.update(path.read_bytes())
    side = path.with_suffix(".json")
    if side.is_file():
        h.update(b"\0sidecar\0")
        h.update(side.read_bytes())
    return h.hexdigest()


def default_cache_root() -> Path:
    """``$IQALENS_FEATURE_CACHE``, else ``$XDG_CACHE_HOME/iqalens/features`` (``~/.cache`` by default).

    Outside any run folder on purpose: several runs (other probe settings, before/after reports)
    share one extraction.
    """
    env = os.environ.get("IQALENS_FEATURE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iqalens" / "features"


def checkpoint_of(model: ComponentModel, checkpoint_id: str | None) -> str:
    """The checkpoint id to key the cache on: explicit, else the adapter's ``checkpoint_id``, else ''."""
    if checkpoint_id is not None:
        return checkpoint_id
    return str(getattr(model, "checkpoint_id", "") or "")


def settings_of(model: ComponentModel) -> dict[str, Any]:
    """The adapter's ``extraction_settings`` (optional): whatever besides the weights changes its
    features, e.g. a generative model's prompt text or a dual encoder's zero-shot template. Without
    them two runs with different prompts would share (and wrongly reuse) one extraction."""
    settings = getattr(model, "extraction_settings", None)
    return dict(settings) if settings else {}


def cache_key(
    model_id: str,
    checkpoint_id: str,
    mhash: str,
    class_words: Sequence[str],
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Folder name of one extraction: a readable model slug plus a hash of everything that keys it.

    ``settings`` (see :func:`settings_of`) join the key only when present, so the keys of adapters
    without settings stay what they were.
    """
    fields: dict[str, Any] = {
        "version": CACHE_VERSION,
        "model_id": model_id,
        "checkpoint_id": checkpoint_id,
        "manifest_hash": mhash,
        "class_words": list(class_words),
    }
    if settings:
        fields["settings"] = dict(settings)
    payload = json.dumps(fields, sort_keys=True, default=str)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[:60] or "model"
    return f"{slug}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = sibling_tempfile(path, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = sibling_tempfile(path, suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _part_name(first: int) -> str:
    return f"part_{first:07d}.npz"


def _load_parts(folder: Path, n_rows: int) -> tuple[dict[int, list[np.ndarray]], dict[int, np.ndarray]]:
    """Per-row site features and scores from the finished batches of an interrupted extraction.

    A part file that cannot be read (it cannot be half-written, but a disk can fail) is removed and
    its rows recomputed instead of failing the whole run.
    """
    feats: dict[int, list[np.ndarray]] = {}
    scores: dict[int, np.ndarray] = {}
    for part in sorted(folder.glob("part_*.npz")):
        try:
            with np.load(part) as z:
                index = z["index"]
                n_sites = int(z["n_sites"])
                site_arrays = [z[f"site_{k}"] for k in range(n_sites)]
                score_arr = z["scores"]
        except (OSError, ValueError, KeyError):
            part.unlink(missing_ok=True)
            continue
        for j, i in enumerate(index.tolist()):
            if 0 <= i < n_rows and i not in feats:
                feats[i] = [a[j] for a in site_arrays]
                scores[i] = score_arr[j]
    return feats, scores


def _check_batch(model_id: str, n: int, site_arrays: list[np.ndarray], scores: np.ndarray, c: int) -> None:
    for k, a in enumerate(site_arrays):
        if a.ndim != 2 or a.shape[0] != n:
            raise InvalidInputError(f"{model_id}: site {k} features have shape {a.shape}, expected [{n}, D]")
    if scores.shape != (n, c):
        raise InvalidInputError(f"{model_id}: class_log_scores gave shape {scores.shape}, expected {(n, c)}")


def labelled_rows(manifest_path: str | os.PathLike[str]) -> tuple[Any, list[Any]]:
    """(manifest, its rows with one of the 8 classes): the rows a :class:`FeatureSet` holds, in order."""
    manifest, _ = read_manifest(manifest_path)
    labelled = [r for r in manifest.rows if r.perception_class in CLASSES]
    if not labelled:
        raise InvalidInputError(f"{manifest_path}: no rows with one of the classes {', '.join(CLASSES)}")
    return manifest, labelled


def extract_features(
    model: ComponentModel,
    manifest_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    checkpoint_id: str | None = None,
    class_words: Sequence[str] = CLASSES,
    batch_size: int = 8,
    progress: bool = True,
) -> FeatureSet:
    """Per-site pooled features, forced-choice scores and class-word embeddings of a benchmark.

    ``cache_dir`` is the cache root (default :func:`default_cache_root`); this extraction lives in
    one sub-folder of it named by :func:`cache_key`. Completed extractions are loaded without
    touching the model's ``extract`` or ``class_log_scores``; interrupted ones resume from the
    batches already written. ``class_words`` are what the model is asked to choose between (and
    whose embeddings the semantic distance uses), one per class in :data:`CLASSES` order.
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
    words = list(class_words)
    if len(words) != len(CLASSES):
        raise InvalidInputError(f"need one class word per class ({len(CLASSES)}), got {len(words)}")
    manifest, labelled = labelled_rows(manifest_path)
    ckpt = checkpoint_of(model, checkpoint_id)
    mhash = manifest_hash(manifest_path)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    settings = settings_of(model)
    folder = root / cache_key(model.model_id, ckpt, mhash, words, settings)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "cache_version": CACHE_VERSION,
        "model_id": model.model_id,
        "checkpoint_id": ckpt,
        "manifest": str(Path(manifest_path).resolve()),
        "manifest_hash": mhash,
        "class_words": words,
        "rows": len(labelled),
    }
    if settings:
        meta["settings"] = json.loads(json.dumps(settings, default=str))
    meta_file = folder / META_FILE
    if meta_file.is_file():
        earlier = json.loads(meta_file.read_text())
        same = {k: earlier.get(k) for k in meta if k != "manifest"}
        if same != {k: v for k, v in meta.items() if k != "manifest"}:
            raise InvalidInputError(
                f"{folder} holds another extraction ({earlier.get('model_id')}); remove it"
            )
    else:
        write_json(meta_file, meta)

    final = folder / FINAL_FILE
    if final.is_file():
        with np.load(final) as z:
            n_sites = int(z["n_sites"])
            sites = [z[f"site_{k}"] for k in range(n_sites)]
            scores = z["scores"]
        site_names = json.loads(meta_file.read_text())["site_names"]
    else:
        sites, scores, site_names = _extract_missing(
            model, manifest, labelled, folder, words, batch_size, progress
        )
        _atomic_npz(
            final,
            {"n_sites": np.asarray(len(sites)), "scores": scores}
            | {f"site_{k}": a for k, a in enumerate(sites)},
        )
        write_json(meta_file, {**meta, "site_names": site_names})
        for part in folder.glob("part_*.npz"):
            part.unlink(missing_ok=True)

    words_file = folder / WORDS_FILE
    if words_file.is_file():
        word_emb = np.load(words_file)
    else:
        word_emb = np.asarray(model.word_embeddings(words), dtype=np.float32)
        if word_emb.ndim != 2 or word_emb.shape[0] != len(words):
            raise InvalidInputError(f"{model.model_id}: word_embeddings gave shape {word_emb.shape}")
        atomic_npy(words_file, word_emb)

    return FeatureSet(
        model_id=model.model_id,
        checkpoint_id=ckpt,
        manifest_hash=mhash,
        paths=[r.path for r in labelled],
        references=[r.reference for r in labelled],
        splits=[r.split for r in labelled],
        labels=np.asarray([CLASSES.index(r.perception_class) for r in labelled], dtype=np.int64),
        class_words=words,
        site_names=list(site_names),
        sites=[np.asarray(a, dtype=np.float32) for a in sites],
        class_scores=np.asarray(scores, dtype=np.float64),
        word_embeddings=word_emb,
        cache_dir=folder,
        skipped_rows=len(manifest.rows) - len(labelled),
    )


def _extract_missing(
    model: ComponentModel,
    manifest: Any,
    rows: list[Any],
    folder: Path,
    words: list[str],
    batch_size: int,
    progress: bool,
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Run the model over the rows no finished batch covers, one atomic part file per batch."""
    n = len(rows)
    feats, scores = _load_parts(folder, n)
    todo = [i for i in range(n) if i not in feats]
    site_names: list[str] | None = None
    names_file = folder / "site_names.json"
    if names_file.is_file():
        site_names = json.loads(names_file.read_text())
    bar = tqdm(
        total=n,
        initial=n - len(todo),
        desc=f"features {model.model_id}",
        unit="img",
        disable=not progress or not todo,
        leave=False,
    )
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            images = [load_rgb(manifest.resolve(rows[i])) for i in chunk]
            cf = model.extract(images)
            site_arrays = [np.asarray(a, dtype=np.float32) for a in cf.sites()]
            batch_scores = np.asarray(model.class_log_scores(images, words), dtype=np.float64)
            _check_batch(model.model_id, len(chunk), site_arrays, batch_scores, len(words))
            if site_names is None:
                site_names = cf.site_names
                write_json(names_file, site_names)
            elif cf.site_names != site_names:
                raise InvalidInputError(
                    f"{model.model_id}: sites changed between batches ({site_names} vs {cf.site_names})"
                )
            _atomic_npz(
                folder / _part_name(chunk[0]),
                {"index": np.asarray(chunk), "n_sites": np.asarray(len(site_arrays)), "scores": batch_scores}
                | {f"site_{k}": a for k, a in enumerate(site_arrays)},
            )
            for j, i in enumerate(chunk):
                feats[i] = [a[j] for a in site_arrays]
                scores[i] = batch_scores[j]
            bar.update(len(chunk))
    finally:
        bar.close()
    assert site_names is not None
    n_sites = len(feats[0])
    if n_sites != len(site_names):
        raise InvalidInputError(f"{folder}: cached parts have {n_sites} sites, expected {len(site_names)}")
    sites = [np.stack([feats[i][k] for i in range(n)]) for k in range(n_sites)]
    return sites, np.stack([scores[i] for i in range(n)]), site_names
