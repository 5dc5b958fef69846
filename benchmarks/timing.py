"""Timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this module is on
their path): methods compared in one run are timed interleaved, so that load from other processes
hits all of them alike instead of whichever happened to run during it."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of every method, per round: one warm-up call each, then one call each per round."""
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
