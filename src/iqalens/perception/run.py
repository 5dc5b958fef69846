"""``perceive``: the perception diagnostics of one model on one benchmark, written to a run folder.

Always: forced choice, per-site probes, semantic distance (input space), the contextual semantic
distance per language-model layer (models with LM sites that expose their contextual word states),
and answer consistency (by sampling from the class scores when the model does not generate, see
:mod:`iqalens.perception.consistency`). Opt-in (``generate=True``, ``perceive --generate``): free
generation with answer parsing, and, with ``samples`` > 0, consistency of sampled generations;
generation is the expensive part on a real model and is cached like the features.

The run folder gets ``config.json`` (what produced the numbers), ``metrics.json`` (every number: the
typed :class:`~iqalens.perception.result.PerceptionResult`, kind ``perceive``),
CSVs a spreadsheet can open (per-class table, confusion matrix, probe curve, contextual curve,
per-image answers and similarities, free answers) and PNG plots (probe curve, confusion matrix,
semantic distance per class, contextual curve; the free answers' confusion matrix when generated).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.files import atomic_write_text
from iqalens.models.base import ComponentModel
from iqalens.perception.answers import AnswerParser
from iqalens.perception.consistency import (
    NOTE_GENERATION,
    NOTE_SCORE_SAMPLING,
    answer_consistency,
    sample_from_scores,
)
from iqalens.perception.contextual import (
    ContextualWordModel,
    cached_contextual_words,
    contextual_distance,
    lm_site_names,
)
from iqalens.perception.features import FeatureSet, extract_features
from iqalens.perception.forced_choice import forced_choice
from iqalens.perception.generation import (
    AnswerGenerator,
    GenerationSettings,
    cached_answers,
    free_generation_metrics,
    one_line,
)
from iqalens.perception.probes import probe_sites, probe_splits
from iqalens.perception.result import PerceptionResult
from iqalens.perception.semantic import SEMANTIC_KEYS, semantic_distance
from iqalens.results import write_result
from iqalens.runs import start_run
from iqalens.taxonomy import CLASSES


def evaluation_mask(fs: FeatureSet, split: str = "test") -> tuple[np.ndarray, str]:
    """Rows forced choice and semantic distance are measured on: ``split`` when the manifest has it,
    else every labelled row (a benchmark without splits, or one whose ``split`` rows are absent)."""
    mask = np.array([s == split for s in fs.splits])
    if mask.any():
        return mask, split
    return np.ones(len(fs), dtype=bool), "all"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def perceive(
    model: ComponentModel,
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_id: str | None = None,
    class_words: Sequence[str] = CLASSES,
    batch_size: int = 8,
    eval_split: str = "test",
    l2: float = 1e-3,
    seed: int = 0,
    probe_max_iter: int = 300,
    generate: bool = False,
    samples: int = 5,
    temperature: float = 0.7,
    max_new_tokens: int = 12,
    progress: bool = True,
) -> dict[str, Any]:
    """All diagnostics of ``model`` on a benchmark manifest (see module doc); returns ``metrics.json``.

    Features come from the on-disk cache (:func:`~iqalens.perception.features.extract_features`),
    so re-running with other probe or consistency settings does not touch the model. Forced
    choice, semantic distances, consistency and free generation use ``eval_split`` (all rows if the
    manifest has none of it); probes train on the train split and score on the test split
    (content-disjoint, assigned by reference if the manifest has no splits). ``samples`` answers
    per image at ``temperature`` (seeded by ``seed``) give the consistency; 0 turns it off.
    ``generate`` adds free generation (greedy) for models that generate text, and sampled
    generations for the consistency when ``samples`` > 0; ``max_new_tokens`` bounds each answer.
    """
    if samples < 0:
        raise InvalidInputError(f"samples must be >= 0, got {samples}")
    if samples and not temperature > 0:
        raise InvalidInputError(f"temperature must be > 0 for sampling, got {temperature}")
    out = Path(out_dir)
    config = {
        "model_id": model.model_id,
        "model_kind": getattr(model, "kind", ""),
        "checkpoint_id": checkpoint_id,
        "manifest": str(Path(manifest_path).resolve()),
        "class_words": list(class_words),
        "batch_size": batch_size,
        "eval_split": eval_split,
        "probe_l2": l2,
        "probe_max_iter": probe_max_iter,
        "generate": generate,
        "samples": samples,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
    }
    start_run(out, "perceive", config, seed)
    fs = extract_features(
        model,
        manifest_path,
        cache_dir,
        checkpoint_id=checkpoint_id,
        class_words=class_words,
        batch_size=batch_size,
        progress=progress,
    )
    mask, used_split = evaluation_mask(fs, eval_split)
    fc = forced_choice(fs.class_scores[mask], fs.labels[mask])
    train, test, split_origin = probe_splits(fs.references, fs.splits, seed=seed)
    pr = probe_sites(
        fs.sites, fs.site_names, fs.labels, train, test, l2=l2, seed=seed, max_iter=probe_max_iter
    )
    pr["split_origin"] = split_origin
    sem = semantic_distance(fs.projector[mask], fs.word_embeddings, fs.labels[mask])
    ctx = _contextual(model, fs, mask)

    parser = AnswerParser(fs.class_words)
    generator = (
        model if isinstance(model, AnswerGenerator) and getattr(model, "kind", "") == "generative" else None
    )
    answers: list[tuple[str, list[str]]] | None = None
    gen: dict[str, Any]
    if not generate:
        gen = {"note": "not run: free generation is opt-in (perceive --generate)"}
    elif generator is None:
        gen = {"note": f"not run: {fs.model_id} does not generate text (kind {getattr(model, 'kind', '?')})"}
    else:
        settings = GenerationSettings(samples, temperature, seed, max_new_tokens)
        answers, answers_dir = cached_answers(
            generator,
            manifest_path,
            fs,
            np.flatnonzero(mask).tolist(),
            settings,
            batch_size=batch_size,
            progress=progress,
        )
        gen = free_generation_metrics([g for g, _ in answers], fs.labels[mask], parser, fc["predictions"])
        gen |= {"max_new_tokens": max_new_tokens, "cache": str(answers_dir)}

    cons: dict[str, Any]
    if samples == 0:
        cons = {"note": "not run (samples = 0)"}
    elif answers is not None and samples > 0:
        draws = np.array([[parser.index(t) for t in s] for _, s in answers], dtype=np.int64)
        cons = {"method": "generation", "note": NOTE_GENERATION}
        cons |= answer_consistency(draws, fs.labels[mask])
    else:
        draws = sample_from_scores(fs.class_scores[mask], samples, temperature, seed)
        cons = {"method": "score_sampling", "note": NOTE_SCORE_SAMPLING}
        cons |= answer_consistency(draws, fs.labels[mask])
    cons |= {"temperature": temperature, "seed": seed} if samples else {}

    predictions = fc.pop("predictions")
    similarities = np.asarray(sem.pop("similarities"))
    per_image = {
        "consistency": cons.pop("consistency", None),
        "modal": cons.pop("modal", None),
        "parsed": gen.pop("parsed", None),
    }
    ctx.pop("similarities", None)
    metrics: dict[str, Any] = {
        "model_id": fs.model_id,
        "checkpoint_id": fs.checkpoint_id,
        "manifest": config["manifest"],
        "manifest_hash": fs.manifest_hash,
        "feature_cache": str(fs.cache_dir),
        "n_images": len(fs),
        "skipped_rows": fs.skipped_rows,
        "eval_split": used_split,
        "class_words": fs.class_words,
        "forced_choice": fc,
        "probes": pr,
        "semantic": sem,
        "contextual": ctx,
        "consistency": cons,
        "free_generation": gen,
    }
    _write_tables(out, fs, mask, metrics, predictions, similarities, per_image, answers)
    metrics["plots"] = write_plots(out, metrics)
    write_result(out, PerceptionResult(**metrics))
    return metrics


def _contextual(model: ComponentModel, fs: FeatureSet, mask: np.ndarray) -> dict[str, Any]:
    """The contextual semantic distance, or a note saying why this model has none."""
    if not lm_site_names(fs):
        return {
            "note": "skipped: the model has no language-model sites (a dual encoder's text tower never "
            "sees the image)"
        }
    if not isinstance(model, ContextualWordModel):
        return {"note": f"skipped: {type(model).__name__} offers no contextual_word_embeddings"}
    template = str(getattr(model, "contextual_template", ""))
    states = cached_contextual_words(model, fs, template)
    return contextual_distance(fs, mask, states, template)


def _write_tables(
    out: Path,
    fs: FeatureSet,
    mask: np.ndarray,
    metrics: dict[str, Any],
    predictions: list[int],
    similarities: np.ndarray,
    per_image: dict[str, list[Any] | None],
    answers: list[tuple[str, list[str]]] | None,
) -> None:
    fc, pr, sem = metrics["forced_choice"], metrics["probes"], metrics["semantic"]
    ctx, cons, gen = metrics["contextual"], metrics["consistency"], metrics["free_generation"]
    classes = fc["classes"]
    _write_csv(
        out / "confusion.csv",
        ["true \\ answer", *classes],
        [[name, *row] for name, row in zip(classes, fc["confusion"], strict=True)],
    )

    def cell(section: dict[str, Any], name: str, key: str) -> str:
        return _fmt((section.get("per_class") or {}).get(name, {}).get(key))

    _write_csv(
        out / "per_class.csv",
        [
            "class",
            "support",
            "forced_choice_recall",
            *SEMANTIC_KEYS,
            *[f"contextual_{k}" for k in SEMANTIC_KEYS],
            "consistency",
            "modal_accuracy",
            "free_generation_recall",
        ],
        [
            [name, fc["support"][name], _fmt(fc["per_class_recall"][name])]
            + [cell(sem, name, k) for k in SEMANTIC_KEYS]
            + [cell(ctx, name, k) for k in SEMANTIC_KEYS]
            + [cell(cons, name, "mean_consistency"), cell(cons, name, "modal_accuracy")]
            + [_fmt((gen.get("per_class_recall") or {}).get(name))]
            for name in classes
        ],
    )
    _write_csv(
        out / "probe_curve.csv",
        ["site", "dim", "train_accuracy", "test_accuracy", "test_balanced_accuracy", "chance"],
        [
            [
                p["site"],
                p["dim"],
                _fmt(p["train_accuracy"]),
                _fmt(p["test_accuracy"]),
                _fmt(p["test_balanced_accuracy"]),
                _fmt(pr["chance"]),
            ]
            for p in pr["curve"]
        ],
    )
    if "curve" in ctx:
        _write_csv(
            out / "contextual_curve.csv",
            ["site", *SEMANTIC_KEYS],
            [[p["site"], *[_fmt(p[k]) for k in SEMANTIC_KEYS]] for p in ctx["curve"]],
        )
    idx = np.flatnonzero(mask)
    modal = per_image["modal"] or [""] * len(idx)
    share = per_image["consistency"] or [None] * len(idx)
    _write_csv(
        out / "images.csv",
        [
            "path",
            "reference",
            "split",
            "class",
            "answer",
            "modal_answer",
            "consistency",
            *[f"sim_{w}" for w in fs.class_words],
        ],
        [
            [fs.paths[i], fs.references[i], fs.splits[i], classes[fs.labels[i]], classes[p], m, _fmt(c)]
            + [f"{v:.6g}" for v in sims]
            for i, p, m, c, sims in zip(idx, predictions, modal, share, similarities, strict=True)
        ],
    )
    if answers is not None:
        parser = AnswerParser(fs.class_words)
        parsed = per_image["parsed"] or [""] * len(idx)
        _write_csv(
            out / "answers.csv",
            ["path", "class", "forced_choice", "free_answer", "free_parsed", "samples", "samples_parsed"],
            [
                [fs.paths[i], classes[fs.labels[i]], classes[p], one_line(g), q]
                + [" | ".join(one_line(t) for t in smp), " ".join(parser(t) for t in smp)]
                for i, p, q, (g, smp) in zip(idx, predictions, parsed, answers, strict=True)
            ],
        )


def write_plots(out: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The PNG plots of a run (Agg backend: no display needed); returns ``{"files": [...]}``."""
    import matplotlib

    from iqalens.plots import confusion_figure, save_png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)

    def confusion(counts: list[list[int]], answers: Sequence[str], title: str, name: str) -> None:
        # the figure the report shows too (rows: true class; colour: share of the row)
        save_png(confusion_figure(fc["classes"], answers, counts, title), out / name)
        files.append(name)

    pr, fc, sem = metrics["probes"], metrics["forced_choice"], metrics["semantic"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(pr["sites"])), 3.5))
    ax.plot(range(len(pr["sites"])), pr["accuracy"], marker="o", label="probe test accuracy")
    ax.axhline(pr["chance"], color="grey", linestyle="--", label="chance (majority class)")
    ax.set_xticks(range(len(pr["sites"])), pr["sites"], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{metrics['model_id']}: distortion information per site")
    ax.legend(fontsize=7)
    save(fig, "probe_curve.png")

    classes = fc["classes"]
    confusion(fc["confusion"], classes, f"forced choice: accuracy {fc['accuracy']:.3f}", "confusion.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    vals = [sem["per_class"][c]["mean_similarity_true"] for c in classes]
    margins = [sem["per_class"][c]["mean_margin"] for c in classes]
    x = np.arange(len(classes))
    ax.bar(x - 0.2, [np.nan if v is None else v for v in vals], 0.4, label="similarity to true word")
    ax.bar(x + 0.2, [np.nan if v is None else v for v in margins], 0.4, label="margin over best wrong word")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.legend(fontsize=7)
    ax.set_title("semantic distance per class (projector vs input word embeddings)")
    save(fig, "semantic.png")

    ctx = metrics.get("contextual", {})
    if "curve" in ctx:
        sites = [p["site"] for p in ctx["curve"]]
        fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 0.7 * len(sites)), 3.5))
        for key, label in (("mean_similarity_true", "similarity to true word"), ("mean_margin", "margin")):
            left.plot(range(len(sites)), [p[key] for p in ctx["curve"]], marker="o", label=label)
        left.axhline(0, color="black", linewidth=0.5)
        left.set_ylabel("cosine")
        left.legend(fontsize=7)
        right.plot(range(len(sites)), [p["nearest_accuracy"] for p in ctx["curve"]], marker="o", color="C2")
        right.axhline(1 / len(classes), color="grey", linestyle="--", label="chance (uniform)")
        right.set_ylim(0, 1)
        right.set_ylabel("true word nearest")
        right.legend(fontsize=7)
        for axis in (left, right):
            axis.set_xticks(range(len(sites)), sites, rotation=90, fontsize=7)
        fig.suptitle(f"contextual semantic distance per LM layer ('{ctx.get('template', '')}')", fontsize=9)
        save(fig, "contextual_curve.png")

    gen = metrics.get("free_generation", {})
    if "confusion" in gen:
        title = f"free generation: accuracy {gen['accuracy']:.3f}, parsed {gen['parse_rate']:.0%}"
        confusion(gen["confusion"], gen["answer_labels"], title, "free_generation.png")
    return {"files": files}
