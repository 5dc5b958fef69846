"""GPU check: perceive, teach, align and distill on CUDA with tiny models of three families (issue 18).

One short command, sized for a 10-minute run on one GPU (most of it is Python start-up and model
building; the models are tiny and random, built offline by the test helpers)::

    scripts/gpu_check.sh                      # = .venv/bin/python scripts/gpu_check.py --device cuda
    scripts/gpu_check.sh --device cpu         # the same steps on the CPU: a dry run of the script

What runs, each step through the command line users run (``iqalens.cli.main``), timed:

1. a 24-image benchmark from the bundled photos;
2. for each family (default ``llava``, ``qwen2_vl`` and the remote-code mPLUG-Owl2 layout
   ``mplug_owl2``): ``perceive`` (free generation on the first family), ``teach`` (points and
   pairs) and ``align`` of the projector (3 steps; the first family with its before/after report,
   which reloads the saved checkpoint);
3. the loading options on the device: ``perceive --dtype bfloat16`` (Qwen2-VL) and
   ``teach --device-map auto`` (LLaVA);
4. ``distill`` of the EfficientNet-Lite0 student (backbone trained, 30 steps; head only in a CPU dry
   run, where a full-backbone step takes ~45 s) on the first family's judgments, then ``score``;
5. CPU vs device: the first family's features on both, max difference relative to their scale
   (float32 kernels differ; cuDNN convolutions may use TF32), reported and bounded by 1e-2.

Every step runs even when an earlier one failed, so one run shows every problem. The summary (one
line per step: status, seconds) is printed and written to ``OUTPUT/gpu_check.json`` and
``OUTPUT/gpu_check.md`` for docs/recipes/gpu_check.md. Exit status: 0 all passed, 1 a step failed,
3 CUDA was asked for and is not available (nothing ran; the message says so).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model builders live with the tests

FAMILIES = ("llava", "qwen2_vl", "mplug_owl2")
NOT_AVAILABLE = 3


def _texts() -> list[str]:
    from iqalens.leaf import prompts
    from iqalens.models.hf_vlm import DEFAULT_ANSWER_PREFIX, DEFAULT_QUESTION

    return [
        DEFAULT_QUESTION,
        DEFAULT_ANSWER_PREFIX,
        "motion blur",
        prompts.ANSWER_PREFIX,
        prompts.POINT_QUESTION,
        prompts.PAIR_QUESTION,
        prompts.PAIR_ANSWER_PREFIX,
        prompts.pair_prompt().text(),
        *prompts.LEVEL_WORDS,
        *prompts.PAIR_CHOICES,
    ]


def _build(family: str, folder: Path) -> Path:
    from tiny_vlms import FAMILIES as CORE
    from tiny_vlms import build_tiny_vlm
    from tiny_vlms_more import build_more_vlm

    if family in CORE:
        return build_tiny_vlm(family, folder, _texts())
    return build_more_vlm(family, folder, _texts())


class Check:
    """Runs named steps, times them and records their outcome (a failure does not stop the run)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, step: Callable[[], Any]) -> Any:
        print(f"--- {name}", flush=True)
        start = time.perf_counter()
        try:
            value = step()
            if isinstance(value, int) and value != 0:
                raise RuntimeError(f"exit status {value}")
            status, detail = "ok", ""
        except Exception as exc:  # every step runs; the summary lists what failed
            traceback.print_exc()
            value, status, detail = None, "FAILED", f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
        self.steps.append({"step": name, "status": status, "seconds": round(seconds, 1), "detail": detail})
        print(f"--- {name}: {status} ({seconds:.1f} s)", flush=True)
        return value

    @property
    def passed(self) -> bool:
        return all(s["status"] == "ok" for s in self.steps)


def _environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def _cli(*args: str) -> int:
    from iqalens.cli import main

    return main(list(args))


def _agreement(folder: Path, images: list[Any], device: str, remote: bool) -> float:
    """Largest |CPU - device| feature difference over all sites, relative to the sites' scale."""
    import numpy as np

    from iqalens.models.hf_vlm import HFVLMAdapter

    cpu = HFVLMAdapter(folder, trust_remote_code=remote).extract(images).sites()
    dev = HFVLMAdapter(folder, device=device, trust_remote_code=remote).extract(images).sites()
    worst = max(
        float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max()))) for a, b in zip(cpu, dev, strict=True)
    )
    print(f"    max relative difference CPU vs {device}: {worst:.2e}")
    if worst > 1e-2:
        raise AssertionError(f"features on {device} differ from the CPU's by {worst:.2e} (> 1e-2)")
    return worst


