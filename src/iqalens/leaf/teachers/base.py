"""The one interface every teacher backend implements.

A teacher judges images (point-wise) and ordered pairs (pair-wise). Backends differ in how they
get there (a local HF model, an OpenAI-compatible server, classical metrics), not in what they
return, so the judgments store and the student never need to know which backend produced a
judgment: they key it by ``teacher_id`` and ``prompt_version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from iqalens.errors import IqalensError
from iqalens.leaf.judgments import PairJudgment, PointJudgment


class TeacherError(IqalensError, RuntimeError):
    """A teacher backend failed in a way the user must fix (server down, model missing, bad reply)."""


@runtime_checkable
class Teacher(Protocol):
    """A source of quality judgments.

    ``teacher_id`` names the model/backend (e.g. ``hf:Qwen/Qwen2-VL-7B-Instruct``, ``classical:niqe+brisque``)
    and ``prompt_version`` the prompt/mapping version; together with an image's content hash they
    key a judgment, so changing either re-judges instead of mixing incompatible outputs.
    ``supports_pairs`` is False for teachers that can only judge single images (pairs are then
    derived from point judgments by the caller, and marked as derived).
    """

    teacher_id: str
    prompt_version: str
    supports_pairs: bool

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One judgment per path, in order. Unreadable images raise ``ImageLoadError``."""
        ...

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """One judgment per ordered pair, each asked in both orders (see ``PairJudgment.from_orders``)."""
        ...
