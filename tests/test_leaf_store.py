"""The judgments store: resumable, idempotent, safe with two writers, exportable, and picky about its file."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.errors import IqalensError
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.store import (
    APPLICATION_ID,
    JudgmentStore,
    PairRecord,
    PointRecord,
    StoreError,
    content_hash,
    read_export,
)

T, V = "test:teacher", "v1"


def _point(i: int) -> PointJudgment:
    """A distinct, valid judgment per integer (so a mixed-up row would be noticed)."""
    return PointJudgment.from_probs([1 + i % 7, 2 + i % 5, 3, 1 + i % 3, 0.5])


def _hash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _judgments(store: JudgmentStore) -> dict[str, PointJudgment]:
    return {r.hash: r.judgment for r in store.points(T, V)}


def _same_pair(a: PairJudgment, b: PairJudgment) -> bool:
    def eq(x: float, y: float) -> bool:
        return (math.isnan(x) and math.isnan(y)) or x == y

    return (
        a.derived == b.derived
        and eq(a.p_first_better, b.p_first_better)
        and eq(a.reliability, b.reliability)
        and eq(a.p_ab, b.p_ab)
        and eq(a.p_ba, b.p_ba)
    )


# -- content hash -------------------------------------------------------------------------------


def test_content_hash_is_sha256_of_the_bytes_and_ignores_the_path(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "copy.bin").write_bytes(data)
    assert content_hash(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    assert content_hash(tmp_path / "copy.bin") == content_hash(tmp_path / "a.bin")


def test_content_hash_keys_the_file_not_the_pixels(tmp_path: Path) -> None:
    """Same pixels, different encodings: different keys (the teacher receives the file's bytes)."""
    arr = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "fast.png", compress_level=1)
    Image.fromarray(arr).save(tmp_path / "small.png", compress_level=9)
    assert content_hash(tmp_path / "fast.png") != content_hash(tmp_path / "small.png")


def test_content_hash_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        content_hash(tmp_path / "nope.png")


# -- basic API and idempotence ------------------------------------------------------------------


def test_points_round_trip_and_missing(tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "s.db") as store:
        assert store.put_points([(_hash(i), f"img{i}.png", _point(i)) for i in range(5)], T, V) == 5
        got = {r.hash: r for r in store.points(T, V)}
        assert set(got) == {_hash(i) for i in range(5)}
        assert got[_hash(3)].judgment == _point(3)
        assert got[_hash(3)].path == "img3.png" and got[_hash(3)].created_at
        # input order kept, duplicates once, other teacher/prompt versions are separate keys
        assert store.missing_points([_hash(9), _hash(1), _hash(8), _hash(9)], T, V) == [_hash(9), _hash(8)]
        assert store.missing_points([_hash(1)], T, "v2") == [_hash(1)]
        assert store.missing_points([_hash(1)], "other", V) == [_hash(1)]
        assert store.points(T, "v2") == []


def test_re_putting_is_idempotent_and_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with JudgmentStore(path) as store:
        store.put_points([(_hash(0), "a.png", _point(0))], T, V)
        assert store.put_points([(_hash(0), "b.png", _point(1)), (_hash(0), "c.png", _point(2))], T, V) == 0
        [rec] = store.points(T, V)
        assert rec.judgment == _point(0) and rec.path == "a.png"
        assert store.put_points([(_hash(0), "d.png", _point(4))], T, V, replace=True) == 1
        [rec] = store.points(T, V)
        assert rec.judgment == _point(4) and rec.path == "d.png"

        pj = PairJudgment.from_orders(0.8, 0.3)
        assert store.put_pairs([(_hash(0), _hash(1), None, None, pj)] * 3, T, V) == 1
        other = PairJudgment.from_orders(0.1, 0.9)
        assert store.put_pairs([(_hash(0), _hash(1), None, None, other)], T, V) == 0
        [prec] = store.pairs(T, V)
        assert _same_pair(prec.judgment, pj)
    assert _count(path, "points") == 1 and _count(path, "pairs") == 1


