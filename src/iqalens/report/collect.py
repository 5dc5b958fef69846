"""Find reportable results under the paths a user names and load them into typed records.

``iqalens report`` accepts anything an iqalens command leaves behind: run folders (``perceive``,
``align``, ``distill``, ``calibrate``, ``evaluate``, the label-budget protocol, ``demo``), a judgments
store written by ``iqalens teach`` (one SQLite file, no folder) and the CSV/JSON file of ``iqalens score``.
A folder that is none of these is searched a few levels down, so a demo folder holding many runs is
reported whole. A run is recognised by the ``command`` its ``config.json`` records (written by
:func:`iqalens.runs.start_run`) and, where that is missing, by the files only that kind of run writes.

Reading never writes into the inputs, except that a judgments store is opened through
:class:`~iqalens.leaf.store.JudgmentStore` (which checks that the file really is one). Anything found but
not reportable (an interrupted run without its metrics, a malformed file) is listed with the reason in
:attr:`Collection.skipped` instead of failing the whole report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.datasets.manifest import sidecar_path
from iqalens.leaf.store import APPLICATION_ID, JudgmentStore, StoreError

#: How many folder levels below each named path are searched for runs.
DEFAULT_DEPTH = 3
#: Judgments store file suffixes considered while searching folders.
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
#: Header of a CSV written by ``iqalens score``: these first columns (older files have only these; newer
#: ones add the score's scale, see :data:`iqalens.leaf.scoring.CSV_COLUMNS`).
SCORE_CSV_HEADER = ["path", "score", "raw", "error"]
#: Folders never searched: caches and bulky outputs that cannot hold runs.
_SKIP_DIRS = frozenset({"features", "state", "distortions", "cache", "__pycache__"})
_MAX_JSON_BYTES = 64 * 1024 * 1024


# -- provenance -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosSource:
    """Where the MOS labels behind a number came from; ``proxy`` is None when that is unknown."""

    note: str
    proxy: bool | None


@dataclass(frozen=True)
class Provenance:
    """What produced a run's numbers: the report prints this next to every section."""

    command: str
    model: str
    data: str
    protocol: str
    seed: int | None = None
    started: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    mos: MosSource | None = None


# -- runs -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One reportable result; ``name`` is its path relative to the folder the user named."""

    path: Path
    name: str
    provenance: Provenance


@dataclass
class PerceptionRun(Run):
    """``iqalens perceive``: forced choice, per-site probes and semantic distance (``metrics.json``)."""

    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def forced_choice(self) -> dict[str, Any]:
        return self.metrics["forced_choice"]

    @property
    def probes(self) -> dict[str, Any]:
        return self.metrics["probes"]

    @property
    def semantic(self) -> dict[str, Any]:
        return self.metrics["semantic"]

    @property
    def model_id(self) -> str:
        return str(self.metrics.get("model_id", "?"))


@dataclass
class AlignRun(Run):
    """``iqalens align``: a fine-tuned model with the same diagnostics before and after training."""

    metrics: dict[str, Any] = field(default_factory=dict)
    before: PerceptionRun | None = None
    after: PerceptionRun | None = None
    comparison: dict[str, Any] = field(default_factory=dict)
    train_log: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TeacherJudgments:
    """One teacher and prompt version of a judgments store, with the reliabilities it gave."""

    teacher_id: str
    prompt_version: str
    point_reliability: np.ndarray
    pair_reliability: np.ndarray
    pairs_asked: int
    pairs_derived: int


@dataclass
class JudgmentsRun(Run):
    """A judgments store written by ``iqalens teach`` (an SQLite file)."""

    teachers: list[TeacherJudgments] = field(default_factory=list)


