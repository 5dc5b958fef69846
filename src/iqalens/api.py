"""The public Python API: the few calls a user needs, on the package's face.

``import iqalens`` is cheap (nothing here is imported until a name is used, see
:mod:`iqalens`), and every call returns typed results:

>>> import iqalens
>>> scorer = iqalens.load_scorer()                       # the bundled default student
>>> results = scorer.score(["photo.jpg", array])         # paths, HxWx3 uint8 arrays or PIL images
>>> results[0].score, scorer.scale.higher_is_better
>>> iqalens.distort(array, "gaussian_blur", 3)           # KADID-10k distortions
>>> [m.name for m in iqalens.list_models()], [t.name for t in iqalens.list_teachers()]

The names listed by ``list_*`` come from the registries the library dispatches on, so they are
always what the code accepts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np

from iqalens.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image

    from iqalens.evaluation.metrics import Evaluation
    from iqalens.leaf.scoring import ImageScorer, ScoreResult
    from iqalens.models.base import ComponentModel
    from iqalens.models.loading import ModelFamilyInfo

__all__ = [
    "DistortionInfo",
    "QualityScorer",
    "Scale",
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

#: What :meth:`QualityScorer.score` accepts per image.
ImageInput = Union[str, os.PathLike, np.ndarray, "Image.Image"]


@dataclass(frozen=True)
class Scale:
    """What a score means: its range and direction, and in words where the scale comes from (None
    where the model did not record it, e.g. a calibration fitted on labels without a scale)."""

    low: float | None
    high: float | None
    higher_is_better: bool | None
    name: str | None


@dataclass(frozen=True)
class DistortionInfo:
    """One registered distortion type (KADID-10k ids 1-25, plus any registered extension)."""

    id: int
    name: str
    group: str
    perception_class: str
    levels: tuple[float, ...]
    stochastic: bool
    description: str


class QualityScorer:
    """A loaded quality model: ``score`` maps images to :class:`~iqalens.leaf.scoring.ScoreResult`."""

    def __init__(self, model: ImageScorer) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def scale(self) -> Scale:
        """The scale of :attr:`ScoreResult.score` (calibrated MOS scale, or the raw student scale)."""
        from iqalens.leaf.scoring import score_scale

        s = score_scale(self.model.describe())
        return Scale(s["low"], s["high"], s["higher_is_better"], s["name"])

    def describe(self) -> dict[str, Any]:
        """The model's JSON-able description (name, runtime, calibration, scale)."""
        return self.model.describe()

    def score(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int = 16, progress: bool = False
    ) -> list[ScoreResult]:
        """One result per image, in order. Paths that cannot be read give a result whose ``error``
        says why (the others are still scored); arrays must be H x W x 3 uint8 RGB."""
        from iqalens.leaf.scoring import ScoreResult, score_paths

        items = _as_list(images)
        results: list[ScoreResult | None] = [None] * len(items)
        path_at = [i for i, item in enumerate(items) if isinstance(item, str | os.PathLike)]
        if path_at:
            paths = [cast("str | os.PathLike[str]", items[i]) for i in path_at]
            scored = score_paths(self.model, paths, batch_size, progress=progress)
            for i, result in zip(path_at, scored, strict=True):
                results[i] = result
        array_at = [i for i in range(len(items)) if results[i] is None]
        for start in range(0, len(array_at), batch_size):
            chunk = array_at[start : start + batch_size]
            prepared = [self.model.prepare(_as_rgb(items[i], i)) for i in chunk]
            calibrated, raw = self.model.score_prepared(prepared, batch_size)
            for i, s, r in zip(chunk, calibrated, raw, strict=True):
                results[i] = ScoreResult(path=f"<array {i}>", score=float(s), raw=float(r))
        return [r for r in results if r is not None]

    def __call__(self, images: ImageInput | Iterable[ImageInput]) -> list[ScoreResult]:
        return self.score(images)

    def __repr__(self) -> str:
        return f"QualityScorer({self.name!r})"


def load_scorer(model: str | os.PathLike[str] | None = None) -> QualityScorer:
    """A quality scorer: ``None`` = the bundled default student; else a student or calibrated run
    folder, or an exported ``.onnx`` file (what ``iqalens score --model`` accepts)."""
    from iqalens.leaf.scoring import load_scorer as _load

    return QualityScorer(_load(model))


def score(
    images: ImageInput | Iterable[ImageInput],
    model: str | os.PathLike[str] | QualityScorer | None = None,
    batch_size: int = 16,
) -> list[ScoreResult]:
    """Score ``images`` with ``model`` (see :func:`load_scorer`); one result per image, in order."""
    scorer = model if isinstance(model, QualityScorer) else load_scorer(model)
    return scorer.score(images, batch_size=batch_size)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Any Pillow-readable file as H x W x 3 uint8 RGB (EXIF-rotated; clear error naming the file)."""
    from iqalens.images import load_rgb

    return load_rgb(path)


def sample_paths() -> list[Path]:
    """The photos bundled with the package (what the demo and the examples use)."""
    from iqalens.samples import sample_paths as _paths

    return _paths()


def distort(
    image: str | os.PathLike[str] | np.ndarray, distortion: int | str, level: int, seed: int = 0
) -> np.ndarray:
    """``image`` with a registered distortion (KADID id or name) at ``level`` 1-5 (seeded)."""
    from iqalens.distortions import distort as _distort

    return _distort(_as_rgb(image, 0), distortion, level, seed=seed)


def list_distortions() -> list[DistortionInfo]:
    """Every registered distortion type, by id."""
    from iqalens.distortions import all_types
    from iqalens.taxonomy import kadid_class

    return [
        DistortionInfo(t.id, t.name, t.group, kadid_class(t.id), tuple(t.levels), t.stochastic, t.description)
        for t in all_types()
    ]


def list_models() -> list[ModelFamilyInfo]:
    """Every registered model family (for the perception diagnostics and fine-tuning)."""
    from iqalens.models.loading import list_models as _list

    return _list()


def list_teachers() -> list[Any]:
    """Every registered LEAF teacher backend."""
    from iqalens.leaf.teachers.registry import list_teachers as _list

    return list(_list())


def load_model(spec: str, device: str = "cpu") -> ComponentModel:
    """A component-aware vision-language model (``mini``, ``hf:PATH_OR_ID``, ``dual:...``, a folder)."""
    from iqalens.models.loading import load_model as _load

    return _load(spec, device=device)[0]


def evaluate(pred: Sequence[float], mos: Sequence[float], **kwargs: Any) -> Evaluation:
    """SRCC, KRCC, PLCC (raw and after a monotone map) and RMSE with bootstrap intervals."""
    from iqalens.evaluation.metrics import evaluate as _evaluate

    return _evaluate(pred, mos, **kwargs)


def _as_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    if isinstance(images, str | os.PathLike | np.ndarray) or _is_pil(images):
        return [images]  # type: ignore[list-item]
    return list(images)  # type: ignore[arg-type]


def _is_pil(obj: object) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _as_rgb(item: Any, index: int) -> np.ndarray:
    if isinstance(item, str | os.PathLike):
        return load_image(Path(item))
    if _is_pil(item):
        from iqalens.images import to_rgb_array

        return to_rgb_array(item)
    arr = np.asarray(item)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"image {index}: expected an H x W x 3 uint8 RGB array, got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr
