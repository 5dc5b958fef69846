"""Run folders: every command that produces results writes config, versions, seed and metrics.

A run folder makes a result reproducible and comparable later: ``config.json`` records the
command, its arguments, the seed, the package versions and the machine; ``metrics.json`` the
headline numbers. Files are written atomically so an interrupted run never leaves a truncated JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from iqalens.files import atomic_write_text

_TRACKED_PACKAGES = ("iqalens", "numpy", "scipy", "pillow", "torch", "transformers")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that influence results (absent ones are skipped)."""
    versions = {"python": sys.version.split()[0]}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def start_run(run_dir: str | os.PathLike[str], command: str, config: dict[str, Any], seed: int) -> Path:
    """Create ``run_dir`` and write its ``config.json``; returns the folder."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "config.json",
        {
            "command": command,
            "config": config,
            "seed": seed,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": package_versions(),
            "machine": machine_description(),
        },
    )
    return folder
