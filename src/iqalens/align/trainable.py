"""Which parameters train in an ``iqalens align`` run, and the proof that the others did not move.

:class:`Trainable` freezes every component of the model, then makes the chosen ones trainable: all
their weights, or LoRA adapters (:mod:`iqalens.align.lora`) for those in ``config.lora``. Before
anything trains it fingerprints (hashes the bytes of) every parameter and buffer of the frozen
components, and of the base weights under LoRA adapters, so that :meth:`Trainable.check_frozen`
can tell bit for bit whether they are unchanged.

With ``config.projector_head_frozen`` part of one tensor stays frozen: the projector's first-layer
columns that read the head. Their gradient is zeroed as it is computed (so gradient clipping and the
optimizer's moments never see it), and :meth:`Trainable.optimizer` restores them after every step
(so weight decay cannot move them either); :meth:`Trainable.check_frozen` proves it bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from iqalens.align.base import COMPONENTS, AlignableModel
from iqalens.align.config import AlignConfig
from iqalens.align.lora import add_lora, default_lora_targets, lora_deltas, merge_lora
from iqalens.align.objectives import weight_drift
from iqalens.align.tap_standardise import TapStandardiser, tap_statistics
from iqalens.errors import InvalidInputError

#: Components whose full weights are pretrained (they train at ``lr * pretrained_lr_scale``).
PRETRAINED = ("vision_encoder", "language_model")


def _digest(tensor: torch.Tensor) -> str:
    t = tensor.detach().cpu().contiguous()
    return hashlib.blake2b(t.view(-1).view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()


def fingerprint(module: nn.Module, drop_lora: bool = False) -> dict[str, str]:
    """Digest of every parameter and buffer (names inside LoRA layers mapped back to the base names)."""
    out = {}
    for name, t in module.state_dict(keep_vars=True).items():
        if drop_lora and ".lora_" in f".{name}":
            continue
        out[name.replace(".base_layer.", ".")] = _digest(t)
    return out


class Trainable:
    """The trainable parameters of a run (``component.name`` -> parameter) and the constraint's originals."""

    def __init__(self, model: AlignableModel, cfg: AlignConfig) -> None:
        self.cfg = cfg
        self.components = model.components()
        for module in self.components.values():
            for p in module.parameters():
                p.requires_grad_(False)
        self.frozen_before = {c: fingerprint(m) for c, m in self.components.items() if c not in cfg.train}
        self.lora_base_before = {c: fingerprint(self.components[c]) for c in cfg.lora}
        self._prefix: nn.Module = nn.ModuleList()
        self.params: dict[str, nn.Parameter] = {}
        for k, comp in enumerate(c for c in COMPONENTS if c in cfg.train):
            module = self.components[comp]
            if comp in cfg.lora:
                targets = (
                    model.lora_targets(comp)
                    if hasattr(model, "lora_targets")
                    else default_lora_targets(module)
                )
                add_lora(module, targets, cfg.lora_rank, cfg.lora_alpha, seed=cfg.seed * 1009 + k)
            else:
                for p in module.parameters():
                    p.requires_grad_(True)
                if comp == "vision_encoder" and cfg.encoder_frozen_sites:
                    self._freeze_prefix(model, cfg.encoder_frozen_sites)
            self.params |= {f"{comp}.{n}": p for n, p in module.named_parameters() if p.requires_grad}
        if not self.params:
            raise InvalidInputError(
                f"the chosen components ({', '.join(cfg.train)}) have no trainable parameters"
            )
        encoder_trains = "vision_encoder" in cfg.train and cfg.w_constraint > 0
        # "logits" reads the same stored original features, through the encoder's classifier
        self.uses_features = encoder_trains and cfg.constraint in ("features", "logits")
        self.uses_logits = encoder_trains and cfg.constraint == "logits"
        self.uses_weights = encoder_trains and cfg.constraint == "weights"
        self.weight_originals: list[torch.Tensor] = []
        if self.uses_weights and "vision_encoder" not in cfg.lora:
            encoder = self.components["vision_encoder"]
            self.weight_originals = [p.detach().clone() for p in encoder.parameters() if p.requires_grad]
        #: (weight, frozen columns, their original values) of ``projector_head_frozen``
        self._frozen_columns: tuple[torch.Tensor, int, torch.Tensor] | None = None
        #: the gradient hook of ``projector_head_frozen``, removed by :meth:`merge`
        self._head_grad_hook: torch.utils.hooks.RemovableHandle | None = None
        if cfg.projector_head_frozen:
            self._freeze_head_columns(model)
        #: the taps' standardised parameterisation (``projector_tap_standardise``), folded by merge()
        self._standardiser: TapStandardiser | None = None

    def standardise_taps(self, model: Any, bank: Any, keys: Sequence[str]) -> None:
        """Train the projector's tap columns on inputs standardised by ``keys``' tap statistics
        (:mod:`iqalens.align.tap_standardise`); the model answers exactly as before."""
        if self._standardiser is None:
            mean, std = tap_statistics(model, bank, keys)
            layer, head = model.projector_first_layer()
            self._standardiser = TapStandardiser(layer, head, mean, std)
            self._standardiser.install()

    def _freeze_head_columns(self, model: AlignableModel) -> None:
        """Keep the projector's weights on the head's inputs as they are (``projector_head_frozen``)."""
        columns = getattr(model, "projector_head_columns", None)
        if columns is None:
            raise InvalidInputError(f"{model.model_id}: projector_head_frozen is for the mini model only")
        weight, n = columns()
        original = weight.detach()[:, :n].clone()

        def drop_head_grad(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[:, :n] = 0
            return grad

        self._head_grad_hook = weight.register_hook(drop_head_grad)
        self._frozen_columns = (weight, n, original)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over :meth:`param_groups`; with frozen head columns, a post-step hook puts them back."""
        opt = torch.optim.AdamW(self.param_groups())
        if self._frozen_columns is not None:
            weight, n, original = self._frozen_columns

            def restore(*_: Any) -> None:
                with torch.no_grad():
                    weight[:, :n] = original.to(weight.device)

            opt.register_step_post_hook(restore)
        return opt

    def _freeze_prefix(self, model: AlignableModel, sites: int) -> None:
        """Keep the encoder's first ``sites`` sites frozen (and fingerprinted, to prove it)."""
        prefix = getattr(model, "encoder_prefix", None)
        if prefix is None:
            raise InvalidInputError(f"{model.model_id}: encoder_frozen_sites is for the mini model only")
        modules = prefix(sites)
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)
        self._prefix = nn.ModuleList(modules)
        self.frozen_before[f"vision_encoder (first {sites} sites)"] = fingerprint(self._prefix)

    def weight_term(self) -> torch.Tensor:
        """L2-SP of the vision encoder: squared distance to the original weights (LoRA: of B A)."""
        encoder = self.components["vision_encoder"]
        if "vision_encoder" in self.cfg.lora:
            deltas = lora_deltas(encoder)
            return weight_drift(deltas, [torch.zeros_like(d) for d in deltas])
        return weight_drift([p for p in encoder.parameters() if p.requires_grad], self.weight_originals)

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on matrices only; pretrained full weights at the scaled rate."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.params.items():
            comp = name.partition(".")[0]
            pretrained = comp in PRETRAINED and comp not in self.cfg.lora
            groups.setdefault((pretrained, p.dim() > 1), []).append(p)
        out = []
        for (pretrained, decay), group in sorted(groups.items()):
            lr = self.cfg.lr * (self.cfg.pretrained_lr_scale if pretrained else 1.0)
            out.append(
                {
                    "params": group,
                    "lr": lr,
                    "base_lr": lr,
                    "weight_decay": self.cfg.weight_decay if decay else 0.0,
                }
            )
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.params.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.params.keys():
            raise InvalidInputError("the saved training state does not match the trainable parameters")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state[n].to(p.device))

    def check_frozen(self) -> dict[str, bool]:
        """Per frozen component: still bit-identical? LoRA components: base weights unchanged?"""
        out = {
            c: fingerprint(self.components.get(c, self._prefix)) == fp for c, fp in self.frozen_before.items()
        }
        for c, fp in self.lora_base_before.items():
            out[f"{c} (base under LoRA)"] = fingerprint(self.components[c], drop_lora=True) == fp
        if self._frozen_columns is not None:
            weight, n, original = self._frozen_columns
            out["projector (head columns)"] = _digest(weight[:, :n]) == _digest(original)
        return out

    def merge(self) -> None:
        """Merge LoRA adapters into their base weights, fold standardised taps; freeze everything again.

        The head columns' gradient hook goes too: the model object may be trained again later, by a
        run that lets those columns learn."""
        if self._head_grad_hook is not None:
            self._head_grad_hook.remove()
            self._head_grad_hook = None
        if self._standardiser is not None:
            self._standardiser.fold()  # the saved projector reads raw tap inputs
            self._standardiser = None
        for comp in self.cfg.lora:
            merge_lora(self.components[comp])
        for module in self.components.values():
            for p in module.parameters():
                p.requires_grad_(False)
