"""Task loaders under fuzzed upstream-format files: a clear error naming the file, or every record.

For each task, Hypothesis draws a few valid upstream records (with tricky strings: empty, U+2028,
U+0085, quotes, CJK, 300k characters) and one fault: a dropped or mistyped field, a bad label,
a non-object record, a garbage line, invalid UTF-8, JSON nested too deeply to read, a truncated
file, an empty file; or a benign variation: CRLF and blank lines, a UTF-8 BOM, extra fields, a
huge field, a record repeated. `get_task(name, data_dir).load()` must then raise a CodestageError
whose message names the file (faults) or return exactly one item per record with the question
intact (benign): never another exception type, never a silent loss. `load_items()` (what is
evaluated) must return the same items, or, when two records are one item, a DataError naming the
file and line.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codestage.errors import CodestageError, DataError
from codestage.eval.identity import item_hash, item_id
from codestage.eval.registry import get_task

FUZZ = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
DEEP = 20_000  # nesting depth no JSON reader in Python can follow

TRICKY = ["", " ", "\u2028", "a\u2029b", "x\x85y", "\r", "é 中文 ü", '"quoted", with comma', "back\\slash", "\t", "tab\tand\nnewline"]
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(TRICKY),
)
WORD = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12)

FAULTS = ("drop_field", "wrong_type", "bad_value", "not_object", "garbage", "invalid_utf8", "deep_nesting",
          "truncate", "empty_file")
BENIGN = ("none", "crlf_blank_lines", "bom", "extra_fields", "huge_field", "duplicate")
WRONG = {
    "str": [1, 2.5, True, None, [], {}],
    "int": ["1", 2.5, None, [], {}],
    "list": ["a b", 1, None, {}],
    "dict": ["x", 1, None, []],
    "label": [1, None, {}],
    "optional_str": [1, 2.5, True, [], {}],
}
TEXT_FIELDS = ("question", "doc", "code", "text", "prompt", "passage")


@dataclass
class Spec:
    task: str
    path: str  # file the records go to, relative to data_dir
    fmt: str  # jsonl | array | either | csv | object
    record: Callable[[st.DataObject, int], dict]
    typed: dict[str, str]  # field -> kind, wrong type must be an error
    bad: dict[str, list[Any]]  # field -> values that must be an error
    question: Callable[[dict], str]
    drop: tuple[str, ...] = ()  # fields whose absence must be an error (default: typed)
    extra_files: Callable[[list[dict]], dict[str, str]] = field(default=lambda recs: {})
    expected: Callable[[list[dict]], int] = len

    @property
    def required(self) -> tuple[str, ...]:
        return self.drop or tuple(self.typed)


def _options(data, n: int, style: str) -> list[str]:
    texts = [data.draw(TEXT) for _ in range(n)]
    fmt = {"paren": "({L}){t}", "dot": "{L}．{t}", "plain": "{t}"}[style]
    return [fmt.format(L="ABCD"[i], t=t) for i, t in enumerate(texts)]


def _agieval(data, i: int, multi: bool) -> dict:
    n = data.draw(st.integers(2, 4))
    rec = {"passage": data.draw(st.one_of(st.none(), TEXT)), "question": data.draw(TEXT),
           "options": _options(data, n, data.draw(st.sampled_from(["paren", "dot", "plain"])))}
    letters = list("ABCD"[:n])
    rec["label"] = data.draw(st.lists(st.sampled_from(letters), max_size=2, unique=True)) if multi and data.draw(st.booleans()) \
        else data.draw(st.sampled_from(letters))
    return rec


def _ekar(data, i: int) -> dict:
    return {"id": f"t{i}", "question": data.draw(TEXT),
            "choices": {"label": list("ABCD"), "text": [data.draw(TEXT) for _ in range(4)]},
            "answerKey": data.draw(st.sampled_from("ABCD")), "explanation": data.draw(TEXT)}


def _cosqa(data, i: int) -> dict:
    return {"idx": f"dev-{i}", "doc": data.draw(TEXT), "code": data.draw(TEXT), "label": data.draw(st.sampled_from([0, 1]))}


def _mbpp(data, i: int) -> dict:
    return {"text": data.draw(TEXT), "code": data.draw(TEXT), "task_id": 11 + i,
            "test_setup_code": data.draw(TEXT), "test_list": [f"assert f({j}) == {j}" for j in range(data.draw(st.integers(1, 3)))],
            "challenge_test_list": []}


def _sanitized(data, i: int) -> dict:
    return {"source_file": "x", "task_id": 11 + i, "prompt": data.draw(TEXT), "code": data.draw(TEXT),
            "test_imports": data.draw(st.lists(st.sampled_from(["import math", "import re"]), max_size=2)),
            "test_list": [f"assert f({j}) == {j}" for j in range(data.draw(st.integers(1, 3)))]}


def _sqa(data, i: int) -> dict:
    n = data.draw(st.integers(2, 4))
    return {"question": data.draw(TEXT), "choices": [data.draw(TEXT) for _ in range(n)], "answer": data.draw(st.integers(0, n - 1)),
            "hint": data.draw(st.one_of(st.none(), TEXT)), "image": data.draw(st.sampled_from([None, None, "image.png"])),
            "lecture": data.draw(st.one_of(st.none(), TEXT)), "subject": "natural science", "grade": "grade3"}


def _ceval(data, i: int) -> dict:
    return {"id": str(i), "question": data.draw(TEXT), **{c: data.draw(TEXT) for c in "ABCD"},
            "answer": data.draw(st.sampled_from("ABCD"))}


SPECS = [
    Spec("logiqa_en", "logiqa/logiqa-en.jsonl", "jsonl", lambda d, i: _agieval(d, i, False),
         {"question": "str", "options": "list", "label": "str"}, {"label": ["Z", "", "AB"], "options": [["only one"]]},
         lambda r: r["question"].strip()),
    Spec("jecqa_kd", "jecqa/jec-qa-kd.jsonl", "jsonl", lambda d, i: _agieval(d, i, True),
         {"question": "str", "options": "list", "label": "label"}, {"label": ["Z", ["A", "Z"], [1]]},
         lambda r: r["question"].strip()),
    Spec("ekar_zh", "ekar_chinese/validation.json", "either", _ekar,
         {"question": "str", "choices": "dict", "answerKey": "str"}, {"answerKey": ["Z", ""]},
         lambda r: r["question"].strip()),
    Spec("cosqa", "cosqa/cosqa-dev.json", "array", _cosqa,
         {"doc": "str", "code": "str", "label": "int"}, {"label": [2, -1]}, lambda r: r["doc"].strip()),
    Spec("mbpp", "mbpp/mbpp.jsonl", "jsonl", _mbpp,
         {"text": "str", "code": "str", "task_id": "int", "test_list": "list", "test_setup_code": "str"},
         {"test_list": [[], [1]]}, lambda r: r["text"].strip(), drop=("text", "code", "task_id", "test_list")),
    Spec("mbpp_sanitized", "mbpp/sanitized-mbpp.json", "array", _sanitized,
         {"prompt": "str", "code": "str", "task_id": "int", "test_list": "list", "test_imports": "list"},
         {"test_list": [[]], "test_imports": [["import math", 3]]}, lambda r: r["prompt"].strip(),
         drop=("prompt", "code", "task_id", "test_list")),
    Spec("scienceqa", "scienceqa/problems.json", "object", _sqa,
         {"question": "str", "choices": "list", "answer": "int", "image": "optional_str"}, {"answer": [-1, 9], "choices": [["one"]]},
         lambda r: r["question"].strip(),
         extra_files=lambda recs: {"scienceqa/pid_splits.json": json.dumps({"test": [str(i) for i in range(len(recs))], "train": []})},
         expected=lambda recs: sum(1 for r in recs if isinstance(r, dict) and not r.get("image"))),
    Spec("ceval_logic", "ceval_logic/logic_val.csv", "csv", _ceval,
         {}, {"answer": ["E", "", "a"]}, lambda r: r["question"].strip(), drop=("id", "question", "A", "answer")),
]


def _serialize(spec: Spec, records: list[Any], fmt: str, newline: str, indent: int | None) -> str:
    if fmt == "csv":
        cols = list(records[0]) if records else ["id", "question", "A", "B", "C", "D", "answer"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator=newline, extrasaction="ignore", quoting=csv.QUOTE_ALL)
        w.writeheader()
        for r in records:
            w.writerow(r)
        return buf.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + newline for r in records)
    if fmt == "object":
        return json.dumps({str(i): r for i, r in enumerate(records)}, ensure_ascii=False, indent=indent).replace("\n", newline)
    return json.dumps(records, ensure_ascii=False, indent=indent).replace("\n", newline)


def _case(data, spec: Spec):
    """(files to write {relpath: bytes}, records, kind of variation, must fail)."""
    n = data.draw(st.integers(1, 4))
    records: list[Any] = [spec.record(data, i) for i in range(n)]
    fmt = spec.fmt if spec.fmt != "either" else data.draw(st.sampled_from(["jsonl", "array"]))
    kind = data.draw(st.sampled_from(FAULTS + BENIGN))
    target = data.draw(st.integers(0, n - 1))
    newline, indent = "\n", data.draw(st.sampled_from([None, 1]))
    rec = records[target]
    if kind == "drop_field" and spec.required:
        key = data.draw(st.sampled_from(spec.required))
        rec.pop(key)
        if fmt == "csv":  # a column missing from the header
            for r in records:
                r.pop(key, None)
    elif kind == "wrong_type" and spec.typed:
        key = data.draw(st.sampled_from(sorted(spec.typed)))
        rec[key] = data.draw(st.sampled_from(WRONG[spec.typed[key]]))
    elif kind == "bad_value":
        key = data.draw(st.sampled_from(sorted(spec.bad)))
        rec[key] = data.draw(st.sampled_from(spec.bad[key]))
    elif kind == "not_object" and fmt != "csv":
        records[target] = data.draw(st.sampled_from([5, "text", [1, 2], None, True]))
    elif kind == "deep_nesting" and fmt != "csv":
        rec["zz_extra"] = "@DEEP@"
    elif kind == "extra_fields" and fmt != "csv":
        rec["zz_extra"] = {"nested": [1, {"a": None}], "n": 1.5}
    elif kind == "huge_field":
        key = data.draw(st.sampled_from([k for k in TEXT_FIELDS if isinstance(rec.get(k), str)]))
        rec[key] = "長" * 300_000
    elif kind == "crlf_blank_lines":
        newline = "\r\n"
    elif kind == "duplicate":  # the same record again at the end: loads, but `load_items` must refuse it
        records.append(json.loads(json.dumps(rec)))
    elif kind in ("drop_field", "wrong_type", "not_object", "deep_nesting", "extra_fields"):
        kind = "none"  # no such fault for this format (CSV has no types or nesting)
    text = _serialize(spec, records, fmt, newline, indent)
    if kind == "deep_nesting":
        text = text.replace('"@DEEP@"', "[" * DEEP + "]" * DEEP)
    if kind == "crlf_blank_lines":
        head, sep, rest = text.partition(newline)
        text = head + sep + ("\r\n  \r\n" if fmt == "jsonl" else "") + rest + ("\r\n" if fmt == "csv" else "\r\n \r\n")
    if kind == "garbage":
        body = text.rstrip()
        if fmt == "array":
            text = body[:-1] + ", {broken]"
        elif fmt == "object":
            text = body[:-1] + ', "k": {broken}'
        elif fmt == "csv":  # last: a line inside a quoted multi-line field would be data, not garbage
            text = text + 'x,"unterminated'
        else:
            lines = text.split(newline)
            lines.insert(data.draw(st.integers(0, len(lines) - 1)), "{not json")
            text = newline.join(lines)
    if kind == "truncate":
        body = text.rstrip()
        if fmt in ("jsonl", "csv"):
            last = body.rfind(newline) + len(newline) if newline in body else 0
            text = body[: data.draw(st.integers(last + 1, len(body) - 1))]  # the last record, cut short
        else:
            closing = len(body) - 1
            text = body[: data.draw(st.integers(1, max(1, closing)))]
    raw = text.encode("utf-8")
    if kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif kind == "invalid_utf8":
        at = data.draw(st.integers(0, len(raw)))
        raw = raw[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + raw[at:]
    elif kind == "empty_file":
        raw = data.draw(st.sampled_from([b"", b"\n", b"   \n\n"]))
    files = {spec.path: raw, **{k: v.encode() for k, v in spec.extra_files(records).items()}}
    must_fail = kind in FAULTS
    if kind == "bad_value" and spec.task == "jecqa_kd" and rec.get("label") == []:
        must_fail = False
    return files, records, kind, must_fail


@pytest.mark.parametrize("spec", SPECS, ids=[s.task for s in SPECS])
@FUZZ
@given(data=st.data())
def test_task_loader_gives_a_clear_error_or_every_record(spec: Spec, data) -> None:
    files, records, kind, must_fail = _case(data, spec)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, raw in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(raw)
        task = get_task(spec.task, root)
        try:
            items = task.load()
        except CodestageError as exc:
            named = [str(root / rel) for rel in files]
            assert any(p in str(exc) for p in named), (kind, str(exc)[:300])
            expected = spec.expected(records) if not must_fail else None
            csv_limit = kind == "huge_field" and "field larger than field limit" in str(exc)  # csv's own cap: a clear error
            assert must_fail or expected == 0 or csv_limit, (kind, str(exc)[:300])
            return
        assert not must_fail, (kind, f"loaded {len(items)} items from a file with a fault")
        assert len(items) == spec.expected(records), (kind, len(items))
        kept = [r for r in records if spec.task != "scienceqa" or not r.get("image")]
        assert [it.question if hasattr(it, "question") else it.prompt for it in items] == [spec.question(r) for r in kept]
        # the evaluated items: the same, unless two records are one item (same text, or the same upstream id)
        hashes, ids = [item_hash(it) for it in items], [i for i in map(item_id, items) if i is not None]
        repeated = len(set(hashes)) < len(hashes) or len(set(ids)) < len(ids)
        if kind == "duplicate" and (spec.task != "scienceqa" or not records[-1].get("image")):
            assert repeated
        try:
            checked = task.load_items()
        except DataError as exc:
            assert repeated and str(root / spec.path) in str(exc) and "line" in str(exc), (kind, str(exc)[:300])
            return
        assert not repeated and checked == items, kind


def test_scienceqa_ids_missing_from_problems_are_counted_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "scienceqa").mkdir()
    problem = {"question": "q\u2028?", "choices": ["a", "b"], "answer": 1, "image": None, "hint": "", "lecture": None}
    (tmp_path / "scienceqa/problems.json").write_text(json.dumps({"1": problem}, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "scienceqa/pid_splits.json").write_text(json.dumps({"test": ["1", "2", "3"], "train": []}))
    task = get_task("scienceqa", tmp_path)
    assert len(task.load()) == 1
    assert any("2 test ids are not in problems.json" in n for n in task.notes)


@pytest.mark.parametrize("task,rel,fmt", [("logiqa_en", "logiqa/logiqa-en.jsonl", "jsonl"), ("cosqa", "cosqa/cosqa-dev.json", "array"),
                                          ("scienceqa", "scienceqa/problems.json", "object")])
def test_a_record_over_the_limit_is_refused_naming_the_line_before_anything_tokenizes_it(tmp_path: Path, task, rel, fmt) -> None:
    from codestage.jsonlines import MAX_RECORD_CHARS

    spec = next(s for s in SPECS if s.task == task)
    records = [spec.record(_Simplest(), i) for i in range(3)]
    key = next(k for k in TEXT_FIELDS if isinstance(records[1].get(k), str))
    records[1][key] = "a " * (MAX_RECORD_CHARS // 2 + 1)
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text(_serialize(spec, records, fmt, "\n", 1), encoding="utf-8")
    for extra, text in spec.extra_files(records).items():
        (tmp_path / extra).write_text(text)
    with pytest.raises(DataError, match=rf"{path}:\d+: a record of [\d,]+ characters, over the limit of 1,048,576"):
        get_task(task, tmp_path).load()


class _Simplest:
    """Stands in for Hypothesis' `data`: each strategy's simplest value (what `find` shrinks to)."""

    def draw(self, strategy):
        from hypothesis import find

        return find(strategy, lambda _: True)
