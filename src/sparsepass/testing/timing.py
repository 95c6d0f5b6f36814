"""Timing for benchmarks and examples: the median of repeated calls after a warm-up."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_median_ms(fns, repeats: int, batch: int = 25) -> list[float]:
    """Median wall times (ms) of several callables timed in turn, ``batch`` calls at a time.

    For A/B comparisons on a noisy machine: each round runs every function
    ``batch`` times, so a slow spell (a neighbour, a frequency change, another
    pool's threads still spinning) hits all of them alike instead of whichever
    ran then. The first call of each batch is not timed: it pays for the
    caches the other function's data took over, which single-model runs do not.
    Batches are long (25 calls) because the next few calls still pay a little:
    a sparse kernel that shares the caches with a dense one ran 5-15% slower in
    batches of 10 than alone.
    """
    times = [[] for _ in fns]
    for _ in range(-(-repeats // batch)):
        for fn, samples in zip(fns, times):
            fn()
            for _ in range(batch):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) * 1e3 for samples in times]
