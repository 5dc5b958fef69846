"""The ``iqalens`` command: parses arguments, shows progress, writes outputs.

Every subcommand is a thin wrapper over a library function; the command groups live in
:mod:`iqalens.commands` (this module keeps ``demo``, the parser's assembly and :func:`main`). Errors a
user can fix (bad input file, unknown distortion type, existing output: the ``IqalensError`` family)
print one line and exit with status 2 (``--debug`` adds the traceback); any other exception is a bug
and ends with its traceback and status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from iqalens.commands import data as data_commands
from iqalens.commands import register_all
from iqalens.commands._shared import CliError, parse_level
from iqalens.version import __version__

__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "EXIT_USAGE", "CliError", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130

#: What an interrupted command leaves behind, per subcommand (the command modules add theirs).
_INTERRUPTED = {
    "demo": "finished stages stay in the run folder; re-run with --overwrite to start again",
}


def _cmd_demo(args: argparse.Namespace) -> int:
    from iqalens.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig(
        levels=tuple(args.levels),
        max_photos=args.max_photos,
        seed=args.seed,
        workers=args.workers,
        align_steps=args.align_steps,
        distill_steps=args.distill_steps,
        distill_solver=args.solver,
        distill_tail_steps=args.tail_steps,
        label_budget=args.budget,
        progress=not args.quiet,
    )
    result = run_demo(args.output, config, overwrite=args.overwrite)
    print(format_summary(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; subcommands map one-to-one onto library entry points."""
    parser = argparse.ArgumentParser(
        prog="iqalens",
        description="Vision-language image quality assessment: perception diagnostics and "
        "label-efficient quality scoring.",
    )
    parser.add_argument("--version", action="version", version=f"iqalens {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of user errors too (before the command)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data_commands.register_distort(sub)
    _INTERRUPTED.update(data_commands.INTERRUPTED)
    from iqalens.demo import DemoConfig  # light: the demo's stages import their libraries when run

    p = sub.add_parser(
        "demo",
        help="run the main job end to end on the bundled photos (about 5-10 min on 2 cores)",
        description="On the bundled photos, with no downloads: build a perception benchmark, run the "
        "diagnostics of the mini model before and after fine-tuning its vision path, run LEAF with the "
        "offline full-reference teacher (judgments, distillation, calibration with a few proxy-MOS labels, "
        "evaluation, the same student on the labels alone), score the photos, and write one HTML report. "
        "Everything lands in one run folder.",
    )
    p.add_argument("--output", "-o", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--levels", type=parse_level, nargs="+", default=[1, 3, 5], help="levels (default 1 3 5)")
    p.add_argument("--max-photos", type=int, default=None, help="use only the first N bundled photos (>= 3)")
    p.add_argument("--workers", type=int, default=2, help="processes for rendering and the teacher")
    p.add_argument("--align-steps", type=int, default=100, help="fine-tuning steps (default 100)")
    p.add_argument(
        "--solver",
        choices=("ridge", "adamw"),
        default="ridge",
        help="how the student's head is fitted: ridge = closed form on stored features (default), "
        "adamw = --distill-steps optimizer steps",
    )
    p.add_argument(
        "--distill-steps", type=int, default=600, help="adamw only: head training steps (default 600)"
    )
    p.add_argument(
        "--tail-steps",
        type=int,
        default=DemoConfig.distill_tail_steps,
        help="ridge only: train the student's last backbone stage this many steps towards the teacher "
        f"(default {DemoConfig.distill_tail_steps}; 0 = frozen backbone)",
    )
    p.add_argument(
        "--budget", default="10%", help="proxy-MOS labels for calibration: N or P%% (default 10%%)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in the run folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_demo)

    data_commands.register_bench(sub)
    _INTERRUPTED.update(register_all(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    A user error (:class:`~iqalens.errors.IqalensError`, or an OS error about a file: missing,
    unreadable, unwritable) prints one line and exits with status 2; ``--debug`` adds its traceback.
    Anything else is a bug of ours: Python's traceback and status 1.
    """
    from iqalens.errors import IqalensError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            f"iqalens {args.command}: interrupted; {_INTERRUPTED.get(args.command, '')}".rstrip("; "),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`, which closed early: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (IqalensError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"iqalens {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        traceback.print_exc()
        print(
            f"iqalens {args.command}: internal error (a bug in iqalens, not in your input); "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
