"""The scoring pipeline: decoding overlaps the network in bounded memory, inputs stream, outputs stream,
and none of it changes a score."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.images import iter_image_files
from iqalens.leaf.pipeline import iter_scores
from iqalens.leaf.scoring import (
    InputError,
    ResultWriter,
    ScoreResult,
    iter_inputs,
    score_inputs,
    score_paths,
    write_csv,
    write_json,
)


def _image(path: Path, seed: int, size: tuple[int, int] = (24, 18)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


class CountingScorer:
    """Scores an image by its mean; counts prepared images alive (prepared, not yet scored)."""

    name = "counting"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.alive = 0
        self.most_alive = 0

    def prepare(self, image: np.ndarray) -> np.ndarray:
        with self.lock:
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
        return image

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.delay)  # a slow network: the decoders run ahead as far as they may
        with self.lock:
            self.alive -= len(images)
        raw = np.array([float(im.mean()) / 255.0 for im in images])
        return raw * 4 + 1, raw

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "runtime": "numpy"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    for i in range(40):
        _image(root / f"sub{i % 3}" / f"im{i:02d}.png", i)
    return root


def test_decoding_runs_ahead_in_bounded_memory_and_pulls_paths_lazily(folder: Path) -> None:
    paths = iter_image_files(folder)
    pulled = 0

    def stream() -> Iterator[Path]:
        nonlocal pulled
        for p in paths:
            pulled += 1
            yield p

    scorer = CountingScorer(delay=0.02)
    batch, prefetch = 4, 2
    results = iter_scores(scorer, stream(), batch_size=batch, workers=3, prefetch=prefetch)
    first = next(results)
    assert first.path == str(paths[0])
    # only the batch being scored and the ones queued behind it were pulled from the iterator
    assert pulled <= (prefetch + 1) * batch
    rest = list(results)
    assert [r.path for r in [first, *rest]] == [str(p) for p in paths]
    # never more prepared images alive than the queued batches plus the one being scored
    assert 0 < scorer.most_alive <= (prefetch + 1) * batch
    assert scorer.alive == 0


def test_scores_equal_the_sequential_ones_bit_for_bit(folder: Path, tmp_path: Path) -> None:
    import torch

    from iqalens.leaf.calibration import Calibrator
    from iqalens.leaf.scoring import StudentScorer
    from iqalens.leaf.student import StudentConfig, build_student

    torch.manual_seed(0)
    student = build_student(
        StudentConfig(backbone="tiny", image_size=16, resize_shorter=16, pretrained=False)
    )
    scorer = StudentScorer(student, Calibrator("linear", {"slope": 2.0, "intercept": 3.0}))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = [*iter_image_files(folder)[:9], bad, *iter_image_files(folder)[9:17]]

    def run(**kw: int) -> list[tuple[str, float | None, float | None, str | None]]:
        with torch.no_grad():
            torch.set_num_threads(1)  # the same kernel partition for every variant
            return [(r.path, r.score, r.raw, r.error) for r in score_paths(scorer, paths, 4, **kw)]

    threads = torch.get_num_threads()
    try:
        sequential = run(workers=0)
        for kw in (
            {"workers": 1, "prefetch": 1},
            {"workers": 2, "prefetch": 4},
            {"workers": 3, "prefetch": 2},
        ):
            assert run(**kw) == sequential, kw
    finally:
        torch.set_num_threads(threads)
    assert sequential[9][3] is not None and all(r[3] is None for i, r in enumerate(sequential) if i != 9)


def test_closing_early_stops_the_decoders(folder: Path) -> None:
    before = threading.active_count()
    gen = iter_scores(CountingScorer(), iter_image_files(folder), batch_size=2, workers=3)
    next(gen)
    gen.close()
    assert threading.active_count() <= before  # the pool was shut down and joined
    with pytest.raises(ValueError, match="prefetch"):
        next(iter_scores(CountingScorer(), [], prefetch=0))


def test_folder_walk_is_lazy_and_in_the_order_of_iter_image_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in [
        "a.png",
        "a/x.png",
        "a/b/y.jpg",
        "B.png",
        "a-b.png",
        "a_z/q.png",
        "Z/w.JPG",
        "c.txt",
        ".h.png",
    ]:
        target = root / rel
        if target.suffix.lower() in (".png", ".jpg"):
            _image(target, len(rel))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("x")
    (root / ".hidden").mkdir()
    _image(root / ".hidden" / "in.png", 1)  # files in hidden folders count, as in iter_image_files
    os.symlink(root / "a", root / "link")  # a symlinked folder is not entered (as rglob)
    walked = iter_inputs([root])
    assert not isinstance(walked, list)
    assert list(walked) == iter_image_files(root)
    assert len(iter_image_files(root)) == 8
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):  # checked when called, before any path
        iter_inputs([root, tmp_path / "empty"])
    # duplicates (the same file named twice, or through a symlink) once, at the first position
    named = list(iter_inputs([root / "a.png", root, root / "link" / "x.png"]))
    assert named == [root / "a.png", *(p for p in iter_image_files(root) if p.name != "a.png")]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_streamed_output_is_the_same_text(fmt: str, n: int) -> None:
    results = [
        ScoreResult("a.png", 3.25, 0.5),
        ScoreResult('b "odd", name.png', None, None, "corrupt or truncated (x)"),
        ScoreResult("c.png", float("nan"), 0.1),
    ][:n]
    model = {"name": "m", "scale": {"name": "MOS", "low": 1.0, "high": 5.0, "higher_is_better": True}}
    whole, streamed = io.StringIO(), io.StringIO()
    (write_csv if fmt == "csv" else write_json)(results, whole, model)
    writer = ResultWriter(streamed, fmt, model)
    for r in results:
        writer.add(r)
    writer.close()
    assert streamed.getvalue() == whole.getvalue()
    if fmt == "json":
        assert json.loads(streamed.getvalue())["n_images"] == n


def test_score_inputs_streams_without_keeping_results(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no")
    out = tmp_path / "o" / "scores.csv"
    run = score_inputs([folder, bad], CountingScorer(), "csv", out, progress=False, keep_results=False)
    assert run.results == [] and run.count == 41 and [r.path for r in run.failures] == [str(bad)]
    lines = out.read_text().splitlines()
    assert len(lines) == 42 and lines[-1].startswith(str(bad))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    kept = score_inputs([folder, bad], CountingScorer(), "csv", progress=False)
    assert kept.count == 41 and len(kept.results) == 41 and kept.failures == run.failures
    buffer = io.StringIO()
    kept.write(buffer, "csv")
    assert buffer.getvalue() == out.read_text()
    stream = io.StringIO()  # an open stream (the command's stdout) gets the rows as they come
    score_inputs([folder], CountingScorer(), "json", stream, progress=False, keep_results=False)
    assert json.loads(stream.getvalue())["n_images"] == 40


class ResizingScorer(CountingScorer):
    """Prepares as the ONNX scorer does (Pillow's bicubic resize of the shorter side); scores by mean."""

    def __init__(self, accepts_pil: bool) -> None:
        super().__init__()
        self.accepts_pil = accepts_pil
        self.seen: list[type] = []

    def prepare(self, image: np.ndarray) -> np.ndarray:
        from iqalens.models.preprocess import resize_shorter

        self.seen.append(type(image))
        return super().prepare(resize_shorter(image, 20))


def test_pillow_images_skip_copies_but_not_pixels(tmp_path: Path) -> None:
    """A scorer that prepares Pillow images gets them straight from the decoder for 8-bit RGB files;
    every other file goes through load_rgb. Same prepared pixels, same errors."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    files = [_image(tmp_path / "rgb.png", 1), tmp_path / "rgba.png", tmp_path / "grey.png"]
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(files[1])
    Image.fromarray(rgb[..., 0]).save(files[2])
    for orientation in (1, 6, 8):  # stored as is, turned 90 degrees either way
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"turned{orientation}.jpg"
        Image.fromarray(rgb).save(path, exif=exif.tobytes(), quality=95)
        files.append(path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    files += [bad, tmp_path / "missing.png"]
    outcomes = {}
    for pil in (False, True):
        scorer = ResizingScorer(accepts_pil=pil)
        results = list(iter_scores(scorer, files, batch_size=3, workers=2))
        outcomes[pil] = [(r.path, r.score, r.raw, r.error) for r in results]
        if pil:
            assert sum(t is not np.ndarray for t in scorer.seen) == 4  # rgb.png and the three JPEGs
    assert outcomes[True] == outcomes[False]
    assert [o[3] is None for o in outcomes[True]] == [True] * 6 + [False, False]
