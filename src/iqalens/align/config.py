"""Settings of one ``iqalens align`` run (all saved in the run's ``config.json``).

The defaults are sized for the mini model on a 2-core CPU: a run with a frozen vision encoder
trains on cached encoder outputs and is cheap per step; a run that trains the vision encoder pays a
full EfficientNet forward and backward pass per image, so its defaults keep the number of images
seen small (``max_steps * batch_size * grad_accum``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from iqalens.configs import dataclass_from_dict
from iqalens.errors import InvalidInputError

#: The trainable parts of an alignable model, in forward order (defined here, torch-free, so that
#: building the command-line parser does not import torch; :mod:`iqalens.align.base` re-exports it).
COMPONENTS: tuple[str, ...] = ("vision_encoder", "projector", "language_model")

CONSTRAINTS = ("features", "logits", "weights")
#: What the answer template is trained to say: the distortion class (the perception task), or the
#: quality level from the MOS (the quality-description templates of Q-Instruct-style training).
TARGETS = ("class", "quality")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: How a projector tap summarises its map: a torch-free copy of iqalens.models.mini_taps.TAP_POOLS
#: (the CLI's parser may not import torch; tests/test_cli.py keeps the two equal).
TAP_POOLS = ("cells", "stats")
#: Settings that may differ between an interrupted run and its resumption (they do not change results).
RESUME_FREE = ("progress", "device")


def parse_components(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"vision_encoder,projector"`` (or short forms ``V``, ``P``, ``L``, ``V+P``) -> model-ordered tuple.

    Raises ValueError naming the unknown component, so the CLI can print one line.
    """
    short = {"v": "vision_encoder", "p": "projector", "l": "language_model"}
    items = text.replace("+", ",").split(",") if isinstance(text, str) else list(text)
    out: set[str] = set()
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        name = short.get(name.lower(), name.lower())
        if name not in COMPONENTS:
            raise InvalidInputError(
                f"unknown component {raw.strip()!r}; choose from {', '.join(COMPONENTS)} (or V, P, L)"
            )
        out.add(name)
    return tuple(c for c in COMPONENTS if c in out)


def short_name(components: Iterable[str]) -> str:
    """``("vision_encoder", "projector")`` -> ``"V+P"`` (the grid's notation)."""
    letters = {"vision_encoder": "V", "projector": "P", "language_model": "L"}
    return "+".join(letters[c] for c in COMPONENTS if c in set(components)) or "-"


