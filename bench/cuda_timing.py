"""Median GPU time of a callable, by CUDA events: the kernel-level timer the bench scripts share."""

from __future__ import annotations

from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median milliseconds of `reps` calls of `fn`, each bracketed by CUDA events and synchronized."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]
