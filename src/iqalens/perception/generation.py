"""Free generation: what does a generative model *say* when asked, rather than which word scores best?

Forced choice reads the model's scores of the 8 class words after the answer prefix; a model can
rank the right word first and still never write it (it would say "The distortion is visible").
``perceive --generate`` lets the model continue the same prompt itself (greedy decoding), parses
the text into a class (:mod:`iqalens.perception.answers`) and reports accuracy, parse rate and the
confusion matrix with an ``unparsed`` column; with ``--samples K`` the same prompt is also answered
K times by temperature sampling, for the consistency diagnostic
(:mod:`iqalens.perception.consistency`).

Generation is the most expensive thing ``perceive`` can do on a real model (a prompt pass plus a
dozen decoding steps per image), so it is opt-in, runs only on the evaluation split, and is
cached next to the features: keyed by the generation settings and the prompt, written one batch
per part file (atomic), resumed after an interruption, and extended rather than redone when more
rows are asked for. Texts are stored raw; parsing happens at report time, so changing the aliases
never needs the model again. Each image's sampling seed is derived from (seed, row index), so its
answers do not depend on batching or resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from iqalens.errors import InvalidInputError
from iqalens.files import atomic_write_text
from iqalens.images import load_rgb
from iqalens.perception.answers import UNPARSED, AnswerParser
from iqalens.perception.features import FeatureSet, labelled_rows
from iqalens.runs import write_json
from iqalens.taxonomy import CLASSES

__all__ = [
    "AnswerGenerator",
    "GenerationSettings",
    "cached_answers",
    "free_generation_metrics",
    "image_seed",
    "one_line",
]


@runtime_checkable
class AnswerGenerator(Protocol):
    """A model that writes answers (:meth:`iqalens.models.hf_vlm.HFVLMAdapter.generate_answers`)."""

    model_id: str

    def generate_answers(
        self,
        images: Sequence[np.ndarray],
        *,
        samples: int,
        temperature: float,
        seeds: Sequence[int],
        max_new_tokens: int,
    ) -> list[tuple[str, list[str]]]:
        """Per image, (greedy answer, ``samples`` sampled answers) continuing the forced-choice prompt."""
        ...


@dataclass(frozen=True)
class GenerationSettings:
    """What keys a cached generation (besides the model, checkpoint, benchmark and prompt)."""

    samples: int = 5
    temperature: float = 0.7
    seed: int = 0
    max_new_tokens: int = 12

    def __post_init__(self) -> None:
        if self.samples < 0 or self.max_new_tokens < 1:
            raise InvalidInputError(f"need samples >= 0 and max_new_tokens >= 1, got {self}")
        if self.samples and not self.temperature > 0:
            raise InvalidInputError(f"sampling needs a temperature > 0, got {self.temperature}")


def image_seed(seed: int, row: int) -> int:
    """The sampling seed of one benchmark row: independent of batches and of the other rows."""
    return int(np.random.SeedSequence([int(seed), int(row)]).generate_state(1)[0])


def _prompt_id(model: Any) -> str:
    """What the model is asked, as text (the adapter's prompt), so another prompt is another cache."""
    prompt = getattr(model, "prompt", None)
    return repr(prompt) if prompt is not None else ""


def _cache_folder(fs: FeatureSet, model: Any, settings: GenerationSettings) -> Path:
    if fs.cache_dir is None:
        raise InvalidInputError(
            "free generation is cached next to the features; the feature set has no cache folder"
        )
    payload = json.dumps({"settings": asdict(settings), "prompt": _prompt_id(model)}, sort_keys=True)
    return fs.cache_dir / f"answers-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _load_parts(folder: Path) -> dict[int, tuple[str, list[str]]]:
    """Answers of the finished batches; an unreadable part is removed and its rows redone."""
    done: dict[int, tuple[str, list[str]]] = {}
    for part in sorted(folder.glob("part_*.json")):
        try:
            data = json.loads(part.read_text(encoding="utf-8"))
            rows = zip(data["index"], data["greedy"], data["samples"], strict=True)
            done |= {int(i): (str(g), [str(t) for t in s]) for i, g, s in rows}
        except (OSError, ValueError, KeyError, TypeError):
            part.unlink(missing_ok=True)
    return done


def cached_answers(
    model: AnswerGenerator,
    manifest_path: str | os.PathLike[str],
    fs: FeatureSet,
    rows: Sequence[int],
    settings: GenerationSettings,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list[tuple[str, list[str]]], Path]:
    """(greedy, samples) answers of the feature set's ``rows``, generating only those not cached.

    Returns the answers in the order of ``rows`` and the cache folder. Interrupting loses at most
    the batch in flight.
    """
    folder = _cache_folder(fs, model, settings)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "model_id": fs.model_id,
        "checkpoint_id": fs.checkpoint_id,
        "manifest_hash": fs.manifest_hash,
    }
    meta |= {"settings": asdict(settings), "prompt": _prompt_id(model)}
    if not (folder / "meta.json").is_file():
        write_json(folder / "meta.json", meta)
    done = _load_parts(folder)
    todo = [int(i) for i in rows if int(i) not in done]
    if todo:
        manifest, labelled = labelled_rows(manifest_path)
        if len(labelled) != len(fs):
            raise InvalidInputError(
                f"{manifest_path} has {len(labelled)} labelled rows, the features {len(fs)}"
            )
        bar = tqdm(
            total=len(rows),
            initial=len(rows) - len(todo),
            desc=f"generate {fs.model_id}",
            unit="img",
            disable=not progress,
            leave=False,
        )
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                images = [load_rgb(manifest.resolve(labelled[i])) for i in chunk]
                answers = model.generate_answers(
                    images,
                    samples=settings.samples,
                    temperature=settings.temperature,
                    seeds=[image_seed(settings.seed, i) for i in chunk],
                    max_new_tokens=settings.max_new_tokens,
                )
                if len(answers) != len(chunk) or any(len(s) != settings.samples for _, s in answers):
                    raise InvalidInputError(
                        f"{fs.model_id}: generate_answers returned the wrong number of answers"
                    )
                part = {"index": chunk, "greedy": [g for g, _ in answers], "samples": [s for _, s in answers]}
                atomic_write_text(folder / f"part_{chunk[0]:07d}.json", json.dumps(part, ensure_ascii=False))
                done |= dict(zip(chunk, answers, strict=True))
                bar.update(len(chunk))
        finally:
            bar.close()
    return [done[int(i)] for i in rows], folder


