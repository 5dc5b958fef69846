"""The CLI's command groups, one module per group.

Each module listed in :data:`MODULES` defines ``register(subparsers)``, which adds its parsers with
``set_defaults(func=...)``, and may define ``INTERRUPTED``: a mapping from its command names to what an
interrupted run leaves behind. :mod:`iqalens.cli` keeps ``demo`` and assembles the parser: it adds
``distort`` and ``bench`` (:mod:`iqalens.commands.data`, listed around ``demo`` in ``--help``) itself,
then every module of :data:`MODULES`. Command modules must not import :mod:`iqalens.cli`; what they
share with it lives in :mod:`iqalens.commands._shared`.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType
from typing import Any

from iqalens.leaf.names import ARMS, CALIBRATION_METHODS, POOLINGS

#: Command modules under ``iqalens.commands``, in the order their commands appear in ``--help`` (after
#: ``distort``, ``demo`` and ``bench``, which :mod:`iqalens.cli` adds first).
MODULES: tuple[str, ...] = ("leaf", "perception", "align", "budget", "report")


def command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"iqalens.commands.{name}") for name in MODULES]


def register_all(sub: argparse._SubParsersAction) -> dict[str, str]:
    """Add every module's commands to ``sub``; returns their interrupted-run notes."""
    notes: dict[str, str] = {}
    for module in command_modules():
        module.register(sub)
        notes |= dict(getattr(module, "INTERRUPTED", {}))
    return notes


#: The calibration methods, label-budget arms and student poolings, from the one torch-free table.
CALIBRATION_CHOICES: tuple[str, ...] = CALIBRATION_METHODS
ARM_CHOICES: tuple[str, ...] = ARMS
POOLING_CHOICES: tuple[str, ...] = POOLINGS


def add_pooling_argument(parser: argparse.ArgumentParser) -> None:
    """``--pooling {last,multiscale}``, ``--quality-stats``, ``--resize-shorter`` and ``--image-size``,
    shared by every command that builds a student backbone."""
    parser.add_argument(
        "--pooling",
        choices=POOLING_CHOICES,
        default=None,
        help="backbone feature: 'last' = mean of the last feature map; 'multiscale' = also mean and std "
        "of earlier stages, which keep the blur and noise a global mean hides (efficientnet-lite0 and "
        "tiny backbones). Default: multiscale for efficientnet-lite0, last otherwise",
    )
    parser.add_argument(
        "--quality-stats",
        action="store_true",
        help="append parameter-free distortion statistics of the crop (tone, colour, MSCN moments, local "
        "contrast, gradients, blockiness, and their squares) to the backbone feature "
        "(StudentConfig.quality_stats)",
    )
    parser.add_argument(
        "--resize-shorter",
        type=int,
        default=224,
        help="shorter side the image is resized to before the centre crop (default 224; the native "
        "height, e.g. 384, keeps noise and blur at their own scale)",
    )
    parser.add_argument("--image-size", type=int, default=224, help="side of the square crop (default 224)")


def student_feature_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~iqalens.leaf.student.StudentConfig` fields set by :func:`add_pooling_argument`."""
    return {
        "pooling": args.pooling,
        "quality_stats": args.quality_stats,
        "resize_shorter": args.resize_shorter,
        "image_size": args.image_size,
    }