def run_checks(device: str, work: Path, families: tuple[str, ...], distill_steps: int) -> Check:
    """All steps on ``device`` in ``work`` (see module doc)."""
    import numpy as np

    from iqalens.datasets.benchmark import BenchmarkSpec, build_benchmark
    from iqalens.samples import sample_paths

    check = Check()
    bench = work / "bench"
    spec = BenchmarkSpec(types=(1, 11, 16), levels=(2, 5), size=(64, 48), split_fractions=(0.5, 0.25, 0.25))
    check.run(
        "benchmark (24 images)",
        lambda: build_benchmark(bench, refs=[str(p) for p in sample_paths()[:4]], spec=spec, progress=False),
    )
    folders: dict[str, Path] = {}
    for family in families:
        folders[family] = check.run(f"build tiny {family}", lambda f=family: _build(f, work / "models" / f))
    cache = ["--cache", str(work / "cache")]
    for i, family in enumerate(families):
        if folders.get(family) is None:
            continue
        model = f"hf:{folders[family]}"
        remote = ["--trust-remote-code"] if family == "mplug_owl2" else []
        run_dir = work / "runs" / family
        generate = ["--generate", "--max-new-tokens", "4"] if i == 0 else ["--samples", "2"]
        check.run(
            f"perceive {family}",
            lambda m=model, r=remote, d=run_dir, g=generate: _cli(
                "perceive",
                "--model",
                m,
                "--bench",
                str(bench),
                "-o",
                str(d / "perceive"),
                "--device",
                device,
                "-q",
                *cache,
                *g,
                *r,
            ),
        )
        check.run(
            f"teach {family}",
            lambda m=model, r=remote, d=run_dir: _cli(
                "teach",
                "--teacher",
                m,
                "--images",
                str(bench / "manifest.csv"),
                "-o",
                str(d / "store.sqlite"),
                "--pairs-per-image",
                "1",
                "--device",
                device,
                "-q",
                *r,
            ),
        )
        report = [] if i == 0 else ["--no-report"]
        check.run(
            f"align {family} (projector, 3 steps{', with report' if i == 0 else ''})",
            lambda m=model, r=remote, d=run_dir, rep=report: _cli(
                "align",
                "--model",
                m,
                "--bench",
                str(bench),
                "--train",
                "P",
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--eval-every",
                "1",
                "--device",
                device,
                "-o",
                str(d / "align"),
                "-q",
                *cache,
                *rep,
                *r,
            ),
        )
    if "qwen2_vl" in folders and folders["qwen2_vl"] is not None:
        check.run(
            "perceive qwen2_vl --dtype bfloat16",
            lambda: _cli(
                "perceive",
                "--model",
                f"hf:{folders['qwen2_vl']}",
                "--bench",
                str(bench),
                "-o",
                str(work / "runs" / "qwen2_vl_bf16"),
                "--device",
                device,
                "--dtype",
                "bfloat16",
                "--samples",
                "0",
                "-q",
                *cache,
            ),
        )
    first = families[0]
    first_remote = ["--trust-remote-code"] if first == "mplug_owl2" else []
    if folders.get(first) is not None:
        check.run(
            f"teach {first} --device-map auto",
            lambda: _cli(
                "teach",
                "--teacher",
                f"hf:{folders[first]}",
                "--images",
                str(bench / "manifest.csv"),
                "-o",
                str(work / "runs" / "device_map.sqlite"),
                "--device-map",
                "auto",
                "-q",
                *first_remote,
            ),
        )
        store = work / "runs" / first / "store.sqlite"
        student = work / "runs" / "student"
        # On a CPU a full-backbone step takes ~45 s (2 cores): the dry run trains the head only.
        frozen = ["--freeze-backbone"] if device == "cpu" else []
        what = "head only, CPU dry run" if frozen else "backbone trained"
        check.run(
            f"distill EfficientNet-Lite0 ({distill_steps} steps, {what}) on {first}'s judgments",
            lambda: _cli(
                "distill",
                "--store",
                str(store),
                "--manifest",
                str(bench / "manifest.csv"),
                "-o",
                str(student),
                "--steps",
                str(distill_steps),
                "--device",
                device,
                "-q",
                *frozen,
            ),
        )
        check.run(
            "score with the student",
            lambda: _cli(
                "score",
                str(bench / "images"),
                "--model",
                str(student),
                "-q",
                "-o",
                str(work / "runs" / "scores.csv"),
            ),
        )
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (70, 30), (28, 28)]]
        check.run(
            f"features CPU vs {device} ({first})",
            lambda: _agreement(folders[first], images, device, bool(first_remote)),
        )
    return check


def _markdown(env: dict[str, Any], check: Check, total: float) -> str:
    gpus = ", ".join(env.get("gpus", [])) or "none"
    lines = [
        f"GPU check of {env['date']} on {env['device']} (GPUs: {gpus}; torch {env['torch']}, CUDA "
        f"{env['torch_cuda']}, transformers {env['transformers']}, Python {env['python']}): "
        f"{'all passed' if check.passed else 'FAILED'} in {total:.0f} s.",
        "",
        "| step | status | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in check.steps]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, ... or cpu for a dry run")
    parser.add_argument("--output", "-o", help="folder for gpu_check.json / .md (default: the work folder)")
    parser.add_argument("--work", help="work folder (default: a temporary folder, removed afterwards)")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help=f"tiny model families (default {','.join(FAMILIES)})"
    )
    parser.add_argument("--distill-steps", type=int, default=30)
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: SKIPPED, CUDA is not available here (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}); nothing was checked. Run with --device cpu for a dry run of the same "
            "steps."
        )
        return NOT_AVAILABLE
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    env = _environment(args.device)
    print("gpu_check:", json.dumps(env))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iqalens_gpu_check_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        check = run_checks(args.device, work, families, args.distill_steps)
        total = time.perf_counter() - start
        out = Path(args.output) if args.output else work
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            "environment": env,
            "passed": check.passed,
            "seconds": round(total, 1),
            "steps": check.steps,
        }
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
        text = _markdown(env, check, total)
        (out / "gpu_check.md").write_text(text)
    print(text)
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