def test_pairs_are_ordered_keys_and_derived_is_kept(tmp_path: Path) -> None:
    a, b, c = _hash(0), _hash(1), _hash(2)
    asked = PairJudgment.from_orders(0.9, 0.2)
    derived = PairJudgment.from_points(_point(0), _point(5))
    with JudgmentStore(tmp_path / "s.db") as store:
        store.put_pairs([(a, b, "a.png", "b.png", asked), (b, a, None, None, derived)], T, V)
        recs = {(r.hash_a, r.hash_b): r for r in store.pairs(T, V)}
        assert set(recs) == {(a, b), (b, a)}
        assert _same_pair(recs[(a, b)].judgment, asked) and not recs[(a, b)].judgment.derived
        assert recs[(b, a)].judgment.derived and math.isnan(recs[(b, a)].judgment.p_ab)
        assert recs[(a, b)].path_a == "a.png" and recs[(b, a)].path_a is None
        assert store.missing_pairs([(a, b), (a, c), (c, a), (a, c)], T, V) == [(a, c), (c, a)]
        store.put_pairs([(c, a, None, None, asked)], T, V)
        assert store.missing_pairs([(a, c), (b, c)], T, V) == [(a, c), (b, c)]
        assert store.missing_pairs([(a, c), (b, c)], T, V, either_order=True) == [(b, c)]
        with pytest.raises(ValueError, match="self-pair"):
            store.put_pairs([(a, a, None, None, asked)], T, V)


def test_status_counts_per_teacher_and_prompt(tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "s.db") as store:
        store.put_points([(_hash(i), None, _point(i)) for i in range(4)], T, V)
        store.put_points([(_hash(i), None, _point(i)) for i in range(2)], T, "v2")
        store.put_points([(_hash(i), None, _point(i)) for i in range(3)], "classical", "m1")
        derived = [PairJudgment.from_points(_point(i), _point(i + 1)) for i in (1, 2)]
        store.put_pairs(
            [
                (_hash(0), _hash(1), None, None, PairJudgment.from_orders(0.7, 0.4)),
                (_hash(1), _hash(2), None, None, derived[0]),
                (_hash(2), _hash(3), None, None, derived[1]),
            ],
            T,
            V,
        )
        status = store.status()
    assert status["points"] == 9 and status["pairs_asked"] == 1 and status["pairs_derived"] == 2
    rows = {(g["teacher_id"], g["prompt_version"]): g for g in status["teachers"]}
    assert rows[(T, V)] == {
        "teacher_id": T,
        "prompt_version": V,
        "points": 4,
        "pairs_asked": 1,
        "pairs_derived": 2,
    }
    assert rows[(T, "v2")]["points"] == 2 and rows[("classical", "m1")]["pairs_asked"] == 0


def test_bad_items_are_refused(tmp_path: Path) -> None:
    with JudgmentStore(tmp_path / "s.db") as store:
        with pytest.raises(TypeError, match="PointJudgment"):
            store.put_points([(_hash(0), None, (0.2, 0.2, 0.2, 0.2, 0.2))], T, V)  # type: ignore[list-item]
        with pytest.raises(ValueError, match="teacher_id"):
            store.put_points([(_hash(0), None, _point(0))], "", V)
        with pytest.raises(ValueError, match="content hash"):
            store.put_points([("", None, _point(0))], T, V)


# -- interruption and resume --------------------------------------------------------------------


def test_exception_between_batches_keeps_what_arrived_and_resume_completes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    hashes = [_hash(i) for i in range(50)]

    def judged_until_crash():
        for i in range(25):
            yield hashes[i], f"{i}.png", _point(i)
        raise KeyboardInterrupt  # Ctrl-C in the middle of the third batch

    with JudgmentStore(path) as store, pytest.raises(KeyboardInterrupt):
        store.put_points(judged_until_crash(), T, V, batch_size=10)
    assert _count(path, "points") == 25  # the half batch in flight was committed too

    with JudgmentStore(path) as store:
        todo = store.missing_points(hashes, T, V)
        assert todo == hashes[25:]
        assert store.put_points(((h, None, _point(hashes.index(h))) for h in todo), T, V, batch_size=10) == 25
        assert store.missing_points(hashes, T, V) == []
        assert _judgments(store) == {h: _point(i) for i, h in enumerate(hashes)}
    assert _count(path, "points") == 50


_CHILD = textwrap.dedent(
    """
    import hashlib, sys, time
    from iqalens.leaf.judgments import PointJudgment
    from iqalens.leaf.store import JudgmentStore

    def h(i):
        return hashlib.sha256(str(i).encode()).hexdigest()

    def judge(i):
        return PointJudgment.from_probs([1 + i % 7, 2 + i % 5, 3, 1 + i % 3, 0.5])

    mode, path = sys.argv[1], sys.argv[2]
    store = JudgmentStore(path)
    if mode == "hang":  # yield 35 items with batch_size 10, then hang before the 36th
        def items():
            for i in range(100):
                if i == 35:
                    print("ready", flush=True)
                    time.sleep(60)
                yield h(i), None, judge(i)
        store.put_points(items(), "test:teacher", "v1", batch_size=10)
    else:  # write batches of 10 as fast as possible until killed
        for b in range(10**6):
            store.put_points([(h(i), None, judge(i)) for i in range(10 * b, 10 * b + 10)],
                             "test:teacher", "v1", batch_size=10)
            print("batch", b, flush=True)
    """
)


