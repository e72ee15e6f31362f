"""Decontamination on planted contamination: a LogiQA passage inside an English document, an MBPP
solution inside a code file and MBPP tests inside an instruction example are found, counted per
source and task, and dropped; a 12-word excerpt escapes 13-grams but not 8-grams."""

from __future__ import annotations

import gzip
import json

import pytest

from codestage.study.decontam import TrainingSet, build_index, contamination_summary, decontaminate, words
from codestage.eval.registry import get_task
from codestage.resources import bundled

TASKS = ["logiqa_en", "mbpp_sanitized"]


def lines(name: str, n: int) -> list[dict]:
    with gzip.open(bundled("corpora", f"{name}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("planted")
    logic, mbpp = get_task("logiqa_en").load()[3], get_task("mbpp_sanitized").load()[5]
    nl = lines("nl_en", 12)
    nl[4]["text"] += "\n\n" + logic.passage + "\n"                                   # line 5: whole passage
    nl[9]["text"] = nl[9]["text"][:500] + " " + " ".join(words(logic.passage)[:12])  # line 10: 12 words only
    code = lines("code", 10)
    code[6]["text"] = "# helpers\n" + mbpp.reference + "\n\n" + code[6]["text"]     # line 7: the solution
    (tmp / "nl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nl))
    (tmp / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in code))
    examples = [{"instruction": "Say hello.", "input": "", "output": "Hello!"},
                {"instruction": mbpp.prompt, "input": "", "output": "\n".join(mbpp.tests)},
                {"instruction": "Add two numbers.", "input": "2 and 3", "output": "5"}]
    (tmp / "inst.json").write_text(json.dumps(examples))
    sets = [TrainingSet("nl", (str(tmp / "nl.jsonl"),)), TrainingSet("code", (str(tmp / "code.jsonl"),)),
            TrainingSet("inst", (str(tmp / "inst.json"),), kind="instruct")]
    return {"tmp": tmp, "sets": sets, "logic": logic.doc_id, "mbpp": mbpp.doc_id}


def test_planted_13gram_contamination_is_found_per_source_and_task(planted) -> None:
    rep = decontaminate(planted["sets"], TASKS)
    src = rep["sources"]
    assert src["nl"]["documents"] == 12 and src["nl"]["documents_touched"] == 1
    assert src["nl"]["tasks"]["logiqa_en"]["examples"][0]["document"].endswith("nl.jsonl:5")
    assert src["nl"]["tasks"]["logiqa_en"]["item_ids"] == [planted["logic"]]
    assert src["code"]["tasks"] == {"mbpp_sanitized": {"documents_touched": 1, "items_touched": 1, "item_ids": [planted["mbpp"]],
                                                       "examples": [{"document": src["code"]["tasks"]["mbpp_sanitized"]["examples"][0]["document"],
                                                                     "items": [planted["mbpp"]]}]}}
    assert src["code"]["tasks"]["mbpp_sanitized"]["examples"][0]["document"].endswith("code.jsonl:7")
    assert src["inst"]["kind"] == "instruct" and src["inst"]["documents"] == 3 and src["inst"]["documents_touched"] == 1
    summary = contamination_summary(rep)
    json.dumps(summary)
    assert summary["tasks"]["logiqa_en"]["items_touched"] == 1
    assert summary["tasks"]["mbpp_sanitized"]["items_touched"] == 1
    assert summary["tasks"]["mbpp_sanitized"]["by_source"] == {"code": {"items_touched": 1, "documents_touched": 1},
                                                              "inst": {"items_touched": 1, "documents_touched": 1}}
    assert summary["sources"]["nl"] == {"kind": "pretrain", "documents": 12, "documents_touched": 1, "dropped": 0}


def test_n_is_configurable(planted) -> None:
    rep = decontaminate(planted["sets"][:1], TASKS, n=8)
    assert rep["n"] == 8 and rep["sources"]["nl"]["documents_touched"] == 2  # the 12-word excerpt now counts


def test_drop_out_writes_clean_copies_that_check_clean(planted, tmp_path) -> None:
    out = tmp_path / "clean"
    rep = decontaminate(planted["sets"], TASKS, drop_out=out, workers=2)
    assert {p.name for p in out.iterdir()} == {"nl.jsonl.gz", "code.jsonl.gz", "inst.jsonl", "decontam.json"}
    assert rep["sources"]["nl"]["dropped"] == 1 and rep["sources"]["inst"]["dropped"] == 1
    with gzip.open(out / "nl.jsonl.gz", "rt", encoding="utf-8") as f:
        kept = [json.loads(x) for x in f]
    assert len(kept) == 11 and not any(r["meta"]["location"].endswith(":5") for r in kept)
    again = decontaminate([TrainingSet("nl", (str(out / "nl.jsonl.gz"),)), TrainingSet("code", (str(out / "code.jsonl.gz"),)),
                           TrainingSet("inst", (str(out / "inst.jsonl"),), kind="instruct")], TASKS)
    assert all(s["documents_touched"] == 0 for s in again["sources"].values())
    assert again["sources"]["inst"]["documents"] == 2
    assert contamination_summary(out / "decontam.json")["sources"]["code"]["dropped"] == 1


def test_absent_task_is_reported_not_invented(planted, tmp_path) -> None:
    index = build_index(["analogical"], tmp_path)  # a data folder without E-KAR
    assert index.tasks["ekar_zh"]["absent"] and index.tasks["ekar_zh"]["items"] == 0
    summary = contamination_summary(decontaminate(planted["sets"][:1], [], index=index))
    assert summary["tasks"]["ekar_zh"]["share_touched"] is None and summary["tasks"]["ekar_zh"]["absent"]


def test_trivial_ngrams_do_not_match(tmp_path) -> None:
    """`1 2 3 ... 13` or `a b c ... m` in an MBPP test must not flag every file that counts to 13."""
    doc = tmp_path / "d.jsonl"
    doc.write_text(json.dumps({"text": "x = [" + ", ".join(map(str, range(1, 20))) + "]\n" + " ".join("abcdefghijklmnop")}) + "\n")
    rep = decontaminate([TrainingSet("d", (str(doc),))], ["mbpp"])
    assert rep["sources"]["d"]["documents_touched"] == 0
