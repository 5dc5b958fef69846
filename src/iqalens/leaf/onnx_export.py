"""Export a student to ONNX and score with ONNX Runtime: what ``iqalens export --format onnx`` does.

**The graph** is the student network only: input ``pixels`` (N x 3 x S x S float32, already
normalised, N dynamic), outputs ``raw`` (N, the raw quality score) and ``level_logits`` (N x 5).
Opset 17, exported with PyTorch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``:
it needs no extra package; the newer exporter needs ``onnxscript``).

**Everything else travels in the file's metadata** (``metadata_props``), so one ``.onnx`` file is a
complete model: ``iqalens.student`` (the :class:`~iqalens.leaf.student.StudentConfig` JSON: resize,
crop, multi-crop grid, mean/std), ``iqalens.calibration`` (the calibrator JSON, or empty) and
``iqalens.name``. The calibration is applied *after* the network rather than folded into the graph,
because with multi-crop scoring the calibrated score is ``calibrate(mean over crops of raw)``, which
a per-crop graph cannot compute; :class:`OnnxScorer` does the same preprocessing, crop averaging and
calibration as the torch scorer (:class:`iqalens.leaf.scorers.StudentScorer`), so both agree to float32
rounding (the test asks for 1e-4 on the calibrated 1-5 scale).

Both halves are registered by name, never imported by what dispatches on them: :func:`export_onnx` is
the ``onnx`` entry of :data:`iqalens.leaf.exporters.EXPORTERS`, :class:`OnnxScorer` the ``onnx`` entry
(``.onnx`` files) of :data:`iqalens.leaf.scorers.SCORERS`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqalens.errors import InvalidInputError
from iqalens.leaf.scorers import RAW_SCALE, StudentScorer, load_scorer

#: Opset of exported graphs.
OPSET = 17
META_STUDENT = "iqalens.student"
META_CALIBRATION = "iqalens.calibration"
META_NAME = "iqalens.name"


def _as_scorer(model_or_run: Any) -> StudentScorer:
    from iqalens.leaf.student import Student

    if isinstance(model_or_run, StudentScorer):
        return model_or_run
    if isinstance(model_or_run, Student):
        return StudentScorer(model_or_run)
    if model_or_run is None:  # the torch student, whatever runtime scoring would choose for it
        from iqalens.leaf.default_model import load_default_scorer

        return load_default_scorer()
    scorer = load_scorer(model_or_run)
    if not isinstance(scorer, StudentScorer):
        raise InvalidInputError(f"{model_or_run}: already an ONNX model; export needs a student run folder")
    return scorer


def export_onnx(model_or_run: Any, path: str | os.PathLike[str], opset: int = OPSET) -> Path:
    """Write the student of ``model_or_run`` (a scorer, a Student, a run folder, or None = default) as ONNX.

    The file is written atomically (temp file + rename). Returns the path.
    """
    import onnx
    import torch

    scorer = _as_scorer(model_or_run)
    student = scorer.student.eval()
    cfg = student.config
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    example = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(
                student,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["pixels"],
                output_names=["raw", "level_logits"],
                dynamic_axes={"pixels": {0: "n"}, "raw": {0: "n"}, "level_logits": {0: "n"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        calibration = None if scorer.calibrator is None else scorer.calibrator.to_dict()
        scale = scorer.describe().get("scale")
        if calibration is not None and isinstance(scale, dict) and "scale" not in calibration["extra"]:
            # a scale the scorer knows from elsewhere (the default model's info) travels with the file
            calibration["extra"] = {**calibration["extra"], "scale": scale}
        meta = {
            META_STUDENT: json.dumps(cfg.to_dict()),
            META_CALIBRATION: "" if calibration is None else json.dumps(calibration),
            META_NAME: scorer.name,
        }
        onnx.helper.set_model_props(proto, meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


class OnnxScorer:
    """Scores images with an exported student under ONNX Runtime (CPU); same interface as StudentScorer.

    ``threads`` sets ONNX Runtime's intra-op threads (None: its default, all cores). ``spinning=False``
    stops those threads from busy-waiting between operators: ONNX Runtime spins by default, which is
    fastest when nothing else runs, but in :func:`iqalens.leaf.scoring.score_paths` the decoding
    threads need the cores the spinning would burn (None: ONNX Runtime's default). ``info`` is merged
    into :meth:`describe` (e.g. how the runtime was chosen, :mod:`iqalens.leaf.runtimes`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        spinning: bool | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        import onnxruntime as ort

        from iqalens.leaf.calibration import Calibrator
        from iqalens.leaf.student import StudentConfig

        self.path = Path(path)
        self.info = dict(info or {})
        self.threads = threads
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InvalidInputError(f"{self.path}: cannot load ONNX model: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_STUDENT not in meta:
            raise InvalidInputError(
                f"{self.path}: not an iqalens student export (no {META_STUDENT} metadata)"
            )
        self.config = StudentConfig.from_dict(json.loads(meta[META_STUDENT]))
        cal = meta.get(META_CALIBRATION, "")
        self.calibrator = Calibrator.from_dict(json.loads(cal)) if cal else None
        self.name = meta.get(META_NAME) or str(self.path)
        assert self.config.mean is not None and self.config.std is not None
        self._mean = np.asarray(self.config.mean, dtype=np.float32)
        self._std = np.asarray(self.config.std, dtype=np.float32)

    #: ``prepare`` takes a Pillow RGB image too (its resize is Pillow's): the pipeline then skips two
    #: copies of every decoded image (:func:`iqalens.leaf.pipeline.prepare_pil`).
    accepts_pil = True

    def prepare(self, image: np.ndarray) -> np.ndarray:
        from iqalens.models.preprocess import resize_shorter

        return resize_shorter(image, self.config.resize_shorter)

    def _crops(self, resized: np.ndarray) -> np.ndarray:
        from iqalens.models.preprocess import crop_boxes

        s = self.config.image_size
        boxes = crop_boxes(resized.shape[0], resized.shape[1], s, self.config.test_grid)
        return np.stack([resized[t : t + s, left : left + s] for t, left in boxes])

    def _pixels(self, crops: np.ndarray) -> np.ndarray:
        # The same float32 operations, in the same order, as iqalens.models.preprocess.normalise.
        x = crops.astype(np.float32) / np.float32(255.0)
        x = (x - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def raw_scores(self, prepared: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Raw student scores (mean over the test crops) of prepared images."""
        crops, owner = [], []
        for i, im in enumerate(prepared):
            c = self._crops(im)
            crops.append(c)
            owner += [i] * len(c)
        sums = np.zeros(len(prepared))
        counts = np.zeros(len(prepared))
        if crops:
            allc, idx = np.concatenate(crops), np.asarray(owner)
            for start in range(0, len(allc), batch_size):
                raw = self.session.run(["raw"], {"pixels": self._pixels(allc[start : start + batch_size])})[0]
                rows = idx[start : start + batch_size]
                np.add.at(sums, rows, raw.astype(np.float64))
                np.add.at(counts, rows, 1.0)
        return sums / np.maximum(counts, 1.0)

    def score_prepared(self, images: Sequence[np.ndarray], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        raw = self.raw_scores(images, batch_size)
        score = raw.copy() if self.calibrator is None else np.asarray(self.calibrator(raw), dtype=np.float64)
        return score, raw

    def score_arrays(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Calibrated scores of RGB uint8 images in memory."""
        return self.score_prepared([self.prepare(im) for im in images], batch_size)[0]

    def describe(self) -> dict[str, Any]:
        described = {
            "name": self.name,
            "runtime": "onnxruntime",
            "provider": self.session.get_providers()[0],
            "onnx": str(self.path),
            "student": self.config.to_dict(),
            "calibration": None if self.calibrator is None else self.calibrator.to_dict(),
        }
        if self.calibrator is not None and "scale" in self.calibrator.extra:
            described["scale"] = self.calibrator.extra["scale"]  # set by calibrate_run
        elif self.calibrator is None:
            described["scale"] = dict(RAW_SCALE)
        return {**described, **self.info}
