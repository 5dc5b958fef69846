"""Subcommands that live in modules of their own (one file per command group).

``iqalens.cli`` keeps the original commands; newer groups register here so that the CLI does not
grow into one long file. Each module listed in :data:`MODULES` defines ``register(subparsers)``,
which adds its parsers with ``set_defaults(func=...)``, and may define ``INTERRUPTED``: a mapping
from its command names to what an interrupted run leaves behind.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

#: Command modules under ``iqalens.commands``, in the order their commands appear in ``--help``.
MODULES: tuple[str, ...] = ("align", "budget", "report")


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"iqalens.commands.{name}") for name in MODULES]


def register_all(sub: argparse._SubParsersAction) -> dict[str, str]:
    """Add every module's commands to ``sub``; returns their interrupted-run notes."""
    notes: dict[str, str] = {}
    for module in command_modules():
        module.register(sub)
        notes |= dict(getattr(module, "INTERRUPTED", {}))
    return notes
