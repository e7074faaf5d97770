"""The shared timing helpers: medians ignore a slow outlier; side-by-side keeps the order."""

from __future__ import annotations

import time

from udc_edge.core.timing import median_ms, median_seconds, side_by_side


def test_median_ignores_one_slow_call_and_the_warmup():
    calls = []

    def fn():
        calls.append(1)
        if len(calls) in (1, 3):  # the warm-up and one timed call are slow
            time.sleep(0.05)

    assert median_ms(fn, runs=5) < 25
    assert len(calls) == 6


def test_side_by_side_reports_each_side_and_alternates():
    order = []

    def fast():
        order.append("a")

    def slow():
        order.append("b")
        time.sleep(0.005)

    ta, tb = side_by_side(fast, slow, runs=2, rounds=2)
    assert ta < 1.0 < tb  # ms
    assert "".join(order) == "aaabbbaaabbb"  # warm-up + 2 runs, alternating rounds
    assert median_seconds(slow, runs=1, warmup=0) >= 0.005
