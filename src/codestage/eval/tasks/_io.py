"""Readers for the upstream file formats that name the file and line of every problem.

Upstream eval files are JSON lines, JSON documents (a list or an id -> record mapping) and CSV.
Each reader yields records with the line they start on, so a loader can say exactly where a
missing field or a wrong label is (`file:line: field ...`) instead of failing somewhere later.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from codestage.errors import DataError
from codestage.jsonlines import MAX_RECORD_CHARS, iter_json_lines, too_long

MAX_FILE_BYTES = 1 << 30  # an evaluation file is read whole; the largest upstream one is ~40 MB


def where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path}: {path.stat().st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for an evaluation file")
        return path.read_text(encoding="utf-8").removeprefix("\ufeff")  # a BOM (Excel's CSVs) is not data
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a bad or oversized line is a DataError naming it."""
    for lineno, obj in iter_json_lines(_read_text(path), path, max_chars=MAX_RECORD_CHARS):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


class _Lines:
    """Line number of a position, counting newlines incrementally (positions only move forward)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _decode_error(path: Path, text: str, exc: Exception | None, pos: int, what: str) -> DataError:
    if isinstance(exc, json.JSONDecodeError):
        return DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})")
    line = text.count("\n", 0, pos) + 1
    if isinstance(exc, RecursionError):
        return DataError(f"{path}:{line}: not valid JSON here (nested too deeply to read)")
    return DataError(f"{path}:{line}: not valid JSON (expected {what})")


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """(line the element starts on, element) for a top-level JSON array, decoded element by element."""
    text = _read_text(path)
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise _decode_error(path, text, None, pos, "a JSON array '['")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return
    lines = _Lines(text)
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _decode_error(path, text, exc, pos, "a value") from None
        if end - pos > MAX_RECORD_CHARS:
            raise too_long(f"{path}:{lines.at(pos)}", end - pos)
        yield lines.at(pos), obj
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos):
            return
        else:
            raise _decode_error(path, text, None, pos, "',' or ']'")


def iter_json_object(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line, key, value) for a top-level JSON object (e.g. ScienceQA's problems.json: id -> problem)."""
    text = _read_text(path)
    dec = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if not text.startswith("{", pos):
        raise _decode_error(path, text, None, pos, "a JSON object '{'")
    pos = _skip_ws(text, pos + 1)
    if text.startswith("}", pos):
        return
    lines = _Lines(text)
    while True:
        try:
            key, end = dec.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _decode_error(path, text, exc, pos, "a key") from None
        if not isinstance(key, str):
            raise _decode_error(path, text, None, pos, "a string key")
        line = lines.at(pos)
        pos = _skip_ws(text, end)
        if not text.startswith(":", pos):
            raise _decode_error(path, text, None, pos, "':'")
        pos = _skip_ws(text, pos + 1)
        try:
            value, end = dec.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise _decode_error(path, text, exc, pos, "a value") from None
        if end - pos > MAX_RECORD_CHARS:
            raise too_long(f"{path}:{line}", end - pos)
        yield line, key, value
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("}", pos):
            return
        else:
            raise _decode_error(path, text, None, pos, "',' or '}'")


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Records of a file that is either JSON lines or one JSON array (both occur upstream)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip("\ufeff \t\r\n")
    return iter_json_array(path) if head.startswith("[") else iter_jsonl(path)


def read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON here (nested too deeply to read)") from None


def iter_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line the record starts on, row) for a CSV with a header; missing columns are a DataError."""
    text = _read_text(path)
    # csv's own line handling (not str.splitlines); strict: an unterminated quote is an error, not a field
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (header has {', '.join(header) or 'nothing'})")
    start = reader.line_num + 1
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over csv's size limit, a NUL byte, ...
            raise DataError(f"{path}:{start}: malformed CSV ({exc})") from None
        if None in row:
            raise DataError(f"{path}:{start}: more fields than the header's {len(header)} columns")
        empty = [c for c in required if row.get(c) is None]
        if empty:
            raise DataError(f"{path}:{start}: field(s) {', '.join(empty)} missing (too few columns)")
        yield start, row
        start = reader.line_num + 1


def field(obj: dict, name: str, types: type | tuple[type, ...], loc: str) -> Any:
    """obj[name] checked for presence and type; the error names the location and the field."""
    if not isinstance(obj, dict):
        raise DataError(f"{loc}: expected a JSON object, got {type(obj).__name__}")
    if name not in obj:
        raise DataError(f"{loc}: field '{name}' missing")
    value = obj[name]
    if not isinstance(value, types):
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DataError(f"{loc}: field '{name}' should be {want}, got {type(value).__name__} {str(value)[:60]!r}")
    return value


def string_list(obj: dict, name: str, loc: str, *, min_len: int = 1) -> list[str]:
    value = field(obj, name, list, loc)
    if len(value) < min_len or not all(isinstance(v, str) for v in value):
        raise DataError(f"{loc}: field '{name}' should be a list of at least {min_len} strings, got {str(value)[:80]!r}")
    return value


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path
