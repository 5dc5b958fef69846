"""docs/recipes/p1_mplug_owl2.json: the grid config for real checkpoints parses and every cell is a valid
``iqalens align`` run, so that the recipe cannot drift from the flags and settings that exist.

No model is loaded: only the settings are checked (an AlignConfig per cell, the model options against
the loading options ``iqalens align`` accepts).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from iqalens.align.config import PRECISIONS, AlignConfig, parse_components

DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes"
CONFIG = DOCS / "p1_mplug_owl2.json"
#: Cell keys that are not AlignConfig fields: the cell's name, and the two renamed ones.
CELL_ONLY = {"name", "train", "lora", "steps"}
#: The Hugging Face loading options of ``iqalens align`` (iqalens.commands._hf.hf_options).
MODEL_OPTIONS = {
    "dtype",
    "device_map",
    "quantization",
    "max_pixels",
    "components",
    "prompt_template",
    "trust_remote_code",
}
#: The grid's cells, as issue 16 names them (the template-overfit cell is a reference model).
EXPECTED_CELLS = ["untrained", "V", "P", "L", "V+P", "V+P+c", "V+P+L"]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return json.loads(CONFIG.read_text())


def align_config(cell: dict[str, Any], config: dict[str, Any], seed: int) -> AlignConfig:
    """The AlignConfig a grid script builds from one cell (what the recipe's command lines say too)."""
    extra = {k: v for k, v in cell.items() if k not in CELL_ONLY}
    return AlignConfig(
        train=parse_components(cell["train"]),
        lora=parse_components(cell.get("lora", "")),
        max_steps=cell["steps"],
        seed=seed,
        device=config["device"],
        precision=config["precision"],
        **extra,
    )


def test_the_config_has_the_schema_and_the_cells_of_the_grid(config: dict[str, Any]) -> None:
    assert config["model"].startswith("hf:")
    assert set(config["model_options"]) <= MODEL_OPTIONS
    assert config["device"] == "cuda" and config["precision"] == "bf16" in PRECISIONS
    assert len(config["seeds"]) >= 2 and all(isinstance(s, int) for s in config["seeds"])
    assert [c["name"] for c in config["cells"]] == EXPECTED_CELLS
    for ref in config.get("reference_models", []):
        assert ref["model"].startswith("hf:") and set(ref.get("model_options", {})) <= MODEL_OPTIONS


def test_every_trained_cell_builds_a_valid_align_config(config: dict[str, Any]) -> None:
    names = {f.name for f in fields(AlignConfig)}
    for cell in config["cells"]:
        if cell["train"] == "-":  # the untrained model: no run of its own
            assert set(cell) == {"name", "train"}
            continue
        assert set(cell) - CELL_ONLY <= names, cell["name"]
        for seed in config["seeds"]:
            cfg = align_config(cell, config, seed)
            assert cfg.max_steps == cell["steps"] and cfg.seed == seed and cfg.device == "cuda"
        assert "".join(c[0].upper() for c in cfg.train) == cell["train"].replace("+", "")
        assert cfg.w_constraint == cell["w_constraint"]
        # the name says the constraint: "+c" exactly when its weight is on
        assert cell["name"].endswith("+c") == (cell["w_constraint"] > 0)


def test_the_recipe_page_names_the_config_and_is_linked() -> None:
    page = (DOCS / "p1_mplug_owl2.md").read_text()
    assert "p1_mplug_owl2.json" in page and "estimate" in page.lower()
    for linking in ("README.md", "perception_real_checkpoints.md"):
        assert "p1_mplug_owl2.md" in (DOCS / linking).read_text(), linking
