"""The unit of training text: one document and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One training document (`location` is `file`, `file:line` or `file:rowN`).

    `language` is the programming language for code ('text' otherwise); `license` is the record's
    licence field when it has one (None otherwise), for licence allow-lists.
    """

    text: str
    source: str
    location: str
    meta: dict = field(default_factory=dict, compare=False)
    language: str = "text"
    license: Any = field(default=None, compare=False)
