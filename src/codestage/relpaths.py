"""Paths in result files, recorded relative to the file's own folder so the folder can be moved and shared.

A result file (an evaluation's results.json, a ladder's fit.json, a comparison's JSON) names the
model, data and points it was made from. Recorded as absolute paths they carry the layout of the
machine that made them and break when the folder moves; recorded relative to the folder that holds
the file, they keep working wherever the folder (and what it names, moved along) ends up. Files
written before this recorded absolute paths: a reader that opens a recorded path joins it to the
file's folder (`folder / path`), which leaves an absolute one as it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def recorded(path: Path | str, folder: Path | str) -> str:
    """`path` as a file in `folder` records it: relative to `folder`, with forward slashes."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
