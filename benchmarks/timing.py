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


def load_note(before: float, after: float, cores: int) -> str:
    """How to read absolute numbers, from the 1-minute load average around the run.

    Only the load *before* says whether other jobs were running: the one after includes the
    benchmark's own load (about ``cores`` while it ran).
    """
    head = f"**Load average (1 min) {before:.1f} before, {after:.1f} after the run**"
    if before > 0.5 * cores:
        return (
            f"{head}: other jobs shared these {cores} cores, so absolute numbers are low and noisy; the "
            "interleaved comparisons stay fair. Re-run the command on an idle machine for absolute numbers."
        )
    return f"{head} (otherwise idle machine; the load after is the benchmark's own)."
