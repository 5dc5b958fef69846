"""Typed results: what a command leaves in its run folder, saved with a kind and a version.

Every command that writes a run folder (``perceive``, ``align``, ``distill``, ``calibrate``,
``evaluate``, the label budget, ``demo``) describes its headline numbers as one dataclass with two
class variables, ``KIND`` (what kind of run it is) and ``VERSION`` (of that kind's layout), and saves
it with :func:`write_result`. Readers such as ``iqalens report`` then dispatch on the kind instead of
guessing what a folder holds from file names and JSON keys.

Where it is stored: in the run's ``metrics.json``, which gains two keys in front, ``"kind"`` and
``"version"``, followed by the dataclass's fields (the keys the file always had)::

    {"kind": "perceive", "version": 1, "model_id": "...", "forced_choice": {...}, ...}

Not a new file, because ``metrics.json`` already *was* each command's result: every reader of it
(scripts, notebooks, the demo, the tests) keeps working unchanged, and no number is stored twice. A
``metrics.json`` without ``"kind"`` was written before typed results existed, or is a training
checkpoint's interim file (``align`` writes one before its before/after diagnostics); readers treat
those as legacy (see :mod:`iqalens.report.legacy`). The typed result is written last, so a folder
with a kind holds a finished run.

Compatibility rules: within one version a writer may add fields (readers ignore keys they do not
know, and fields missing from a file take their defaults); a change that old readers would misread
bumps ``VERSION``, and a reader refuses a newer version with :class:`ResultVersionError` instead of
misreading it. A result class may define ``upgrade(data, version) -> data`` to read older versions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from iqalens.errors import InvalidInputError
from iqalens.runs import write_json

__all__ = [
    "ENVELOPE_KEYS",
    "RESULT_FILE",
    "Result",
    "ResultError",
    "ResultVersionError",
    "StoredResult",
    "UnknownResultKindError",
    "decode_result",
    "optional",
    "peek_result",
    "read_result",
    "result_data",
    "write_result",
]

#: The file of a run folder that holds its typed result.
RESULT_FILE = "metrics.json"
#: The keys :func:`write_result` adds in front of the result's fields.
ENVELOPE_KEYS = ("kind", "version")
#: Run files larger than this are refused rather than read into memory.
MAX_BYTES = 64 * 1024 * 1024
#: Field metadata key: leave the field out of the file while its value is None (see :func:`optional`).
_OMIT_NONE = "iqalens_omit_none"


class ResultError(InvalidInputError):
    """A typed result that cannot be read: malformed, or missing a field it needs (names the file)."""


class UnknownResultKindError(ResultError):
    """A result of a kind the reader does not know (the message lists the kinds it expected)."""


class ResultVersionError(ResultError):
    """A result written by a newer iqalens, in a layout this one cannot read."""


@runtime_checkable
class Result(Protocol):
    """What :func:`write_result` accepts: a dataclass instance with ``KIND`` and ``VERSION``."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int]


R = TypeVar("R")


def optional(**kwargs: Any) -> Any:
    """A dataclass field that defaults to None and is left out of the file while it is None.

    For fields only some writers of a kind fill in (``calibrate --method finetune`` records more
    than the other methods), so that the others' files keep exactly the keys they always had.
    """
    return field(default=None, metadata={_OMIT_NONE: True}, **kwargs)


def _check_type(cls: type) -> None:
    kind, version = getattr(cls, "KIND", None), getattr(cls, "VERSION", None)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__}.KIND must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"{cls.__name__}.VERSION must be an int >= 1")
    clash = [f.name for f in dataclasses.fields(cls) if f.name in ENVELOPE_KEYS]
    if clash:
        raise TypeError(f"{cls.__name__}: a result field may not be called {clash[0]!r}")


def result_data(result: Any) -> dict[str, Any]:
    """The result's fields as a dict, in field order (shallow: field values are used as they are)."""
    return {
        f.name: getattr(result, f.name)
        for f in dataclasses.fields(result)
        if not (f.metadata.get(_OMIT_NONE) and getattr(result, f.name) is None)
    }