@dataclass
class DistillRun(Run):
    """``iqalens distill``: a student trained on a teacher's judgments (history of validation losses)."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalibrationRun(Run):
    """``iqalens calibrate``: a monotone map from raw student scores onto the MOS scale."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationRun(Run):
    """``iqalens evaluate``: correlations with MOS plus every prediction (``predictions.csv``)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    mos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class BudgetRun(Run):
    """The label-budget protocol: mean and std over seeds per (budget, arm) from ``summary.csv``."""

    summary: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreRun(Run):
    """The CSV or JSON output of ``iqalens score``."""

    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_failed: int = 0
    model: dict[str, Any] | None = None


@dataclass
class DistortionDemoRun(Run):
    """The distortion demo: mean PSNR of each KADID type and level against the reference photos."""

    mean_psnr: dict[int, dict[int, float]] = field(default_factory=dict)


@dataclass
class Collection:
    """Everything found: the runs in discovery order and what was passed over, with the reason."""

    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def of(self, kind: type[Run]) -> list[Any]:
        """The runs of one kind, in discovery order."""
        return [r for r in self.runs if type(r) is kind]


# -- small readers ----------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ValueError(f"{path} is too large to be a run file")
    return json.loads(path.read_text(encoding="utf-8"))


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = _read_json(path)
    return data if isinstance(data, dict) else {}


def _float(value: Any) -> float:
    """A CSV/JSON cell as float; empty, None and text like ``nan`` become NaN."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _seed(config: dict[str, Any]) -> int | None:
    seed = config.get("seed")
    return int(seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else None


def _versions(config: dict[str, Any]) -> dict[str, str]:
    versions = config.get("versions")
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def manifest_mos_source(manifest: str | os.PathLike[str] | None) -> MosSource:
    """What the MOS of a manifest is, from its provenance sidecar (``name.json`` next to ``name.csv``).

    Benchmarks built by iqalens record ``proxy_mos`` there (the KADID-10k proxy), so a proxy is named
    as one; a manifest without that key carries the MOS of its source; a missing sidecar is said to be
    unknown rather than guessed.
    """
    if not manifest:
        return MosSource("MOS source not recorded", None)
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.csv"
    side = sidecar_path(path)
    try:
        prov = _json_or_empty(side)
    except (OSError, ValueError):
        prov = {}
    if not prov:
        return MosSource(
            f"MOS of {path}; its provenance file {side.name} was not found, so the source is unknown", None
        )
    if prov.get("proxy_mos"):
        return MosSource(str(prov["proxy_mos"]), True)
    builder = prov.get("builder") or "unknown builder"
    return MosSource(f"MOS as given by the manifest ({builder}), not a proxy", False)


def _note_mos_source(note: str | None) -> MosSource:
    """The ``mos_note`` an evaluate run records: the proxy note, or the plain manifest MOS."""
    if not note:
        return MosSource("MOS source not recorded", None)
    return MosSource(note, "proxy" in note.lower())


# -- recognising and loading ------------------------------------------------------------------------


def _command(folder: Path) -> tuple[str | None, dict[str, Any]]:
    config = _json_or_empty(folder / "config.json")
    command = config.get("command")
    return (str(command) if command else None), config


def _kind_of_folder(folder: Path) -> str | None:
    """The kind of run a folder holds, ``"container"`` for a run made of other runs (the end-to-end
    demo), or None for a folder that is not a run."""
    command, _ = _command(folder)
    by_command = {
        "perceive": "perceive",
        "align": "align",
        "distill": "distill",
        "calibrate": "calibrate",
        "evaluate": "evaluate",
        "label-budget": "budget",
        "budget": "budget",
        "demo": "demo",
    }
    if command == "demo" and "mean_psnr_db_vs_reference" not in _json_or_empty(folder / "metrics.json"):
        return "container"  # the end-to-end demo: its stages are run folders inside it
    if command in by_command:
        return by_command[command]
    if (
        (folder / "before").is_dir()
        and (folder / "after").is_dir()
        and (folder / "comparison.json").is_file()
    ):
        return "align"
    if (folder / "summary.csv").is_file() and (folder / "results.json").is_file():
        return "budget"
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return None
    keys = set(_json_or_empty(metrics))
    if {"forced_choice", "probes", "semantic"} <= keys:
        return "perceive"
    if (folder / "predictions.csv").is_file() and "metrics" in keys:
        return "evaluate"
    if (folder / "calibration.json").is_file() and "calibration" in keys:
        return "calibrate"
    if (folder / "student.json").is_file() and "history" in keys:
        return "distill"
    if "mean_psnr_db_vs_reference" in keys:
        return "demo"
    return None


def is_judgments_store(path: Path) -> bool:
    """True for an SQLite file carrying the judgments store's ``application_id`` (read from the header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(72)
    except OSError:
        return False
    return (
        len(head) == 72
        and head.startswith(b"SQLite format 3\x00")
        and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    )


def _is_score_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
                return header is not None and header[: len(SCORE_CSV_HEADER)] == SCORE_CSV_HEADER
        if suffix == ".json" and path.stat().st_size <= _MAX_JSON_BYTES:
            data = _read_json(path)
            return isinstance(data, dict) and {"results", "n_images", "n_failed"} <= set(data)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def load_perception(folder: Path, name: str) -> PerceptionRun:
    """A ``perceive`` run folder."""
    _, config = _command(folder)
    metrics = _read_json(folder / "metrics.json")
    for key in ("forced_choice", "probes", "semantic"):
        if key not in metrics:
            raise ValueError(f"{folder / 'metrics.json'} has no {key!r} section")
    cfg = config.get("config", {})
    fc, pr = metrics["forced_choice"], metrics["probes"]
    model = str(metrics.get("model_id") or cfg.get("model_id") or "?")
    checkpoint = metrics.get("checkpoint_id") or cfg.get("checkpoint_id")
    if checkpoint:
        model += f" (checkpoint {checkpoint})"
    manifest = metrics.get("manifest") or cfg.get("manifest") or "?"
    digest = str(metrics.get("manifest_hash") or "")
    data = f"{manifest}" + (f" (sha256 {digest[:12]}…)" if digest else "")
    data += f", {metrics.get('n_images', '?')} images"
    protocol = (
        f"forced choice among {len(fc.get('classes', []))} classes and semantic distance on split "
        f"'{metrics.get('eval_split', '?')}' ({fc.get('n', '?')} images); one linear probe per site "
        f"(L2 {pr.get('l2', '?')}) trained on {pr.get('n_train', '?')} and tested on {pr.get('n_test', '?')} "
        f"images, content-disjoint split ({pr.get('split_origin', '?')}). Labels: the benchmark's "
        "perception classes (no MOS involved)."
    )
    prov = Provenance(
        command="perceive",
        model=model,
        data=data,
        protocol=protocol,
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
    )
    return PerceptionRun(folder, name, prov, metrics=metrics)


def _read_train_log(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    return [{k: _float(v) for k, v in row.items() if k} for row in _read_csv(path)]


def load_align(folder: Path, name: str) -> AlignRun:
    """An ``align`` run folder: its metrics plus the ``before``/``after`` perceive runs inside it."""
    _, config = _command(folder)
    metrics = _json_or_empty(folder / "metrics.json")
    comparison = _json_or_empty(folder / "comparison.json")
    before = after = None
    if (folder / "before" / "metrics.json").is_file():
        before = load_perception(folder / "before", f"{name}/before")
    if (folder / "after" / "metrics.json").is_file():
        after = load_perception(folder / "after", f"{name}/after")
    if not metrics and before is None and after is None:
        raise ValueError("an align run without metrics.json or before/after diagnostics (interrupted?)")
    cfg = config.get("config", {})
    base = metrics.get("base_model") or cfg.get("base_model") or cfg.get("model") or "?"
    model = f"{metrics.get('model_id') or folder / 'model'} fine-tuned from {base}"
    data = before.provenance.data if before else str(cfg.get("bench") or cfg.get("manifest") or "?")
    train = ", ".join(map(str, metrics.get("train") or cfg.get("train") or [])) or "?"
    lora = metrics.get("lora") or cfg.get("lora") or []
    objectives = metrics.get("objectives") or cfg.get("objectives") or {}
    protocol = (
        f"fine-tuned components: {train}"
        + (f"; LoRA on {', '.join(map(str, lora))}" if lora else "")
        + (f"; objective weights {_inline(objectives)}" if objectives else "")
        + (f"; constraint {metrics['constraint']}" if metrics.get("constraint") else "")
        + f"; {metrics.get('steps_run', '?')} steps. Before and after: the same perceive diagnostics "
        "on the same benchmark (see their protocol)."
    )
    prov = Provenance(
        command="align",
        model=model,
        data=data,
        protocol=protocol,
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
    )
    return AlignRun(
        folder,
        name,
        prov,
        metrics=metrics,
        before=before,
        after=after,
        comparison=comparison,
        train_log=_read_train_log(folder / "train_log.csv"),
    )


def _inline(mapping: Any) -> str:
    """A small dict as ``key value, key value`` (nested dicts in parentheses)."""
    if isinstance(mapping, dict):
        return ", ".join(
            f"{k} {_inline(v) if not isinstance(v, dict) else '(' + _inline(v) + ')'}"
            for k, v in mapping.items()
        )
    return str(mapping)


def load_distill(folder: Path, name: str) -> DistillRun:
    """A ``distill`` run folder."""
    _, config = _command(folder)
    metrics = _read_json(folder / "metrics.json")
    cfg = config.get("config", {})
    settings = cfg.get("distill", {})
    student = settings.get("student", {}) if isinstance(settings, dict) else {}
    loss = settings.get("loss", {}) if isinstance(settings, dict) else {}
    counts = metrics.get("data") or cfg.get("data") or {}
    prov = Provenance(
        command="distill",
        model=f"student backbone {student.get('backbone', '?')}; teacher {cfg.get('teacher_id', '?')} "
        f"/ prompt {cfg.get('prompt_version', '?')}",
        data=f"judgments store {cfg.get('store', '?')}: "
        + ", ".join(f"{k.replace('_', ' ')} {_inline(v)}" for k, v in counts.items()),
        protocol=f"joint distillation of point and pair judgments (loss {_inline(loss)}), "
        f"{metrics.get('steps', '?')} steps, early stopping on the validation loss of a content-disjoint "
        "split. Labels: the teacher's judgments (no MOS involved).",
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
    )
    return DistillRun(folder, name, prov, metrics=metrics)


def load_calibration(folder: Path, name: str) -> CalibrationRun:
    """A ``calibrate`` run folder."""
    _, config = _command(folder)
    metrics = _read_json(folder / "metrics.json")
    cfg = config.get("config", {})
    cal = metrics.get("calibration", {})
    prov = Provenance(
        command="calibrate",
        model=f"student {cfg.get('student', '?')}",
        data=f"labels {cfg.get('labels', '?')} (split {cfg.get('split') or 'all'}), "
        f"{metrics.get('labels_used', '?')} of {metrics.get('labels_available', '?')} labelled images used",
        protocol=f"{cal.get('kind', '?')} map fitted on a budget of {cfg.get('budget', '?')} labels"
        + (" drawn stratified by student score" if cfg.get("stratify") else " drawn uniformly")
        + " with the run's seed",
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
        mos=manifest_mos_source(cfg.get("labels")),
    )
    return CalibrationRun(folder, name, prov, metrics=metrics)


def load_evaluation(folder: Path, name: str) -> EvaluationRun:
    """An ``evaluate`` run folder with its ``predictions.csv``."""
    _, config = _command(folder)
    metrics = _read_json(folder / "metrics.json")
    rows = _read_csv(folder / "predictions.csv") if (folder / "predictions.csv").is_file() else []
    mos = np.array([_float(r.get("mos")) for r in rows])
    pred = np.array([_float(r.get("prediction")) for r in rows])
    cfg = config.get("config", {})
    ci = metrics.get("ci_level", 0.95)
    from iqalens.evaluation.metrics import ci_unavailable

    unavailable = ci_unavailable(metrics)
    intervals = (
        f"{ci:.0%} bootstrap intervals unavailable: {unavailable}"
        if unavailable
        else f"{ci:.0%} bootstrap intervals ({metrics.get('n_boot', '?')} resamples of "
        f"{metrics.get('resampling', '?')})"
    )
    prov = Provenance(
        command="evaluate",
        model=str(cfg.get("model", "?")),
        data=f"{cfg.get('manifest', '?')} (split {cfg.get('split') or 'all'}), "
        f"{metrics.get('images', '?')} images",
        protocol=f"SRCC, KRCC, PLCC (raw and after the 4-parameter logistic), RMSE; {intervals}",
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
        mos=_note_mos_source(metrics.get("mos_note")),
    )
    return EvaluationRun(folder, name, prov, metrics=metrics, mos=mos, predictions=pred)


def load_budget(folder: Path, name: str) -> BudgetRun:
    """A label-budget protocol folder (``summary.csv``, ``results.json``)."""
    _, config = _command(folder)
    results = _json_or_empty(folder / "results.json")
    if (folder / "summary.csv").is_file():
        summary: list[dict[str, Any]] = _read_csv(folder / "summary.csv")
    else:
        summary = list(results.get("summary", []))
    if not summary:
        raise ValueError("a label-budget run without summary.csv (interrupted?)")
    numeric = (
        "n_labels",
        "n_seeds",
        "srcc_mean",
        "srcc_std",
        "plcc_mean",
        "plcc_std",
        "rmse_mean",
        "rmse_std",
    )
    summary = [{k: (_float(v) if k in numeric else v) for k, v in row.items()} for row in summary]
    cfg = config.get("config", {})
    protocol_cfg = results.get("config") or cfg.get("protocol") or {}
    data = results.get("data", {})
    seeds = protocol_cfg.get("seeds", [])
    prov = Provenance(
        command=str(config.get("command") or "label-budget"),
        model=f"teacher {cfg.get('teacher_id', '?')} / prompt {cfg.get('prompt_version', '?')}; head on "
        f"frozen {(cfg.get('student_backbone') or {}).get('backbone', 'student')} features",
        data=f"{cfg.get('manifest', '?')}: train {data.get('train_images', '?')} images of "
        f"{data.get('train_groups', '?')} references, test {data.get('test_images', '?')} images of "
        f"{data.get('test_groups', '?')} references (content-disjoint)",
        protocol=f"arms {', '.join(map(str, protocol_cfg.get('arms', []))) or '?'}; budgets "
        f"{', '.join(map(str, protocol_cfg.get('budgets', []))) or '?'} of the train split; "
        f"mean ± sample std over {len(seeds) or '?'} seeds {list(seeds) if seeds else ''}; metrics on the "
        "test split, raw predictions (no further fitting)",
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
        mos=manifest_mos_source(cfg.get("manifest")),
    )
    return BudgetRun(folder, name, prov, summary=summary, data=data, config=protocol_cfg)


def load_demo(folder: Path, name: str) -> DistortionDemoRun:
    """The distortion demo of ``iqalens demo`` (mean PSNR per type and level)."""
    _, config = _command(folder)
    metrics = _read_json(folder / "metrics.json")
    table = metrics.get("mean_psnr_db_vs_reference")
    if not isinstance(table, dict):
        raise ValueError("a demo run without mean PSNR (interrupted?)")
    psnr = {int(t): {int(lv): float(v) for lv, v in per.items()} for t, per in table.items()}
    photos = config.get("config", {}).get("photos", [])
    prov = Provenance(
        command="demo",
        model="none (the KADID-10k distortion generator)",
        data=f"{len(photos)} bundled sample photos, {metrics.get('n_images', '?')} distorted images",
        protocol=str(metrics.get("protocol", "PSNR of each variant against its reference")),
        seed=_seed(config),
        started=config.get("started"),
        versions=_versions(config),
    )
    return DistortionDemoRun(folder, name, prov, mean_psnr=psnr)


def load_store(path: Path, name: str) -> JudgmentsRun:
    """A judgments store: reliabilities of every point and pair judgment, per teacher and prompt."""
    teachers = []
    with JudgmentStore(path, create=False) as store:
        status = store.status()
        for group in status["teachers"]:
            tid, pv = group["teacher_id"], group["prompt_version"]
            points = store.points(tid, pv)
            pairs = store.pairs(tid, pv)
            teachers.append(
                TeacherJudgments(
                    tid,
                    pv,
                    np.array([p.judgment.reliability for p in points], dtype=np.float64),
                    np.array([q.judgment.reliability for q in pairs], dtype=np.float64),
                    int(group["pairs_asked"]),
                    int(group["pairs_derived"]),
                )
            )
    names = "; ".join(f"{t.teacher_id} / prompt {t.prompt_version}" for t in teachers) or "none"
    prov = Provenance(
        command="teach",
        model=f"teacher(s): {names}",
        data=f"judgments store {path} ({status['points']} point judgments, {status['pairs_asked']} asked and "
        f"{status['pairs_derived']} derived pairs), keyed by image content hash",
        protocol="point reliability = 1 - H(p)/ln 5 of the five-level distribution; pair reliability = order "
        "consistency × decisiveness |2p - 1| (derived pairs: Thurstone from two point judgments, √(r_a r_b) "
        "× |2p - 1|)",
    )
    return JudgmentsRun(path, name, prov, teachers=teachers)


def _proxy(scale_text: str) -> bool | None:
    """Whether a score scale's description names proxy MOS; None for an unknown or raw (not MOS) scale."""
    if not scale_text or scale_text.startswith("raw student score"):
        return None
    return "proxy" in scale_text.lower()


def load_scores(path: Path, name: str) -> ScoreRun:
    """The CSV or JSON file written by ``iqalens score``."""
    model: dict[str, Any] | None = None
    csv_scale: str | None = None  # the scale column of a CSV that has one
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        results = data.get("results", [])
        model = data.get("model") if isinstance(data.get("model"), dict) else None
    else:
        results = _read_csv(path)
        if results and results[0].get("scale") is not None:
            csv_scale = results[0]["scale"]
    scores = np.array([_float(r.get("score")) for r in results if r.get("score") not in (None, "")])
    failed = sum(1 for r in results if r.get("error"))
    scale = (model or {}).get("scale") or {}
    scale_name = scale.get("name") if isinstance(scale, dict) else None
    note = (model or {}).get("note")
    if model is None:
        model_text = "not recorded (the CSV output carries no model description; use --format json)"
        if csv_scale:
            mos = MosSource(csv_scale, _proxy(csv_scale))
        else:
            mos = MosSource("score scale unknown: not recorded in the CSV output", None)
    else:
        cal = model.get("calibration") or {}
        model_text = (
            f"{model.get('name', '?')} ({model.get('runtime', '?')}), calibration {cal.get('kind', 'none')}"
        )
        text = " ".join(str(x) for x in (scale_name, note) if x)
        mos = MosSource(text or "raw student score (teacher scale, 0-1)", _proxy(text))
    prov = Provenance(
        command="score",
        model=model_text,
        data=f"{len(results)} images listed in {path.name} ({failed} unreadable)",
        protocol="one score per image, in input order",
        mos=mos,
    )
    return ScoreRun(path, name, prov, scores=scores, n_failed=failed, model=model)


_LOADERS = {
    "perceive": load_perception,
    "align": load_align,
    "distill": load_distill,
    "calibrate": load_calibration,
    "evaluate": load_evaluation,
    "budget": load_budget,
    "demo": load_demo,
}


# -- discovery --------------------------------------------------------------------------------------


def _display_name(path: Path, root: Path) -> str:
    """``path`` relative to the folder holding ``root`` (what the user named): ``demo/perceive``."""
    try:
        return path.resolve().relative_to(root.resolve().parent).as_posix()
    except ValueError:
        return path.as_posix()


def _load(kind: str, path: Path, root: Path, found: Collection) -> None:
    name = _display_name(path, root)
    try:
        if kind == "store":
            found.runs.append(load_store(path, name))
        elif kind == "score":
            found.runs.append(load_scores(path, name))
        else:
            found.runs.append(_LOADERS[kind](path, name))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StoreError, sqlite3.Error) as exc:
        # One malformed or half-written run must not cost the report of all the others.
        found.skipped.append((str(path), f"{kind} output that could not be read: {exc}"))


