"""Component maps, the table of known maps, remote code and prompt templates (tiny models, no downloads).

A component map names where the vision encoder, projector and language model sit, so a model
outside the tested families works without adapter code; what could go wrong is a map that silently
names the wrong modules (checked: an explicit map equals the table's, a nested map carves the
decoder without the tower), an unhelpful error for an unknown family (checked: it names the
modules found), remote code running without consent (checked: refused with a clear message), and
prompts that put the image or the answer prefix in the wrong place (checked on the token ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.models.hf_components import (
    KNOWN_LAYOUTS,
    ComponentMap,
    carve_components,
    component_map_for,
)
from iqalens.models.hf_inputs import PromptFormat, TemplateProcessor, check_template, render_template
from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION, HFVLMAdapter, forced_choice_prompt
from tiny_vlms_more import build_more_vlm

TEXTS = [DEFAULT_QUESTION, DEFAULT_ANSWER_PREFIX, "motion blur", "Rate it"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("maps")
    return {f: build_more_vlm(f, root / f, TEXTS) for f in ("idefics3", "paligemma", "mplug_owl2")}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (28, 28)]]


def test_a_map_is_parsed_and_written_back() -> None:
    text = "vision=model.vision_model,projector=model.visual_abstractor,lm=model+lm_head,image_token_id=-200"
    cmap = ComponentMap.parse(text + ",image_input=images")
    assert cmap.vision == ("model.vision_model",) and cmap.lm == ("model", "lm_head")
    assert cmap.image_token_id == -200 and cmap.image_input == "images"
    assert ComponentMap.parse(cmap.text()) == cmap
    assert ComponentMap.parse(" vision = a.b , projector=c+d.0 ,lm=e ").projector == ("c", "d.0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vision=a,projector=b", "lacks lm"),
        ("vision=a,projector=b,lm=c,decoder=d", "unknown component map key 'decoder'"),
        ("vision=a,projector=b,lm=c,lm=d", "given twice"),
        ("vision=a,projector=b/x,lm=c", "not a module path: 'b/x'"),
        ("vision=a,projector,lm=c", "is not KEY=VALUE"),
        ("vision=a,projector=b,lm=c,image_token_id=x", "must be an integer"),
        ("vision=a,projector=a,lm=c", "in both vision and projector"),
    ],
)
def test_bad_maps_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cmap = ComponentMap.parse(text)
        carve_components(torch.nn.Module(), cmap)


def test_an_explicit_map_reads_the_same_sites_as_the_table(
    folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    table = HFVLMAdapter(folders["idefics3"])
    explicit = HFVLMAdapter(
        folders["idefics3"],
        components="vision=model.vision_model,projector=model.connector,lm=model.text_model",
    )
    assert table.component_map == KNOWN_LAYOUTS.get("idefics3").components
    for a, b in zip(table.extract(images).sites(), explicit.extract(images).sites(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_unknown_family_gets_an_error_naming_its_modules(folders: dict[str, Path]) -> None:
    adapter = HFVLMAdapter(folders["idefics3"])
    entry = KNOWN_LAYOUTS.entry("idefics3")
    KNOWN_LAYOUTS.unregister("idefics3")
    try:
        with pytest.raises(InvalidInputError) as info:
            component_map_for(adapter.model)
    finally:
        KNOWN_LAYOUTS.register("idefics3", entry.value, summary=entry.summary, aliases=entry.aliases)
    message = str(info.value)
    assert "model_type 'idefics3'" in message and "vision=PATH,projector=PATH,lm=PATH" in message
    for module in ("model.vision_model", "model.connector", "model.text_model", "lm_head"):
        assert module in message
    assert "2 blocks at model.vision_model.encoder.layers" in message
    assert "\n" not in message  # the CLI prints it as one line


def test_a_path_that_does_not_exist_is_named(folders: dict[str, Path]) -> None:
    with pytest.raises(
        InvalidInputError, match="no module or parameter 'model.vision_tower'.*model.connector"
    ):
        HFVLMAdapter(
            folders["idefics3"], components="vision=model.vision_tower,projector=model.connector,lm=lm_head"
        )


def test_remote_code_is_refused_unless_allowed(folders: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="ships its own model code .*modeling_tiny_owl.*trust_remote_code"):
        HFVLMAdapter(folders["mplug_owl2"])
    adapter = HFVLMAdapter(folders["mplug_owl2"], trust_remote_code=True)
    assert type(adapter.model).__name__ == "TinyOwlForCausalLM"
    assert isinstance(adapter.processor, TemplateProcessor)  # the checkpoint ships no processor


def test_a_nested_map_carves_the_decoder_without_the_tower(folders: dict[str, Path]) -> None:
    adapter = HFVLMAdapter(folders["mplug_owl2"], trust_remote_code=True)
    assert adapter.component_map.lm == ("model", "lm_head")
    # The decoder's layer stack, not the vision tower's (both hold two blocks).
    assert adapter.lm_blocks is adapter.model.model.layers
    assert adapter.vision_blocks is adapter.model.model.vision_model.encoder.layers
    modules, params = carve_components(adapter.model, adapter.component_map)["lm"]
    assert set(modules) == {"embed_tokens", "layers", "norm", "rotary_emb", "lm_head"} and not params


def test_mplug_owl2_prompts_hold_one_placeholder_per_image(
    folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    adapter = HFVLMAdapter(folders["mplug_owl2"], trust_remote_code=True)
    ids = adapter.prepare(images)["input_ids"]
    assert (ids == -200).sum(1).tolist() == [1, 1]
    text = render_template(adapter.prompt_format, adapter.prompt)
    assert text == f"USER: <|image|>\n{DEFAULT_QUESTION} ASSISTANT:"
    tokens = adapter.tokenizer.convert_ids_to_tokens([int(i) for i in ids[0] if i >= 0])
    assert tokens[:2] == ["USER", ":"] and tokens[-5:] == ["ASSISTANT", ":", "The", "distortion", "is"]


def test_a_user_template_replaces_the_familys(folders: dict[str, Path], images: list[np.ndarray]) -> None:
    adapter = HFVLMAdapter(folders["mplug_owl2"], trust_remote_code=True, prompt_template="{prompt} Rate it:")
    ids = [int(i) for i in adapter.prepare(images[:1])["input_ids"][0]]
    assert ids[0] == -200
    words = adapter.tokenizer.convert_ids_to_tokens(ids[1:])
    assert words[-6:] == ["Rate", "it", ":", "The", "distortion", "is"]
    assert adapter.extraction_settings["prompt_template"] == "{prompt} Rate it:"
    with pytest.raises(ConfigError, match="exactly once"):
        HFVLMAdapter(folders["mplug_owl2"], trust_remote_code=True, prompt_template="USER: ASSISTANT:")


def test_templates_are_checked() -> None:
    assert check_template("Q: {prompt} A:") == "Q: {prompt} A:"
    for bad in ("no field", "{prompt}{prompt}", "{prompt} {answer}"):
        with pytest.raises(ConfigError):
            check_template(bad)
    fmt = PromptFormat(template="[{prompt}]", image_text="<img>")
    assert render_template(fmt, forced_choice_prompt("Q?")) == "[<img>Q?]"


def test_paligemma_puts_the_answer_prefix_after_its_prompt(
    folders: dict[str, Path], images: list[np.ndarray]
) -> None:
    """PaliGemma's processor ends the prompt with a newline; the pre-filled answer must follow it, on
    the answer side of the prefix-LM (token type 1), as the model was trained."""
    adapter = HFVLMAdapter(folders["paligemma"])
    inputs = adapter.prepare(images[:1])
    tokens = adapter.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    prefix = DEFAULT_ANSWER_PREFIX.split()
    assert tokens[-len(prefix) :] == prefix
    assert tokens[: 16 + 1] == ["<image>"] * 16 + ["<bos>"]
    types = inputs["token_type_ids"][0].tolist()
    assert types[-len(prefix) :] == [1] * len(prefix) and set(types[: -len(prefix)]) == {0}
    assert "labels" not in inputs
