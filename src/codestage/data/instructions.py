"""Read instruction-tuning sets in their upstream formats.

- Alpaca / Code Alpaca: a JSON list of {instruction, input, output} (Code Alpaca's newer file
  also has `response`; the answer is `output`, or `response` when `output` is empty).
- Self-instruct seed tasks (.jsonl): {instruction, instances: [{input, output}, ...]}: one example
  per instance.
- Any .jsonl with instruction/input/output fields.

Records that are well-formed but have an empty answer (Code Alpaca has a few) cannot teach a
response; they are skipped, counted and listed in the set's report rather than silently lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from codestage.data.sources import expand_paths
from codestage.errors import DataError
from codestage.jsonlines import MAX_RECORD_CHARS, iter_json_lines, too_long


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str
    source: str
    location: str


def _field(obj: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    if name not in obj or obj[name] is None:
        if required:
            raise DataError(f"{where}: no field {name!r} (fields: {', '.join(sorted(obj)) or 'none'})")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} is {type(value).__name__}, expected a string")
    return value


@dataclass
class InstructionSet:
    name: str
    examples: list[Example] = field(default_factory=list)
    skipped_empty: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {"examples": len(self.examples), "skipped_empty_answer": len(self.skipped_empty),
                "skipped_locations": self.skipped_empty[:20]}


class _EmptyAnswer(Exception):
    pass


def _bounded(where: str, *texts: str) -> None:
    """An example over MAX_RECORD_CHARS is an error here, before anything tokenizes it."""
    size = sum(map(len, texts))
    if size > MAX_RECORD_CHARS:
        raise too_long(where, size)


def _from_record(obj: Any, source: str, where: str) -> Iterator[Example]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    instruction = _field(obj, "instruction", where)
    if "instances" in obj:  # self-instruct seed format
        if not isinstance(obj["instances"], list) or not obj["instances"]:
            raise DataError(f"{where}: field 'instances' must be a non-empty list")
        for j, inst in enumerate(obj["instances"]):
            sub = f"{where} instances[{j}]"
            if not isinstance(inst, dict):
                raise DataError(f"{sub}: expected a JSON object")
            output, given = _field(inst, "output", sub), _field(inst, "input", sub, required=False)
            _bounded(sub, instruction, given, output)
            if not output.strip():
                yield _EmptyAnswer(sub)  # only this instance: its siblings still count
                continue
            yield Example(instruction, given, output, source, sub)
        return
    output = _field(obj, "output", where, required="response" not in obj) or _field(obj, "response", where, required=False)
    given = _field(obj, "input", where, required=False)  # checked even when the answer is empty
    _bounded(where, instruction, given, output)
    if not output.strip():
        raise _EmptyAnswer(where)
    yield Example(instruction, given, output, source, where)


def _records(path: Path) -> Iterator[tuple[Any, str]]:
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    if path.suffix == ".jsonl":
        for lineno, obj in iter_json_lines(text, path, max_chars=MAX_RECORD_CHARS):
            yield obj, f"{path}:{lineno}"
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: malformed JSON (nested too deeply to read)") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of instruction records, got {type(data).__name__}")
    for i, obj in enumerate(data):
        yield obj, f"{path} record {i}"


def read_examples(paths: Iterable[str | Path], source: str, *, base: Path | None = None,
                  max_examples: int | None = None) -> InstructionSet:
    """All examples of one instruction set, in file order; a set with none is an error."""
    out = InstructionSet(source)
    paths = list(paths)
    for path in expand_paths(paths, base=base):
        if path.is_dir():
            raise DataError(f"{path}: instruction sets are files (.json list or .jsonl), not directories")
        for obj, where in _records(path):
            try:
                examples = list(_from_record(obj, source, where))
            except _EmptyAnswer as skip:
                out.skipped_empty.append(str(skip))
                continue
            for ex in examples:
                if isinstance(ex, _EmptyAnswer):
                    out.skipped_empty.append(str(ex))
                    continue
                out.examples.append(ex)
                if max_examples is not None and len(out.examples) >= max_examples:
                    return out
    if not out.examples:
        raise DataError(f"instruction set {source!r}: no usable examples in {', '.join(map(str, paths))}")
    return out
