"""``--model SPEC`` for the perception commands: which adapter, and an id of its checkpoint.

The checkpoint id keys the feature cache: two checkpoints of one model (before and after
fine-tuning) must never share cached features.
"""

from __future__ import annotations

from pathlib import Path

from iqalens.files import content_hash
from iqalens.models.base import ComponentModel

SPECS = (
    "'mini' (pre-aligned default, cached), 'mini:DIR', 'hf:PATH_OR_ID', 'dual:PATH_OR_ID' (CLIP/SigLIP), "
    "or a checkpoint folder (an 'iqalens align' run folder or its model/ folder)"
)
#: Sub-folder of an ``iqalens align`` run that holds its checkpoint.
ALIGN_MODEL_DIR = "model"


def load_model(spec: str, device: str = "cpu") -> tuple[ComponentModel, str]:
    """The adapter for ``spec`` and a checkpoint id for the feature cache."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "mini" and not rest:
        from iqalens.models.mini import default_cache_dir, load_default_mini

        model = load_default_mini()
        return model, _folder_id(Path(default_cache_dir()))
    if kind == "mini":
        from iqalens.models.mini import MiniVLM

        folder = checkpoint_folder(rest)
        return MiniVLM.load(folder), _folder_id(folder)
    if kind not in ("hf", "dual") and Path(spec).is_dir():
        return _load_folder(checkpoint_folder(spec), device)
    if kind == "hf" and rest:
        from iqalens.models.hf_vlm import HFVLMAdapter

        return HFVLMAdapter(rest, device=device), _checkpoint_id(rest)
    if kind == "dual" and rest:
        from iqalens.models.dual_encoder import DualEncoderAdapter

        return DualEncoderAdapter(rest, device=device), _checkpoint_id(rest)
    raise ValueError(f"unknown model spec {spec!r}; use {SPECS}")


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside an ``iqalens align`` run folder (``RUN/model``), or ``path`` itself."""
    folder = Path(path)
    inner = folder / ALIGN_MODEL_DIR
    return inner if inner.is_dir() else folder


def _load_folder(folder: Path, device: str) -> tuple[ComponentModel, str]:
    """A checkpoint folder given as a bare path: a mini checkpoint (``mini.json``), an aligned HF
    checkpoint (``hf_aligned.json``, trained weights over a named base) or a plain HF one."""
    if (folder / "hf_aligned.json").is_file():
        from iqalens.models.hf_checkpoint import load_hf_aligned

        return load_hf_aligned(folder, device=device), _folder_id(folder)
    if (folder / "mini.json").is_file():
        from iqalens.models.mini import MiniVLM

        return MiniVLM.load(folder), _folder_id(folder)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        from iqalens.models.hf_vlm import HFVLMAdapter

        return HFVLMAdapter(str(folder), device=device), _checkpoint_id(str(folder))
    raise ValueError(f"{folder} is not a model checkpoint (no mini.json or Hugging Face config); use {SPECS}")


def _checkpoint_id(path_or_id: str) -> str:
    """A local folder is identified by its files' hashes, a hub id by itself."""
    return _folder_id(Path(path_or_id)) if Path(path_or_id).is_dir() else path_or_id


def _folder_id(folder: Path) -> str:
    """Hash of a checkpoint folder's weight files (names and contents)."""
    weights = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".json"))
    if not weights:
        return str(folder.resolve())
    return "+".join(f"{p.name}:{content_hash(p)[:16]}" for p in weights)
