"""Scoring beyond one machine: ``iqalens score --engine ray [--address ADDR] -o OUT`` on Ray Data.

**What runs where.** The driver (where the command runs) lists the inputs
(:func:`~iqalens.leaf.scoring.collect_inputs`), resolves the model once
(:func:`~iqalens.leaf.runtimes.load_runtime_scorer`: the ONNX graph by default) and ships the graph to
the workers through Ray's object store, so workers need neither the exporter nor the model folder:
only iqalens and read access to the image paths (a shared file system). Ray Data turns the paths into
a dataset and ``map_batches`` runs a pool of actors, one CPU each, each holding one ONNX Runtime
session with one thread and decoding and scoring its batches in turn: one process per core doing both
stages keeps every core busy without the tuning of threads that share cores. Results come back to the
driver in input order.

**Shards, resume, merge.** The inputs are cut into shards of ``shard_size`` paths in input order; the
driver writes each finished shard as ``OUT.shards/part-NNNNNN.parquet`` (atomically: a shard file is
whole or absent). Re-running the same command skips the shards already written (the ``plan.json``
next to them records the inputs and the model, and a mismatch is refused instead of mixing two runs),
so a run killed halfway resumes where it stopped. When every shard is there, they are merged into
``OUT`` in the requested format (``csv``, ``json``: the same text :func:`~iqalens.leaf.scoring.score_inputs`
writes; ``parquet``: one table), shard by shard, in bounded memory.

**Failures.** An unreadable image is a result with its error, as with the local engine
(``on_error(path, reason)`` is called on the driver). A worker process that dies (killed, out of
memory, a crashing decoder) is restarted by Ray and its batch retried (Ray Data's actor pools restart
actors and retry their tasks without limit by default); tests/test_ray_engine.py kills one.

``ray`` is an optional dependency (``pip install iqalens[ray]``); this module imports it only when a
run starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.leaf.scorers import ImageScorer, ScoreResult

#: Output formats of the Ray engine (shards are always Parquet).
RAY_FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
#: Paths per shard by default: a shard is the unit of resumption.
DEFAULT_SHARD_SIZE = 4096
PLAN_FILE = "plan.json"

__all__ = ["DEFAULT_SHARD_SIZE", "RAY_FORMATS", "RayScoreRun", "ScorerSpec", "score_with_ray", "shards_dir"]


@dataclass(frozen=True)
class RayScoreRun:
    """What :func:`score_with_ray` did."""

    output: Path
    n_images: int
    failures: list[ScoreResult]
    model: dict[str, Any]
    shards_written: int  # by this run
    shards_skipped: int  # already written by an earlier run (resumed)


@dataclass(frozen=True)
class ScorerSpec:
    """How a worker gets its scorer: the ONNX graph's bytes (written to the worker's cache), or a
    model argument loaded on the worker, or a factory (a picklable zero-argument callable)."""

    graph: Any = None  # a Ray object ref of the graph's bytes, with graph_name
    graph_name: str = ""
    model: str | None = None
    runtime: str = "torch"
    factory: Callable[[], ImageScorer] | None = None

    def load(self) -> ImageScorer:
        """The scorer, built in the worker (once per actor)."""
        if self.factory is not None:
            return self.factory()
        if self.graph is not None:
            import ray

            from iqalens.leaf.onnx_export import OnnxScorer
            from iqalens.leaf.runtimes import cache_dir

            path = cache_dir() / self.graph_name
            if not path.is_file():
                from iqalens.files import atomic_replace

                data = ray.get(self.graph)
                atomic_replace(path, lambda tmp: tmp.write_bytes(data))
            return OnnxScorer(path, threads=1, spinning=False)
        from iqalens.leaf.runtimes import load_runtime_scorer

        return load_runtime_scorer(self.model, self.runtime)


class _ScoreBatch:
    """The Ray Data actor: decodes and scores one batch of paths (one CPU, one thread)."""

    def __init__(self, spec: ScorerSpec, fast_decode: bool) -> None:
        self.scorer = spec.load()
        self.fast_decode = fast_decode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from iqalens.leaf.pipeline import iter_scores

        paths = [str(p) for p in batch["path"]]
        size = max(1, len(paths))
        results = list(iter_scores(self.scorer, paths, size, workers=0, fast_decode=self.fast_decode))
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "path": np.asarray(paths, dtype=object),
            "score": np.array([math.nan if r.score is None else r.score for r in results], dtype=np.float64),
            "raw": np.array([math.nan if r.raw is None else r.raw for r in results], dtype=np.float64),
            "error": np.asarray([r.error or "" for r in results], dtype=object),
        }


def shards_dir(output: str | os.PathLike[str]) -> Path:
    """Where the shards of ``output`` go: ``OUT.shards/`` next to it."""
    out = Path(output)
    return out.with_name(out.name + ".shards")


def _spec_and_model(
    model: str | os.PathLike[str] | Callable[[], ImageScorer] | None, runtime: str
) -> tuple[ScorerSpec, dict[str, Any]]:
    """Resolve the model on the driver; ship an ONNX graph as bytes."""
    import ray

    from iqalens.leaf.runtimes import load_runtime_scorer

    if callable(model):
        return ScorerSpec(factory=model), model().describe()
    scorer = load_runtime_scorer(model, runtime)
    described = scorer.describe()
    if described.get("runtime") == "onnxruntime" and described.get("onnx"):
        graph = Path(described["onnx"])
        # the cache name holds the content hash; a user's .onnx file gets one from its bytes
        data = graph.read_bytes()
        name = (
            graph.name if graph.name.count("-") >= 2 else f"file-{hashlib.sha256(data).hexdigest()[:20]}.onnx"
        )
        return ScorerSpec(graph=ray.put(data), graph_name=name), described
    return ScorerSpec(model=None if model is None else os.fspath(model), runtime="torch"), described


def _model_key(described: dict[str, Any]) -> str:
    """What makes two runs' scores the same: the model's name, student, calibration and runtime."""
    keep = {k: described.get(k) for k in ("name", "student", "calibration", "runtime", "scale")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def _plan(folder: Path, paths: Sequence[str], shard_size: int, described: dict[str, Any]) -> None:
    """Write the plan of a new run, or check that the shards there belong to this run."""
    digest = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    plan = {
        "n_paths": len(paths),
        "shard_size": shard_size,
        "paths_sha256": digest,
        "model": _model_key(described),
    }
    file = folder / PLAN_FILE
    if file.is_file():
        found = json.loads(file.read_text())
        if found != plan:
            differs = ", ".join(k for k in plan if found.get(k) != plan[k])
            raise ConfigError(
                f"{folder} holds shards of another run (different {differs}); remove it or write elsewhere"
            )
        return
    from iqalens.files import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(plan, indent=2) + "\n")


def _shard_file(folder: Path, k: int) -> Path:
    return folder / f"part-{k:06d}.parquet"


def _write_shard(path: Path, rows: list[ScoreResult], described: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from iqalens.files import atomic_replace

    table = pa.table(
        {
            "path": pa.array([r.path for r in rows], pa.string()),
            "score": pa.array([r.score for r in rows], pa.float64()),
            "raw": pa.array([r.raw for r in rows], pa.float64()),
            "error": pa.array([r.error for r in rows], pa.string()),
        },
        metadata={"iqalens.model": json.dumps(described, default=str)},
    )
    atomic_replace(path, lambda tmp: pq.write_table(table, str(tmp)), suffix=".parquet")


def _read_shard(path: Path) -> list[ScoreResult]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(path)).to_pydict()
    return [
        ScoreResult(p, s, r, e)
        for p, s, r, e in zip(table["path"], table["score"], table["raw"], table["error"], strict=True)
    ]


def _rows(batch: dict[str, np.ndarray]) -> Iterator[tuple[int, ScoreResult]]:
    for i, p, s, r, e in zip(
        batch["index"], batch["path"], batch["score"], batch["raw"], batch["error"], strict=True
    ):
        if e:
            yield int(i), ScoreResult(str(p), None, None, str(e))
        else:
            yield int(i), ScoreResult(str(p), float(s), float(r))


def score_with_ray(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    model: str | os.PathLike[str] | Callable[[], ImageScorer] | None = None,
    fmt: str = "csv",
    address: str | None = None,
    runtime: str = "auto",
    batch_size: int = 16,
    shard_size: int = DEFAULT_SHARD_SIZE,
    actors: int | None = None,
    fast_decode: bool = False,
    on_error: Callable[[str, str], None] | None = None,
) -> RayScoreRun:
    """Score ``inputs`` on a Ray cluster into ``output`` (see the module doc); resumable.

    ``address`` is the cluster to join (None: the Ray already initialised in this process, else a new
    local one that is shut down at the end); ``actors`` the number of scoring actors, one CPU each
    (default: every CPU of the cluster). ``model`` may also be a picklable zero-argument callable
    returning an :class:`~iqalens.leaf.scorers.ImageScorer`, called once in every actor. Raises
    :class:`~iqalens.errors.InvalidInputError` for bad arguments and
    :class:`~iqalens.errors.ConfigError` when ``ray`` is not installed or the shards folder holds
    another run.
    """
    from iqalens.leaf.scoring import collect_inputs

    if fmt not in RAY_FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(RAY_FORMATS)}, got {fmt!r}")
    if batch_size < 1 or shard_size < 1:
        raise InvalidInputError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the Ray engine needs ray: pip install 'iqalens[ray]' ({exc})") from exc
    paths = [os.fspath(p) for p in collect_inputs(inputs)]
    if not paths:
        raise InvalidInputError("no input paths given")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    try:
        spec, described = _spec_and_model(model, runtime)
        folder = shards_dir(output)
        _plan(folder, paths, shard_size, described)
        n_shards = -(-len(paths) // shard_size)
        todo = [k for k in range(n_shards) if not _shard_file(folder, k).is_file()]
        job = _Job(spec, paths, folder, shard_size, batch_size, fast_decode, described, on_error)
        job.run(todo, actors or max(1, int(ray.cluster_resources().get("CPU", 1))))
        failures = _merge(folder, n_shards, Path(output), fmt, described)
    finally:
        if started:
            ray.shutdown()
    return RayScoreRun(Path(output), len(paths), failures, described, len(todo), n_shards - len(todo))


@dataclass
class _Job:
    """The shards still to score, and how: builds the Ray dataset and writes shards as they finish."""

    spec: ScorerSpec
    paths: list[str]
    folder: Path
    shard_size: int
    batch_size: int
    fast_decode: bool
    described: dict[str, Any]
    on_error: Callable[[str, str], None] | None

    def run(self, todo: list[int], actors: int) -> None:
        if not todo:
            return
        import ray

        ctx = ray.data.DataContext.get_current()
        before = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
        ctx.execution_options.preserve_order = True  # shards finish one after the other: bounded memory
        ctx.enable_progress_bars = False
        try:
            ds = ray.data.from_arrow(self._blocks(todo, actors)).map_batches(
                _ScoreBatch,
                fn_constructor_args=(self.spec, self.fast_decode),
                batch_size=self.batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=1,
                batch_format="numpy",
            )
            pending: dict[int, list[tuple[int, ScoreResult]]] = {}
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i, result in _rows(batch):
                    self._take(pending, i, result)
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = before
        if pending:  # every row comes back exactly once; anything left is a bug, not a user error
            raise RuntimeError(f"Ray returned incomplete shards {sorted(pending)}")

    def _blocks(self, todo: list[int], actors: int) -> list[Any]:
        """Arrow tables of (index, path): blocks of a few batches, at least 4 per actor to balance."""
        import pyarrow as pa

        index = [
            i
            for k in todo
            for i in range(k * self.shard_size, min((k + 1) * self.shard_size, len(self.paths)))
        ]
        rows = max(self.batch_size, min(self.shard_size, -(-len(index) // (4 * actors))))
        rows = -(-rows // self.batch_size) * self.batch_size
        return [
            pa.table(
                {
                    "index": pa.array(part, pa.int64()),
                    "path": pa.array([self.paths[i] for i in part], pa.string()),
                }
            )
            for part in (index[s : s + rows] for s in range(0, len(index), rows))
        ]

    def _take(self, pending: dict[int, list[tuple[int, ScoreResult]]], i: int, result: ScoreResult) -> None:
        """One result: report a failure; write its shard when that is complete."""
        if result.error is not None and self.on_error is not None:
            self.on_error(result.path, result.error)
        k = i // self.shard_size
        rows = pending.setdefault(k, [])
        rows.append((i, result))
        if len(rows) == min((k + 1) * self.shard_size, len(self.paths)) - k * self.shard_size:
            del pending[k]
            _write_shard(
                _shard_file(self.folder, k), [r for _, r in sorted(rows, key=lambda t: t[0])], self.described
            )


def _merge(
    folder: Path, n_shards: int, output: Path, fmt: str, described: dict[str, Any]
) -> list[ScoreResult]:
    """Write every shard, in order, into ``output`` (atomically); the failures, in input order."""
    from iqalens.files import atomic_replace

    failures: list[ScoreResult] = []
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        def write_parquet(tmp: Path) -> None:
            writer = None
            for k in range(n_shards):
                table = pq.read_table(str(_shard_file(folder, k)))
                writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                failures.extend(r for r in _read_shard(_shard_file(folder, k)) if not r.ok)
            if writer is not None:
                writer.close()

        atomic_replace(output, write_parquet, suffix=".parquet")
        return failures
    from iqalens.leaf.scoring import ResultWriter

    def write_text(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = ResultWriter(f, fmt, described)
            for k in range(n_shards):
                for r in _read_shard(_shard_file(folder, k)):
                    writer.add(r)
                    if not r.ok:
                        failures.append(r)
            writer.close()

    atomic_replace(output, write_text)
    return failures
