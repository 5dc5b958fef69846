"""The generic registry behind every extension point (teachers, model families, scorers, reports)."""

from __future__ import annotations

import sys

import pytest

from iqalens.errors import IqalensError, UnknownNameError
from iqalens.registry import Registry


def test_lookup_by_name_alias_and_spelling() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("fast-one", 1, summary="the fast one", aliases=("quick",))
    assert reg.get("fast_one") == 1 and reg.get("FAST-ONE") == 1 and reg.get("quick") == 1
    assert "quick" in reg and "slow" not in reg and 3 not in reg
    assert reg.names() == ("fast_one",)
    assert reg.describe() == "fast_one (the fast one)"


def test_unknown_name_lists_what_exists_and_is_a_user_error() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    reg.register("b", 2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c'; known: a, b") as info:
        reg.get("c")
    assert isinstance(info.value, IqalensError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown widget 'c'; known: a, b"  # no KeyError quotes


def test_registration_validates() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1, aliases=("x",))
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("A", 2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("b", 2, aliases=("x",))
    with pytest.raises(ValueError, match="exactly one"):
        reg.register("c")
    with pytest.raises(ValueError, match="module:attribute"):
        reg.register_lazy("d", "no_colon")
    with pytest.raises(ValueError, match="letters"):
        reg.register("bad name!", 3)
    reg.register("a", 5, replace=True)
    assert reg.get("a") == 5 and "x" not in reg


def test_lazy_entry_is_imported_on_first_use_only() -> None:
    reg: Registry[object] = Registry("thing")
    sys.modules.pop("json.tool", None)
    reg.register_lazy("tool", "json.tool:main", summary="json's CLI")
    assert "json.tool" not in sys.modules  # listing does not import
    assert reg.describe() == "tool (json's CLI)"
    main = reg.get("tool")
    assert "json.tool" in sys.modules and main is sys.modules["json.tool"].main


def test_unregister() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1, aliases=("x",))
    reg.unregister("x")
    assert len(reg) == 0 and "x" not in reg
    with pytest.raises(UnknownNameError):
        reg.unregister("a")
    reg.unregister("a", missing_ok=True)
