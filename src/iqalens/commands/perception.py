"""The perception commands: ``prealign`` (the mini model's semantic pre-alignment) and ``perceive``."""

from __future__ import annotations

import argparse
from pathlib import Path

from iqalens.commands._hf import add_hf_arguments, hf_options
from iqalens.commands._shared import CliError
from iqalens.models.loading import specs_help


def _cmd_prealign(args: argparse.Namespace) -> int:
    from iqalens.models.mini import MiniConfig, MiniVLM, default_cache_dir
    from iqalens.models.mini_prealign import prealign

    out = Path(args.output) if args.output else default_cache_dir()
    if (out / "mini.json").exists() and not args.overwrite:
        raise CliError(f"{out} already holds a pre-aligned mini model; pass --overwrite to redo it")
    model = MiniVLM(MiniConfig(seed=args.seed))
    result = prealign(model, steps=args.steps, seed=args.seed)
    model.save(out)
    print(f"pre-aligned mini model -> {out}")
    print(
        f"  loss {result.loss_before:.3f} -> {result.loss_after:.3f}; views whose nearest class text is the "
        f"encoder's top-1: {result.top1_agreement_before:.1%} -> {result.top1_agreement_after:.1%}"
    )
    return 0


def _cmd_perceive(args: argparse.Namespace) -> int:
    from iqalens.models.loading import load_model
    from iqalens.perception.run import perceive

    model, checkpoint_id = load_model(args.model, device=args.device, **hf_options(args))
    bench = Path(args.bench)
    manifest = bench / "manifest.csv" if bench.is_dir() else bench
    metrics = perceive(
        model,
        manifest,
        args.output,
        cache_dir=args.cache,
        checkpoint_id=checkpoint_id,
        batch_size=args.batch_size,
        seed=args.seed,
        generate=args.generate,
        samples=args.samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
    )
    fc = metrics.get("forced_choice", {})
    print(f"{args.model} on {manifest} -> {args.output}/metrics.json")
    if isinstance(fc, dict) and "accuracy" in fc:
        balanced = fc.get("balanced_accuracy", float("nan"))
        print(f"  forced choice: accuracy {fc['accuracy']:.3f}, balanced {balanced:.3f}")
    curve = metrics.get("probes", {}).get("curve") if isinstance(metrics.get("probes"), dict) else None
    if curve:
        print(
            "  probe test accuracy per site: "
            + ", ".join(f"{c['site']} {c['test_accuracy']:.2f}" for c in curve)
        )
    sections = (("contextual", "contextual semantic distance"), ("free_generation", "free generation"))
    for key, label in sections:
        section = metrics.get(key, {})
        if "overall" in section:
            o = section["overall"]
            print(
                f"  {label} ({section['layer']}): true word nearest {o['nearest_accuracy']:.3f}, "
                f"mean rank {o['mean_rank']:.2f}, mean margin {o['mean_margin']:.3f}"
            )
        elif "accuracy" in section:
            print(f"  {label}: accuracy {section['accuracy']:.3f}, parsed {section['parse_rate']:.1%}")
        elif args.generate or key == "contextual":
            print(f"  {label}: {section.get('note', '')}")
    cons = metrics.get("consistency", {})
    if "mean_consistency" in cons:
        print(
            f"  consistency ({cons['method']}, K={cons['samples']}, T={cons['temperature']}): "
            f"mean {cons['mean_consistency']:.3f}, modal answer accuracy {cons['modal_accuracy']:.3f}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``iqalens prealign`` and ``iqalens perceive``."""
    p = sub.add_parser(
        "prealign",
        help="semantic pre-alignment of the mini vision-language model (cached)",
        description=(
            "Train the mini model's projector (EfficientNet-Lite0 -> MiniLM-L6) so that images align "
            "with the text of their ImageNet classes as predicted by the encoder itself; the analogue "
            "of an MLLM's alignment stage. Writes a checkpoint (default: the cache of --model mini)."
        ),
    )
    p.add_argument("--output", "-o", help="checkpoint folder (default: the cache of the default mini model)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_prealign)

    p = sub.add_parser(
        "perceive",
        help="perception diagnostics: forced choice, per-component probes, semantic distance, consistency",
        description=(
            "Run the perception diagnostics of a model on a benchmark (a folder from 'bench build' "
            f"or a manifest). MODEL: {specs_help()}. Features (and generated answers) are cached per model "
            "checkpoint and benchmark. Writes metrics.json, CSV tables and PNG plots; see docs/perception.md."
        ),
    )
    p.add_argument("--model", default="mini", help="model spec (default: the pre-aligned mini model)")
    p.add_argument("--bench", required=True, help="benchmark folder or manifest")
    p.add_argument("--output", "-o", required=True, help="run folder")
    p.add_argument("--cache", help="feature cache folder (default $IQALENS_FEATURE_CACHE or ~/.cache)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--generate",
        action="store_true",
        help="also let generative (hf:) models write their answers: free generation with answer parsing, "
        "and --samples sampled answers per image for the consistency (slow on real models; cached)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=5,
        metavar="K",
        help="answers per image for the consistency (default 5; 0 = off); sampled generations with "
        "--generate, else draws from softmax(class scores / T)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature of the consistency (default 0.7)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=12, help="length limit of a generated answer (default 12)"
    )
    p.add_argument("--quiet", "-q", action="store_true")
    add_hf_arguments(p)
    p.set_defaults(func=_cmd_perceive)