@dataclass
class AlignConfig:
    """What to train, the objective weights and the optimisation schedule.

    ``train``: components updated; ``lora``: those of them trained through LoRA adapters instead
    of full weights (merged on save). Objective: ``w_template * template + w_align * InfoNCE +
    w_constraint * drift`` where drift is ``constraint`` ("features": relative squared distance of the
    vision encoder's pooled features to the original encoder's on the same images; "logits": KL of the
    encoder's own classifier's class distribution on those features to the original's, for encoders
    that have one, e.g. the mini model's ImageNet head; "weights": L2-SP,
    squared distance of the encoder's weights to the original ones). ``balance_classes`` draws every
    class equally often in training (rarer classes' images repeated, seeded): the p1 benchmark's
    clean class has half the images of the others and was almost never answered. ``max_train_images`` /
    ``max_val_images`` cap the distinct images used (seeded subsets; 0 = all), which bounds the
    one-off encoder passes over the benchmark. ``lr`` is the learning rate of the projector and of
    LoRA adapters (new weights); full-weight training of the pretrained vision encoder and language
    model uses ``lr * pretrained_lr_scale``, so that they are adjusted rather than overwritten.
    ``encoder_frozen_sites`` keeps the vision encoder's first N sites (stem = 1, then one per stage)
    frozen while the rest of it trains: their output is computed once per image and cached, so a
    step costs only the trained part (the perception probes show the distortion information is
    still there after the early stages: what fine-tuning has to repair is lost later). 0 = the
    whole encoder trains; only models that can cache an encoder trunk (the mini model) support it.
    ``projector_taps`` (mini model) widens the projector to also read earlier vision sites (0 = stem,
    1..7 = MBConv stages; :meth:`iqalens.models.mini.MiniVLM.add_projector_taps`): their maps, pooled
    to the projector's grid, are appended to each head cell, with zero weights at the start, so a
    run that trains the projector can use the mid-encoder's distortion information without moving
    the encoder. With a cached trunk (``encoder_frozen_sites``) a tap must be no earlier than the
    trunk's last site. ``projector_tap_pool`` says how a tapped map is summarised: "cells" (its grid
    cells' channel means) or "stats" (its image-wide channel mean and standard deviation, on every
    cell; :mod:`iqalens.models.mini_taps`). ``projector_head_frozen`` keeps the projector's weights on
    the head's inputs as they are, so what the run learns reaches the language model through the taps
    (and the projector's later layer): on the p1 benchmark a classifier given the head's 1280
    semantic channels besides the tap statistics fits the training photos' content and generalises
    worse (docs/p1_reproduction.md, session 17). ``projector_tap_standardise`` trains the tap
    columns on inputs standardised by the training images' tap statistics and folds them back into
    the weights at the end (:mod:`iqalens.align.tap_standardise`: the raw statistics sit far from
    zero-mean, unit scale, and training through them was less accurate and less stable over seeds).
    ``target`` "quality" trains the template on five quality-level descriptions from each image's
    MOS instead of the distortion class (the perception paper's template-overfit observation: such
    training alone does not teach the model to name distortions); the diagnostics still ask for
    the distortion class.
    """

    train: tuple[str, ...] = ("vision_encoder",)
    lora: tuple[str, ...] = ()
    lora_rank: int = 8
    lora_alpha: float = 16.0
    encoder_frozen_sites: int = 0
    projector_taps: tuple[int, ...] = ()
    projector_tap_pool: str = "cells"
    projector_head_frozen: bool = False
    projector_tap_standardise: bool = False
    target: str = "class"
    w_template: float = 1.0
    w_align: float = 1.0
    w_constraint: float = 1.0
    constraint: str = "features"
    temperature: float = 0.05  # template: softmax(cos / T) over the class words (the pre-alignment's T)
    align_temperature: float = 0.1  # InfoNCE between pooled visual tokens and class-word embeddings
    max_steps: int = 50
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3  # projector and LoRA adapters
    pretrained_lr_scale: float = 0.1  # full-weight vision encoder / language model: lr * this
    weight_decay: float = 0.01
    #: Exponential moving average of the trained weights (0 = off): validation, early stopping and
    #: the saved model use the average (:mod:`iqalens.align.weight_average` says why; measured on the
    #: p1 benchmark it did not help, so it is off).
    ema_decay: float = 0.0
    warmup_steps: int = 5
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 10
    checkpoint_every: int = 10
    patience: int = 3
    max_train_images: int = 1024
    balance_classes: bool = False
    max_val_images: int = 128
    val_fraction: float = 0.1  # rows without a split: share (by reference) used for validation
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.train = parse_components(self.train)
        self.lora = parse_components(self.lora)
        if not self.train:
            raise InvalidInputError("choose at least one component to train")
        extra = [c for c in self.lora if c not in self.train]
        if extra:
            raise InvalidInputError(f"LoRA components must also be trained (--train): {', '.join(extra)}")
        if self.constraint not in CONSTRAINTS:
            raise InvalidInputError(
                f"constraint must be one of {', '.join(CONSTRAINTS)}, got {self.constraint!r}"
            )
        if self.precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "checkpoint_every", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.target not in TARGETS:
            raise InvalidInputError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.encoder_frozen_sites < 0:
            raise InvalidInputError(f"encoder_frozen_sites must be >= 0, got {self.encoder_frozen_sites}")
        if self.encoder_frozen_sites and "vision_encoder" not in self.train:
            raise InvalidInputError("encoder_frozen_sites needs the vision encoder among --train")
        if self.encoder_frozen_sites and "vision_encoder" in self.lora:
            raise InvalidInputError("encoder_frozen_sites applies to full-weight encoder training, not LoRA")
        self.projector_taps = tuple(int(t) for t in self.projector_taps)
        if self.projector_tap_pool not in TAP_POOLS:
            raise InvalidInputError(
                f"projector_tap_pool must be one of {list(TAP_POOLS)}, got {self.projector_tap_pool!r}"
            )
        if self.projector_taps:
            if "projector" not in self.train:
                raise InvalidInputError(
                    "projector taps add projector inputs: train the projector too (--train P)"
                )
            if len(set(self.projector_taps)) != len(self.projector_taps) or min(self.projector_taps) < 0:
                raise InvalidInputError(
                    f"projector_taps must be distinct sites >= 0, got {self.projector_taps}"
                )
            if self.encoder_frozen_sites and min(self.projector_taps) < self.encoder_frozen_sites - 1:
                raise InvalidInputError(
                    f"projector tap {min(self.projector_taps)} lies inside the cached trunk of "
                    f"{self.encoder_frozen_sites} sites (which keeps only the map of site "
                    f"{self.encoder_frozen_sites - 1})"
                )
        if self.projector_head_frozen and not self.projector_taps:
            raise InvalidInputError(
                "projector_head_frozen keeps the head's projector weights so that the taps carry what is "
                "learnt: give projector taps too (--projector-taps)"
            )
        if self.projector_head_frozen and "projector" in self.lora:
            raise InvalidInputError(
                "projector_head_frozen applies to full-weight projector training, not LoRA"
            )
        if self.projector_tap_standardise and (not self.projector_taps or "projector" in self.lora):
            raise InvalidInputError(
                "projector_tap_standardise trains the projector's tap columns: give projector taps "
                "(--projector-taps) and train the projector's full weights (no LoRA)"
            )
        for name in ("lora_rank", "warmup_steps", "max_train_images", "max_val_images"):
            if getattr(self, name) < (1 if name == "lora_rank" else 0):
                raise InvalidInputError(
                    f"{name} must be >= {1 if name == 'lora_rank' else 0}, got {getattr(self, name)}"
                )
        for name in (
            "w_template",
            "w_align",
            "w_constraint",
            "lr",
            "pretrained_lr_scale",
            "weight_decay",
            "grad_clip",
        ):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.w_template == self.w_align == self.w_constraint == 0:
            raise InvalidInputError("all objective weights are 0: nothing to train for")
        if self.temperature <= 0 or self.align_temperature <= 0:
            raise InvalidInputError("temperatures must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InvalidInputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InvalidInputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def objectives(self) -> dict[str, float]:
        """The weights of the three terms (as recorded in metrics.json)."""
        return {"template": self.w_template, "align": self.w_align, "constraint": self.w_constraint}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"], d["lora"] = list(self.train), list(self.lora)
        d["projector_taps"] = list(self.projector_taps)
        return d

    def comparable(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_FREE}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlignConfig:
        return dataclass_from_dict(cls, data, "align")
