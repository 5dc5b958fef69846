"""The sample photos bundled with the package (public-domain / CC0 / CC BY 2.0; see NOTICE).

They let the demo, the examples and the default models run with no data from the user.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_paths() -> list[Path]:
    """Paths of the bundled sample photos, sorted by name."""
    folder = resources.files("iqalens") / "data" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))
