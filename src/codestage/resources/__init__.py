"""Paths to the data slice shipped inside the package (see resources/data/README.md)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"


def bundled(*parts: str) -> Path:
    """Path of a bundled file or folder, e.g. bundled("eval", "cosqa")."""
    return DATA_DIR.joinpath(*parts)
