"""One ``iqalens align`` run: load the base model, train, then diagnose before and after.

:func:`run_align` is what the command calls: it trains with :func:`iqalens.align.train.align`,
then (unless ``report=False``) runs :func:`iqalens.perception.run.perceive` on the base model
(``RUN/before``) and on the saved checkpoint loaded back from disk (``RUN/after``: the numbers are
those of the file every other command will load), writes ``comparison.json`` / ``comparison.csv``
and the run's ``metrics.json`` (the typed :class:`~iqalens.align.result.AlignResult`, kind ``align``).
Under torchrun only rank 0 writes the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from iqalens.align.base import AlignableModel
from iqalens.align.config import AlignConfig, short_name
from iqalens.align.report import (
    clean_image_paths,
    compare_runs,
    drift_measure,
    encoder_readout,
    headline,
    write_comparison,
)
from iqalens.align.result import AlignResult
from iqalens.align.train import MODEL_DIR, align, remove_run
from iqalens.errors import InvalidInputError
from iqalens.models.mini_taps import taps_name
from iqalens.results import write_result


def as_alignable(model: Any, temperature: float = 0.05) -> AlignableModel:
    """The :class:`AlignableModel` view of a model loaded by :func:`iqalens.models.loading.load_model`."""
    from iqalens.models.mini import MiniVLM

    if isinstance(model, MiniVLM):
        from iqalens.align.mini import MiniAlignable

        return MiniAlignable(model, temperature=temperature)
    if isinstance(model, AlignableModel):
        return model
    try:
        from iqalens.align import hf
    except ImportError:
        hf = None  # type: ignore[assignment]
    wrap = getattr(hf, "as_alignable", None)
    if wrap is None:
        raise InvalidInputError(
            f"{getattr(model, 'model_id', model)}: this model family does not support align yet"
        )
    return wrap(model)  # type: ignore[no-any-return]


def add_projector_taps(
    model: Any, taps: tuple[int, ...], checkpoint_id: str | None, pool: str = "cells"
) -> str | None:
    """Widen a mini model's projector to read ``taps`` summarised as ``pool`` (outputs unchanged until
    it trains); returns the id its cached inputs are keyed by (the checkpoint's, plus the taps and
    their pool: the cached cells differ)."""
    if not taps:
        return checkpoint_id
    from iqalens.models.mini import MiniVLM

    if not isinstance(model, MiniVLM):
        raise InvalidInputError(
            f"{getattr(model, 'model_id', model)}: projector taps exist for the mini model only"
        )
    model.add_projector_taps(taps, pool)
    if checkpoint_id is None:
        return None
    return checkpoint_id + taps_name(model.config.projector_taps, model.config.projector_tap_pool)


def model_device(cfg: AlignConfig) -> str:
    """The device models are loaded on: ``cfg.device``, with ``auto`` resolved as the trainer does."""
    from iqalens.training import resolve_device

    return str(resolve_device(cfg.device))


def resolve_manifest(bench: str | os.PathLike[str]) -> Path:
    """A benchmark folder (its ``manifest.csv``) or a manifest file; OSError when neither exists."""
    path = Path(bench)
    manifest = path / "manifest.csv" if path.is_dir() else path
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{bench}: no benchmark here (expected a folder with manifest.csv, or a manifest)"
        )
    return manifest


def finished(out: Path) -> bool:
    """Whether ``out`` holds a completed align run (training and, if asked for, the report)."""
    try:
        return bool(json.loads((out / "metrics.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def run_align(
    model_spec: str,
    bench: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: AlignConfig | None = None,
    *,
    report: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    perceive_options: Mapping[str, Any] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, save, and (``report``) compare before/after; returns the run's metrics.json dict.

    An unfinished run in ``out_dir`` resumes; a finished one is an error unless ``overwrite``.
    ``perceive_options`` go to both :func:`~iqalens.perception.run.perceive` calls (e.g. ``batch_size``,
    ``probe_max_iter``); ``model_options`` to every :func:`~iqalens.models.loading.load_model` call
    (the Hugging Face loading options: ``components``, ``trust_remote_code``, ``dtype``, ...).
    """
    from iqalens.models.loading import load_model

    cfg = config or AlignConfig()
    manifest = resolve_manifest(bench)
    out = Path(out_dir)
    rank = int(os.environ.get("RANK", "0"))
    if overwrite:
        if rank == 0:
            remove_run(out)
    elif finished(out):
        raise FileExistsError(f"{out} already holds a finished align run; pass --overwrite to redo it")
    elif out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise FileExistsError(f"{out} exists and is not an align run folder; choose another output folder")

    loading = dict(model_options or {})
    base, base_ckpt = load_model(model_spec, device=model_device(cfg), **loading)
    inputs_id = add_projector_taps(base, cfg.projector_taps, base_ckpt, cfg.projector_tap_pool)
    model = as_alignable(base, temperature=cfg.temperature)
    base_id = model.model_id
    info = {"base_model": model_spec}
    train_metrics = align(
        model, manifest, out, cfg, checkpoint_id=inputs_id, cache_dir=cache_dir, info=info, on_step=on_step
    )
    if rank != 0:
        return train_metrics
    del model, base
    metrics: dict[str, Any] = {
        "model_id": train_metrics["model_id"],
        "base_model": model_spec,
        "base_model_id": base_id,
        "base_checkpoint_id": base_ckpt,
        "checkpoint": str(out / MODEL_DIR),
        **{k: v for k, v in train_metrics.items() if k != "model_id"},
        "report": report,
        "before": None,
        "after": None,
        "drift": None,
    }
    if report:
        options = dict(perceive_options or {})
        metrics |= _before_after(model_spec, manifest, out, cfg, cache_dir, options, loading)
    metrics["complete"] = True
    write_result(out, AlignResult(**metrics))
    return metrics


def _before_after(
    model_spec: str,
    manifest: Path,
    out: Path,
    cfg: AlignConfig,
    cache_dir: str | os.PathLike[str] | None,
    options: dict[str, Any],
    loading: dict[str, Any],
) -> dict[str, Any]:
    from iqalens.models.loading import load_model
    from iqalens.perception.run import perceive

    clean = clean_image_paths(manifest, seed=cfg.seed)
    sides: dict[str, dict[str, Any]] = {}
    readouts: dict[str, dict[str, Any]] = {}
    for side, spec in (("before", model_spec), ("after", str(out / MODEL_DIR))):
        model, ckpt = load_model(spec, device=model_device(cfg), **loading)
        sides[side] = perceive(
            model,
            manifest,
            out / side,
            cache_dir=cache_dir,
            checkpoint_id=ckpt,
            **({"seed": cfg.seed, "progress": cfg.progress} | options),
        )
        readouts[side] = encoder_readout(as_alignable(model, cfg.temperature), clean)
        del model
    comparison = compare_runs(sides["before"], sides["after"])
    comparison["drift"] = drift_measure(readouts["before"], readouts["after"])
    comparison["train"] = short_name(cfg.train)
    write_comparison(out, comparison)
    return {
        "before": headline(sides["before"]),
        "after": headline(sides["after"]),
        "drift": comparison["drift"],
    }
