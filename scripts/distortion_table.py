"""Regenerate the per-type table of docs/distortions.md from the code and the golden data.

For every type: its KADID group, level parameters, measured agreement with the original
MATLAB generator's outputs (``../shared/data/kadid-golden``, run under GNU Octave) and the
documented deviation. Deterministic types: PSNR (dB) of our output against the golden output,
minimum over the golden references (99 = identical). Stochastic types: ratio of the standard
deviation of the change (output - input), ours (mean of 8 seeds) / golden, averaged over the
references. Types without golden outputs say so.

Usage: ``python scripts/distortion_table.py [--golden DIR]`` prints the markdown table.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from iqalens.distortions import all_types
from iqalens.distortions.golden import Agreement, measure, read_manifest

DEFAULT_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "kadid-golden"


def agreement_cells(results: list[Agreement], stochastic: bool) -> list[str]:
    by_level: dict[int, list[Agreement]] = defaultdict(list)
    for r in results:
        by_level[r.case.level].append(r)
    cells = []
    for level in range(1, 6):
        rs = by_level.get(level, [])
        if not rs:
            cells.append("-")
        elif stochastic:
            ratios = [r.std_ours / r.std_golden for r in rs if r.std_golden > 0]
            cells.append(f"x{np.mean(ratios):.2f}" if ratios else "both 0")
        else:
            cells.append(f"{min(r.psnr_db for r in rs):.1f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    args = parser.parse_args()
    cases = read_manifest(args.golden)
    by_type: dict[int, list[Agreement]] = defaultdict(list)
    for case in cases:
        by_type[case.type_id].append(measure(case))
    print("| id | name | group | parameter L1..L5 | stoch. | golden agreement L1..L5 | deviation |")
    print("|---|---|---|---|---|---|---|")
    for t in all_types():
        params = ", ".join(f"{v:g}" for v in t.levels)
        if t.id in by_type:
            agree = " / ".join(agreement_cells(by_type[t.id], t.stochastic))
            agree = ("std ratio " if t.stochastic else "PSNR ") + agree
        else:
            agree = "no golden output (did not run under Octave)"
        deviation = t.deviation or "none known"
        stochastic = "yes" if t.stochastic else "no"
        print(f"| {t.id} | {t.name} | {t.group} | {params} | {stochastic} | {agree} | {deviation} |")


if __name__ == "__main__":
    main()
