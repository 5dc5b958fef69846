"""``iqalens align``: component-wise, alignment-constrained fine-tuning with a before/after report."""

from __future__ import annotations

import argparse
from typing import Any

from iqalens.align.config import (
    CONSTRAINTS,
    PRECISIONS,
    TAP_POOLS,
    TARGETS,
    AlignConfig,
    parse_components,
    short_name,
)
from iqalens.commands._hf import add_hf_arguments, hf_options
from iqalens.errors import InvalidInputError

INTERRUPTED = {
    "align": "RUN/state/state.pt holds the last checkpoint (every --checkpoint-every steps); "
    "run the same command again to resume"
}

_DEFAULTS = AlignConfig()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``align`` to the CLI."""
    p = sub.add_parser(
        "align",
        help="fine-tune chosen model components towards the distortion words; report before vs after",
        description=(
            "Train some of vision_encoder, projector, language_model (full weights or LoRA; the rest stays "
            "frozen) on a benchmark's train split with the answer-template loss, an InfoNCE alignment of the "
            "visual tokens to the class words and a drift penalty on the vision encoder. Writes RUN/model "
            "(a checkpoint every command accepts as --model RUN), RUN/train_log.csv and, unless --no-report, "
            "perceive runs of the model before and after (RUN/before, RUN/after) with RUN/comparison.csv. "
            "Resumes an interrupted run in RUN."
        ),
    )
    p.add_argument("--model", default="mini", help="base model spec (default: the pre-aligned mini model)")
    p.add_argument("--bench", required=True, help="benchmark folder or manifest")
    p.add_argument(
        "--train",
        required=True,
        help="components to train, comma-separated: vision_encoder, projector, language_model (or V, P, L)",
    )
    p.add_argument("--output", "-o", required=True, help="run folder")
    p.add_argument("--lora", default="", help="components (among --train) trained via LoRA adapters")
    p.add_argument("--lora-rank", type=int, default=_DEFAULTS.lora_rank)
    p.add_argument("--lora-alpha", type=float, default=_DEFAULTS.lora_alpha)
    p.add_argument("--steps", type=int, default=_DEFAULTS.max_steps, help="optimizer steps (maximum)")
    p.add_argument(
        "--lr", type=float, default=_DEFAULTS.lr, help="learning rate of the projector and LoRA adapters"
    )
    p.add_argument(
        "--pretrained-lr-scale",
        type=float,
        default=_DEFAULTS.pretrained_lr_scale,
        help="full-weight vision encoder / language model train at lr * this",
    )
    p.add_argument(
        "--encoder-frozen-sites",
        type=int,
        default=_DEFAULTS.encoder_frozen_sites,
        help="mini model: keep the vision encoder's first N sites frozen and cache their output, so "
        "steps train only the rest of it (e.g. 5 = stem and stages 1-4; default 0 = whole encoder)",
    )
    p.add_argument(
        "--projector-taps",
        default="",
        help="mini model: earlier vision sites the projector also reads, comma-separated (0 = stem, "
        "1..7 = MBConv stages; e.g. 4, where the distortion probes peak); their new weights start at "
        "zero, so the model is unchanged until the projector trains (needs projector in --train)",
    )
    p.add_argument(
        "--projector-tap-pool",
        choices=TAP_POOLS,
        default=_DEFAULTS.projector_tap_pool,
        help="how a tapped map reaches the projector: its grid cells' channel means (cells), or its "
        "image-wide channel mean and std on every cell (stats: sees contrast, brightness, noise)",
    )
    p.add_argument(
        "--projector-head-frozen",
        action="store_true",
        help="mini model, with --projector-taps: keep the projector's weights on the head's inputs as "
        "they are, so what is learnt comes through the taps (the head's semantic channels let the "
        "projector fit the training photos' content)",
    )
    p.add_argument(
        "--projector-tap-standardise",
        action="store_true",
        help="mini model, with --projector-taps: train the tap columns on inputs standardised by the "
        "training images' tap statistics (folded back into the weights at the end; steadier over seeds)",
    )
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="images per micro-batch")
    p.add_argument("--grad-accum", type=int, default=_DEFAULTS.grad_accum, help="micro-batches per step")
    p.add_argument(
        "--w-template", type=float, default=_DEFAULTS.w_template, help="answer-template loss weight"
    )
    p.add_argument("--w-align", type=float, default=_DEFAULTS.w_align, help="InfoNCE alignment loss weight")
    p.add_argument(
        "--w-constraint",
        type=float,
        default=_DEFAULTS.w_constraint,
        help="vision-encoder drift penalty weight",
    )
    p.add_argument(
        "--constraint",
        choices=CONSTRAINTS,
        default=_DEFAULTS.constraint,
        help="drift measure: features (distance of the encoder's pooled features to the original's, "
        "default), logits (KL of the encoder's own classifier on them: keeps its predictions; mini "
        "model), weights (L2-SP)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default=_DEFAULTS.target,
        help="what the template is trained to answer: the distortion class (default), or five quality "
        "levels from the MOS (the template-only training the perception paper contrasts)",
    )
    p.add_argument("--eval-every", type=int, default=_DEFAULTS.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every)
    p.add_argument("--patience", type=int, default=_DEFAULTS.patience, help="evaluations without improvement")
    p.add_argument("--max-train-images", type=int, default=_DEFAULTS.max_train_images, help="0 = all")
    p.add_argument("--max-val-images", type=int, default=_DEFAULTS.max_val_images, help="0 = all")
    p.add_argument(
        "--balance-classes",
        action="store_true",
        help="draw every class equally often in training (rarer classes' images repeated)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=_DEFAULTS.ema_decay,
        help="validate and keep an exponential moving average of the trained weights (e.g. 0.98; "
        "0 = off, the weights of the best step)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default=_DEFAULTS.precision)
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--device", default=_DEFAULTS.device, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--cache", help="cache folder for features and prepared inputs (default: the feature cache)"
    )
    p.add_argument("--no-report", action="store_true", help="skip the before/after perceive runs")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in RUN")
    p.add_argument("--quiet", "-q", action="store_true")
    add_hf_arguments(p)
    p.set_defaults(func=_cmd_align)


def parse_sites(text: str) -> tuple[int, ...]:
    """``"4"`` / ``"3,4"`` -> (4,) / (3, 4); a clear error for anything but integers."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInputError(
            f"--projector-taps takes comma-separated site numbers, got {text!r}"
        ) from None


