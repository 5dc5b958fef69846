"""``--model SPEC`` resolution through the model-family registry (no real model is loaded here)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from iqalens.errors import InvalidInputError
from iqalens.models.base import ComponentFeatures, ComponentModel, ModelKind
from iqalens.models.loading import (
    MODEL_FAMILIES,
    checkpoint_id,
    folder_id,
    list_models,
    load_model,
    specs_help,
)

#: The help text before the registry generated it: the registry must reproduce it word for word.
OLD_SPECS = (
    "'mini' (pre-aligned default, cached), 'mini:DIR', 'hf:PATH_OR_ID', 'dual:PATH_OR_ID' (CLIP/SigLIP), "
    "or a checkpoint folder (an 'iqalens align' run folder or its model/ folder)"
)


class FakeModel:
    """The smallest ComponentModel: what a new family's module has to provide."""

    kind: ModelKind = "dual_encoder"

    def __init__(self, path_or_id: str, *, device: str = "cpu") -> None:
        self.model_id = f"fake:{path_or_id}"
        self.device = device

    def extract(self, images: Sequence[np.ndarray]) -> ComponentFeatures:
        n = len(images)
        return ComponentFeatures(vision_layers=[np.zeros((n, 2), np.float32)], projector=np.zeros((n, 2)))

    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        return np.zeros((len(words), 2), np.float32)

    def class_log_scores(self, images: Sequence[np.ndarray], class_words: Sequence[str]) -> np.ndarray:
        return np.zeros((len(images), len(class_words)))


def test_a_new_family_is_one_register_call(tmp_path: Path) -> None:
    # One register call (here with the class itself; "package.module:Class" registers it lazily).
    MODEL_FAMILIES.register("fake", FakeModel, summary="a test family", arg="PATH", marker="fake.json")
    try:
        model, ckpt = load_model("fake:some/id", device="cuda:7")
        assert isinstance(model, FakeModel) and isinstance(model, ComponentModel)
        assert (model.model_id, model.device, ckpt) == ("fake:some/id", "cuda:7", "some/id")
        # ... and it shows up in the help text, the listing and the folder detection
        assert "'fake:PATH'" in specs_help()
        assert ("fake", "a test family") in [(m.name, m.summary) for m in list_models()]
        (tmp_path / "fake.json").write_text("{}")
        model, ckpt = load_model(str(tmp_path))
        assert isinstance(model, FakeModel) and ckpt == folder_id(tmp_path) == checkpoint_id(str(tmp_path))
    finally:
        MODEL_FAMILIES.unregister("fake")
    with pytest.raises(InvalidInputError, match="unknown model spec"):
        load_model("fake:some/id")
    assert "fake" not in specs_help()


def test_help_text_is_generated_from_the_registry_unchanged() -> None:
    assert specs_help() == OLD_SPECS
    names = [m.name for m in list_models()]
    assert {"mini", "hf", "dual", "hf_aligned"} <= set(names)
    usage = {m.name: m.usage for m in list_models()}
    assert usage["hf_aligned"] == ""  # reached through its folder only


@pytest.mark.parametrize("spec", ["gpt5", "hf", "dual:", "hf_aligned:x", "nope:thing"])
def test_unknown_specs_list_what_exists(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown model spec") as info:  # InvalidInputError is a ValueError
        load_model(spec)
    assert OLD_SPECS in str(info.value)


def test_a_folder_without_markers_is_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a config without weights is not an HF checkpoint
    with pytest.raises(InvalidInputError, match="is not a model checkpoint") as info:
        load_model(str(tmp_path))
    assert "hf_aligned.json, mini.json or config.json with *.safetensors" in str(info.value)


def test_folders_are_matched_in_registration_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An align run folder resolves to RUN/model; hf_aligned.json wins over the other markers."""
    calls: list[tuple[str, str]] = []

    def fake_loader(name: str) -> Callable[..., FakeModel]:
        def load(arg: str, *, device: str = "cpu") -> FakeModel:
            calls.append((name, arg))
            return FakeModel(arg, device=device)

        return load

    for name in ("hf_aligned", "mini", "hf"):
        monkeypatch.setattr(MODEL_FAMILIES.entry(name), "value", fake_loader(name))
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    for marker in ("mini.json", "hf_aligned.json", "config.json", "w.safetensors"):
        (model_dir / marker).write_text("{}")
    load_model(str(tmp_path / "run"))
    (model_dir / "hf_aligned.json").unlink()
    load_model(str(model_dir))
    (model_dir / "mini.json").unlink()
    _, ckpt = load_model(str(model_dir))
    assert [c[0] for c in calls] == ["hf_aligned", "mini", "hf"]
    assert all(arg == str(model_dir) for _, arg in calls)
    assert ckpt == folder_id(model_dir)


def test_listing_families_imports_no_model_code() -> None:
    code = (
        "import sys; from iqalens.models.loading import list_models, specs_help; "
        "list_models(); specs_help(); "
        "print(','.join(m for m in ('numpy', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
