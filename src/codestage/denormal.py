"""Flushing denormal floats to zero for the duration of a command, then putting the switch back.

Tiny CPU models spend much of their time in denormal arithmetic, so the commands that train and
evaluate flush denormals to zero. The switch is process-wide floating-point state (the CPU's
control register, which Python's own float arithmetic uses too): left on, it changes every float
computed afterwards in the same process, so a command restores what it found when it returns.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def flushing_denormals() -> bool:
    """Whether float arithmetic in this thread now flushes denormal results to zero (torch has no getter)."""
    tiny = sys.float_info.min  # the smallest normal double; a quarter of it is denormal
    return tiny / 4 == 0.0


@contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush denormals to zero inside the block and restore the previous setting after it."""
    import torch

    was = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)
