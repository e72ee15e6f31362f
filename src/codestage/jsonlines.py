"""JSON Lines parsing shared by every reader of small JSONL files (task data, instruction sets,
items files): line numbers in errors, only "\\n" ends a line, and too-deep nesting is bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from codestage.errors import DataError

MAX_RECORD_CHARS = 1 << 20  # 1,048,576 characters per evaluation item / instruction example


def too_long(where: str, chars: int, limit: int = MAX_RECORD_CHARS) -> DataError:
    return DataError(f"{where}: a record of {chars:,} characters, over the limit of {limit:,} per record "
                     "(a corrupted or wrong file?)")


def iter_json_lines(text: str, path: Path | str, *, max_chars: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of `text` read from `path`; with
    `max_chars`, a longer line is a DataError before it is parsed."""
    # Only "\n" ends a line: U+2028, U+0085 and friends are legal raw inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if max_chars is not None and len(line) > max_chars:
            raise too_long(f"{path}:{lineno}", len(line), max_chars)
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: not valid JSON (nested too deeply to read)") from None
