"""Run a teacher over a set of images into a judgments store: what ``iqalens teach`` does.

The loop is built to be interrupted: images are hashed, those already judged by this teacher and
prompt version are skipped, the rest are judged in batches that are committed one by one, then
pairs are sampled and judged the same way. Re-running the same command finishes the job; nothing
is judged twice. Unreadable files are reported and skipped, never fatal.

A teacher with a streaming API (``iter_judge_images``/``iter_judge_pairs``, the OpenAI-compatible
server teacher) is given the whole list at once, so it keeps its concurrency busy and retries
failed items in deferred rounds at the end; its results are stored as they come (committed every
``batch_size``). Items it leaves unanswered are reported and not stored, so a re-run asks them again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from iqalens.datasets.manifest import read_manifest
from iqalens.errors import InvalidInputError
from iqalens.files import check_file_name
from iqalens.images import IMAGE_EXTENSIONS, ImageLoadError, iter_image_files
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.pairs import sample_pairs
from iqalens.leaf.store import JudgmentStore, content_hash
from iqalens.leaf.teachers.base import Teacher
from iqalens.leaf.teachers.registry import make_teacher as make_teacher  # the CLI's entry point

PAIR_STRATEGIES = ("random", "stratified")


@dataclass
class TeachReport:
    """What a run did (counts are of this run; ``*_existing`` were already in the store)."""

    images: int = 0
    images_judged: int = 0
    images_existing: int = 0
    pairs: int = 0
    pairs_judged: int = 0
    pairs_existing: int = 0
    pairs_derived: bool = False
    seconds_images: float = 0.0
    seconds_pairs: float = 0.0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    images_unanswered: int = 0
    pairs_unanswered: int = 0
    unanswered: list[tuple[str, str]] = field(default_factory=list)  # (image path or "a vs b", problem)
    deferred_rounds: int = 0  # most deferred retry rounds a phase needed (streaming teachers)
    deferred_items: int = 0  # items that failed the first pass and went to deferred rounds (streaming)


def collect_images(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files from folders (recursive), manifests (``.csv``) and single files, in order.

    A source that names no image raises :class:`~iqalens.errors.InvalidInputError`; a file name
    iqalens refuses (:func:`iqalens.files.check_file_name`) raises ``FileNameError`` (a
    ``ValueError``) naming it, before anything is judged.
    """
    paths: list[Path] = []
    for item in sources:
        p = Path(item)
        if p.is_dir():
            found = iter_image_files(p)
            if not found:
                raise InvalidInputError(f"no image files found in {p}")
            paths += found
        elif p.suffix.lower() == ".csv":
            manifest, _ = read_manifest(p)
            paths += [manifest.resolve(r) for r in manifest.rows]
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            paths.append(p)
        elif p.exists():
            raise InvalidInputError(f"{p} is neither a folder, a manifest (.csv) nor an image file")
        else:
            raise InvalidInputError(f"{p} does not exist")
    for path in paths:
        check_file_name(path)  # refused names fail here, before any judging
    return paths


def run_teach(
    teacher: Teacher,
    paths: Sequence[Path],
    store: JudgmentStore,
    pairs_per_image: int = 0,
    strategy: str = "stratified",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    on_unreadable: Callable[[Path, str], None] | None = None,
    on_unanswered: Callable[[str, str], None] | None = None,
) -> TeachReport:
    """Judge ``paths`` (and ``pairs_per_image`` pairs per image) with ``teacher`` into ``store``.

    ``on_unreadable(path, reason)`` is called for each unreadable file, ``on_unanswered(item,
    problem)`` for each image or pair a streaming teacher left unanswered; both are also counted
    in the report. Fatal teacher errors are raised (what was answered before is stored).
    """
    if strategy not in PAIR_STRATEGIES:
        raise InvalidInputError(
            f"pair strategy must be one of {', '.join(PAIR_STRATEGIES)}, got {strategy!r}"
        )
    report = TeachReport()
    tid, pv = teacher.teacher_id, teacher.prompt_version
    by_hash: dict[str, Path] = {}
    for path in tqdm(paths, desc="hash", unit="img", disable=not progress, leave=False):
        try:
            by_hash.setdefault(content_hash(path), path)
        except OSError as exc:
            _unreadable(report, path, str(exc), on_unreadable)
    report.images = len(by_hash)
    todo = store.missing_points(list(by_hash), tid, pv)
    report.images_existing = report.images - len(todo)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="teach images", unit="img", disable=not progress)
    bad: set[str] = set()
    if getattr(teacher, "iter_judge_images", None) is not None:
        bad = _stream_points(
            teacher, todo, by_hash, store, batch_size, bar, report, on_unreadable, on_unanswered
        )
    else:
        for chunk in _chunks(todo, batch_size):
            judged = _judge_points(teacher, [(h, by_hash[h]) for h in chunk], report, on_unreadable)
            bad |= set(chunk) - {h for h, _ in judged}
            report.images_judged += store.put_points(((h, by_hash[h], j) for h, j in judged), tid, pv)
            bar.update(len(chunk))
    bar.close()
    report.seconds_images = time.perf_counter() - started
    if pairs_per_image > 0:
        _teach_pairs(
            teacher,
            store,
            by_hash,
            bad,
            pairs_per_image,
            strategy,
            seed,
            batch_size,
            progress,
            report,
            on_unreadable,
            on_unanswered,
        )
    return report


