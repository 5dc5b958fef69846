"""The public API on the package's face: lazy, typed, and the examples in docs/api.md run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import iqalens
from iqalens.errors import InvalidInputError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_import_is_lazy() -> None:
    code = (
        "import sys, iqalens; "
        "print(','.join(m for m in ('numpy', 'torch', 'PIL', 'scipy', 'iqalens.api') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_face_lists_the_api_and_rejects_other_names() -> None:
    from iqalens import api

    # The face repeats api.__all__ (so that `import iqalens` need not import numpy): the two must agree.
    assert set(iqalens.__all__) - {"__version__"} == set(api.__all__)
    assert set(iqalens.__all__) <= set(dir(iqalens))
    assert callable(iqalens.load_scorer) and iqalens.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = iqalens.nope  # type: ignore[attr-defined]


def test_score_mixes_paths_arrays_and_pil_images_in_order() -> None:
    path = iqalens.sample_paths()[0]
    image = iqalens.load_image(path)
    scorer = iqalens.load_scorer()
    results = scorer.score([path, image, Image.fromarray(image), "missing.png"])
    assert [r.ok for r in results] == [True, True, True, False]
    # same pixels, same preprocessing; a batch's rows may differ in the last float32 bits by position
    # (measured 1e-6 on one Xeon's kernels), so equal means equal to 1e-5
    assert results[1].score == pytest.approx(results[0].score, abs=1e-5)
    assert results[2].score == pytest.approx(results[0].score, abs=1e-5)
    assert results[3].error == "file not found" and results[3].score is None
    assert scorer.scale.higher_is_better is True and scorer.scale.low == 1.0 and scorer.scale.high == 5.0
    assert iqalens.score(image, model=scorer)[0].score == pytest.approx(results[1].score, abs=1e-5)


def test_score_refuses_arrays_that_are_not_rgb8() -> None:
    with pytest.raises(InvalidInputError, match="image 1: expected an H x W x 3 uint8"):
        iqalens.score([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])


def test_distort_and_the_lists_come_from_the_registries() -> None:
    from iqalens.distortions import all_types, distort
    from iqalens.models.loading import MODEL_FAMILIES

    image = iqalens.load_image(iqalens.sample_paths()[0])
    assert np.array_equal(iqalens.distort(image, 9, 3), distort(image, "jpeg2000", 3))
    kinds = iqalens.list_distortions()
    assert [d.id for d in kinds] == [t.id for t in all_types()]
    assert {d.perception_class for d in kinds} <= {
        "blur",
        "noise",
        "brightness",
        "compression",
        "contrast",
        "colorfulness",
        "jitter",
        "clean",
    }
    assert [m.name for m in iqalens.list_models()] == list(MODEL_FAMILIES.names())
    assert "classical" in [t.name for t in iqalens.list_teachers()]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_docs_examples_run(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks()[index], f"docs/api.md block {index}", "exec"), {})
