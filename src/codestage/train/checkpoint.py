"""Atomic, verifiable training checkpoints: `run_dir/ckpt-000000120/`, newest complete one wins.

A checkpoint is written into a hidden temporary folder, every file is fsynced, then a COMPLETE
manifest (each file's size) is written and fsynced, and only then is the folder renamed to its
final name (one atomic rename) and the parent folder fsynced. Older checkpoints are removed only
after that, by renaming them to a trash name first. So at any instant (kill -9, power loss,
disk full) the newest folder named `ckpt-*` whose manifest matches its files is a whole
checkpoint, and a half-written one is never taken as complete.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from codestage.errors import TrainingError

PREFIX = "ckpt-"
COMPLETE = "COMPLETE"
_NAME = re.compile(r"^ckpt-(\d{9})$")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_complete(folder: Path) -> bool:
    marker = folder / COMPLETE
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and _is_complete(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest(run_dir: Path) -> tuple[int, Path] | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint in `run_dir`, or None."""
    found = latest(run_dir)
    return found[0] if found else None


def clean_partial(run_dir: Path) -> None:
    """Remove leftovers of interrupted writes and prunes (hidden temp/trash folders)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.name.startswith((f".{PREFIX}", ".trash-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def remove_all(run_dir: Path) -> None:
    clean_partial(run_dir)
    for _, p in complete_checkpoints(run_dir):
        _trash(p)
    for p in Path(run_dir).glob(f"{PREFIX}*"):  # incomplete ones too
        if p.is_dir():
            _trash(p)


def _trash(p: Path) -> None:
    trash = p.with_name(f".trash-{p.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(p, trash)
    shutil.rmtree(trash, ignore_errors=True)


def write(run_dir: Path, step: int, writer: Callable[[Path], None], *, keep: int = 1) -> Path:
    """Write checkpoint `step` via `writer(tmp_folder)`; keep the newest `keep` complete ones.

    An OSError (disk full, quota, permissions) removes the partial folder, leaves every earlier
    checkpoint as it was, and becomes a TrainingError that says so.
    """
    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:09d}"
    if _is_complete(final):
        return final  # the same step's state is already safe (a resume re-saving it)
    before = latest(run_dir)
    tmp = run_dir / f".{PREFIX}{step:09d}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        writer(tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            _fsync_path(f)
            files[f.name] = f.stat().st_size
        with open(tmp / COMPLETE, "w", encoding="utf-8") as fh:
            json.dump({"step": step, "files": files}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_path(tmp)
        if final.exists():
            _trash(final)  # an incomplete folder of the same name
        os.replace(tmp, final)
        _fsync_path(run_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        prev = f"the previous checkpoint ({before[1].name}, step {before[0]}) is intact" if before else "there is no earlier checkpoint"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TrainingError(
                f"disk full while writing the checkpoint of step {step} in {run_dir} ({exc.strerror}); {prev}. "
                "Free space (or move the run) and rerun the same command to resume."
            ) from exc
        raise TrainingError(f"could not write the checkpoint of step {step} in {run_dir} ({exc}); {prev}") from exc
    for _, old in complete_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _trash(old)
    return final