def _stream_points(
    teacher: Teacher,
    todo: list[str],
    by_hash: dict[str, Path],
    store: JudgmentStore,
    batch_size: int,
    bar: tqdm,
    report: TeachReport,
    on_unreadable: Callable[[Path, str], None] | None,
    on_unanswered: Callable[[str, str], None] | None,
) -> set[str]:
    """Judge ``todo`` with a streaming teacher, storing answers as they come; returns the failed hashes."""
    failed: set[str] = set()
    stream = teacher.iter_judge_images([by_hash[h] for h in todo])  # type: ignore[attr-defined]

    def answered() -> Iterator[tuple[str, Path, PointJudgment]]:
        for i, result in stream:
            h = todo[i]
            bar.update(1)
            if isinstance(result, PointJudgment):
                yield h, by_hash[h], result
                continue
            failed.add(h)
            if isinstance(result, ImageLoadError):
                _unreadable(report, by_hash[h], result.reason, on_unreadable)
            else:
                report.images_unanswered += 1
                _unanswered(report, str(by_hash[h]), result.problem, on_unanswered)

    tid, pv = teacher.teacher_id, teacher.prompt_version
    with contextlib.closing(stream):  # a failed write stops the requests at once
        report.images_judged += store.put_points(answered(), tid, pv, batch_size=batch_size)
    _note_rounds(teacher, report)
    return failed


def _judge_points(
    teacher: Teacher,
    items: list[tuple[str, Path]],
    report: TeachReport,
    on_unreadable: Callable[[Path, str], None] | None,
) -> list[tuple[str, PointJudgment]]:
    """Judge a batch; if one file is unreadable, judge the batch one by one to isolate it."""
    try:
        return list(zip([h for h, _ in items], teacher.judge_images([p for _, p in items]), strict=True))
    except ImageLoadError:
        pass
    out = []
    for h, p in items:
        try:
            out.append((h, teacher.judge_images([p])[0]))
        except ImageLoadError as exc:
            _unreadable(report, p, exc.reason, on_unreadable)
    return out


def _teach_pairs(
    teacher: Teacher,
    store: JudgmentStore,
    by_hash: dict[str, Path],
    bad: set[str],
    pairs_per_image: int,
    strategy: str,
    seed: int,
    batch_size: int,
    progress: bool,
    report: TeachReport,
    on_unreadable: Callable[[Path, str], None] | None = None,
    on_unanswered: Callable[[str, str], None] | None = None,
) -> None:
    tid, pv = teacher.teacher_id, teacher.prompt_version
    points = {r.hash: r.judgment for r in store.points(tid, pv) if r.hash in by_hash and r.hash not in bad}
    hashes = [h for h in by_hash if h in points]
    if len(hashes) < 2:
        return
    scores = [points[h].expected for h in hashes]
    pairs = sample_pairs(hashes, strategy, min(pairs_per_image, len(hashes) - 1), seed=seed, scores=scores)
    report.pairs = len(pairs)
    todo = store.missing_pairs(pairs, tid, pv)
    report.pairs_existing = report.pairs - len(todo)
    report.pairs_derived = not teacher.supports_pairs
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="teach pairs", unit="pair", disable=not progress)
    if teacher.supports_pairs and getattr(teacher, "iter_judge_pairs", None) is not None:
        _stream_pairs(teacher, todo, by_hash, store, batch_size, bar, report, on_unreadable, on_unanswered)
    else:
        for chunk in _chunks(todo, batch_size):
            if teacher.supports_pairs:
                judged = teacher.judge_pairs([(by_hash[a], by_hash[b]) for a, b in chunk])
            else:
                judged = [PairJudgment.from_points(points[a], points[b]) for a, b in chunk]
            rows = ((a, b, by_hash[a], by_hash[b], j) for (a, b), j in zip(chunk, judged, strict=True))
            report.pairs_judged += store.put_pairs(rows, tid, pv)
            bar.update(len(chunk))
    bar.close()
    report.seconds_pairs = time.perf_counter() - started


def _stream_pairs(
    teacher: Teacher,
    todo: list[tuple[str, str]],
    by_hash: dict[str, Path],
    store: JudgmentStore,
    batch_size: int,
    bar: tqdm,
    report: TeachReport,
    on_unreadable: Callable[[Path, str], None] | None,
    on_unanswered: Callable[[str, str], None] | None,
) -> None:
    """Judge ``todo`` pairs with a streaming teacher, storing answers as they come."""

    stream = teacher.iter_judge_pairs([(by_hash[a], by_hash[b]) for a, b in todo])  # type: ignore[attr-defined]

    def answered() -> Iterator[tuple[str, str, Path, Path, PairJudgment]]:
        for i, result in stream:
            a, b = todo[i]
            bar.update(1)
            if isinstance(result, PairJudgment):
                yield a, b, by_hash[a], by_hash[b], result
            elif isinstance(result, ImageLoadError):  # a file changed since its point judgment
                _unreadable(report, Path(result.path), result.reason, on_unreadable)
            else:
                report.pairs_unanswered += 1
                _unanswered(report, f"{by_hash[a]} vs {by_hash[b]}", result.problem, on_unanswered)

    tid, pv = teacher.teacher_id, teacher.prompt_version
    with contextlib.closing(stream):
        report.pairs_judged += store.put_pairs(answered(), tid, pv, batch_size=batch_size)
    _note_rounds(teacher, report)


def _unreadable(
    report: TeachReport, path: Path, reason: str, callback: Callable[[Path, str], None] | None
) -> None:
    report.unreadable.append((str(path), reason))
    if callback is not None:
        callback(path, reason)


def _unanswered(
    report: TeachReport, item: str, problem: str, callback: Callable[[str, str], None] | None
) -> None:
    report.unanswered.append((item, problem))
    if callback is not None:
        callback(item, problem)


def _note_rounds(teacher: Teacher, report: TeachReport) -> None:
    stats = getattr(teacher, "last_stats", None)
    report.deferred_rounds = max(report.deferred_rounds, int(getattr(stats, "deferred_rounds", 0)))
    report.deferred_items += int(getattr(stats, "deferred_items", 0))


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]
