"""``--teacher SPEC``: which teacher backend, and its argument.

Every teacher backend is an entry of :data:`TEACHERS` (a :class:`~iqalens.registry.Registry`):
:func:`make_teacher`, the help text of ``iqalens teach`` (:func:`teachers_help`), the unknown-spec
error and :func:`list_teachers` are all generated from it. A spec is ``NAME:ARG``
(``hf:Qwen/Qwen2-VL-2B-Instruct``) or a bare ``NAME`` for a backend that takes no argument
(``classical``).

**Adding a backend** is one module (a class implementing :class:`~iqalens.leaf.teachers.base.Teacher`)
plus one register call::

    TEACHERS.register_lazy(
        "mine", "my_package.my_teacher:MyTeacher", "what it is", arg="PATH", options="device batch_size"
    )

The registered object is called as ``obj(arg, **options)`` when the entry has an ``arg``, as
``obj(**options)`` otherwise, and returns a teacher. The entry's string options (``extra``):

- ``arg``: the placeholder of ``NAME:ARG`` in help texts (``PATH_OR_ID``); without it the backend is
  addressed by its bare name;
- ``pattern``: a regular expression the argument must match in full (default: any non-empty text);
- ``options``: space-separated names of the keyword options the backend accepts (``workers``,
  ``device``, ...); :func:`make_teacher` passes those that are set and ignores the others;
- ``note``: a note after the spec in help texts (``NIQE+BRISQUE, offline``);
- ``arg_optional``: any non-empty value makes the argument optional (``fr`` or ``fr:ms_ssim,gmsd``):
  the object is then called with ``""`` when it is left out.

This module imports no backend: listing the teachers for ``--help`` stays free of torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple

from iqalens.errors import InvalidInputError
from iqalens.registry import Entry, Registry

if TYPE_CHECKING:
    from iqalens.leaf.teachers.base import Teacher

__all__ = ["TEACHERS", "TeacherInfo", "list_teachers", "make_teacher", "teachers_help"]

#: The teacher backends :func:`make_teacher` knows (see the module doc for the entries' options).
TEACHERS: Registry[Any] = Registry("teacher")

TEACHERS.register_lazy(
    "classical",
    "iqalens.leaf.teachers.classical:ClassicalTeacher",
    "NIQE + BRISQUE no-reference measures mapped to five quality levels (offline, no model)",
    note="NIQE+BRISQUE, offline",
    options="workers",
)
TEACHERS.register_lazy(
    "fr",
    "iqalens.leaf.teachers.fullref:FRTeacher",
    "full-reference measures (GMSD, VSI, VIF by default; any of evaluation.fullref) against each "
    "image's reference (offline; synthetic benchmarks and other data with references only)",
    arg="METRICS",
    arg_optional="yes",
    note="reference-aware, offline; needs a manifest",
    options="workers manifests references pair_mode",
)
TEACHERS.register_lazy(
    "hf",
    "iqalens.leaf.teachers.hf:HFTeacher",
    "a Hugging Face multimodal LLM run locally (a hub id or a local folder)",
    arg="PATH_OR_ID",
    options="device dtype batch_size trust_remote_code components prompt_template max_pixels device_map "
    "quantization",
)
TEACHERS.register_lazy(
    "openai",
    "iqalens.leaf.teachers.openai_compat:from_spec",
    "a multimodal LLM behind an OpenAI-compatible server (vLLM, SGLang, ...)",
    arg="MODEL@BASE_URL",
    pattern=".*@.*",
    options="max_concurrency max_deferred_rounds api_key",
)


class TeacherInfo(NamedTuple):
    """What :func:`list_teachers` reports of one backend."""

    name: str
    summary: str
    usage: str  # the spec as help texts print it ('classical', 'hf:PATH_OR_ID')
    options: tuple[str, ...]  # the keyword options it accepts


def list_teachers() -> list[TeacherInfo]:
    """Every registered teacher backend (nothing is imported)."""
    return [TeacherInfo(e.name, e.summary, _usage(e), _options(e)) for e in TEACHERS]


def teachers_help() -> str:
    """The accepted teacher specs with their notes, for help texts."""
    notes = [f" ({e.extra['note']})" if "note" in e.extra else "" for e in TEACHERS]
    return _join([_usage(e) + note for e, note in zip(TEACHERS, notes, strict=True)], ", or ")


def make_teacher(spec: str, **options: Any) -> Teacher:
    """Build the teacher of ``spec`` (``NAME`` or ``NAME:ARG``, see :data:`TEACHERS`), e.g. ``classical``,
    ``hf:Qwen/Qwen2-VL-2B-Instruct`` or ``openai:Qwen/Qwen2-VL-7B-Instruct@http://gpu-node:8000/v1``.

    ``options`` are the backends' keyword options (``workers``, ``device``, ``dtype``, ``batch_size``,
    ``max_concurrency``, ``max_deferred_rounds``, ``api_key``, ...); each backend takes those it
    declares, options set to None are left at the backend's default, and the others are ignored.
    An unknown name or a missing or malformed argument raises :class:`InvalidInputError`.
    """
    name, _, arg = spec.partition(":")
    entry = TEACHERS.entry(name) if name in TEACHERS else None
    if entry is None or not _accepts(entry, arg):
        usages = _join([_usage(e) for e in TEACHERS], " or ")
        raise InvalidInputError(f"unknown teacher spec {spec!r}; use {usages}")
    picked = {k: options[k] for k in _options(entry) if options.get(k) is not None}
    factory = entry.load()
    return factory(arg, **picked) if "arg" in entry.extra else factory(**picked)


def _accepts(entry: Entry[Any], arg: str) -> bool:
    if "arg" not in entry.extra:
        return True  # a bare name; anything after a ':' is ignored, as it always was
    if entry.extra.get("arg_optional") and not arg:
        return True
    return re.fullmatch(entry.extra.get("pattern", ".+"), arg, flags=re.DOTALL) is not None and bool(arg)


def _usage(entry: Entry[Any]) -> str:
    if "arg" not in entry.extra:
        return f"'{entry.name}'"
    if entry.extra.get("arg_optional"):
        return f"'{entry.name}[:{entry.extra['arg']}]'"
    return f"'{entry.name}:{entry.extra['arg']}'"


def _options(entry: Entry[Any]) -> tuple[str, ...]:
    return tuple(entry.extra.get("options", "").split())


def _join(items: list[str], last: str) -> str:
    """``a, b<last>c``: ``last`` is ", or " in help texts, " or " in errors."""
    return last.join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)
