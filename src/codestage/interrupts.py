"""Ctrl-C on the command line: the first stops the command cleanly, a second ends it at once.

The first SIGINT raises KeyboardInterrupt in the main thread at its next Python instruction: the
command unwinds (outputs are written atomically, so they stay as they were; worker processes and
sandboxed programs are stopped, not waited for) and exits with status 130.

The main thread can sit in one long C call (a tokenizer on a long document, a torch op) where
Python runs no handler until the call returns, so resetting the handler from Python is not enough
for the second Ctrl-C. On Linux the handler is therefore made one-shot in the kernel
(`SA_RESETHAND`): the first SIGINT itself restores the default action, and a second one kills the
process on the spot (status 130 in the shell) wherever it is. Elsewhere the Python handler does the
reset when it runs.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_SA_RESETHAND = -0x80000000  # 0x80000000 as the C int of `sa_flags`


class _SigAction(ctypes.Structure):
    """glibc's and musl's `struct sigaction` (handler, 1024-bit mask, int flags, restorer)."""

    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ubyte * 128), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


def one_shot(sig: int) -> bool:
    """Make the handler now installed for `sig` one-shot in the kernel (Linux); False if not done."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        act, check = _SigAction(), _SigAction()
        if libc.sigaction(sig, None, ctypes.byref(act)) != 0 or not act.handler:
            return False
        act.flags |= _SA_RESETHAND
        if libc.sigaction(sig, ctypes.byref(act), None) != 0:
            return False
        libc.sigaction(sig, None, ctypes.byref(check))
        return bool(check.flags & _SA_RESETHAND) and check.handler == act.handler
    except (OSError, AttributeError, ValueError):
        return False


def _first_interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise KeyboardInterrupt


@contextmanager
def ctrl_c() -> Iterator[None]:
    """The two-step Ctrl-C for the duration of a command (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _first_interrupt)
    one_shot(signal.SIGINT)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _first_interrupt:
            signal.signal(signal.SIGINT, previous)  # an in-process caller (tests) gets its handler back


__all__ = ["ctrl_c", "one_shot"]
