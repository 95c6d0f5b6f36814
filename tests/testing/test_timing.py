"""Timing helpers for benchmarks: one median per function, in the order given."""

import time

from sparsepass.testing.timing import interleaved_median_ms, median_ms


def test_interleaved_medians_keep_the_order_of_the_functions():
    calls = []
    fast = lambda: calls.append("fast")  # noqa: E731
    slow = lambda: (calls.append("slow"), time.sleep(0.002))  # noqa: E731
    fast_ms, slow_ms = interleaved_median_ms([fast, slow], repeats=6, batch=3)
    assert slow_ms >= 2.0 > fast_ms
    # Each round: one untimed warm-up call, then the batch, for each function in turn.
    assert calls[:8] == ["fast"] * 4 + ["slow"] * 4 and len(calls) == 16


def test_median_ms_measures_the_call():
    assert median_ms(lambda: time.sleep(0.002), 3) >= 2.0
