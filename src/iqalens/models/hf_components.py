"""Where the vision encoder, the projector and the language model sit inside a Hugging Face model.

The perception diagnostics and ``iqalens align`` need three things of a multimodal LLM: the vision
encoder (and its layer stack), the projector, and the language model (and its layer stack). A
:class:`ComponentMap` names them by their module paths inside the loaded model, so any model whose
components can be named works without adapter code of its own::

    vision=model.vision_model,projector=model.connector,lm=model.text_model+lm_head

Each key takes one path or several joined by ``+`` (a path may name a parameter, such as
LLaVA-NeXT's ``model.image_newline``). What each one is used for:

- ``vision``: the first path is the vision tower; its longest stack of identical blocks gives the
  ``vision.k`` sites. ``align`` trains all paths as the ``vision_encoder`` component.
- ``projector``: trained as the ``projector`` component. The ``projector`` *site* is read where the
  language model receives the visual tokens (see :mod:`iqalens.models.hf_vlm`), which is the
  projector's output after the family's own packing.
- ``lm``: the first path is the decoder the model calls with ``inputs_embeds`` (its block stack
  gives the ``lm.l`` sites); further paths (``lm_head``) only join the ``language_model`` component.

Paths may nest: a path inside another component's path belongs to the more specific one (mPLUG-Owl2's
``model`` holds the LLaMA layers *and* ``model.vision_model``; ``lm=model`` then means the decoder
without the vision parts). Two optional keys describe inputs the map's model needs:
``image_token_id=N`` (the placeholder id in ``input_ids``, e.g. -200 for LLaVA-1.5-original-style
code, when the config does not name it) and ``image_input=NAME`` (the forward argument that takes
the pixels, e.g. ``images``; default ``pixel_values``).

**Known maps** (:data:`KNOWN_LAYOUTS`, keyed by the config's ``model_type``) cover the families
iqalens is tested on; a model type not in the table is tried with the standard transformers layout
(``model.vision_tower`` or ``model.visual``, ``model.multi_modal_projector``,
``model.language_model``); if that is absent too, the error lists the modules the model has, to
help write the map. A table row may also carry a prompt template and input conventions for families
without a chat template (:class:`ModelLayout`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.registry import Registry

if TYPE_CHECKING:  # the help texts import this module: keep it free of torch
    from torch import nn

__all__ = [
    "COMPONENT_KEYS",
    "KNOWN_LAYOUTS",
    "ComponentMap",
    "ModelLayout",
    "ResolvedComponents",
    "block_list",
    "carve_components",
    "component_map_for",
    "describe_modules",
    "image_token_id",
    "layout_for",
    "resolve_components",
    "with_map",
]

#: The three keys every map names.
COMPONENT_KEYS: tuple[str, ...] = ("vision", "projector", "lm")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class ComponentMap:
    """Module paths of the three components, and the input conventions a model may need."""

    vision: tuple[str, ...]
    projector: tuple[str, ...]
    lm: tuple[str, ...]
    image_token_id: int | None = None
    image_input: str = "pixel_values"

    @classmethod
    def parse(cls, text: str) -> ComponentMap:
        """``vision=PATH,projector=PATH,lm=PATH[+PATH...][,image_token_id=N][,image_input=NAME]``."""
        values: dict[str, str] = {}
        for item in (s.strip() for s in text.split(",")):
            if not item:
                continue
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not value:
                raise ConfigError(f"component map entry {item!r} is not KEY=VALUE")
            if key not in (*COMPONENT_KEYS, "image_token_id", "image_input"):
                raise ConfigError(
                    f"unknown component map key {key!r}; use vision, projector, lm "
                    "(and optionally image_token_id, image_input)"
                )
            if key in values:
                raise ConfigError(f"component map key {key!r} given twice")
            values[key] = value
        missing = [k for k in COMPONENT_KEYS if k not in values]
        if missing:
            raise ConfigError(
                f"component map {text!r} lacks {', '.join(missing)} (needs vision, projector, lm)"
            )
        paths = {k: _paths(values[k]) for k in COMPONENT_KEYS}
        token: int | None = None
        if "image_token_id" in values:
            try:
                token = int(values["image_token_id"])
            except ValueError:
                raise ConfigError(
                    f"image_token_id must be an integer, got {values['image_token_id']!r}"
                ) from None
        image_input = values.get("image_input", "pixel_values")
        if not image_input.isidentifier():
            raise ConfigError(f"image_input must be an argument name, got {image_input!r}")
        return cls(paths["vision"], paths["projector"], paths["lm"], token, image_input)

    def text(self) -> str:
        """The map in the form :meth:`parse` reads (saved with aligned checkpoints)."""
        parts = [f"{k}={'+'.join(getattr(self, k))}" for k in COMPONENT_KEYS]
        if self.image_token_id is not None:
            parts.append(f"image_token_id={self.image_token_id}")
        if self.image_input != "pixel_values":
            parts.append(f"image_input={self.image_input}")
        return ",".join(parts)

    def paths(self) -> dict[str, tuple[str, ...]]:
        """``{"vision": (...), "projector": (...), "lm": (...)}``."""
        return {k: getattr(self, k) for k in COMPONENT_KEYS}


def _paths(value: str) -> tuple[str, ...]:
    out = tuple(p.strip() for p in value.split("+") if p.strip())
    bad = [p for p in out if not _PATH.fullmatch(p)]
    if not out or bad:
        raise ConfigError(
            f"not a module path: {bad[0] if bad else value!r} (use dotted names, e.g. model.layers)"
        )
    return out


@dataclass(frozen=True)
class ModelLayout:
    """One row of :data:`KNOWN_LAYOUTS`: a family's component map and how its prompts are built.

    ``template``: the prompt template for a family without a chat template (``{prompt}`` is the
    user turn); ``image_text``: what an image part becomes in a template-rendered prompt;
    ``answer_after_prompt``: the processor closes the prompt itself (PaliGemma appends ``\\n``), so
    a pre-filled answer prefix is appended to its output as answer-side tokens.
    """

    components: ComponentMap
    template: str | None = None
    image_text: str = ""
    answer_after_prompt: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def _standard(projector: str = "model.multi_modal_projector", *extra: str) -> ComponentMap:
    return ComponentMap(("model.vision_tower",), (projector, *extra), ("model.language_model", "lm_head"))


#: Known component maps and prompt conventions, keyed by the config's ``model_type``.
KNOWN_LAYOUTS: Registry[ModelLayout] = Registry("model layout")
KNOWN_LAYOUTS.register("llava", ModelLayout(_standard()), summary="LLaVA-1.5 (transformers)")
KNOWN_LAYOUTS.register(
    "llava_next",
    ModelLayout(_standard("model.multi_modal_projector", "model.image_newline")),
    summary="LLaVA-NeXT",
    aliases=("llava_onevision",),
)
KNOWN_LAYOUTS.register(
    "qwen2_vl",
    ModelLayout(
        ComponentMap(("model.visual",), ("model.visual.merger",), ("model.language_model", "lm_head"))
    ),
    summary="Qwen2-VL / Qwen2.5-VL (the patch merger is the projector)",
    aliases=("qwen2_5_vl",),
)
KNOWN_LAYOUTS.register("internvl", ModelLayout(_standard()), summary="InternVL3 / 3.5 (-hf checkpoints)")
KNOWN_LAYOUTS.register(
    "idefics3",
    ModelLayout(ComponentMap(("model.vision_model",), ("model.connector",), ("model.text_model", "lm_head"))),
    summary="Idefics3 / SmolVLM",
    aliases=("smolvlm",),
)
KNOWN_LAYOUTS.register("gemma3", ModelLayout(_standard()), summary="Gemma 3")
KNOWN_LAYOUTS.register(
    "paligemma",
    ModelLayout(_standard(), template="{prompt}", image_text="<image>", answer_after_prompt=True),
    summary="PaliGemma (no chat template; the answer follows the processor's prompt)",
)
KNOWN_LAYOUTS.register(
    "mplug_owl2",
    ModelLayout(
        ComponentMap(
            ("model.vision_model",),
            ("model.visual_abstractor",),
            ("model", "lm_head"),
            image_token_id=-200,
            image_input="images",
        ),
        template="USER: {prompt} ASSISTANT:",
        image_text="<|image|>\n",
    ),
    summary="mPLUG-Owl2 and Q-Instruct / Q-Align built on it (remote code)",
)


def component_map_for(model: Any, given: str | ComponentMap | None = None) -> ComponentMap:
    """The map of ``model``: ``given``, else the known map of its ``model_type``, else the standard one.

    Raises :class:`InvalidInputError` naming the modules found when none applies.
    """
    if isinstance(given, str):
        return ComponentMap.parse(given)
    if given is not None:
        return given
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type in KNOWN_LAYOUTS:
        return KNOWN_LAYOUTS.get(model_type).components
    inner = getattr(model, "model", None)
    vision = next((n for n in ("vision_tower", "visual") if hasattr(inner, n)), None)
    if vision is not None and hasattr(inner, "language_model"):
        projector = "model.multi_modal_projector" if hasattr(inner, "multi_modal_projector") else None
        if projector is None and hasattr(getattr(inner, vision), "merger"):
            projector = f"model.{vision}.merger"
        if projector is not None:
            return ComponentMap((f"model.{vision}",), (projector,), ("model.language_model", "lm_head"))
    raise InvalidInputError(
        f"{type(model).__name__} (model_type {model_type!r}) is not in the table of known component maps "
        f"({', '.join(KNOWN_LAYOUTS.names())}) and has no standard layout; give a component map "
        f"vision=PATH,projector=PATH,lm=PATH naming its modules. Modules found: {describe_modules(model)}"
    )


def describe_modules(model: nn.Module, limit: int = 24) -> str:
    """The model's top modules (and those of a wrapper such as ``model``) with their layer stacks."""
    from torch import nn

    items: list[str] = []
    for name, child in model.named_children():
        grand = list(child.named_children())
        expand = len(grand) >= 2 and not isinstance(child, nn.ModuleList)
        for sub_name, sub in grand if expand else [("", child)]:
            path = f"{name}.{sub_name}" if sub_name else name
            items.append(_describe(path, sub))
    shown = items[:limit] + ([f"... {len(items) - limit} more"] if len(items) > limit else [])
    return "; ".join(shown)


