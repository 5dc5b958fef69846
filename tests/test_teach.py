"""``iqalens teach``: resumable judging into the store, pairs, unreadable files, CLI status/export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_openai_server import FakeOpenAIServer
from iqalens.cli import main
from iqalens.errors import InvalidInputError
from iqalens.images import load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.store import JudgmentStore, read_export
from iqalens.leaf.teach import collect_images, make_teacher, run_teach
from iqalens.leaf.teachers.base import Teacher
from iqalens.leaf.teachers.registry import TEACHERS, list_teachers, teachers_help


class BrightnessTeacher:
    """A deterministic stand-in teacher: brighter images are judged better."""

    teacher_id = "test:brightness"
    prompt_version = "v1"

    def __init__(self, supports_pairs: bool = True, fail_after: int | None = None) -> None:
        self.supports_pairs = supports_pairs
        self.fail_after = fail_after
        self.images_seen: list[Path] = []
        self.pairs_seen: list[tuple[Path, Path]] = []

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        out = []
        for p in paths:
            if self.fail_after is not None and len(self.images_seen) >= self.fail_after:
                raise KeyboardInterrupt
            b = load_rgb(p).mean() / 255.0
            self.images_seen.append(p)
            out.append(PointJudgment.from_logits([8 * b, 6 * b, 4 * b, 2 * b, 0.0]))
        return out

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        self.pairs_seen += list(pairs)
        out = []
        for a, b in pairs:
            da, db = load_rgb(a).mean(), load_rgb(b).mean()
            p = 1.0 / (1.0 + np.exp(-(da - db) / 10.0))
            out.append(PairJudgment.from_orders(p, 1.0 - p))
        return out


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 12), (i * 20, i * 10, 40)).save(images / f"im{i:02d}.png")
    return images


def test_run_judges_everything_once_and_resumes(folder: Path, tmp_path: Path) -> None:
    paths = collect_images([folder])
    with JudgmentStore(tmp_path / "s.db") as store:
        first = run_teach(BrightnessTeacher(), paths, store, batch_size=5, progress=False)
        assert (first.images, first.images_judged, first.images_existing) == (12, 12, 0)
        again = BrightnessTeacher()
        second = run_teach(again, paths, store, batch_size=5, progress=False)
        assert (second.images_judged, second.images_existing) == (0, 12) and again.images_seen == []
        records = store.points("test:brightness", "v1")
    assert len(records) == 12
    best = max(records, key=lambda r: r.judgment.expected)
    assert Path(best.path).name == "im11.png"  # the brightest


def test_interrupted_run_keeps_finished_batches(folder: Path, tmp_path: Path) -> None:
    paths = collect_images([folder])
    with JudgmentStore(tmp_path / "s.db") as store:
        with pytest.raises(KeyboardInterrupt):
            run_teach(BrightnessTeacher(fail_after=7), paths, store, batch_size=3, progress=False)
        assert len(store.points("test:brightness", "v1")) == 6  # two full batches committed
        resumed = BrightnessTeacher()
        report = run_teach(resumed, paths, store, batch_size=3, progress=False)
        assert report.images_judged == 6 and len(resumed.images_seen) == 6
        assert len(store.points("test:brightness", "v1")) == 12


def test_pairs_are_asked_or_derived(folder: Path, tmp_path: Path) -> None:
    paths = collect_images([folder])
    with JudgmentStore(tmp_path / "s.db") as store:
        asking = BrightnessTeacher(supports_pairs=True)
        report = run_teach(asking, paths, store, pairs_per_image=2, progress=False)
        assert report.pairs_judged == report.pairs >= 12 and not report.pairs_derived
        assert len(asking.pairs_seen) == report.pairs
        pairs = store.pairs("test:brightness", "v1")
        assert all(not r.judgment.derived for r in pairs)
    with JudgmentStore(tmp_path / "d.db") as store:
        report = run_teach(
            BrightnessTeacher(supports_pairs=False), paths, store, pairs_per_image=2, progress=False
        )
        pairs = store.pairs("test:brightness", "v1")
        assert report.pairs_derived and pairs and all(r.judgment.derived for r in pairs)
        # brighter first image -> preferred
        for r in pairs:
            da, db = load_rgb(r.path_a).mean(), load_rgb(r.path_b).mean()
            assert (r.judgment.p_first_better > 0.5) == (da > db)


def test_unreadable_files_are_skipped_and_reported(folder: Path, tmp_path: Path) -> None:
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    seen: list[str] = []
    with JudgmentStore(tmp_path / "s.db") as store:
        report = run_teach(
            BrightnessTeacher(),
            collect_images([folder]),
            store,
            batch_size=4,
            progress=False,
            on_unreadable=lambda p, r: seen.append(p.name),
        )
        assert report.images_judged == 12 and seen == ["broken.png"]
        assert [Path(p).name for p, _ in report.unreadable] == ["broken.png"]


def test_make_teacher_rejects_unknown_specs() -> None:
    for spec in ("gpt", "hf:", "openai:model-without-url"):
        with pytest.raises(ValueError, match="teacher spec") as info:  # InvalidInputError is a ValueError
            make_teacher(spec)
        assert isinstance(info.value, InvalidInputError)
        assert "'classical', 'fr[:METRICS]', 'hf:PATH_OR_ID' or 'openai:MODEL@BASE_URL'" in str(
            info.value
        )  # from TEACHERS


def test_the_built_in_teachers_are_listed_without_importing_them() -> None:
    assert [(t.name, t.usage) for t in list_teachers()] == [
        ("classical", "'classical'"),
        ("fr", "'fr[:METRICS]'"),
        ("hf", "'hf:PATH_OR_ID'"),
        ("openai", "'openai:MODEL@BASE_URL'"),
    ]
    assert list_teachers()[0].options == ("workers",)
    assert teachers_help() == (
        "'classical' (NIQE+BRISQUE, offline), 'fr[:METRICS]' (reference-aware, offline; needs a manifest), "
        "'hf:PATH_OR_ID', or 'openai:MODEL@BASE_URL'"
    )


class ThrowawayTeacher:
    """A new teacher backend, as a user would write one: the Teacher protocol, nothing else."""

    prompt_version = "v0"
    supports_pairs = False

    def __init__(self, arg: str, workers: int = 1) -> None:
        self.teacher_id = f"throwaway:{arg}"
        self.workers = workers

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        return [PointJudgment.from_logits([load_rgb(p).mean() / 64.0, 0.0, 0.0, 0.0, 0.0]) for p in paths]

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        raise AssertionError("supports_pairs is False: pairs are derived by the caller")


def test_a_new_teacher_backend_is_one_class_and_one_register_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 12), (i * 90, 40, 40)).save(images / f"im{i}.png")
    TEACHERS.register("throwaway", ThrowawayTeacher, summary="a test backend", arg="NAME", options="workers")
    try:
        assert isinstance(make_teacher("throwaway:x", workers=2, device="cuda"), Teacher)  # device: ignored
        assert make_teacher("throwaway:x", workers=2).workers == 2
        assert "'throwaway:NAME'" in teachers_help() and list_teachers()[-1].name == "throwaway"
        store = tmp_path / "s.db"
        args = ["teach", "--teacher", "throwaway:x", "--images", str(images), "-o", str(store), "-q"]
        assert main([*args, "--pairs-per-image", "1"]) == 0
        out = capsys.readouterr().out
        assert "throwaway:x / v0" in out and "3 judged now" in out and "derived from point judgments" in out
        with JudgmentStore(store, create=False) as db:
            assert len(db.points("throwaway:x", "v0")) == 3
        with pytest.raises(SystemExit):
            main(["teach", "--help"])
        assert "'throwaway:NAME'" in capsys.readouterr().out  # the help text is generated from TEACHERS
        assert main(["teach", "--teacher", "throwaway:", "--images", str(images), "-o", str(store)]) == 2
        assert "'throwaway:NAME'" in capsys.readouterr().err  # and so is the unknown-spec error
    finally:
        TEACHERS.unregister("throwaway")
    assert "throwaway" not in teachers_help()
    with pytest.raises(InvalidInputError, match="unknown teacher spec"):
        make_teacher("throwaway:x")


def test_cli_teach_status_export_with_server_teacher(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.db"
    with FakeOpenAIServer() as server:
        spec = f"openai:fake-vlm@{server.base_url}"
        args = ["teach", "--teacher", spec, "--images", str(folder), "-o", str(store), "-q"]
        assert main([*args, "--pairs-per-image", "1"]) == 0
    out = capsys.readouterr().out
    assert "openai:fake-vlm" in out and "12 judged now" in out and "asked in both orders" in out
    assert main(["teach", "--status", str(store)]) == 0
    assert "12 point judgments" in capsys.readouterr().out
    csv_path = tmp_path / "points.csv"
    assert main(["teach", "--export", str(store), "-o", str(csv_path)]) == 0
    assert len(read_export(csv_path)) == 12


def test_cli_teach_errors(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["teach", "--status", str(tmp_path / "missing.db")]) == 2
    assert "missing.db" in capsys.readouterr().err
    assert main(["teach", "--teacher", "nope", "--images", str(folder), "-o", str(tmp_path / "s.db")]) == 2
    assert "teacher spec" in capsys.readouterr().err
    assert main(["teach", "--images", str(folder)]) == 2
    (folder / "broken.png").write_bytes(b"nope")
    with FakeOpenAIServer() as server:
        code = main(
            [
                "teach",
                "--teacher",
                f"openai:fake-vlm@{server.base_url}",
                "--images",
                str(folder),
                "-o",
                str(tmp_path / "t.db"),
                "-q",
            ]
        )
    assert code == 1 and "broken.png" in capsys.readouterr().err
    with FakeOpenAIServer() as server:
        code = main(
            [
                "teach",
                "--teacher",
                f"openai:no-such-model@{server.base_url}",
                "--images",
                str(folder),
                "-o",
                str(tmp_path / "u.db"),
                "-q",
            ]
        )
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "Traceback" not in err


def test_cli_teach_with_a_tiny_hf_model(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    from iqalens.leaf import prompts
    from tiny_vlms import build_tiny_vlm

    texts = [
        prompts.ANSWER_PREFIX,
        prompts.POINT_QUESTION,
        prompts.PAIR_QUESTION,
        prompts.PAIR_ANSWER_PREFIX,
        prompts.pair_prompt().text(),
        *prompts.LEVEL_WORDS,
        *prompts.PAIR_CHOICES,
    ]
    model = build_tiny_vlm("qwen2_vl", tmp_path / "tiny-qwen2-vl", texts)
    store = tmp_path / "s.db"
    args = ["teach", "--teacher", f"hf:{model}", "--images", str(folder), "-o", str(store), "-q"]
    assert main([*args, "--pairs-per-image", "1", "--batch-size", "4"]) == 0
    assert "hf:tiny-qwen2-vl" in capsys.readouterr().out
    with JudgmentStore(store, create=False) as s:
        status = s.status()
    assert status["points"] == 12 and status["pairs_asked"] >= 6 and status["pairs_derived"] == 0


def test_cli_teach_classical_derives_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iqalens.samples import sample_paths

    photos = [str(p) for p in sample_paths()[:3]]
    store = tmp_path / "s.db"
    assert (
        main(
            [
                "teach",
                "--teacher",
                "classical",
                "--images",
                *photos,
                "-o",
                str(store),
                "-q",
                "--pairs-per-image",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "classical:" in out and "derived from point judgments" in out
    with JudgmentStore(store, create=False) as s:
        status = s.status()
    assert status["points"] == 3 and status["pairs_derived"] == 3 and status["pairs_asked"] == 0