def free_generation_metrics(
    texts: Sequence[str],
    labels: np.ndarray,
    parser: AnswerParser,
    forced_predictions: Sequence[int] | None = None,
    class_names: Sequence[str] = CLASSES,
) -> dict[str, Any]:
    """Accuracy of parsed free answers; an unparsed answer counts as wrong.

    Returns ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
    ``parse_rate``, ``accuracy_parsed`` (among the parsed answers; ``None`` if none parsed),
    ``per_class_recall``, ``answer_counts`` (classes and ``unparsed``), the confusion matrix (rows
    = true class, columns = the classes then ``unparsed``: ``answer_labels``),
    ``agreement_with_forced_choice`` (share of images whose parsed answer is the forced-choice
    answer, when ``forced_predictions`` is given) and the per-image ``parsed`` names.
    """
    y = np.asarray(labels, dtype=np.int64)
    c = len(class_names)
    if len(texts) != len(y) or len(y) == 0:
        raise InvalidInputError(f"need one answer per label (> 0), got {len(texts)} answers, {len(y)} labels")
    pred = np.array([parser.index(t) for t in texts], dtype=np.int64)
    confusion = np.zeros((c, c + 1), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(axis=1)
    recall = {
        n: (float(confusion[k, k] / support[k]) if support[k] else None) for k, n in enumerate(class_names)
    }
    parsed = pred < c
    labels_out = [*class_names, UNPARSED]
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.mean([r for r in recall.values() if r is not None])),
        "parse_rate": float(parsed.mean()),
        "accuracy_parsed": float((pred[parsed] == y[parsed]).mean()) if parsed.any() else None,
        "chance": 1.0 / c,
        "per_class_recall": recall,
        "answer_counts": {n: int(confusion[:, k].sum()) for k, n in enumerate(labels_out)},
        "classes": list(class_names),
        "answer_labels": labels_out,
        "confusion": confusion.tolist(),
    }
    if forced_predictions is not None:
        out["agreement_with_forced_choice"] = float((pred == np.asarray(forced_predictions)).mean())
    out["parsed"] = [labels_out[k] for k in pred.tolist()]
    return out


def one_line(text: str) -> str:
    """One line of an answer for a CSV cell (newlines and tabs as spaces)."""
    return re.sub(r"\s+", " ", text).strip()
