"""One seed's finished step given to another seed of the same study: `python -m codestage.study.share
SRC DST KEY`.

The seeds of a study share the steps whose keys leave the seed out (the tokenizer, the token
stores, decontamination). A run of several seeds (`codestage run --seeds 0,1,2`) makes each of
them once, in the first seed's folder, and gives the other seeds a copy whose files are hard links
(no extra disk; a plain copy where the file system cannot link). The step's marker comes with the
folder, so the other seed's study finds the step up to date under the same key, exactly as if it
had made it. Files in a finished step's folder are never changed in place (writes replace them
atomically), so a link cannot be changed through the other seed.

This module imports nothing heavy: the job takes a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from codestage.errors import DataError

MARKER = ".step.json"  # the study runner's marker (codestage.study.runner.MARKER)


def _key(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def share_step(src: Path, dst: Path, key: str) -> bool:
    """Give `dst` the finished step in `src` (made under `key`); False if `dst` already holds it."""
    src, dst = Path(src), Path(dst)
    if _key(dst) == key:
        return False
    found = _key(src)
    if found != key:
        raise DataError(f"{src}: holds no finished step with key {key[:12]} (found {found and found[:12]}); the seed "
                        "that makes it must finish it first")
    tmp = dst.with_name(f"{dst.name}.sharing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp, symlinks=True, copy_function=_link_or_copy)
    if dst.exists() or dst.is_symlink():  # a stale or cut-off folder of this step: the study would rebuild it
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m codestage.study.share SRC DST KEY", file=sys.stderr)
        return 2
    try:
        made = share_step(Path(args[0]), Path(args[1]), args[2])
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args[1]}: {'linked from' if made else 'already holds'} {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