def _describe(path: str, module: nn.Module) -> str:
    from torch import nn

    if isinstance(module, nn.ModuleList):
        return f"{path} ({len(module)} x {type(module[0]).__name__})" if len(module) else f"{path} (empty)"
    try:
        blocks = block_list(module)
    except InvalidInputError:
        return f"{path} ({type(module).__name__})"
    where = next(n for n, m in module.named_modules() if m is blocks)
    return f"{path} ({type(module).__name__}; {len(blocks)} blocks at {path}.{where})"


def block_list(module: nn.Module, exclude: Iterable[nn.Module] = ()) -> nn.ModuleList:
    """The longest ModuleList of identical blocks inside ``module`` (itself included), outside ``exclude``.

    Why generic: CLIP/SigLIP name it ``encoder.layers``, InternViT ``encoder.layer``, Qwen's ViT
    ``blocks``, every decoder ``layers``. ``exclude`` keeps another component's stack out (mPLUG-Owl2's
    ``model`` holds the vision tower's layers next to the decoder's).
    """
    from torch import nn

    skip = {id(m) for e in exclude for m in e.modules()}
    best: nn.ModuleList | None = None
    for sub in module.modules():
        if id(sub) in skip or not isinstance(sub, nn.ModuleList) or len(sub) == 0:
            continue
        if len({type(m) for m in sub}) == 1 and (best is None or len(sub) > len(best)):
            best = sub
    if best is None:
        raise InvalidInputError(f"no layer stack found in {type(module).__name__}")
    return best


