"""Configuration of the tiny mPLUG-Owl2-layout test model (remote code: loaded via ``auto_map``).

``model_type`` is ``mplug_owl2`` like the real checkpoints, so iqalens's table of known component
maps applies to it; ``visual_config`` holds the vision tower's and the visual abstractor's settings
under the keys the real config uses (``visual_model``, ``visual_abstractor``).
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig


class TinyOwlConfig(LlamaConfig):
    model_type = "mplug_owl2"

    def __init__(self, visual_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.visual_config = visual_config or {"visual_model": {}, "visual_abstractor": {}}
        super().__init__(**kwargs)
