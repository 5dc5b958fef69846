"""Compute the KADID-10k proxy-MOS table shipped in ``src/iqalens/data/kadid_proxy_mos.csv``.

For each of the 125 (type, level) cells: the mean and standard deviation, over KADID-10k's 81
reference images, of the human DMOS of that cell (scale 1-5, higher = better). Synthetic images
built with the same type and level can use the cell mean as a documented *proxy* MOS where no
human score exists for the image itself. The clean convention is the mean of cell (18, 3): mean
shift with parameter 0, whose output equals the reference, i.e. what raters gave an unchanged copy.

Usage: ``python scripts/build_proxy_mos.py ../shared/data/labels/KADID-10k.txt``
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "iqalens" / "data" / "kadid_proxy_mos.csv"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "labels", type=Path, help="KADID-10k label CSV (dis_img_path,dis_type,ref_img_path,score)"
    )
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    with open(args.labels, newline="") as fh:
        for row in csv.DictReader(fh):
            _, t, lv = Path(row["dis_img_path"]).stem.split("_")
            cells[(int(t), int(lv))].append(float(row["score"]))
    if len(cells) != 125 or any(len(v) != 81 for v in cells.values()):
        raise SystemExit(f"expected 125 cells x 81 references, got {len(cells)} cells")
    with open(args.output, "w", newline="") as fh:
        fh.write(
            "# KADID-10k mean DMOS per (type, level) over its 81 references (scale 1-5, higher = better).\n"
        )
        fh.write("# A PROXY MOS for synthetic images of the same cell, not a score of those images.\n")
        fh.write(
            f"# Source: {args.labels.name} (KADID-10k, Lin, Hosu & Saupe 2019); scripts/build_proxy_mos.py\n"
        )
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["type_id", "level", "mean_dmos", "std_dmos", "n_references"])
        for (t, lv), scores in sorted(cells.items()):
            writer.writerow(
                [t, lv, f"{statistics.fmean(scores):.4f}", f"{statistics.stdev(scores):.4f}", len(scores)]
            )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
