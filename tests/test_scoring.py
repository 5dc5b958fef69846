"""Scoring: inputs (files, folders, globs, manifests), error isolation, order, determinism, default model."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqalens.cli import main
from iqalens.datasets.manifest import Manifest, ManifestRow, write_manifest
from iqalens.errors import InvalidInputError
from iqalens.leaf.calibration import Calibrator, save_calibrator
from iqalens.leaf.scoring import (
    CSV_COLUMNS,
    RAW_SCALE,
    InputError,
    ScoreResult,
    StudentScorer,
    collect_inputs,
    load_scorer,
    results_json,
    score_inputs,
    score_paths,
    score_scale,
    write_csv,
)
from iqalens.leaf.student import StudentConfig, build_student, save_student
from iqalens.samples import sample_paths
from tolerances import LITE0_DEPTH, TINY_CNN_DEPTH, float32_atol


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny_scorer() -> StudentScorer:
    torch.manual_seed(0)
    student = build_student(
        StudentConfig(backbone="tiny", image_size=16, resize_shorter=16, pretrained=False)
    )
    return StudentScorer(student, Calibrator("linear", {"slope": 2.0, "intercept": 3.0}))


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    return [_image(tmp_path / "imgs" / f"im{i}.png", i) for i in range(5)]


def test_unreadable_file_reported_others_scored_in_order(tiny_scorer, images, tmp_path):
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"not a png at all")
    missing = tmp_path / "nope.jpg"
    paths = [images[0], bad, images[1], missing, *images[2:]]
    errors: list[tuple[str, str]] = []
    results = score_paths(tiny_scorer, paths, batch_size=2, on_error=lambda p, r: errors.append((p, r)))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, True, False, True, True, True]
    assert results[1].score is None and "not a recognised image format" in results[1].error
    assert results[3].error == "file not found"
    assert [p for p, _ in errors] == [str(bad), str(missing)]
    # the good images get the same scores as when scored without the bad ones
    alone = score_paths(tiny_scorer, images, batch_size=2)
    got = [r.score for r in results if r.ok]
    # in other batches: up to float32 rounding (tests/tolerances.py), scores within that much
    assert got == pytest.approx([r.score for r in alone], abs=_tiny_score_atol(alone))


def _tiny_score_atol(results: list[ScoreResult]) -> float:
    """The tiny student's float32 bound on its raw output (tests/tolerances.py: 2.4e-5 for |raw| <= 1)
    times the slope 2 of the linear calibration. Its scores of two images differ by >= 2e-3 (40x)."""
    return 2.0 * float32_atol(TINY_CNN_DEPTH, [r.raw for r in results])


def test_calibration_applied_to_raw(tiny_scorer, images):
    r = score_paths(tiny_scorer, images[:2])
    for res in r:
        assert res.score == pytest.approx(2.0 * res.raw + 3.0, abs=1e-12)


def test_deterministic_across_batch_sizes_and_runs(tiny_scorer, images):
    runs = [[r.score for r in score_paths(tiny_scorer, images, batch_size=b)] for b in (1, 2, 5, 64)]
    for other in runs[1:]:
        assert other == pytest.approx(runs[0], abs=_tiny_score_atol(score_paths(tiny_scorer, images)))
    again = [r.score for r in score_paths(tiny_scorer, images, batch_size=2)]
    assert again == runs[1]  # same batch size: bit-identical


def test_scores_differ_between_images(tiny_scorer, images):
    scores = [r.score for r in score_paths(tiny_scorer, images)]
    assert len(set(np.round(scores, 9))) == len(images)


def test_decoding_threads_change_nothing_but_speed(tiny_scorer, images, tmp_path):
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"not a png at all")
    paths = [images[0], bad, *images[1:], tmp_path / "missing.png"]
    outcomes = {}
    for workers in (0, 1, 3):
        errors: list[tuple[str, str]] = []
        note = errors.append
        results = score_paths(tiny_scorer, paths, 2, workers=workers, on_error=lambda p, r, n=note: n((p, r)))
        outcomes[workers] = ([(r.path, r.score, r.raw, r.error) for r in results], errors)
    assert outcomes[3] == outcomes[1]  # bit-identical, same error order
    # workers=0 decodes in the calling thread; should torch's thread count differ, only float32
    # rounding may (tests/tolerances.py)
    (seq, seq_errors), (threaded, threaded_errors) = outcomes[0], outcomes[1]
    assert (
        seq_errors == threaded_errors == [(str(bad), seq[1][3]), (str(tmp_path / "missing.png"), seq[-1][3])]
    )
    assert [(p, e) for p, _, _, e in seq] == [(p, e) for p, _, _, e in threaded]
    ok = [i for i, r in enumerate(seq) if r[3] is None]
    tol = 2.0 * float32_atol(TINY_CNN_DEPTH, [seq[i][2] for i in ok])  # raw bound x calibration slope 2
    assert [threaded[i][1] for i in ok] == pytest.approx([seq[i][1] for i in ok], abs=tol)
    with pytest.raises(ValueError, match="workers"):
        score_paths(tiny_scorer, images, workers=-1)


def test_fast_decode_shrinks_only_large_images(tiny_scorer, images, tmp_path):
    from iqalens.images import load_rgb
    from iqalens.leaf.scoring import load_reduced

    rng = np.random.default_rng(3)
    big = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for name in ("big.jpg", "big.png"):
        big.save(tmp_path / name)
        reduced = load_reduced(tmp_path / name, 16)  # at least 2 x 16 on the shorter side, less than 4 x 16
        assert 32 <= min(reduced.shape[:2]) < 64 and reduced.shape[2] == 3
        assert reduced.shape[1] > reduced.shape[0]  # aspect ratio kept
    # images below 4x the model's shorter side are decoded exactly, so their scores do not change
    assert np.array_equal(load_reduced(images[0], 16), load_rgb(images[0]))
    exact = score_paths(tiny_scorer, images, batch_size=2)
    fast = score_paths(tiny_scorer, images, batch_size=2, fast_decode=True)
    assert [r.score for r in fast] == [r.score for r in exact]
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 truncated")
    (result,) = score_paths(tiny_scorer, [tmp_path / "junk.jpg"], fast_decode=True)
    assert not result.ok and result.error


def test_collect_folder_recursive_glob_manifest(tmp_path):
    a = _image(tmp_path / "root" / "a.png", 1)
    b = _image(tmp_path / "root" / "sub" / "deeper" / "b.jpg", 2)
    _image(tmp_path / "root" / ".hidden.png", 3)
    (tmp_path / "root" / "notes.txt").write_text("not an image")
    assert collect_inputs([tmp_path / "root"]) == [a, b]
    assert collect_inputs([str(tmp_path / "root" / "**" / "*.jpg")]) == [b]
    assert collect_inputs([str(tmp_path / "root" / "*.png")]) == [a]
    rows = [
        ManifestRow(path="root/sub/deeper/b.jpg", reference="r", source="s"),
        ManifestRow(path="root/a.png", reference="r", source="s"),
        ManifestRow(path="root/missing.png", reference="r", source="s"),
    ]
    man = write_manifest(Manifest(rows, tmp_path), tmp_path / "m.csv")
    got = collect_inputs([man])
    assert [p.resolve() for p in got] == [b.resolve(), a.resolve(), (tmp_path / "root/missing.png").resolve()]
    # duplicates are dropped, first position kept; a missing plain path is kept (reported at scoring)
    got = collect_inputs([a, tmp_path / "root", tmp_path / "gone.png"])
    assert got == [a, b, tmp_path / "gone.png"]


def test_collect_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        collect_inputs([tmp_path / "empty"])
    with pytest.raises(InputError, match="matches no files"):
        collect_inputs([str(tmp_path / "*.png")])
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        collect_inputs([tmp_path / "bad.csv"])


def test_outputs_csv_and_json():
    results = [ScoreResult("a.png", 3.25, 0.5), ScoreResult("b,c.png", None, None, "file not found")]
    buf = io.StringIO()
    write_csv(results, buf)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows == [  # no model given: the scale cells stay empty
        ["path", "score", "raw", "error", "scale", "scale_low", "scale_high", "higher_is_better"],
        ["a.png", "3.250000", "0.500000", "", "", "", "", ""],
        ["b,c.png", "", "", "file not found", "", "", "", ""],
    ]
    doc = results_json(results, {"name": "m"})
    assert doc["n_failed"] == 1 and doc["results"][1] == {
        "path": "b,c.png",
        "score": None,
        "raw": None,
        "error": "file not found",
    }
    json.dumps(doc)  # plain JSON


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        assert reader.fieldnames[:4] == ["path", "score", "raw", "error"]  # old readers keep working
        return list(reader)


def _scale_cells(scale: dict) -> dict[str, str]:
    """The CSV cells a scale dict should become."""
    hib = scale["higher_is_better"]
    return {
        "scale": scale["name"] or "",
        "scale_low": "" if scale["low"] is None else str(float(scale["low"])),
        "scale_high": "" if scale["high"] is None else str(float(scale["high"])),
        "higher_is_better": "" if hib is None else ("true" if hib else "false"),
    }


def test_csv_says_on_which_scale_its_scores_are(tiny_scorer, images, tmp_path):
    run = tmp_path / "run"
    save_student(tiny_scorer.student, run)
    paths = [str(images[0]), str(images[1])]

    # uncalibrated: the raw student scale, as the model's describe() says
    described = load_scorer(run).describe()
    assert described["scale"] == RAW_SCALE
    assert not score_inputs(paths, model=run, fmt="csv", out=tmp_path / "raw.csv", progress=False).failures
    rows = _csv_rows(tmp_path / "raw.csv")
    assert len(rows) == 2
    for row in rows:
        assert {k: row[k] for k in CSV_COLUMNS[4:]} == {
            "scale": RAW_SCALE["name"],
            "scale_low": "0.0",
            "scale_high": "1.0",
            "higher_is_better": "true",
        }
        assert row["score"] == row["raw"]

    # calibrated by calibrate_run on a manifest with a MOS scale: the calibration's scale
    scale = {"low": 1.0, "high": 5.0, "higher_is_better": True, "name": "proxy MOS: a test proxy"}
    calibrator = Calibrator(
        "linear", {"slope": 2.0, "intercept": 3.0}, clip=(1.0, 5.0), extra={"scale": scale}
    )
    save_calibrator(calibrator, run / "calibration.json")
    described = load_scorer(run).describe()
    assert described["scale"] == scale and score_scale(described) == scale
    assert not score_inputs(paths, model=run, fmt="csv", out=tmp_path / "cal.csv", progress=False).failures
    for row in _csv_rows(tmp_path / "cal.csv"):
        assert {k: row[k] for k in CSV_COLUMNS[4:]} == _scale_cells(scale)
        assert row["scale_low"] == "1.0" and row["higher_is_better"] == "true"
    # a lower-is-better scale (a DMOS manifest) says so
    dmos = {**scale, "higher_is_better": False, "name": "MOS of dmos.csv"}
    save_calibrator(
        Calibrator("linear", {"slope": -2.0, "intercept": 4.0}, extra={"scale": dmos}),
        run / "calibration.json",
    )
    assert not score_inputs(paths, model=run, fmt="csv", out=tmp_path / "dmos.csv", progress=False).failures
    assert {r["higher_is_better"] for r in _csv_rows(tmp_path / "dmos.csv")} == {"false"}

    # an older calibration that recorded no scale: its clip range, and a name that says so
    save_calibrator(
        Calibrator("linear", {"slope": 2.0, "intercept": 3.0}, clip=(1.0, 5.0)), run / "calibration.json"
    )
    old = score_scale(load_scorer(run).describe())
    assert "not recorded" in old["name"] and (old["low"], old["high"]) == (1.0, 5.0)
    assert old["higher_is_better"] is None
    assert not score_inputs(paths, model=run, fmt="csv", out=tmp_path / "old.csv", progress=False).failures
    assert _csv_rows(tmp_path / "old.csv")[0]["higher_is_better"] == ""


def test_run_folder_and_score_inputs(tiny_scorer, images, tmp_path, capsys):
    run = tmp_path / "run"
    save_student(tiny_scorer.student, run)
    assert load_scorer(run).calibrator is None  # no calibration.json: raw scores
    save_calibrator(tiny_scorer.calibrator, run / "calibration.json")
    loaded = load_scorer(run)
    ref = [r.score for r in score_paths(tiny_scorer, images)]
    assert [r.score for r in score_paths(loaded, images)] == pytest.approx(ref, abs=1e-9)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out" / "scores.json"
    skipped: list[str] = []
    inputs = [*map(str, images), str(bad)]
    # runtime torch: the same computation as score_paths, hence the same bits (ONNX Runtime's are
    # compared within the float32 bound in tests/test_runtimes.py)
    done = score_inputs(
        inputs, run, "json", out, progress=False, on_error=lambda p, r: skipped.append(p), runtime="torch"
    )
    assert skipped == [str(bad)] and [r.path for r in done.failures] == [str(bad)]
    assert done.output == out and done.model["name"] == str(run) and len(done.results) == 6
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 6 and doc["n_failed"] == 1
    assert [r["score"] for r in doc["results"][:5]] == pytest.approx(ref, abs=1e-9)
    buffer = io.StringIO()
    done.write(buffer, "json")
    assert json.loads(buffer.getvalue()) == doc

    # the library raises; the command prints (with its name) and chooses the exit status
    with pytest.raises(InvalidInputError, match="does not exist; use a student run folder or .onnx file"):
        score_inputs([str(images[0])], model=tmp_path / "no_run", progress=False)
    with pytest.raises(InvalidInputError, match="output format"):
        score_inputs([str(images[0])], model=run, fmt="xml", progress=False)
    with pytest.raises(InputError, match="no input paths"):
        score_inputs([], model=run, progress=False)
    assert main(["score", str(images[0]), "--model", str(run), "-o", str(tmp_path / "s.csv"), "-q"]) == 0
    assert main(["score", str(images[0]), str(bad), "--model", str(run), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"iqalens score: skipped {bad}: " in err and "iqalens score: 1 of 2 image(s) could not" in err
    assert main(["score", str(images[0]), "--model", str(tmp_path / "no_run"), "-q"]) == 2
    assert f"iqalens score: error: model {tmp_path / 'no_run'} does not exist" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "empty*.png"), "--model", str(run), "-q"]) == 2
    assert "iqalens score: error: pattern" in capsys.readouterr().err


def test_default_model_scores_bundled_photos(tmp_path):
    from iqalens.leaf.default_model import HEAD_FILE, default_model_dir, default_model_info

    folder = default_model_dir()
    assert (folder / HEAD_FILE).stat().st_size < 1_000_000
    info = default_model_info()
    assert info["training"]["scale"]["low"] == 1.0 and info["training"]["scale"]["high"] == 5.0
    scorer = load_scorer(None)
    photos = sample_paths()
    assert len(photos) == 8
    # a copy with a non-image among them: still scored, offline, on the 1-5 scale
    shutil.copy(photos[0], tmp_path / "copy.png")
    (tmp_path / "junk.png").write_text("junk")
    results = score_paths(scorer, [*photos, tmp_path / "junk.png", tmp_path / "copy.png"], batch_size=4)
    scores = np.array([r.score for r in results[:8]])
    assert np.all((scores >= 1.0) & (scores <= 5.0))
    assert np.ptp(scores) > 0.0
    assert not results[8].ok
    # the same image in another batch (another row, another batch size): equal up to float32
    # rounding, the EfficientNet-Lite0 bound on the raw output (tests/tolerances.py: 1.3e-4; measured
    # <= 1e-7), which is far below the raw gaps between the 8 photos (>= 3.7e-3); the score is a fixed
    # float64 map of the raw output.
    assert results[9].raw == pytest.approx(results[0].raw, abs=float32_atol(LITE0_DEPTH, results[0].raw))
    assert scorer.describe()["name"] == "iqalens-default-student"
    # its CSV names the proxy-MOS scale 1-5, higher is better
    buf = io.StringIO()
    write_csv(results[:1], buf, scorer.describe())
    (row,) = csv.DictReader(io.StringIO(buf.getvalue()))
    assert (row["scale_low"], row["scale_high"], row["higher_is_better"]) == ("1.0", "5.0", "true")
    assert "proxy MOS" in row["scale"]