def _files_of(folder: Path) -> Iterable[tuple[str, Path]]:
    """Stores and score outputs directly inside ``folder``."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return
    for p in entries:
        suffix = p.suffix.lower()
        if suffix in STORE_SUFFIXES and is_judgments_store(p):
            yield "store", p
        elif suffix in (".csv", ".json") and _is_score_file(p):
            yield "score", p


def _search(folder: Path, root: Path, depth: int, found: Collection) -> None:
    try:
        kind = _kind_of_folder(folder)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # e.g. a half-written or foreign config.json
        found.skipped.append((str(folder), f"unreadable run files: {exc}"))
        return
    if kind not in (None, "container"):
        _load(kind, folder, root, found)
        if kind != "demo":  # a demo folder may hold the other runs; a run's subfolders are its own
            return
    for file_kind, path in _files_of(folder):
        _load(file_kind, path, root, found)
    if depth <= 0:
        return
    try:
        children = sorted(
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIP_DIRS
        )
    except OSError as exc:
        found.skipped.append((str(folder), f"cannot be listed: {exc}"))
        return
    for child in children:
        _search(child, root, depth - 1, found)


def collect(paths: Sequence[str | os.PathLike[str]], max_depth: int = DEFAULT_DEPTH) -> Collection:
    """Every reportable result under ``paths`` (run folders, folders of runs, stores, score files).

    Raises ``ValueError`` (one line, naming the paths) when a path does not exist or nothing
    reportable is found at all.
    """
    if not paths:
        raise ValueError("name at least one run folder, judgments store or score file")
    found = Collection()
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if path.is_file():
            if is_judgments_store(path):
                _load("store", path, path, found)
            elif _is_score_file(path):
                _load("score", path, path, found)
            else:
                found.skipped.append((str(path), "not a judgments store or an iqalens score file"))
        else:
            _search(path, path, max_depth, found)
    if not found.runs:
        named = ", ".join(str(p) for p in paths)
        why = f" ({'; '.join(f'{p}: {r}' for p, r in found.skipped[:3])})" if found.skipped else ""
        raise ValueError(
            f"nothing reportable in {named}: no perceive, align, distill, calibrate, evaluate, label-budget "
            f"or demo run folder, judgments store or score file found{why}"
        )
    return found