def _spawn(mode: str, path: Path) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", _CHILD, mode, str(path)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def test_killed_writer_loses_only_the_batch_in_flight_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    child = _spawn("hang", path)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)  # no cleanup, no flush: like a power cut of the process
    child.wait(timeout=10)
    assert _integrity(path) == "ok"

    hashes = [_hash(i) for i in range(100)]
    with JudgmentStore(path) as store:
        todo = store.missing_points(hashes, T, V)
        assert todo == hashes[30:]  # 3 committed batches survive; items 30-34 were in flight
        store.put_points(((h, None, _point(hashes.index(h))) for h in todo), T, V)
        assert _judgments(store) == {h: _point(i) for i, h in enumerate(hashes)}
    assert _count(path, "points") == 100


def test_kill_at_a_random_moment_leaves_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    child = _spawn("loop", path)
    assert child.stdout is not None
    reported = -1
    deadline = time.monotonic() + 10
    while reported < 20 and time.monotonic() < deadline:  # let it commit a few batches, then kill mid-write
        reported = int(child.stdout.readline().split()[1])
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert _integrity(path) == "ok"
    n = _count(path, "points")
    assert n % 10 == 0 and n >= 10 * (reported + 1)  # atomic batches; nothing reported as written is lost
    with JudgmentStore(path) as store:
        assert store.missing_points([_hash(i) for i in range(n)], T, V) == []


# -- two writer processes -----------------------------------------------------------------------


def _writer(path: str, writer: int, keys: list[int], ready: mp.synchronize.Barrier) -> None:
    ready.wait(30)  # both processes imported: start together
    with JudgmentStore(path, busy_timeout_s=30) as store:  # both open a file that does not exist yet
        judgment = PointJudgment.from_probs([1.0 if k == writer else 0.0 for k in range(5)])
        items = [(_hash(i), f"w{writer}/{i}.png", judgment) for i in keys]
        for b in range(0, len(items), 7):  # many small transactions with pauses, so the two interleave
            store.put_points(items[b : b + 7], T, V, batch_size=7)
            time.sleep(0.002)
        pj = PairJudgment.from_orders(0.9 if writer == 0 else 0.1, 0.5)
        store.put_pairs(
            [(_hash(i), _hash(i + 1), None, None, pj) for i in keys if i + 1 in set(keys)], T, V, batch_size=5
        )


