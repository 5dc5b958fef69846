"""Helpers shared by :mod:`iqalens.cli` and the command modules (which must not import the CLI)."""

from __future__ import annotations

import argparse

from iqalens.errors import IqalensError


class CliError(IqalensError):
    """A problem with the user's input; printed as one line, exit status 2."""


def parse_level(text: str) -> int:
    """``type=`` of the distortion-level arguments: an integer 1-5."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"level must be an integer 1-5, got {text!r}") from None
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"level must be 1-5, got {value}")
    return value
