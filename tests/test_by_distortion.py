"""The per-distortion breakdown of an evaluation: within-type ranking, errors after the map, names."""

from __future__ import annotations

import numpy as np
import pytest

from iqalens.datasets.distortion_names import CLEAN, distortion_label
from iqalens.evaluation.by_distortion import distortion_breakdown


def test_kadid_ids_are_named_and_other_labels_kept() -> None:
    assert distortion_label("7") == "color_saturation_1"
    assert distortion_label("23") == "color_block"
    assert distortion_label("") == CLEAN
    assert distortion_label("99") == "99"  # not a KADID id: kept as written
    assert distortion_label("my_blur") == "my_blur"
    assert distortion_label("7", "kadid10k") == "color_saturation_1"
    # another database numbers its own types: TID2013's 01 is additive noise, not gaussian_blur
    assert distortion_label("01", "tid2013") == "tid2013:01"


def test_a_type_the_model_misses_is_listed_first_with_its_bias() -> None:
    rng = np.random.default_rng(0)
    levels = np.tile(np.arange(1, 6), 8).astype(float)
    mos = 5.5 - levels  # 5 severities, 8 contents each
    good = mos + rng.normal(0, 0.1, mos.size)  # "blur": ranked and scaled right
    blind = np.full(mos.size, 4.0) + rng.normal(
        0, 0.1, mos.size
    )  # "desaturation": rated ~4 whatever the level
    pred = np.concatenate([good, blind])
    labels = ["blur"] * mos.size + ["desaturation"] * mos.size
    out = distortion_breakdown(pred, np.concatenate([mos, mos]), labels)
    assert list(out) == ["desaturation", "blur"]  # worst first
    assert out["blur"]["srcc"] > 0.9 and abs(out["blur"]["mean_error"]) < 0.1
    assert abs(out["desaturation"]["srcc"]) < 0.5
    assert out["desaturation"]["mean_error"] == pytest.approx(4.0 - mos.mean(), abs=0.1)
    assert out["desaturation"]["n"] == 40


def test_errors_are_taken_after_the_given_map() -> None:
    mos = np.array([1.0, 2.0, 3.0, 4.0])
    raw = (mos - 1.0) / 4.0  # a raw [0, 1] score, perfectly linear in the MOS
    plain = distortion_breakdown(raw, mos, ["a"] * 4)
    mapped = distortion_breakdown(raw, mos, ["a"] * 4, mapping=lambda x: 1.0 + 4.0 * x)
    assert plain["a"]["rmse"] > 1.0 and mapped["a"]["rmse"] == pytest.approx(0.0, abs=1e-12)


def test_a_type_with_too_few_images_has_no_within_type_srcc() -> None:
    out = distortion_breakdown([1.0, 2.0, 3.0], [1.0, 2.0, 2.5], ["a", "a", "b"])
    assert out["a"]["srcc"] is None and out["b"]["n"] == 1 and out["b"]["rmse"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one entry per image"):
        distortion_breakdown([1.0], [1.0, 2.0], ["a"])