def test_two_writer_processes_with_overlapping_keys(tmp_path: Path) -> None:
    path = tmp_path / "new" / "s.db"
    path.parent.mkdir()
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(2)
    # Both writers start with the shared keys 300-599, in the same order, so they race for them.
    shared = list(range(300, 600))
    procs = [
        ctx.Process(target=_writer, args=(str(path), 0, shared + list(range(300)), ready)),
        ctx.Process(target=_writer, args=(str(path), 1, shared + list(range(600, 900)), ready)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert _integrity(path) == "ok"
    assert _count(path, "points") == 900 and _count(path, "pairs") == 899

    with JudgmentStore(path) as store:
        recs = store.points(T, V)
        commit_order = [r.path.split("/")[0] for r in sorted(recs, key=lambda r: r.created_at)]  # type: ignore[union-attr]
        switches = sum(a != b for a, b in zip(commit_order, commit_order[1:], strict=False))
        assert switches > 10  # the writers really did take turns, the test is not sequential by accident
        assert sorted(r.hash for r in recs) == sorted(_hash(i) for i in range(900))
        index = {_hash(i): i for i in range(900)}
        for r in recs:
            writer = int(np.argmax(r.judgment.probs))
            assert r.path == f"w{writer}/{index[r.hash]}.png"  # every row wholly from one writer
            i = index[r.hash]
            if i < 300 or i >= 600:  # keys only one writer had
                assert writer == (0 if i < 300 else 1)
        assert store.missing_pairs([(_hash(i), _hash(i + 1)) for i in range(899)], T, V) == []


# -- export -------------------------------------------------------------------------------------


def _filled_store(path: Path) -> JudgmentStore:
    store = JudgmentStore(path)
    store.put_points([(_hash(i), f"dir, with comma/{i}.png", _point(i)) for i in range(6)], T, V)
    store.put_points([(_hash(i), None, _point(i + 1)) for i in range(3)], "other", "p2")
    store.put_pairs(
        [
            (_hash(0), _hash(1), "x.png", None, PairJudgment.from_orders(1 / 3, 0.2)),
            (_hash(2), _hash(1), None, None, PairJudgment.from_points(_point(2), _point(1))),
        ],
        T,
        V,
    )
    return store


def test_csv_export_round_trips_exactly(tmp_path: Path) -> None:
    with _filled_store(tmp_path / "s.db") as store:
        assert store.export(tmp_path / "points.csv") == 9
        assert store.export(tmp_path / "mine.csv", teacher_id=T, prompt_version=V) == 6
        assert store.export(tmp_path / "pairs.csv", "pairs") == 2
        everything = store.points(T, V) + store.points("other", "p2")
        assert sorted(read_export(tmp_path / "points.csv"), key=repr) == sorted(everything, key=repr)
        assert read_export(tmp_path / "mine.csv") == store.points(T, V)
        back = read_export(tmp_path / "pairs.csv")
        stored = store.pairs(T, V)
    assert all(isinstance(r, PairRecord) for r in back) and len(back) == 2
    for got, want in zip(back, stored, strict=True):
        assert (got.hash_a, got.hash_b, got.path_a, got.path_b, got.created_at) == (
            want.hash_a,
            want.hash_b,
            want.path_a,
            want.path_b,
            want.created_at,
        )
        assert _same_pair(got.judgment, want.judgment)
    header = (tmp_path / "pairs.csv").read_text().splitlines()[0]
    assert header.startswith("hash_a,hash_b,path_a,path_b,teacher_id,prompt_version,p_first_better")


def test_parquet_export_round_trips_when_pyarrow_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    with _filled_store(tmp_path / "s.db") as store:
        assert store.export(tmp_path / "points.parquet", teacher_id=T) == 6
        assert store.export(tmp_path / "pairs.parquet", "pairs") == 2
        assert read_export(tmp_path / "points.parquet") == store.points(T, V)
        for got, want in zip(read_export(tmp_path / "pairs.parquet"), store.pairs(T, V), strict=True):
            assert isinstance(got, PairRecord) and got.hash_a == want.hash_a
            assert _same_pair(got.judgment, want.judgment)


def test_parquet_without_pyarrow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with _filled_store(tmp_path / "s.db") as store, pytest.raises(ImportError, match=r"iqalens\[parquet\]"):
        store.export(tmp_path / "points.parquet")
    assert list(tmp_path.glob("*parquet*")) == []


def test_read_export_refuses_other_csv(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(StoreError, match="not a judgments export"):
        read_export(tmp_path / "x.csv")


# -- files that are not stores ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [("notes.txt", b"hello, world\n"), ("noise.bin", bytes(range(256)) * 40)],
)
def test_a_non_database_file_is_refused_and_left_untouched(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StoreError, match=rf"{name}: not an SQLite database"):
        JudgmentStore(path)
    assert path.read_bytes() == content


def test_an_image_file_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    with pytest.raises(StoreError, match="img.png"):
        JudgmentStore(tmp_path / "img.png")


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE points (x INTEGER)")
    with pytest.raises(StoreError, match="another program"):
        JudgmentStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("points",)]


def test_newer_schema_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    JudgmentStore(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer iqalens"):
        JudgmentStore(path)
    with pytest.raises(StoreError, match="no such file"):
        JudgmentStore(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(StoreError, match="directory"):
        JudgmentStore(tmp_path)


def test_store_error_is_a_user_error_and_survives_pickling(tmp_path: Path) -> None:
    """The CLI prints an IqalensError as one line (exit 2); worker processes send it back pickled."""
    with pytest.raises(StoreError) as caught:
        JudgmentStore(tmp_path / "typo.db", create=False)
    assert isinstance(caught.value, IqalensError)
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is StoreError and str(again) == str(caught.value) and again.reason == "no such file"


def test_store_uses_wal_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.db"
    with JudgmentStore(path) as store:
        store.put_points([(_hash(1), None, _point(1))], T, V)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with JudgmentStore(path, create=False) as store:
        assert [r.hash for r in store.points(T, V)] == [_hash(1)]
        assert isinstance(store.points(T, V)[0], PointRecord)
