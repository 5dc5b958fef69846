"""iqalens: vision-language image quality assessment toolkit.

The public API (:mod:`iqalens.api`) is on the package's face and imported lazily, so that
``import iqalens`` costs almost nothing until a name is used::

    import iqalens

    scorer = iqalens.load_scorer()            # the bundled default student
    print(scorer.score(["photo.jpg"])[0].score, scorer.scale)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iqalens.version import __version__

if TYPE_CHECKING:
    from iqalens.api import (
        DistortionInfo,
        QualityScorer,
        Scale,
        distort,
        evaluate,
        list_distortions,
        list_models,
        list_teachers,
        load_image,
        load_model,
        load_scorer,
        sample_paths,
        score,
    )

__all__ = [
    "DistortionInfo",
    "QualityScorer",
    "Scale",
    "__version__",
    "distort",
    "evaluate",
    "list_distortions",
    "list_models",
    "list_teachers",
    "load_image",
    "load_model",
    "load_scorer",
    "sample_paths",
    "score",
]


def __getattr__(name: str) -> Any:
    """Import :mod:`iqalens.api` on first use of one of its names (PEP 562)."""
    if name in __all__:
        from iqalens import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'iqalens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
