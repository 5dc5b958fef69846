"""Report kinds of the perception half: ``perceive`` and ``align`` runs (loaders and their entries).

Each loader turns a run folder's typed result (:class:`~iqalens.perception.result.PerceptionResult`,
:class:`~iqalens.align.result.AlignResult`) and its ``config.json`` into a record with provenance;
:mod:`iqalens.report.perception_section` draws the records. Registered in
:data:`iqalens.report.kinds.REPORT_KINDS` as ``perceive`` and ``align``.
"""

from __future__ import annotations

from pathlib import Path

import iqalens.report.perception_section as draw
from iqalens.align.result import AlignResult
from iqalens.errors import InvalidInputError
from iqalens.perception.result import PerceptionResult
from iqalens.report.kinds import ReportKind, Section
from iqalens.report.legacy import typed_or_legacy
from iqalens.report.reading import (
    inline,
    json_or_empty,
    make_provenance,
    read_csv,
    run_config,
    to_float,
)
from iqalens.report.records import AlignRun, PerceptionRun
from iqalens.results import RESULT_FILE, result_data

#: The perception half of the page.
PERCEPTION = Section(
    "perception",
    "Perception diagnostics",
    "Does the model see low-level distortions? Forced choice asks it to name the distortion among the "
    "perception classes; linear probes measure how much distortion information each site (vision "
    "encoder layers, projector, language-model layers) still holds; semantic similarity measures "
    "whether the visual tokens sit near the word of their distortion. Fine-tuning runs show the same "
    "numbers before and after, with the relative change.",
    extra=draw.class_mapping_details,
)


def load_perception(folder: Path, name: str, result: PerceptionResult) -> PerceptionRun:
    """A ``perceive`` run folder."""
    config = run_config(folder)
    cfg = config.get("config", {})
    fc, pr = result.forced_choice, result.probes
    model = str(result.model_id if result.model_id != "?" else cfg.get("model_id") or "?")
    checkpoint = result.checkpoint_id or cfg.get("checkpoint_id")
    if checkpoint:
        model += f" (checkpoint {checkpoint})"
    manifest = result.manifest or cfg.get("manifest") or "?"
    digest = str(result.manifest_hash or "")
    data = f"{manifest}" + (f" (sha256 {digest[:12]}…)" if digest else "")
    data += f", {result.n_images if result.n_images is not None else '?'} images"
    protocol = (
        f"forced choice among {len(fc.get('classes', []))} classes and semantic distance on split "
        f"'{result.eval_split or '?'}' ({fc.get('n', '?')} images); one linear probe per site "
        f"(L2 {pr.get('l2', '?')}) trained on {pr.get('n_train', '?')} and tested on {pr.get('n_test', '?')} "
        f"images, content-disjoint split ({pr.get('split_origin', '?')}). Labels: the benchmark's "
        "perception classes (no MOS involved)."
    )
    prov = make_provenance(config, "perceive", model, data, protocol)
    return PerceptionRun(folder, name, prov, metrics=result_data(result))


def _read_train_log(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    return [{k: to_float(v) for k, v in row.items() if k} for row in read_csv(path)]


def _side(folder: Path, name: str) -> PerceptionRun | None:
    """The ``before`` or ``after`` perceive run inside an align run, if it finished."""
    if not (folder / RESULT_FILE).is_file():
        return None
    result = typed_or_legacy(folder, "perceive", PerceptionResult)
    return None if result is None else load_perception(folder, name, result)


def load_align(folder: Path, name: str, result: AlignResult | None) -> AlignRun:
    """An ``align`` run folder: its metrics plus the ``before``/``after`` perceive runs inside it
    (``result`` is None for an old run interrupted before it wrote any metrics)."""
    config = run_config(folder)
    metrics = result_data(result) if result is not None else {}
    before = _side(folder / "before", f"{name}/before")
    after = _side(folder / "after", f"{name}/after")
    if result is None and before is None and after is None:
        raise InvalidInputError(
            "an align run without metrics.json or before/after diagnostics (interrupted?)"
        )
    cfg = config.get("config", {})
    base = metrics.get("base_model") or cfg.get("base_model") or cfg.get("model") or "?"
    model = f"{metrics.get('model_id') or folder / 'model'} fine-tuned from {base}"
    data = before.provenance.data if before else str(cfg.get("bench") or cfg.get("manifest") or "?")
    train = ", ".join(map(str, metrics.get("train") or cfg.get("train") or [])) or "?"
    lora = metrics.get("lora") or cfg.get("lora") or []
    objectives = metrics.get("objectives") or cfg.get("objectives") or {}
    steps = metrics.get("steps_run")
    protocol = (
        f"fine-tuned components: {train}"
        + (f"; LoRA on {', '.join(map(str, lora))}" if lora else "")
        + (f"; objective weights {inline(objectives)}" if objectives else "")
        + (f"; constraint {metrics['constraint']}" if metrics.get("constraint") else "")
        + f"; {'?' if steps is None else steps} steps. Before and after: the same perceive diagnostics "
        "on the same benchmark (see their protocol)."
    )
    return AlignRun(
        folder,
        name,
        make_provenance(config, "align", model, data, protocol),
        metrics=metrics,
        before=before,
        after=after,
        comparison=json_or_empty(folder / "comparison.json"),
        train_log=_read_train_log(folder / "train_log.csv"),
    )


PERCEIVE = ReportKind(
    "perception diagnostics",
    PERCEPTION,
    load_perception,
    draw.perception_headline,
    draw.perception_article,
    result_type=PerceptionResult,
)
ALIGN = ReportKind(
    "fine-tuning (before → after)",
    PERCEPTION,
    load_align,
    draw.align_headline,
    draw.align_article,
    result_type=AlignResult,
)
