"""Wall-clock timing shared by build, doctor, bench and the defence table.

Medians, not means: on shared CPUs one slow run (another process, a page fault) would move
a mean a lot. Comparisons are measured in alternating rounds on the same machine, so a
load change hits both sides; absolute times on shared machines are noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``runs`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """:func:`median_seconds` in milliseconds."""
    return median_seconds(fn, runs, warmup) * 1e3


def side_by_side(a: Callable[[], object], b: Callable[[], object], runs: int, rounds: int = 3
                 ) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, measured in alternating rounds (each warmed up)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(median_ms(a, runs))
        tb.append(median_ms(b, runs))
    return float(np.median(ta)), float(np.median(tb))
