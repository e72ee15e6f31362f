"""Task loaders on the real bundled files, malformed-file errors, E-KAR, and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codestage.errors import ConfigError, DataError
from codestage.eval.registry import DOMAIN_DEFAULT, TASKS, get_task, resolve_tasks
from codestage.eval.tasks.base import ChoiceItem, GenerationItem, TaskDataMissing
from codestage.eval.tasks.ekar import read_ekar
from codestage.resources import SHARED_DATA_ENV, bundled, shared_data

EXPECTED_N = {
    "ceval_logic": 22,
    "logiqa_en": 651,
    "logiqa_zh": 651,
    "jecqa_kd": 1000,
    "scienceqa": 194,  # bundled slice: 361 test problems, 194 without an image
    "cosqa": 604,
    "mbpp_sanitized": 427,
    "mbpp": 500,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_N))
def test_item_counts_on_the_real_files(name: str) -> None:
    items = get_task(name).load()
    assert len(items) == EXPECTED_N[name]
    assert [it.doc_id for it in items] == list(range(len(items)))
    for it in items:
        if isinstance(it, ChoiceItem):
            assert len(it.choices) >= 2 and all(0 <= g < len(it.choices) for g in it.gold)
        else:
            assert isinstance(it, GenerationItem) and it.tests and it.reference


def test_specific_items_parse_as_upstream_means_them() -> None:
    logic = get_task("ceval_logic").load()
    assert logic[0].gold == (2,) and logic[0].choices[2].startswith("有规律的锻炼")
    # LogiQA line 109 lists its options (A), (C), (B), (D): the gold letter follows the label.
    en = get_task("logiqa_en").load()
    item = en[108]
    assert item.choices[1].startswith("No.3") and item.choices[2].startswith("No.2 valve and No.3")
    jec = get_task("jecqa_kd").load()
    assert sum(len(it.gold) == 1 for it in jec) == 479 and sum(len(it.gold) > 1 for it in jec) == 520
    assert jec[211].gold == ()  # the one upstream item with an empty label list
    mbpp = get_task("mbpp").load()
    assert [it.meta["task_id"] for it in mbpp] == list(range(11, 511))
    assert mbpp[0].entry_point == "remove_Occ"


def test_chance_rates() -> None:
    assert get_task("jecqa_kd").chance(get_task("jecqa_kd").load()) == pytest.approx(479 * 0.25 / 1000)
    assert get_task("cosqa").chance(get_task("cosqa").load()) == 0.5


def test_fewshot_pools() -> None:
    assert len(get_task("ceval_logic").fewshot_pool()) == 5
    assert len(get_task("scienceqa").fewshot_pool()) == 40
    assert [it.meta["task_id"] for it in get_task("mbpp").fewshot_pool()] == list(range(1, 11))
    assert get_task("cosqa").fewshot_pool() is None


def test_registry_resolves_tasks_and_domains() -> None:
    assert resolve_tasks(["logic", "cosqa", "logic"]) == ["ceval_logic", "cosqa"]
    assert resolve_tasks(["legal,code_generation"]) == ["jecqa_kd", "mbpp_sanitized"]
    assert resolve_tasks(["all"]) == list(TASKS)
    assert set(DOMAIN_DEFAULT.values()) <= set(TASKS)
    with pytest.raises(ConfigError, match="'chemistry'.*valid tasks: ceval_logic"):
        resolve_tasks(["chemistry"])


def _root_with(tmp_path: Path, folder: str, name: str, text: str) -> Path:
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / folder / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"passage": "p", "question": "q", "options": ["(A)a", "(B)b"], "label": "A"})
    root = _root_with(tmp_path, "logiqa", "logiqa-en.jsonl", f"{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"logiqa-en.jsonl:2: not valid JSON"):
        get_task("logiqa_en", root).load()


def test_missing_field_and_wrong_label(tmp_path: Path) -> None:
    row = {"passage": None, "question": "q", "options": ["(A)a", "(B)b", "(C)c", "(D)d"], "label": ["B"]}
    no_options = {k: v for k, v in row.items() if k != "options"}
    root = _root_with(tmp_path, "jecqa", "jec-qa-kd.jsonl", json.dumps(row) + "\n" + json.dumps(no_options) + "\n")
    with pytest.raises(DataError, match=r"jec-qa-kd.jsonl:2: field 'options' missing"):
        get_task("jecqa_kd", root).load()
    wrong = dict(row, label=["E"])
    root = _root_with(tmp_path, "jecqa", "jec-qa-kd.jsonl", json.dumps(wrong) + "\n")
    with pytest.raises(DataError, match=r"jec-qa-kd.jsonl:1: field 'label' has 'E'"):
        get_task("jecqa_kd", root).load()


def test_csv_missing_column_and_bad_answer(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "ceval_logic", "logic_val.csv", "id,question,A,B,C,D\n0,q,a,b,c,d\n")
    with pytest.raises(DataError, match=r"logic_val.csv:1: missing column\(s\) answer"):
        get_task("ceval_logic", root).load()
    root = _root_with(tmp_path, "ceval_logic", "logic_val.csv", 'id,question,A,B,C,D,answer\n0,"two\nlines",a,b,c,d,A\n1,q,a,b,c,d,E\n')
    with pytest.raises(DataError, match=r"logic_val.csv:4: field 'answer' should be one of A, B, C, D, got 'E'"):
        get_task("ceval_logic", root).load()


def test_json_array_and_object_errors_name_the_line(tmp_path: Path) -> None:
    items = [{"idx": "a", "doc": "q", "code": "x = 1", "label": 1}, {"idx": "b", "doc": "q", "code": "y", "label": 7}]
    root = _root_with(tmp_path, "cosqa", "cosqa-dev.json", json.dumps(items, indent=1))
    with pytest.raises(DataError, match=r"cosqa-dev.json:8: field 'label' should be 0 or 1, got 7"):
        get_task("cosqa", root).load()
    problems = {"1": {"question": "q", "choices": ["a", "b"], "answer": 5, "image": None, "hint": "", "lecture": ""}}
    _root_with(tmp_path, "scienceqa", "problems.json", json.dumps(problems, indent=1))
    _root_with(tmp_path, "scienceqa", "pid_splits.json", json.dumps({"test": ["1"], "train": []}))
    with pytest.raises(DataError, match=r"problems.json:2: field 'answer' of problem 1 is 5"):
        get_task("scienceqa", tmp_path).load()


def test_missing_task_data_is_task_data_missing(tmp_path: Path) -> None:
    with pytest.raises(TaskDataMissing, match="cosqa-dev.json not found"):
        get_task("cosqa", tmp_path).load()


def _ekar_record(i: int, key: str = "C") -> dict:
    return {
        "id": f"q{i}",
        "question": "茶:茶壶:茶杯",
        "choices": {"label": ["A", "B", "C", "D"], "text": ["乘客:公交车:出租车", "杂志:书架:阅览室", "人才:学校:企业", "课本:书店:印刷厂"]},
        "answerKey": key,
        "explanation": ["q", "a", "b", "c", "d"],
        "relation": [[["茶", "茶壶", "R1"]]] * 5,
    }


def test_ekar_missing_gives_reason() -> None:
    with pytest.raises(TaskDataMissing, match="E-KAR Chinese is not present"):
        get_task("ekar_zh").load()


def test_ekar_reader_on_upstream_format(tmp_path: Path) -> None:
    lines = "".join(json.dumps(_ekar_record(i), ensure_ascii=False) + "\n" for i in range(3))
    root = _root_with(tmp_path, "ekar_chinese", "test.json", lines)
    _root_with(tmp_path, "ekar_chinese", "train.json", json.dumps(_ekar_record(9, "A"), ensure_ascii=False) + "\n")
    task = get_task("analogical", root)
    items = task.load()
    assert len(items) == 3 and items[0].gold == (2,) and items[0].choices[2] == "人才:学校:企业"
    assert task.fewshot_pool()[0].gold == (0,)
    assert task.paper_pair(items[0], 2) == ("根据推理关系:茶:茶壶:茶杯\n可以得到类比推理关系为：", "人才:学校:企业")
    as_array = tmp_path / "array.json"
    as_array.write_text(json.dumps([_ekar_record(0)], ensure_ascii=False), encoding="utf-8")
    assert len(read_ekar(as_array)) == 1


def test_ekar_blind_test_copy_is_rejected(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "ekar_chinese", "test.json", json.dumps(_ekar_record(0, "")) + "\n")
    with pytest.raises(DataError, match=r"test.json:1: field 'answerKey' missing or empty"):
        get_task("ekar_zh", root).load()


def test_shared_full_copy_reads_unchanged() -> None:
    shared = shared_data("eval")
    if shared is None:
        pytest.skip(f"the full shared data is absent (../shared/data beside the repository, or ${SHARED_DATA_ENV})")
    task = get_task("scienceqa", shared)
    assert len(task.load()) == 194
    assert any("not in problems.json" in n for n in task.notes)
    assert bundled("eval").is_dir()


def test_sanitized_mbpp_copy_gets_its_lost_test_imports_back_and_says_so() -> None:
    from codestage.eval.sandbox import Job, run_many

    task = get_task("mbpp_sanitized")
    items = {it.meta["task_id"]: it for it in task.load()}
    assert items[98].test_setup == "import math" and "math.isclose" in items[98].tests[0]
    assert items[596].test_setup.startswith("import sys")
    assert any("import math for task ids" in n and "98" in n for n in task.notes)
    assert items[11].test_setup == ""  # nothing added where the tests need nothing
    chosen = [items[i] for i in (98, 124, 596, 11)]
    results = run_many([Job(it.reference, it.tests, it.test_setup) for it in chosen])
    assert [r.passed for r in results] == [True, True, True, True]