def _lookup(model: nn.Module, path: str) -> Any:
    try:
        return model.get_submodule(path)
    except AttributeError:
        try:
            return model.get_parameter(path)
        except AttributeError:
            raise InvalidInputError(
                f"{type(model).__name__} has no module or parameter {path!r}; modules found: "
                f"{describe_modules(model)}"
            ) from None


@dataclass
class ResolvedComponents:
    """The modules a :class:`ComponentMap` names in one loaded model."""

    map: ComponentMap
    vision_tower: nn.Module
    vision_blocks: nn.ModuleList
    language_model: nn.Module
    lm_blocks: nn.ModuleList


def resolve_components(model: nn.Module, cmap: ComponentMap) -> ResolvedComponents:
    """Look up the map's first vision and lm paths and their block stacks (clear errors otherwise)."""
    from torch import nn

    modules = {k: [_lookup(model, p) for p in paths] for k, paths in cmap.paths().items()}
    _check_disjoint(cmap)
    tower, decoder = modules["vision"][0], modules["lm"][0]
    for key, module in (("vision", tower), ("lm", decoder)):
        if not isinstance(module, nn.Module):
            raise InvalidInputError(
                f"the first {key} path {cmap.paths()[key][0]!r} names a parameter, not a module"
            )
    if isinstance(decoder, nn.ModuleList):
        raise InvalidInputError(
            f"the first lm path {cmap.lm[0]!r} is a layer list; name the decoder module that holds it "
            "(the module the model calls with inputs_embeds)"
        )
    others = [m for k in ("vision", "projector") for m in modules[k] if isinstance(m, nn.Module)]
    vision_rest = [m for m in modules["projector"] if isinstance(m, nn.Module)]
    return ResolvedComponents(
        map=cmap,
        vision_tower=tower,
        vision_blocks=block_list(tower, exclude=vision_rest),
        language_model=decoder,
        lm_blocks=block_list(decoder, exclude=others),
    )


