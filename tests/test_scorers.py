"""The scorer and exporter registries: a new kind of model file, or a new export format, is one class
(or function) plus one register call; load_scorer, score_paths, ``iqalens score`` and ``iqalens export``
then know it, and their help texts and errors list it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from iqalens.cli import main
from iqalens.errors import InvalidInputError, UnknownNameError
from iqalens.leaf.exporters import EXPORTERS, export_model, exporters_help, list_exporters
from iqalens.leaf.scorers import SCORERS, ModelPathError, list_scorers, load_scorer, scorers_help
from iqalens.leaf.scoring import score_paths


class MeanBrightnessScorer:
    """A scorer read from a ``.fake`` file (JSON: an offset): the mean brightness plus the offset."""

    def __init__(self, path: Path) -> None:
        self.offset = float(json.loads(path.read_text())["offset"])
        self.name = f"fake:{path.name}"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(image.mean() / 255.0, dtype=np.float64)

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray([float(im) for im in images])
        return raw + self.offset, raw

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": "numpy", "scale": {"name": "brightness", "low": 0, "high": 2}}


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    out = []
    for i, value in enumerate((0, 102, 255)):
        Image.new("RGB", (8, 6), (value, value, value)).save(folder / f"im{i}.png")
        out.append(folder / f"im{i}.png")
    return out


@pytest.fixture()
def fake_scorer() -> Any:
    SCORERS.register(
        "fake",
        MeanBrightnessScorer,
        summary="a test scorer",
        match="file",
        suffix=".fake",
        usage=".fake file",
    )
    yield
    SCORERS.unregister("fake")


def test_the_built_in_scorers_are_listed_without_importing_them() -> None:
    assert [(s.name, s.match) for s in list_scorers()] == [
        ("default", "default"),
        ("run", "folder"),
        ("onnx", "file"),
    ]
    assert scorers_help() == "student run folder or .onnx file (default: the bundled student)"
    assert [e.name for e in list_exporters()] == ["onnx"]
    assert exporters_help() == ("ONNX (scored with onnxruntime)", ".onnx")


def test_a_model_path_no_scorer_takes_names_what_would_be(tmp_path: Path) -> None:
    (tmp_path / "model.txt").write_text("no model")
    with pytest.raises(ModelPathError, match="is not a student run folder or .onnx file") as info:
        load_scorer(tmp_path / "model.txt")
    assert isinstance(info.value, InvalidInputError) and isinstance(
        info.value, FileNotFoundError
    )  # as before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scorer(tmp_path / "missing")


def test_a_new_scorer_is_one_class_and_one_register_call(
    fake_scorer: None, images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"offset": 1.0}))
    scorer = load_scorer(model)
    assert isinstance(scorer, MeanBrightnessScorer)
    results = score_paths(scorer, [*images, tmp_path / "missing.png"], batch_size=2, workers=0)
    assert [r.score for r in results[:3]] == pytest.approx([1.0, 1.4, 2.0])
    assert results[3].score is None and results[3].error

    out = tmp_path / "scores.json"
    assert (
        main(["score", str(images[0].parent), "--model", str(model), "--format", "json", "-o", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    assert doc["model"]["name"] == "fake:m.fake" and [r["raw"] for r in doc["results"]] == pytest.approx(
        [0.0, 0.4, 1.0]
    )
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "student run folder, .onnx file or .fake file" in " ".join(capsys.readouterr().out.split())
    (tmp_path / "m.other").write_text("{}")
    assert main(["score", str(images[0]), "--model", str(tmp_path / "m.other")]) == 2
    assert "is not a student run folder, .onnx file or .fake file" in capsys.readouterr().err


def test_a_new_export_format_is_one_function_and_one_register_call(
    fake_scorer: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written: list[tuple[Any, Path]] = []

    def export_fake(model: Any, path: Path) -> Path:
        written.append((model, Path(path)))
        Path(path).write_text(json.dumps({"offset": 0.5, "from": str(model)}))
        return Path(path)

    EXPORTERS.register("fake", export_fake, summary="FAKE (a test format)", suffix=".fake")
    try:
        assert exporters_help() == (
            "ONNX (scored with onnxruntime) or FAKE (a test format)",
            ".onnx or .fake",
        )
        out = tmp_path / "exported.fake"
        assert export_model("RUN", out, "fake") == out and written == [("RUN", out)]
        out.unlink()
        assert main(["export", "--format", "fake", "-o", str(out)]) == 0  # the default student
        assert written[-1] == (None, out) and f"wrote {out} (default student)" in capsys.readouterr().out
        assert isinstance(load_scorer(out), MeanBrightnessScorer)  # and the fake scorer reads it back
        assert main(["export", "--format", "fake", "-o", str(out)]) == 2  # exists, no --overwrite
        with pytest.raises(SystemExit):
            main(["export", "--help"])
        assert "{onnx,fake}" in capsys.readouterr().out
    finally:
        EXPORTERS.unregister("fake")
    with pytest.raises(UnknownNameError, match="unknown export format 'fake'; known: onnx"):
        export_model(None, tmp_path / "x.fake", "fake")
