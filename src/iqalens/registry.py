"""One registry pattern for every extension point (model families, teachers, scorers, report kinds).

The distortion table (:mod:`iqalens.distortions._registry`) showed the shape that works: entries are
registered once under a unique name, registration validates, and a failed look-up names everything
that exists. :class:`Registry` is that shape made generic, so that help texts, ``--list`` outputs and
error messages are generated from the same table the code dispatches on, and adding a teacher or a
model family is one module plus one :meth:`Registry.register` call.

Entries can be registered *lazily*: ``register_lazy(name, "package.module:attribute", summary)`` keeps
only the import path, so listing what exists (for ``--help``) imports neither torch nor transformers.
The object is imported on first :meth:`Registry.get`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from iqalens.errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Entry", "Registry"]


@dataclass
class Entry(Generic[T]):
    """One registered name: what it is (``summary``) and how to get it (an object or an import path)."""

    name: str
    summary: str
    target: str | None = None  # "module:attribute", imported on first use
    value: T | None = None
    aliases: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def load(self) -> T:
        """The registered object, importing it the first time if it was registered lazily."""
        if self.value is None:
            if self.target is None:  # pragma: no cover - register() forbids it
                raise RuntimeError(f"registry entry {self.name!r} has neither a value nor a target")
            module, _, attribute = self.target.partition(":")
            obj = importlib.import_module(module)
            for part in attribute.split("."):
                obj = getattr(obj, part)
            self.value = obj  # type: ignore[assignment]
        return self.value  # type: ignore[return-value]


class Registry(Generic[T]):
    """A table of named extensions of one kind (``kind`` is used in messages, e.g. "teacher")."""

    def __init__(self, kind: str, normalise: Callable[[str], str] | None = None) -> None:
        self.kind = kind
        self._normalise = normalise or (lambda name: name.strip().lower().replace("-", "_"))
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        name: str,
        value: T | None = None,
        *,
        summary: str = "",
        target: str | None = None,
        aliases: tuple[str, ...] = (),
        replace: bool = False,
        **extra: str,
    ) -> Entry[T]:
        """Add ``name`` (an object ``value``, or a lazy ``target`` "module:attribute").

        Names and aliases must be unique unless ``replace`` is set (a user overriding a built-in).
        """
        if (value is None) == (target is None):
            raise ValueError(f"{self.kind} {name!r}: give exactly one of value or target")
        if target is not None and ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attribute', got {target!r}")
        key = self._normalise(name)
        if not key or not key.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"{self.kind} name must be letters, digits, '_', '-' or '.', got {name!r}")
        keys = (key, *(self._normalise(a) for a in aliases))
        if not replace:
            taken = [k for k in keys if k in self._entries or k in self._aliases]
            if taken:
                raise ValueError(f"{self.kind} {taken[0]!r} registered twice")
        else:
            self.unregister(key, missing_ok=True)
        entry: Entry[T] = Entry(key, summary, target, value, tuple(keys[1:]), dict(extra))
        self._entries[key] = entry
        for alias in entry.aliases:
            self._aliases[alias] = key
        return entry

    def register_lazy(self, name: str, target: str, summary: str = "", **kwargs: str) -> Entry[T]:
        """:meth:`register` with an import path instead of an object."""
        return self.register(name, target=target, summary=summary, **kwargs)  # type: ignore[arg-type]

    def unregister(self, name: str, missing_ok: bool = False) -> None:
        """Remove ``name`` (tests register throwaway entries and clean up with this)."""
        key = self._aliases.get(self._normalise(name), self._normalise(name))
        entry = self._entries.pop(key, None)
        if entry is None:
            if not missing_ok:
                raise self._unknown(name)
            return
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` or an alias; an error listing what exists otherwise."""
        key = self._normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise self._unknown(name)
        return self._entries[key]

    def get(self, name: str) -> T:
        """The object registered as ``name`` (imported on first use)."""
        return self.entry(name).load()

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (help texts list them in this order)."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._normalise(name)
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self, sep: str = ", ") -> str:
        """``name (summary), ...``: what help texts and error messages print."""
        return sep.join(f"{e.name} ({e.summary})" if e.summary else e.name for e in self)

    def _unknown(self, name: str) -> UnknownNameError:
        known = ", ".join(self._entries) or "none registered"
        return UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}")