def _check_disjoint(cmap: ComponentMap) -> None:
    seen: dict[str, str] = {}
    for key, paths in cmap.paths().items():
        for p in paths:
            if p in seen and seen[p] != key:
                raise ConfigError(f"path {p!r} is in both {seen[p]} and {key}; components must be disjoint")
            seen[p] = key


def carve_components(
    model: nn.Module, cmap: ComponentMap
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per component key: (modules, parameters) that make it up, disjoint from the other components.

    A path that holds another component's path (more specific) is split into its children, down to
    the paths of the other component, which are left out: ``lm=model`` next to
    ``vision=model.vision_model`` gives the decoder's embedding, layers and norm without the tower.
    Names are the last path segments (the full path with ``_`` where that would clash).
    """
    _check_disjoint(cmap)
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for key, paths in cmap.paths().items():
        foreign = [p for k, ps in cmap.paths().items() if k != key for p in ps]
        modules: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for path in paths:
            _carve(model, path, foreign, modules, params)
        out[key] = (_short_names(modules), _short_names(params))
    return out


def _carve(
    model: nn.Module, path: str, foreign: Sequence[str], modules: dict[str, Any], params: dict[str, Any]
) -> None:
    from torch import nn

    target = _lookup(model, path)
    if not isinstance(target, nn.Module):
        params[path] = target
        return
    inside = [f for f in foreign if f.startswith(path + ".")]
    if not inside:
        modules[path] = target
        return
    for name, child in target.named_children():
        sub = f"{path}.{name}"
        if sub in foreign:
            continue
        if any(f.startswith(sub + ".") for f in inside):
            _carve(model, sub, foreign, modules, params)
        else:
            modules[sub] = child
    for name, param in target.named_parameters(recurse=False):
        if f"{path}.{name}" not in foreign:
            params[f"{path}.{name}"] = param


def _short_names(items: dict[str, Any]) -> dict[str, Any]:
    last = [p.rpartition(".")[2] for p in items]
    return {
        (tail if last.count(tail) == 1 else path.replace(".", "_")): value
        for (path, value), tail in zip(items.items(), last, strict=True)
    }


def image_token_id(model: Any, cmap: ComponentMap | None = None) -> int:
    """The id that marks image places in ``input_ids``: the map's, else the config's."""
    if cmap is not None and cmap.image_token_id is not None:
        return cmap.image_token_id
    config = model.config
    token = getattr(config, "image_token_id", None)
    if token is None:
        token = getattr(config, "image_token_index", None)
    if token is None:
        raise InvalidInputError(
            f"{type(model).__name__}: the config names no image token id; "
            "give image_token_id in the component map"
        )
    return int(token)


def layout_for(model_type: str) -> ModelLayout | None:
    """The table row of ``model_type``, if any."""
    return KNOWN_LAYOUTS.get(model_type) if model_type in KNOWN_LAYOUTS else None


def with_map(layout: ModelLayout | None, cmap: ComponentMap | None) -> ModelLayout | None:
    """``layout`` with a user's map instead of the table's (the prompt conventions are kept)."""
    if cmap is None:
        return layout
    return replace(layout, components=cmap) if layout is not None else ModelLayout(cmap)
