"""Counted, located input problems: every record that does not become a document is accounted here.

Two classes of reasons. `BAD` is broken input (invalid UTF-8, malformed JSON, missing fields,
empty or huge documents, binary files): counted per input with the first few locations, or, in
strict mode, an error naming `file:line`. `FILTERED` is what the user asked to drop (length,
language and licence filters, exact duplicates, unsupported files in a directory); counted, never
an error. A store's manifest lists both, so documents + dropped = records read, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from codestage.errors import DataError

BAD = ("invalid_utf8", "malformed_json", "not_an_object", "missing_field", "wrong_type", "empty", "too_long",
       "binary", "unreadable")
FILTERED = ("too_short", "language", "license", "duplicate", "unsupported_file", "decontaminated")
FIRST = 5  # locations kept per input and reason


@dataclass(frozen=True)
class Issue:
    """One dropped record: where (`file_idx`, `record` order it globally), why, and how many records."""

    kind: str
    file_idx: int
    record: int
    location: str
    detail: str
    count: int = 1


class IssueLog:
    """Per input and reason: a count and the first locations in input order (mergeable across shards)."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.data: dict[str, dict[str, dict[str, Any]]] = {}

    def add(self, input_key: str, issue: Issue) -> None:
        if issue.kind not in BAD and issue.kind not in FILTERED:
            raise ValueError(f"unknown issue kind {issue.kind!r}")
        if self.strict and issue.kind in BAD:
            raise DataError(f"{issue.location}: {issue.detail} (strict mode; drop --strict to count and skip)")
        entry = self.data.setdefault(input_key, {}).setdefault(issue.kind, {"count": 0, "first": []})
        entry["count"] += issue.count
        first = entry["first"]
        if len(first) < FIRST or (issue.file_idx, issue.record) < (first[-1]["file"], first[-1]["record"]):
            first.append({"at": issue.location, "why": issue.detail, "file": issue.file_idx, "record": issue.record})
            first.sort(key=lambda e: (e["file"], e["record"]))
            del first[FIRST:]

    def merge(self, other: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        """Fold in another log's `to_json()` (a shard's), keeping the globally first locations."""
        for key, kinds in other.items():
            for kind, entry in kinds.items():
                first = entry.get("first", [])
                for e in first:
                    self.add(key, Issue(kind, e["file"], e["record"], e["at"], e["why"], count=0))
                mine = self.data.setdefault(key, {}).setdefault(kind, {"count": 0, "first": []})
                mine["count"] += int(entry["count"])

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kinds in self.data.values():
            for kind, entry in kinds.items():
                out[kind] = out.get(kind, 0) + entry["count"]
        return dict(sorted(out.items()))

    def for_input(self, key: str) -> dict[str, Any]:
        return {k: self.data[key][k] for k in sorted(self.data.get(key, {}))}

    def to_json(self) -> dict[str, Any]:
        return {key: self.for_input(key) for key in sorted(self.data)}

