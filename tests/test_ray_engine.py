"""The Ray engine on a local 2-CPU cluster: the same scores as the local engine, resumable shards, an
unreadable file reported, a killed worker recovered, and the command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from iqalens.cli import main
from iqalens.errors import ConfigError
from iqalens.images import ImageLoadError
from iqalens.leaf.scoring import score_inputs
from iqalens.samples import sample_paths

ray = pytest.importorskip("ray")
pytest.importorskip("onnxruntime")
from iqalens.leaf.ray_engine import score_with_ray, shards_dir  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray cluster takes ~5-10 s to start on 2 cores


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local cluster for the module: 2 CPUs, a small object store, no dashboard."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        object_store_memory=150 * 1024 * 1024,
    )
    # the killing scorer below is defined here, not in an importable package: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture()
def inputs(tmp_path: Path) -> list[str]:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    photos = [str(p) for p in sample_paths()]
    return [*photos[:5], str(bad), *photos[5:], str(tmp_path / "missing.jpg")]


def test_scores_equal_the_local_engine_and_a_run_resumes(
    cluster: None, inputs: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "ray" / "scores.csv"
    reported: list[str] = []
    run = score_with_ray(inputs, out, shard_size=3, batch_size=2, on_error=lambda p, r: reported.append(p))
    assert run.n_images == 10 and run.shards_written == 4 and run.shards_skipped == 0
    assert run.model["runtime"] == "onnxruntime"
    assert sorted(reported) == sorted([inputs[5], inputs[9]])  # unreadable and missing: reported
    assert [r.path for r in run.failures] == [inputs[5], inputs[9]]
    assert "not a recognised image format" in run.failures[0].error or "corrupt" in run.failures[0].error
    local = tmp_path / "local.csv"
    score_inputs(inputs, None, "csv", local, progress=False)
    # the same graph and preprocessing per image, the same output text: identical scores (the batches
    # differ, and ONNX Runtime's CPU kernels gave the same bits for every batch size here)
    assert out.read_text() == local.read_text()

    # resume: a lost shard is scored again, the others are skipped, the output is the same
    shards = shards_dir(out)
    (shards / "part-000002.parquet").unlink()
    out.unlink()
    again = score_with_ray(inputs, out, shard_size=3, batch_size=2)
    assert (again.shards_written, again.shards_skipped) == (1, 3)
    assert out.read_text() == local.read_text()
    # the shards of one run are never mixed with another's
    with pytest.raises(ConfigError, match="holds shards of another run"):
        score_with_ray(inputs[:4], out, shard_size=3)


class KillOnceScorer:
    """Scores by mean brightness; the first batch anywhere kills its worker process (os._exit), once,
    as an out-of-memory kill would; a marker file records that it happened."""

    name = "kill-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return image

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raw = np.array([float(im.mean()) / 255.0 for im in images])
            return raw * 4 + 1, raw
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "runtime": "numpy"}


def test_a_killed_worker_is_recovered(cluster: None, inputs: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    out = tmp_path / "k" / "scores.json"

    def make() -> KillOnceScorer:
        return KillOnceScorer(str(marker))

    run = score_with_ray(inputs, out, make, fmt="json", shard_size=4, batch_size=2)
    assert marker.is_file()  # a worker did die
    assert int(marker.read_text()) != os.getpid()  # ... a worker, not this process
    assert run.n_images == 10 and len(run.failures) == 2
    local = score_inputs(inputs, KillOnceScorer(str(marker)), "json", progress=False)
    import json

    got = json.loads(out.read_text())["results"]
    assert [r["path"] for r in got] == inputs
    assert [r["score"] for r in got] == [r.score for r in local.results]


def test_the_command_writes_parquet_on_ray(cluster: None, inputs: list[str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    args = [
        "score",
        *inputs,
        "--engine",
        "ray",
        "--format",
        "parquet",
        "-o",
        str(out),
        "--shard-size",
        "5",
        "-q",
    ]
    assert main(args) == 1  # two images could not be scored
    table = pq.read_table(out).to_pydict()
    assert table["path"] == inputs
    assert [e is None for e in table["error"]] == [i not in (5, 9) for i in range(10)]
    assert all(1.0 <= s <= 5.0 for i, s in enumerate(table["score"]) if i not in (5, 9))
    assert main(["score", inputs[0], "--engine", "ray", "-q"]) == 2  # shards need an output
    assert main(["score", inputs[0], "--format", "parquet", "-q"]) == 2  # parquet is the Ray engine's


def test_teach_on_ray_stores_what_the_local_teacher_does_and_resumes(
    cluster: None, inputs: list[str], tmp_path: Path
) -> None:
    from iqalens.leaf.ray_teach import RayTeacher
    from iqalens.leaf.store import JudgmentStore
    from iqalens.leaf.teach import make_teacher, run_teach

    paths = [Path(p) for p in inputs[:9]]  # the 8 photos and the broken file
    skipped: list[Path] = []
    with RayTeacher("classical", batch_size=3) as teacher, JudgmentStore(tmp_path / "ray.db") as store:
        assert (teacher.teacher_id, teacher.supports_pairs) == ("classical:niqe+brisque", False)
        report = run_teach(
            teacher,
            paths,
            store,
            pairs_per_image=2,
            batch_size=3,
            progress=False,
            on_unreadable=lambda p, _: skipped.append(p),
        )
        assert (report.images_judged, report.pairs_derived) == (8, True) and skipped == [paths[5]]
        on_ray = [(r.hash, r.judgment) for r in store.points(teacher.teacher_id, teacher.prompt_version)]
        again = run_teach(teacher, paths, store, batch_size=3, progress=False)  # resumes: nothing to do
        assert again.images_judged == 0 and again.images_existing == 8
        in_order = teacher.judge_images(paths[:4])  # the Teacher interface: in order, errors raised
        with pytest.raises(ImageLoadError):
            teacher.judge_images(paths[4:6])
    local_teacher = make_teacher("classical")
    with JudgmentStore(tmp_path / "local.db") as store:
        run_teach(local_teacher, paths, store, pairs_per_image=2, batch_size=3, progress=False)
        local = [
            (r.hash, r.judgment) for r in store.points(local_teacher.teacher_id, local_teacher.prompt_version)
        ]
    assert on_ray == local  # the same measures on the same files: the same judgments
    assert in_order == local_teacher.judge_images(paths[:4])
    # the command
    out = tmp_path / "cli.db"
    args = [
        "teach",
        "--teacher",
        "classical",
        "--images",
        *inputs[:5],
        "-o",
        str(out),
        "--engine",
        "ray",
        "-q",
    ]
    assert main(args) == 0
    with JudgmentStore(out) as store:
        assert len(store.points(local_teacher.teacher_id, local_teacher.prompt_version)) == 5


def test_bench_build_on_ray_writes_the_local_build(cluster: None, tmp_path: Path) -> None:
    import json

    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.ray_executor import RayExecutor

    spec = BenchmarkSpec(types=(1, 9, 16), levels=(1, 3), size=(64, 48))
    refs = sample_paths()[:3]
    local = build_benchmark(tmp_path / "local", refs, spec, progress=False)
    with RayExecutor() as executor:  # the module's cluster: joined, left running
        on_ray = build_benchmark(tmp_path / "ray", refs, spec, progress=False, executor=executor)
    assert on_ray.read_text() == local.read_text()
    images = sorted(p.name for p in (tmp_path / "local" / "images").iterdir())
    assert images == sorted(p.name for p in (tmp_path / "ray" / "images").iterdir()) and len(images) == 3 * 7
    for name in images:
        assert (tmp_path / "ray" / "images" / name).read_bytes() == (
            tmp_path / "local" / "images" / name
        ).read_bytes()
    # resumable as locally: a lost image is rendered again, the others reused
    (tmp_path / "ray" / "images" / images[0]).unlink()
    args = ["bench", "build", "--refs", *map(str, refs), "-o", str(tmp_path / "ray"), "--engine", "ray", "-q"]
    args += ["--types", "1", "9", "16", "--levels", "1", "3", "--size", "64x48"]
    assert main(args) == 0
    provenance = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert (provenance["images_written"], provenance["images_reused"]) == (1, 20)
