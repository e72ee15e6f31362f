"""One coordinator per output folder: `codestage run` holds DIR/.codestage.lock while it runs.

The lock is `fcntl.flock` on that file, so the kernel drops it when its holder dies, however it dies:
a lock left by a dead process is simply taken over. The file says who holds it (pid, host, start
time) for the message a second coordinator prints, and is emptied when the holder lets go: what a
new holder finds in it was left by a coordinator that died. The file is never deleted (deleting it
would let two processes lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from codestage.errors import CodestageError

LOCK_NAME = ".codestage.lock"


class OutputLocked(CodestageError):
    """Another coordinator is writing to the same output folder."""


def _holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def coordinator_lock(out: Path) -> Iterator[dict[str, Any]]:
    """Hold the output folder's lock for the block; raise OutputLocked if another process holds it.

    Yields `{"pid", "host", "started"}` of a coordinator that died holding it (empty if none), so a
    caller can say that it took over.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fd)
            who = (f"pid {h.get('pid')} on {h.get('host')}, started {h.get('started')}" if h
                   else "another process")
            raise OutputLocked(f"{out} is in use by another codestage run ({who}); two runs on one folder would "
                               "overwrite each other: wait for it to end or stop it") from None
        locked = True
        previous = _holder(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        yield previous
    finally:
        if locked:
            os.ftruncate(fd, 0)  # let go in order: the next holder finds no dead coordinator
        os.close(fd)  # closing the descriptor releases the lock
