"""Building settings dataclasses from plain dicts (a run's ``config.json``, a model's JSON file).

Unknown keys are an error rather than silently dropped: a misspelt or outdated setting would
otherwise leave the default in force without anyone noticing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from iqalens.errors import InvalidInputError

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)``; ValueError ``unknown {what} config key(s): a, b`` for keys that are not fields.

    Conversions (nested dicts, lists to tuples) are left to ``cls.__post_init__``.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"unknown {what} config key(s): {', '.join(unknown)}")
    return cls(**data)
