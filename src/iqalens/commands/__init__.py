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


#: ``StudentConfig.pooling`` values, spelt out here so that building the parser does not import torch
#: (a test checks they equal :data:`iqalens.leaf.student.POOLINGS`).
POOLING_CHOICES: tuple[str, ...] = ("last", "multiscale")


def add_pooling_argument(parser: argparse.ArgumentParser) -> None:
    """``--pooling {last,multiscale}``, shared by every command that builds a student backbone."""
    parser.add_argument(
        "--pooling",
        choices=POOLING_CHOICES,
        default=None,
        help="backbone feature: 'last' = mean of the last feature map; 'multiscale' = also mean and std "
        "of earlier stages, which keep the blur and noise a global mean hides (efficientnet-lite0 and "
        "tiny backbones). Default: multiscale for efficientnet-lite0, last otherwise",
    )
