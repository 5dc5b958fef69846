"""Typed results (``iqalens.results``): saved with a kind and a version, read back by kind."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from iqalens.errors import IqalensError
from iqalens.results import (
    ResultError,
    ResultVersionError,
    UnknownResultKindError,
    optional,
    peek_result,
    read_result,
    write_result,
)


@dataclass(kw_only=True)
class Widget:
    KIND: ClassVar[str] = "widget"
    VERSION: ClassVar[int] = 2

    size: int
    parts: list[str] = field(default_factory=list)
    note: str | None = optional()


@dataclass(kw_only=True)
class Gadget:
    KIND: ClassVar[str] = "gadget"
    VERSION: ClassVar[int] = 1

    colour: str


def test_round_trip_keeps_the_file_layout(tmp_path: Path) -> None:
    path = write_result(tmp_path, Widget(size=3, parts=["a", "b"]))
    assert path == tmp_path / "metrics.json"
    on_disk = json.loads(path.read_text())
    # kind and version in front, then the fields in order; an optional field left None is left out
    assert list(on_disk.items()) == [("kind", "widget"), ("version", 2), ("size", 3), ("parts", ["a", "b"])]
    assert read_result(tmp_path, Widget) == Widget(size=3, parts=["a", "b"])
    write_result(tmp_path, Widget(size=3, note="n"))
    assert json.loads(path.read_text())["note"] == "n"
    # the reader picks the class by kind
    assert read_result(tmp_path, Gadget, Widget) == Widget(size=3, note="n")


def test_added_keys_are_ignored_and_missing_ones_take_defaults(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "widget", "version": 2, "size": 1, "new": 5}))
    assert read_result(tmp_path, Widget) == Widget(size=1)
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "widget", "version": 2, "parts": []}))
    with pytest.raises(ResultError, match="has no 'size'"):
        read_result(tmp_path, Widget)


def test_unknown_kind_newer_version_and_no_kind_are_clear_user_errors(tmp_path: Path) -> None:
    write_result(tmp_path, Gadget(colour="red"))
    with pytest.raises(UnknownResultKindError, match=r"unknown kind 'gadget' \(expected: widget\)") as info:
        read_result(tmp_path, Widget)
    assert isinstance(info.value, IqalensError)
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "widget", "version": 3, "size": 1}))
    with pytest.raises(
        ResultVersionError, match="version 3, written by a newer iqalens.*reads up to version 2"
    ):
        read_result(tmp_path, Widget)
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "widget", "version": 1, "size": 1}))
    with pytest.raises(ResultError, match="version 1, which this iqalens \\(version 2\\) cannot read"):
        read_result(tmp_path, Widget)
    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "widget", "version": "2", "size": 1}))
    with pytest.raises(ResultError, match="'version' must be an integer"):
        peek_result(tmp_path)
    (tmp_path / "metrics.json").write_text('{"size": 1')  # torn
    with pytest.raises(ResultError, match="not valid JSON"):
        peek_result(tmp_path)
    # a metrics.json without a kind (written before typed results) is not a typed result
    (tmp_path / "metrics.json").write_text(json.dumps({"size": 1}))
    assert peek_result(tmp_path) is None and peek_result(tmp_path / "missing") is None
    with pytest.raises(ResultError, match="no typed result"):
        read_result(tmp_path, Widget)


def test_an_older_version_is_read_through_the_upgrade_hook(tmp_path: Path) -> None:
    @dataclass(kw_only=True)
    class Renamed:
        KIND: ClassVar[str] = "renamed"
        VERSION: ClassVar[int] = 2
        width: int

        @staticmethod
        def upgrade(data: dict[str, Any], version: int) -> dict[str, Any]:
            return {"width": data.pop("size")} if version == 1 else data

    (tmp_path / "metrics.json").write_text(json.dumps({"kind": "renamed", "version": 1, "size": 4}))
    assert read_result(tmp_path, Renamed) == Renamed(width=4)


def test_only_well_formed_result_classes_are_written(tmp_path: Path) -> None:
    @dataclass
    class NoKind:
        x: int = 0

    @dataclass
    class Clash:
        KIND: ClassVar[str] = "clash"
        VERSION: ClassVar[int] = 1
        kind: str = "x"

    for bad, why in ((NoKind(), "KIND"), (Clash(), "may not be called 'kind'"), ({"kind": "x"}, "dataclass")):
        with pytest.raises(TypeError, match=why):
            write_result(tmp_path, bad)
    assert not (tmp_path / "metrics.json").exists()


def test_the_shared_figures_import_no_matplotlib_until_drawn() -> None:
    code = "import sys, iqalens.plots, iqalens.results; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_shared_figures_are_deterministic_svg() -> None:
    from iqalens.plots import budget_figure, confusion_figure, svg_text

    def confusion() -> str:
        return svg_text(confusion_figure(["a", "b"], ["a", "b", "other"], [[3, 1, 0], [0, 2, 2]], "t"))

    def budget(means: list[float]) -> str:
        return svg_text(budget_figure(["0%", "10%"], [0, 5], [("arm", means, [0.1, None])], "SRCC", "t"))

    assert confusion() == confusion() and "<dc:date>" not in confusion()
    assert budget([0.5, 0.7]) == budget([0.5, 0.7]) != budget([0.5, 0.8])
    with pytest.raises(ValueError):
        confusion_figure(["a", "b"], ["a", "b"], [[1, 2]], "not 2 x 2")
