"""Which modules of the mypy baseline still have errors, and which can leave it.

    python scripts/mypy_baseline.py

Runs mypy once with pyproject.toml's settings minus the baseline (the ``ignore_errors`` override),
then prints the baselined modules that pass now or no longer exist (delete their lines and lower
the cap in tests/test_static_checks.py), those that still fail (with their error counts), and any module
outside the baseline that fails (``make lint`` fails on those too). Exit status 0 unless mypy
itself could not run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERROR = re.compile(r"^(src/[^:]+\.py):\d+: error:")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return f'"{value}"'


def _module(path: str) -> str:
    name = path.removeprefix("src/").removesuffix(".py").removesuffix("/__init__")
    return name.replace("/", ".")


def _exists(src: Path, module: str) -> bool:
    path = src.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    overrides = config.pop("overrides", [])
    baseline = [m for o in overrides if o.get("ignore_errors") for m in o["module"]]
    lines = ["[tool.mypy]"] + [f"{k} = {_toml_value(v)}" for k, v in config.items()]
    for override in overrides:
        if not override.get("ignore_errors"):
            lines += ["[[tool.mypy.overrides]]"] + [f"{k} = {_toml_value(v)}" for k, v in override.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", f.name, "--no-pretty", "--no-error-summary"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        Path(f.name).unlink()
    if run.returncode not in (0, 1):
        sys.stderr.write(run.stdout + run.stderr)
        return 2
    errors = Counter(_module(m.group(1)) for line in run.stdout.splitlines() if (m := ERROR.match(line)))
    src = ROOT / "src"
    gone = [m for m in baseline if not _exists(src, m)]
    clean = [m for m in baseline if m not in errors and m not in gone]
    print(f"baseline: {len(baseline)} modules; mypy checked the rest")
    print("pass now (remove from the baseline):", ", ".join(clean) or "none")
    print("no such module any more (remove from the baseline):", ", ".join(gone) or "none")
    for module in baseline:
        if module in errors:
            print(f"  still failing: {module} ({errors[module]} errors)")
    outside = sorted(m for m in errors if m not in baseline)
    if outside:
        print("failing outside the baseline (make lint fails):", ", ".join(outside))
    return 0


if __name__ == "__main__":
    sys.exit(main())
