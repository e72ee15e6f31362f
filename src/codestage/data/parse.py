"""Turn one raw record into a Document or a located Issue; the same code serves workers and serial reads.

Raw records are small tuples `(file_idx, record, kind, payload)` made by `readers.py` in the main
process (bytes of a JSON line, a row dict, the bytes of a code or text file, or an Issue found while
reading). Decoding, JSON parsing, field mapping and the filters run here, in the worker processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from codestage.data.inputs import language_of, location
from codestage.data.issues import Issue
from codestage.data.document import Document

Raw = tuple  # (file_idx: int, record: int, kind: str, payload: Any)

LANGUAGE_KEYS = ("language", "lang")
LICENSE_KEYS = ("license", "licence", "licenses", "licences")
PATH_KEYS = ("path", "file", "filename")


@dataclass(frozen=True)
class ParseOptions:
    """Field mapping and filters (None = no filter). `max_chars` is the 'huge document' limit."""

    text_field: str = "text"
    min_chars: int = 0
    max_chars: int = 5_000_000
    languages: frozenset[str] | None = None
    licenses: frozenset[str] | None = None


def _lookup(obj: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _first(obj: dict[str, Any], meta: dict[str, Any], keys: Sequence[str]) -> Any:
    for where in (obj, meta):
        for k in keys:
            v = where.get(k)
            if v not in (None, "", []):
                return v
    return None


_FILE_KIND = {"json": "jsonl", "obj": "parquet"}


def _from_object(obj: Any, where: str, raw: Raw, opts: ParseOptions, default_source: str) -> Document | Issue:
    fidx, rec = raw[0], raw[1]
    if not isinstance(obj, dict):
        return Issue("not_an_object", fidx, rec, where, f"expected a JSON object, got {type(obj).__name__}")
    found, text = _lookup(obj, opts.text_field)
    if not found:
        fields = ", ".join(sorted(map(str, obj))) or "none"
        return Issue("missing_field", fidx, rec, where, f"no field {opts.text_field!r} (fields: {fields})")
    if not isinstance(text, str):
        return Issue("wrong_type", fidx, rec, where, f"field {opts.text_field!r} is {type(text).__name__}, expected a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON "\\ud800" escape is not text
        return Issue("invalid_utf8", fidx, rec, where, f"field {opts.text_field!r} holds a lone surrogate at character {exc.start}")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    language = _first(obj, meta, LANGUAGE_KEYS)
    if language is None:
        path = _first(obj, meta, PATH_KEYS)
        language = language_of(path) if isinstance(path, str) else None
    lic = _first(obj, meta, LICENSE_KEYS)
    source = obj.get("source") if isinstance(obj.get("source"), str) and obj.get("source") else default_source
    return Document(text, source, where, meta, str(language) if language else "text", lic)


def _decode(data: bytes, raw: Raw, where: str, binary_kind: str) -> str | Issue:
    if binary_kind == "binary" and b"\x00" in data:
        return Issue("binary", raw[0], raw[1], where, "binary content (NUL bytes) in a code file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Issue(binary_kind, raw[0], raw[1], where, f"invalid UTF-8 at byte {exc.start} ({exc.reason})")


def parse_raw(raw: Raw, paths: Sequence[str], opts: ParseOptions, source: str) -> Document | Issue:
    """Decode and map one raw record, then apply the bad-input checks and the filters."""
    fidx, rec, kind, payload = raw
    if kind == "issue":
        return payload
    where = location(paths[fidx], _FILE_KIND.get(kind, kind), rec)
    if kind == "json":
        line = _decode(payload, raw, where, "invalid_utf8")
        if isinstance(line, Issue):
            return line
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return Issue("malformed_json", fidx, rec, where, f"malformed JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            return Issue("malformed_json", fidx, rec, where, "malformed JSON (nested too deeply to read)")
        doc = _from_object(obj, where, raw, opts, source)
    elif kind == "obj":
        doc = _from_object(payload, where, raw, opts, source)
    elif kind == "code":
        data, language = payload
        text = _decode(data, raw, where, "binary")
        if isinstance(text, Issue):
            return text
        doc = Document(text, source, where, {"path": paths[fidx], "language": language}, language, None)
    elif kind == "txt":
        text = _decode(payload, raw, where, "invalid_utf8")
        if isinstance(text, Issue):
            return text
        doc = Document(text, source, where, {}, "text", None)
    else:
        raise ValueError(f"unknown raw record kind {kind!r}")
    if isinstance(doc, Issue):
        return doc
    return check(doc, fidx, rec, opts)


def check(doc: Document, fidx: int, rec: int, opts: ParseOptions) -> Document | Issue:
    """Bad-input checks (empty, huge) then the user's filters, in that order."""
    n = len(doc.text)
    if not doc.text.strip():
        return Issue("empty", fidx, rec, doc.location, "empty document (no non-whitespace text)")
    if n > opts.max_chars:
        return Issue("too_long", fidx, rec, doc.location, f"document of {n} characters exceeds max_chars={opts.max_chars}")
    if n < opts.min_chars:
        return Issue("too_short", fidx, rec, doc.location, f"{n} characters < min_chars={opts.min_chars}")
    if opts.languages is not None and doc.language not in opts.languages:
        return Issue("language", fidx, rec, doc.location, f"language {doc.language!r} not in the allow-list")
    if opts.licenses is not None and doc.license is not None:
        lics = doc.license if isinstance(doc.license, list) else [doc.license]
        if not any(str(x) in opts.licenses for x in lics):
            return Issue("license", fidx, rec, doc.location, f"licence {doc.license!r} not in the allow-list")
    return doc
