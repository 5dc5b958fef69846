"""Teaching beyond one machine: ``iqalens teach --engine ray [--address ADDR]``.

:class:`RayTeacher` is a teacher (:class:`~iqalens.leaf.teachers.base.Teacher`) whose judgments are
made by a pool of Ray actors, each holding its own instance of the teacher the spec names (built by
:func:`~iqalens.leaf.teachers.registry.make_teacher` on the actor: the classical and FR teachers on
one CPU each, an ``hf:`` model on one GPU each with ``gpus_per_actor=1``). It has the streaming API
of the OpenAI-compatible teacher (``iter_judge_images``, ``iter_judge_pairs``), so
:func:`iqalens.leaf.teach.run_teach` gives it every image at once and stores each batch of judgments
as it comes back: everything else (hashing, skipping what the store holds, pairs derived on the
driver, resuming an interrupted run) is the local ``teach``, unchanged.

A batch with an unreadable file is judged again one file at a time on its actor, so the file is
reported and the others judged, as locally. An actor that dies (a killed process, a crashed GPU
worker) is restarted and its batch retried by Ray (``max_restarts=-1``, ``max_task_retries=-1``):
Ray's scheduler, not a home-made one. Nothing else is retried: a teacher that raises is an error.

The paths (and, for the FR teacher, its manifests and references folder) must be readable on the
workers: a shared file system. ``ray`` is an optional dependency (``pip install iqalens[ray]``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.images import ImageLoadError
from iqalens.leaf.judgments import PairJudgment, PointJudgment

__all__ = ["RayTeacher"]


class _TeacherActor:
    """One teacher on one Ray worker (wrapped by ``ray.remote`` when the pool starts)."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        from iqalens.leaf.teachers.registry import make_teacher

        self.teacher = make_teacher(spec, **options)

    def identity(self) -> tuple[str, str, bool]:
        t = self.teacher
        return t.teacher_id, t.prompt_version, bool(t.supports_pairs)

    def judge_images(self, items: list[tuple[int, str]]) -> list[tuple[int, PointJudgment | ImageLoadError]]:
        paths = [Path(p) for _, p in items]
        try:
            return list(zip([i for i, _ in items], self.teacher.judge_images(paths), strict=True))
        except ImageLoadError:
            pass  # one file spoils the batch: judge them one by one to name it
        out: list[tuple[int, PointJudgment | ImageLoadError]] = []
        for i, p in items:
            try:
                out.append((i, self.teacher.judge_images([Path(p)])[0]))
            except ImageLoadError as exc:
                out.append((i, exc))
        return out

    def judge_pairs(
        self, items: list[tuple[int, str, str]]
    ) -> list[tuple[int, PairJudgment | ImageLoadError]]:
        pairs = [(Path(a), Path(b)) for _, a, b in items]
        try:
            return list(zip([i for i, _, _ in items], self.teacher.judge_pairs(pairs), strict=True))
        except ImageLoadError:
            pass
        out: list[tuple[int, PairJudgment | ImageLoadError]] = []
        for i, a, b in items:
            try:
                out.append((i, self.teacher.judge_pairs([(Path(a), Path(b))])[0]))
            except ImageLoadError as exc:
                out.append((i, exc))
        return out


class RayTeacher:
    """The teacher of ``spec`` run by ``actors`` Ray actors (see the module doc); ``options`` are
    :func:`~iqalens.leaf.teachers.registry.make_teacher`'s, applied on every actor.

    ``address``: the cluster to join (None: the Ray of this process, else a new local one, shut down
    by :meth:`close`); ``actors``: how many (default: one per CPU, or per GPU with ``gpus_per_actor``);
    ``batch_size``: images per call of an actor (default 16). A teacher's own ``workers`` option is
    set to 1: the parallelism is the actors'.
    """

    def __init__(
        self,
        spec: str,
        address: str | None = None,
        actors: int | None = None,
        gpus_per_actor: float = 0.0,
        batch_size: int | None = None,
        **options: Any,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(f"teach --engine ray needs ray: pip install 'iqalens[ray]' ({exc})") from exc
        batch_size = 16 if batch_size is None else batch_size
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        resources = ray.cluster_resources()
        unit = "GPU" if gpus_per_actor > 0 else "CPU"
        per = gpus_per_actor if gpus_per_actor > 0 else 1.0
        n = actors or max(1, int(resources.get(unit, 1) / per))
        remote: Any = ray.remote(_TeacherActor)
        remote = remote.options(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=-1, max_task_retries=-1)
        opts = {**options, "workers": 1, "batch_size": batch_size}
        self._actors: list[Any] = [remote.remote(spec, opts) for _ in range(n)]
        self.batch_size = batch_size
        self.teacher_id, self.prompt_version, self.supports_pairs = ray.get(self._actors[0].identity.remote())

    def iter_judge_images(
        self, paths: Sequence[str | os.PathLike[str]]
    ) -> Iterator[tuple[int, PointJudgment | ImageLoadError]]:
        """``(index, judgment or ImageLoadError)`` for every path, as batches finish (any order)."""
        items = [(i, os.fspath(p)) for i, p in enumerate(paths)]
        yield from self._run("judge_images", items)

    def iter_judge_pairs(
        self, pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]]
    ) -> Iterator[tuple[int, PairJudgment | ImageLoadError]]:
        """``(index, judgment or ImageLoadError)`` for every pair, as batches finish (any order)."""
        items = [(i, os.fspath(a), os.fspath(b)) for i, (a, b) in enumerate(pairs)]
        yield from self._run("judge_pairs", items)

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """The judgments in order; an unreadable file raises its ImageLoadError (the Teacher contract)."""
        return self._in_order(self.iter_judge_images(paths), len(paths))

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        return self._in_order(self.iter_judge_pairs(pairs), len(pairs))

    def _run(self, method: str, items: list[Any]) -> Iterator[tuple[int, Any]]:
        """Spread ``items`` over the actors in batches, keeping two batches queued per actor."""
        from ray.util import ActorPool

        batches = [items[s : s + self.batch_size] for s in range(0, len(items), self.batch_size)]
        pool = ActorPool(self._actors)
        for done in pool.map_unordered(lambda actor, batch: getattr(actor, method).remote(batch), batches):
            yield from done

    @staticmethod
    def _in_order(results: Iterator[tuple[int, Any]], n: int) -> list[Any]:
        out: list[Any] = [None] * n
        for i, result in results:
            if isinstance(result, ImageLoadError):
                raise result
            out[i] = result
        return out

    def close(self) -> None:
        """Stop the actors (and the local Ray this teacher started)."""
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