def config_from_args(args: argparse.Namespace) -> AlignConfig:
    return AlignConfig(
        train=parse_components(args.train),
        lora=parse_components(args.lora),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        w_template=args.w_template,
        w_align=args.w_align,
        w_constraint=args.w_constraint,
        constraint=args.constraint,
        max_steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        pretrained_lr_scale=args.pretrained_lr_scale,
        encoder_frozen_sites=args.encoder_frozen_sites,
        projector_taps=parse_sites(args.projector_taps),
        projector_tap_pool=args.projector_tap_pool,
        projector_head_frozen=args.projector_head_frozen,
        projector_tap_standardise=args.projector_tap_standardise,
        target=args.target,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        patience=args.patience,
        max_train_images=args.max_train_images,
        balance_classes=args.balance_classes,
        ema_decay=args.ema_decay,
        max_val_images=args.max_val_images,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        progress=not args.quiet,
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def _cmd_align(args: argparse.Namespace) -> int:
    from iqalens.align.run import resolve_manifest, run_align
    from iqalens.perception.features import default_cache_root

    cfg = config_from_args(args)
    resolve_manifest(args.bench)  # a missing benchmark fails before any model is loaded
    metrics = run_align(
        args.model,
        args.bench,
        args.output,
        cfg,
        report=not args.no_report,
        cache_dir=args.cache or default_cache_root(),
        overwrite=args.overwrite,
        model_options=hf_options(args),
    )
    if "complete" not in metrics:  # a torchrun rank other than 0
        return 0
    lora = f" (LoRA: {short_name(cfg.lora)})" if cfg.lora else ""
    print(f"align {short_name(cfg.train)}{lora} of {args.model} -> {args.output}/model")
    print(
        f"  {metrics['steps_run']} steps in {metrics['train_seconds']:.0f} s; val accuracy "
        f"{_fmt(metrics.get('val_accuracy_before'))} -> best {_fmt(metrics.get('best_val_accuracy'))} "
        f"(step {metrics['best_step']})"
    )
    before, after, drift = metrics.get("before"), metrics.get("after"), metrics.get("drift")
    if before and after:
        print(
            f"  forced choice (test split): accuracy {_fmt(before['forced_choice_accuracy'])} -> "
            f"{_fmt(after['forced_choice_accuracy'])}, balanced {_fmt(before['balanced_accuracy'])} -> "
            f"{_fmt(after['balanced_accuracy'])}; similarity to the true word "
            f"{_fmt(before['mean_similarity_true'])} -> {_fmt(after['mean_similarity_true'])}"
        )
    if drift:
        print(
            f"  vision encoder kept: ImageNet top-1 agreement {_fmt(drift['imagenet_top1_agreement'])}, "
            f"feature cosine {_fmt(drift['feature_cosine'])} on {drift['n_images']} clean images"
        )
    if before and after:
        print(f"  before/after per class and site: {args.output}/comparison.csv")
    return 0