def write_result(folder: str | os.PathLike[str], result: Any) -> Path:
    """Save ``result`` as ``folder/metrics.json`` (atomically): ``kind``, ``version``, then its fields."""
    if isinstance(result, type) or not dataclasses.is_dataclass(result):
        raise TypeError(f"write_result needs a dataclass instance, got {type(result).__name__}")
    cls = type(result)
    _check_type(cls)
    envelope = {"kind": cls.KIND, "version": cls.VERSION, **result_data(result)}  # type: ignore[attr-defined]
    return write_json(Path(folder) / RESULT_FILE, envelope)


@dataclass(frozen=True)
class StoredResult:
    """A typed result as read from disk, not yet decoded: its kind, version and fields."""

    path: Path
    kind: str
    version: int
    data: dict[str, Any]

    def decode(self, *types: type[R]) -> R:
        """The result as whichever of ``types`` has this kind (see :func:`read_result`)."""
        by_kind = {}
        for cls in types:
            _check_type(cls)
            by_kind[cls.KIND] = cls  # type: ignore[attr-defined]
        cls = by_kind.get(self.kind)
        if cls is None:
            known = ", ".join(sorted(by_kind)) or "none"
            raise UnknownResultKindError(
                f"{self.path} holds a result of unknown kind {self.kind!r} (expected: {known})"
            )
        newest: int = cls.VERSION  # type: ignore[attr-defined]
        data = self.data
        if self.version > newest:
            raise ResultVersionError(
                f"{self.path} holds a {self.kind!r} result of version {self.version}, written by a newer "
                f"iqalens; this one reads up to version {newest}: upgrade iqalens to read it"
            )
        if self.version < newest:
            upgrade = getattr(cls, "upgrade", None)
            if upgrade is None:
                raise ResultError(
                    f"{self.path} holds a {self.kind!r} result of version {self.version}, which this "
                    f"iqalens (version {newest}) cannot read"
                )
            data = upgrade(dict(data), self.version)
        return decode_result(cls, data, str(self.path))


def peek_result(folder: str | os.PathLike[str]) -> StoredResult | None:
    """The typed result of a run folder, undecoded; None when it has none (no ``metrics.json``, or
    one without a kind: a legacy or unfinished run). :class:`ResultError` when the file is unreadable
    JSON or its kind and version are malformed."""
    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_BYTES:
        raise ResultError(f"{path} is too large to be a run's result")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "kind" not in data:
        return None
    kind, version = data.pop("kind"), data.pop("version", None)
    if not isinstance(kind, str) or not kind:
        raise ResultError(f"{path}: 'kind' must be a non-empty string, got {kind!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ResultError(f"{path}: 'version' must be an integer >= 1, got {version!r}")
    return StoredResult(path, kind, version, data)


def read_result(folder: str | os.PathLike[str], *types: type[R]) -> R:
    """The typed result of ``folder``, decoded as whichever of ``types`` has its kind.

    Raises :class:`ResultError` when the folder has no typed result, :class:`UnknownResultKindError`
    when its kind is none of ``types``', and :class:`ResultVersionError` when it was written by a newer
    iqalens in a layout this one cannot read.
    """
    stored = peek_result(folder)
    if stored is None:
        where = Path(folder) / RESULT_FILE
        raise ResultError(f"{where} holds no typed result (no 'kind'): not a finished run")
    return stored.decode(*types)


def decode_result(cls: type[R], data: Mapping[str, Any], source: str = "result") -> R:
    """``cls`` built from ``data``: keys ``cls`` does not know are ignored, missing fields take their
    defaults, and a missing field without a default is a :class:`ResultError` naming it."""
    if not isinstance(data, Mapping):
        raise ResultError(f"{source}: expected a JSON object, got {type(data).__name__}")
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    missing = [
        f.name
        for f in fields
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ResultError(f"{source} has no {', '.join(repr(m) for m in missing)} (not a complete result)")
    return cls(**{f.name: data[f.name] for f in fields if f.name in data})
