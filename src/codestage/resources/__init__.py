"""Paths to the data slice shipped inside the package (see resources/data/README.md), and to the
full shared data when it is present."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
SHARED_DATA_ENV = "CODESTAGE_SHARED_DATA"


def bundled(*parts: str) -> Path:
    """Path of a bundled file or folder, e.g. bundled("eval", "cosqa")."""
    return DATA_DIR.joinpath(*parts)


def shared_data(*parts: str) -> Path | None:
    """The full upstream data (tests and benchmarks that need more than the bundled slice): where
    $CODESTAGE_SHARED_DATA points, else `../shared/data` beside the repository of this source tree;
    None when absent, so callers skip or say what is missing."""
    env = os.environ.get(SHARED_DATA_ENV)
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    path = root.joinpath(*parts)
    return path if path.exists() else None
