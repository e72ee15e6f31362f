"""Instruction-set readers under fuzzed files: a clear error naming the file, or every example
accounted for (kept, or skipped for an empty answer and listed), never another exception type.

Formats: an Alpaca / Code Alpaca JSON list (`output`, or `response` when `output` is empty) and
JSON lines, including self-instruct seed records with several `instances`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codestage.data.instructions import read_examples
from codestage.errors import CodestageError

FUZZ = settings(derandomize=True, max_examples=200, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
DEEP = 20_000
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(["", " ", "\u2028", "a\u2029b", "x\x85y", "\r\n", "中文", '"q"', "\\", "\t"]),
)
ANSWER = st.one_of(TEXT, st.sampled_from(["", "   ", "\n"]))  # empty answers are counted skips
FAULTS = ("drop_instruction", "drop_output", "wrong_type", "not_object", "bad_instances", "garbage", "invalid_utf8",
          "deep_nesting", "truncate", "empty_file")
BENIGN = ("none", "crlf_blank_lines", "bom", "extra_fields", "huge_field")


@st.composite
def record(draw, jsonl: bool) -> dict:
    kind = draw(st.sampled_from(["alpaca", "code_alpaca", "seed"] if jsonl else ["alpaca", "code_alpaca"]))
    rec = {"instruction": draw(TEXT), "input": draw(st.one_of(TEXT, st.none()))}
    if kind == "alpaca":
        rec["output"] = draw(ANSWER)
    elif kind == "code_alpaca":
        rec["output"], rec["response"] = "", draw(ANSWER)
    else:
        rec.pop("input")
        rec["instances"] = [{"input": draw(TEXT), "output": draw(ANSWER)} for _ in range(draw(st.integers(1, 3)))]
    return rec


def _answers(rec) -> list[str]:
    """The answer of each example a well-formed record holds ([] for a malformed one)."""
    if not isinstance(rec, dict):
        return []
    if "instances" in rec:
        insts = rec["instances"] if isinstance(rec["instances"], list) else []
        return [i["output"] for i in insts if isinstance(i, dict) and isinstance(i.get("output"), str)]
    answer = rec.get("output") or rec.get("response") or ""
    return [answer] if isinstance(answer, str) else []


@st.composite
def case(draw):
    jsonl = draw(st.booleans())
    records: list = [draw(record(jsonl)) for _ in range(draw(st.integers(1, 5)))]
    kind = draw(st.sampled_from(FAULTS + BENIGN))
    t = draw(st.integers(0, len(records) - 1))
    rec, newline = records[t], "\n"
    if kind == "drop_instruction":
        rec.pop("instruction")
    elif kind == "drop_output":
        if "instances" in rec:
            rec["instances"][0].pop("output")
        else:
            rec.pop("output")
            rec.pop("response", None)
    elif kind == "wrong_type":
        key = draw(st.sampled_from(["instruction", "input", "output"]))
        target = rec["instances"][0] if "instances" in rec and key != "instruction" else rec
        target[key] = draw(st.sampled_from([1, 2.5, True, [], {"a": 1}]))
    elif kind == "not_object":
        records[t] = draw(st.sampled_from([1, "text", [1], True]))
    elif kind == "bad_instances":
        rec.pop("output", None)
        rec.pop("response", None)
        rec["instances"] = draw(st.sampled_from([[], "x", None, [1], [{"input": "i"}]]))
    elif kind == "deep_nesting":
        rec["zz"] = "@DEEP@"
    elif kind == "extra_fields":
        rec["zz"] = {"id": 3, "tags": ["a", None]}
    elif kind == "huge_field":
        rec["instruction"] = "指" * 300_000
    elif kind == "crlf_blank_lines":
        newline = "\r\n"
    if jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False) + newline for r in records)
        if kind == "crlf_blank_lines":
            text = "\r\n \r\n" + text + "\r\n"
    else:
        text = json.dumps(records, ensure_ascii=False, indent=draw(st.sampled_from([None, 2]))).replace("\n", newline)
    text = text.replace('"@DEEP@"', "[" * DEEP + "]" * DEEP)
    if kind == "garbage":
        text = text + "{not json\n" if jsonl else text.rstrip()[:-1] + ", {broken]"
    if kind == "truncate":
        body = text.rstrip()
        last = body.rfind("\n") + 1 if jsonl else 0
        text = body[: draw(st.integers(last + 1, len(body) - 1))]
    raw = text.encode("utf-8")
    if kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif kind == "invalid_utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + raw[at:]
    elif kind == "empty_file":
        raw = draw(st.sampled_from([b"", b"\n\n", b"[]", b"   "])) if not jsonl else draw(st.sampled_from([b"", b"\n \n"]))
    return ("set.jsonl" if jsonl else "set.json"), raw, records, kind


@FUZZ
@given(case())
def test_instruction_reader_gives_a_clear_error_or_accounts_for_every_example(c) -> None:
    name, raw, records, kind = c
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        answers = [a for r in records for a in _answers(r)]
        usable = [a for a in answers if a.strip()]
        try:
            out = read_examples([path], "fuzz")
        except CodestageError as exc:
            assert str(path) in str(exc), str(exc)[:300]
            assert kind in FAULTS or not usable, (kind, str(exc)[:300])
            return
        assert kind not in FAULTS, (kind, "read a file with a fault")
        assert len(out.examples) + len(out.skipped_empty) == len(answers), (len(out.examples), out.skipped_empty, answers)
        assert [e.output for e in out.examples] == usable
        assert all(str(path) in where for where in out.skipped_empty)
        instructions = [r["instruction"] for r in records for a in _answers(r) if a.strip()]
        assert [e.instruction for e in out.examples] == instructions


def test_an_empty_seed_instance_skips_only_itself(tmp_path: Path) -> None:
    rec = {"instruction": "add", "instances": [{"input": "1 1", "output": "2"}, {"input": "2 2", "output": ""}]}
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    out = read_examples([path], "seed")
    assert [e.output for e in out.examples] == ["2"]
    assert out.skipped_empty == [f"{path}:1 instances[1]"]


def test_an_example_over_the_record_limit_is_refused_naming_where(tmp_path: Path) -> None:
    import pytest

    from codestage.jsonlines import MAX_RECORD_CHARS

    big = "x" * (MAX_RECORD_CHARS + 1)
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": big, "output": "d"}]))
    with pytest.raises(CodestageError, match=rf"{alpaca} record 1: a record of [\d,]+ characters, over the limit of 1,048,576"):
        read_examples([alpaca], "alpaca")
    seeds = tmp_path / "seed.jsonl"
    seeds.write_text(json.dumps({"instruction": "a", "instances": [{"input": "", "output": "b"}]}) + "\n"
                     + json.dumps({"instruction": "c", "instances": [{"input": "", "output": big}]}) + "\n")
    with pytest.raises(CodestageError, match=rf"{seeds}:2: a record of .* over the limit"):
        read_examples([seeds], "seeds")
    just_under = tmp_path / "ok.jsonl"
    just_under.write_text(json.dumps({"instruction": "c", "input": "", "output": "y" * (MAX_RECORD_CHARS - 100)}) + "\n")
    assert len(read_examples([just_under], "ok").examples) == 1
