"""LEAF's names that help texts, reports and the library share, in a module that imports nothing.

Building the CLI parser and rendering a report must not import torch (``iqalens --help`` is tested
to stay fast), yet both need the calibration methods, the label-budget arms and the student's
poolings. Keeping the one copy here means no hand-made copies that can drift.
"""

from __future__ import annotations

__all__ = [
    "ARMS",
    "ARM_TITLES",
    "AUTO_CANDIDATES",
    "BACKBONES",
    "CALIBRATION_KINDS",
    "CALIBRATION_METHODS",
    "CALIBRATION_MIN_POINTS",
    "POOLINGS",
    "TAIL_HEADS",
]

#: Fewest labelled points each calibration mapping accepts (a logistic needs more points than
#: parameters; ``auto`` needs three to hold one out and still fit a line).
CALIBRATION_MIN_POINTS: dict[str, int] = {
    "linear": 2,
    "isotonic": 2,
    "logistic4": 5,
    "logistic5": 6,
    "auto": 3,
}
#: Mappings ``iqalens.leaf.calibration.fit`` knows (``iqalens calibrate --method``).
CALIBRATION_METHODS: tuple[str, ...] = tuple(CALIBRATION_MIN_POINTS)
#: Every kind a stored calibrator may have (``quantile`` comes from the label-free map; ``auto``
#: stores the kind it chose).
CALIBRATION_KINDS: tuple[str, ...] = ("linear", "isotonic", "logistic4", "logistic5", "quantile")
#: Candidates of ``auto``, simplest first (ties go to the earlier one); strictly monotone maps only,
#: so the calibrated scores keep the student's ranking.
AUTO_CANDIDATES: tuple[str, ...] = ("linear", "logistic4")

#: Arms of the label-budget protocol, in report order, and their titles.
ARMS: tuple[str, ...] = ("leaf", "leaf_ft", "labels_only")
ARM_TITLES: dict[str, str] = {
    "leaf": "LEAF (a): distil + monotone map",
    "leaf_ft": "LEAF (b): distil + head fine-tune",
    "labels_only": "labels only",
}

#: Student backbones and the values of ``StudentConfig.pooling``.
BACKBONES: tuple[str, ...] = ("efficientnet-lite0", "hf", "tiny")
POOLINGS: tuple[str, ...] = ("last", "multiscale")

#: What a distilled student's score keeps after its last stage is trained (``DistillConfig.tail_head``):
#: the linear head trained with the stage, or a closed-form refit on the tuned features.
TAIL_HEADS: tuple[str, ...] = ("trained", "refit")
