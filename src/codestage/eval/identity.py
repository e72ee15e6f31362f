"""Which upstream question an item is, whatever the file order or the copy: its id and its hash.

`item_id` is the dataset's own id where it has one (C-Eval and E-KAR `id`, ScienceQA's problem id,
CoSQA `idx`, MBPP `task_id`), as a string; LogiQA and JEC-QA in the AGIEval packaging have none
(a line number is no identity: it changes when a file is reordered), so there the hash alone
identifies the item. `item_hash` is the sha256 of the item's normalised text: passage (ScienceQA:
its hint), question and choices for a multiple-choice item, prompt and tests for a code item (NFC,
whitespace runs as one space, stripped), so a re-encoded or re-spaced copy of the same question
has the same hash. The answer is not part of it: a corrected answer key is the same question,
which `compare` then reports as a conflict rather than pairing silently.

Both go into every items.jsonl line; `compare` pairs two runs' items by them. Duplicate records in
a task file (the same hash, or the same upstream id twice) would be scored twice and inflate n:
`drop_duplicates` refuses them naming both lines, or, when asked to be lenient, scores an exact
duplicate (same text, same answer) once and says so. Two records with the same question and
different answers, or one id for two different questions, stay an error: no choice between them
is safe.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from codestage.errors import DataError
from codestage.eval.tasks.base import ChoiceItem, Item

ID_FIELDS = ("id", "pid", "idx", "task_id")  # the upstream id's name in `Item.meta`, per dataset
_SPACE = re.compile(r"\s+")


def normalise(text: str | None) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text or "")).strip()


def item_id(item: Item) -> str | None:
    for name in ID_FIELDS:
        value = item.meta.get(name)
        if value is not None and value != "":
            return str(value)
    return None


def item_hash(item: Item) -> str:
    if isinstance(item, ChoiceItem):
        parts: list[Any] = ["choice", normalise(item.passage), normalise(item.question), [normalise(c) for c in item.choices]]
        if item.meta.get("hint"):  # ScienceQA's context: two problems may differ only there
            parts.append(normalise(item.meta["hint"]))
    else:
        parts = ["generation", normalise(item.prompt), [normalise(t) for t in item.tests]]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


def answer(item: Item) -> Any:
    """What the item counts as correct: the gold choices, or the reference solution."""
    return list(item.gold) if isinstance(item, ChoiceItem) else item.reference


def identity(item: Item) -> dict[str, Any]:
    return {"item_id": item_id(item), "item_hash": item_hash(item)}


def with_identity(records: Sequence[dict], items: Sequence[Item]) -> list[dict]:
    """Item records with `item_id` and `item_hash` after `task` and `doc_id` (records in item order)."""
    out = []
    for rec, it in zip(records, items, strict=True):
        head = {k: rec[k] for k in ("task", "doc_id") if k in rec}
        out.append({**head, **identity(it), **{k: v for k, v in rec.items() if k not in head}})
    return out


def _where(path: Path, item: Item) -> str:
    line = item.meta.get("line")
    return f"{path}:{line}" if line is not None else f"{path} (item {item.doc_id + 1})"


def _earlier(first: Item, item: Item) -> str:
    """Where `first` is, seen from `item`: its line, or its item number (1-based) when that says more."""
    line = first.meta.get("line")
    if line is None:
        return f"item {first.doc_id + 1}"
    if line == item.meta.get("line"):  # a one-line JSON array, or an id listed twice in a split
        return f"item {first.doc_id + 1} (also from line {line})"
    return f"line {line}"


def drop_duplicates(items: Sequence[Item], path: Path, *, lenient: bool = False) -> tuple[list[Item], list[str]]:
    """(items without duplicates, notes). A duplicate is a DataError naming both lines; with
    `lenient`, an exact duplicate (same text and answer, same or no id) is skipped and noted."""
    by_hash: dict[str, Item] = {}
    by_id: dict[str, Item] = {}
    kept: list[Item] = []
    skipped: list[tuple[Item, Item]] = []
    for it in items:
        h, i = item_hash(it), item_id(it)
        first = by_hash.get(h)
        if first is None and i is not None and i in by_id:
            other = by_id[i]
            raise DataError(f"{_where(path, it)}: id {i!r} is also the id of {_earlier(other, it)}, a different question; "
                            "one id must name one item")
        if first is not None:
            same_id = item_id(first) == i
            if answer(first) != answer(it) or not same_id:
                why = "a different answer" if answer(first) != answer(it) else f"a different id ({item_id(first)!r} vs {i!r})"
                raise DataError(f"{_where(path, it)}: the same question and choices as {_earlier(first, it)} but {why}; "
                                "fix the file (no choice between the two is safe)")
            if not lenient:
                raise DataError(f"{_where(path, it)}: the same item as {_earlier(first, it)} (same question, choices and answer); "
                                "it would be scored twice: remove one, or evaluate with --lenient "
                                "(study config: eval.lenient: true) to score it once")
            skipped.append((first, it))
            continue
        by_hash[h] = it
        if i is not None:
            by_id[i] = it
        kept.append(it)
    notes = []
    if skipped:
        pairs = "; ".join(f"{_where(path, b).rsplit('/', 1)[-1]} = {_earlier(a, b)}" for a, b in skipped[:5])
        pairs += "; ..." if len(skipped) > 5 else ""
        notes.append(f"{len(skipped)} duplicate record(s) in {path.name} skipped (lenient; each scored once): {pairs}")
    return kept, notes


__all__ = ["ID_FIELDS", "answer", "drop_duplicates", "identity", "item_hash", "item_id", "normalise", "with_identity"]
