"""JSON Lines parsing shared by every reader of small JSONL files (task data, instruction sets,
items files): line numbers in errors, only "\\n" ends a line, and too-deep nesting is bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from codestage.errors import DataError


def iter_json_lines(text: str, path: Path | str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of `text` read from `path`."""
    # Only "\n" ends a line: U+2028, U+0085 and friends are legal raw inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: not valid JSON (nested too deeply to read)") from None
