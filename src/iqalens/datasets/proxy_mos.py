"""The KADID-10k proxy-MOS table shipped with the package (see ``scripts/build_proxy_mos.py``).

A synthetic image made with KADID type t at level l gets the mean human DMOS of KADID's cell
(t, l) over its 81 references: a *proxy* for how humans rate that distortion at that strength,
not a score of the image itself. Reports must call it a proxy.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from importlib import resources

from iqalens.datasets.manifest import MosScale
from iqalens.errors import InvalidInputError

#: KADID-10k's DMOS scale (higher = better).
PROXY_SCALE = MosScale(1.0, 5.0, True)

#: Clean convention: cell (18, 3), mean shift with parameter 0, whose output equals the reference.
CLEAN_CELL = (18, 3)

PROXY_NOTE = (
    "proxy MOS = KADID-10k mean DMOS of the image's (type, level) cell over 81 references; "
    "clean images get the cell (18, 3) mean (an unchanged copy of the reference as rated by humans)"
)


@cache
def proxy_table() -> dict[tuple[int, int], float]:
    """(type_id, level) -> mean DMOS, from the packaged CSV."""
    text = (resources.files("iqalens") / "data" / "kadid_proxy_mos.csv").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return {(int(r["type_id"]), int(r["level"])): float(r["mean_dmos"]) for r in csv.DictReader(lines)}


def proxy_mos(type_id: int | None, level: int | None) -> float:
    """Proxy MOS of a KADID cell; ``None`` type means a clean image.

    A type outside KADID-10k (a registered extension) has no human ratings to borrow: NaN, so its
    images carry no MOS rather than an invented one.
    """
    table = proxy_table()
    if type_id is None:
        return table[CLEAN_CELL]
    if level is None:
        raise InvalidInputError("a distorted image needs its level for a proxy MOS")
    return table.get((int(type_id), int(level)), math.nan)
