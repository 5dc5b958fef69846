"""Atomic file writing: a temporary sibling file, then a rename over the target.

``tempfile.mkstemp`` creates files readable by their owner only (0600), and ``os.replace`` keeps
that mode; a shared benchmark or dataset would then be unreadable for colleagues. The temporary
file here gets the mode a normal ``open()`` would give (0666 minus the umask).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iqalens.errors import InvalidInputError


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def sibling_tempfile(out: Path, suffix: str = "") -> tuple[int, str]:
    """An open temporary file next to ``out`` (same filesystem, so the final rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.fchmod(fd, _default_mode())
    return fd, tmp


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes: the content key of judgments stores and build records.

    Reads in chunks, so memory stays small for huge files. A missing or unreadable file raises
    ``OSError`` naming it.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class FileNameError(InvalidInputError):
    """A file name iqalens refuses up front (see :func:`check_file_name`); the message names the file."""


def file_name_problem(path: str | os.PathLike[str]) -> str | None:
    """Why iqalens cannot carry ``path`` through its manifests, stores and reports, or None if it can.

    File names are data: spaces, quotes, ``<>``, commas, backslashes (a plain character on POSIX),
    leading dashes and any letters round-trip unchanged. Two kinds are refused: names that are not
    valid Unicode (bytes that are not UTF-8 on POSIX, which Python carries as lone surrogates and no
    UTF-8 manifest, store or report can hold), and names with control characters (newline, tab,
    carriage return, ...), which CSV could quote but logs, terminals and the shell tools people run
    on manifests would split or hide.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (undecodable bytes in the name)"
    controls = sorted({c for c in text if unicodedata.category(c) == "Cc"})
    if controls:
        shown = ", ".join(repr(c)[1:-1] for c in controls)
        return f"holds control character(s) {shown}"
    return None


def check_file_name(path: str | os.PathLike[str]) -> None:
    """Raise :class:`FileNameError` naming ``path`` (escaped, so it prints on one line) if
    :func:`file_name_problem` refuses it."""
    problem = file_name_problem(path)
    if problem is not None:
        raise FileNameError(
            f"file name {os.fspath(path)!r} {problem}; iqalens refuses such names (see "
            "'File names' in docs/datasets.md): rename the file"
        )


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (as UTF-8, whatever the locale) to ``path`` via a temporary sibling and a rename:
    readers never see half a file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = sibling_tempfile(out)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:  # what every reader expects
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def atomic_replace(path: str | os.PathLike[str], write: Callable[[Path], object], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it over ``path``.

    Why one helper: every file a reader may find half-written (checkpoints, caches, exports, plots)
    is written this way, and the details matter each time: the temporary name carries the process
    id, so processes of one distributed run that save at once never share it; it starts with a dot
    (hidden; note that ``pathlib.Path.glob`` still lists it, so a reader that globs for the target's
    extension must skip dot files: a temporary file survives a SIGKILL); ``suffix`` keeps an
    extension that writers such as ``np.save`` would otherwise append; and on any failure, Ctrl-C
    included, the temporary file is removed.
    """
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def atomic_save_safetensors(
    state: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str]
) -> Path:
    """Write a safetensors file via a temporary sibling and a rename, so a crash never leaves a
    truncated checkpoint where a loader would find it."""
    from safetensors.torch import save_file

    return atomic_replace(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
